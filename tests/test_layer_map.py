"""Layer maps: index conventions for each strategy, and validation messages."""

from __future__ import annotations

import pytest

from textdistill.config.schema import LayerMapConfig
from textdistill.errors import ConfigError
from textdistill.models.layer_map import build_layer_map, validate


@pytest.mark.parametrize(
    ("student", "teacher", "hidden"),
    [
        (2, 4, ((0, 0), (1, 2), (2, 4))),
        (3, 6, ((0, 0), (1, 2), (2, 4), (3, 6))),
        (4, 12, ((0, 0), (1, 3), (2, 6), (3, 9), (4, 12))),
    ],
)
def test_uniform_hidden_and_attention(student: int, teacher: int, hidden: tuple) -> None:
    m = build_layer_map(LayerMapConfig(strategy="uniform"), student, teacher)
    assert m.hidden_pairs == hidden
    assert m.attention_pairs == hidden[1:]
    # TinyBERT's release indexes attention 0-based as i*k + k - 1 for i = 0..S-1 (same teacher layers).
    k = teacher // student
    assert m.attention_keys == tuple((i, i * k + k - 1) for i in range(student))
    # ... and hidden states (embeddings first) as i*k for i = 0..S.
    assert m.hidden_pairs == tuple((i, i * k) for i in range(student + 1))


def test_default_strategy_when_no_config() -> None:
    assert build_layer_map(None, 2, 4).strategy == "uniform"
    m = build_layer_map(None, 2, 4, default_strategy="last")
    assert m.hidden_pairs == ((2, 4),)
    assert m.attention_keys == ((1, 3),)


def test_every_k() -> None:
    m = build_layer_map(LayerMapConfig(strategy="every_k"), 5, 12)  # k = 12 // 5 = 2
    assert m.hidden_pairs == ((0, 0), (1, 2), (2, 4), (3, 6), (4, 8), (5, 10))
    m = build_layer_map(LayerMapConfig(strategy="every_k", k=1), 3, 6)
    assert m.attention_pairs == ((1, 1), (2, 2), (3, 3))
    assert m.layer_pairs() == ((1, 1), (2, 2), (3, 3))


def test_last_with_teacher_layer() -> None:
    m = build_layer_map(LayerMapConfig(strategy="last", teacher_layer=8), 4, 12)
    assert m.hidden_pairs == ((4, 8),)
    assert m.attention_pairs == ((4, 8),)
    assert m.attention_keys == ((3, 7),)
    assert build_layer_map(LayerMapConfig(strategy="last"), 4, 12).attention_pairs == ((4, 12),)


def test_explicit_pairs() -> None:
    m = build_layer_map(LayerMapConfig(strategy="explicit", pairs=[[0, 0], [1, 5], [2, 12]]), 2, 12)
    assert m.hidden_pairs == ((0, 0), (1, 5), (2, 12))
    assert m.attention_pairs == ((1, 5), (2, 12))  # the embeddings have no attention
    assert m.attention_keys == ((0, 4), (1, 11))
    assert "0<-0 1<-5 2<-12" in m.describe()


def _problems(cfg: LayerMapConfig | None, s: int, t: int, **kw: object) -> list[str]:
    return validate(cfg, s, t, key="objective.1.layer_map", **kw)


def test_uniform_not_divisible_suggests_fixes() -> None:
    (p,) = _problems(LayerMapConfig(strategy="uniform"), 5, 12)
    assert "multiple of the student's (5)" in p
    assert "every_k (k=2" in p
    assert "[[0, 0], [1, 2], [2, 5], [3, 7], [4, 10], [5, 12]]" in p
    # The suggested pairs are valid.
    cfg = LayerMapConfig(strategy="explicit", pairs=[[0, 0], [1, 2], [2, 5], [3, 7], [4, 10], [5, 12]])
    assert _problems(cfg, 5, 12) == []


def test_student_deeper_than_teacher() -> None:
    (p,) = _problems(LayerMapConfig(strategy="uniform"), 6, 4)
    assert "more layers (6) than the teacher (4)" in p
    (p,) = _problems(LayerMapConfig(strategy="every_k"), 6, 4)
    assert "explicit pairs" in p


def test_every_k_too_large() -> None:
    (p,) = _problems(LayerMapConfig(strategy="every_k", k=4), 4, 12)
    assert p == (
        "objective.1.layer_map.k: 4 does not fit: student layer 4 would match teacher layer 16, but the teacher "
        "has 12 layers; valid k: 1..3"
    )


def test_teacher_layer_out_of_range() -> None:
    (p,) = _problems(LayerMapConfig(strategy="last", teacher_layer=13), 4, 12)
    assert p == (
        "objective.1.layer_map.teacher_layer: 13 is out of range; the teacher has 12 layers, valid: 1..12 (1-based)"
    )
    (p,) = _problems(LayerMapConfig(strategy="last", teacher_layer=0), 4, 12)
    assert "valid: 1..12" in p


def test_explicit_problems_all_reported() -> None:
    cfg = LayerMapConfig(strategy="explicit", pairs=[[3, 1], [1, 13], [1, 2, 3], [1, 2], [1, 2]])
    problems = _problems(cfg, 2, 12)
    assert "objective.1.layer_map.pairs.0: student layer 3 is out of range; valid: 0..2" in problems[0]
    assert "objective.1.layer_map.pairs.1: teacher layer 13 is out of range; valid: 0..12" in problems[1]
    assert "pairs.2: expected [student_layer, teacher_layer] integers, got [1, 2, 3]" in problems[2]
    assert "duplicate pairs [[1, 2]]" in problems[3]
    assert len(problems) == 4
    assert "needs pairs" in _problems(LayerMapConfig(strategy="explicit"), 2, 12)[0]


def test_options_of_other_strategies_are_rejected() -> None:
    problems = _problems(LayerMapConfig(strategy="uniform", k=2, teacher_layer=3, pairs=[[1, 1]]), 2, 4)
    assert len(problems) == 3
    assert "only strategy every_k uses k" in problems[0]
    assert "only strategy explicit uses pairs" in problems[1]
    assert "set strategy: last or remove teacher_layer" in problems[2]


def test_unknown_strategy_and_layerless_student() -> None:
    (p,) = _problems(LayerMapConfig(strategy="unifrom"), 2, 4)
    assert "'unifrom' is unknown; valid strategies: uniform, every_k, last, explicit" in p
    (p,) = _problems(None, 0, 4)
    assert "the student has no transformer layers (0)" in p


def test_build_raises_every_problem() -> None:
    with pytest.raises(ConfigError) as err:
        build_layer_map(LayerMapConfig(strategy="explicit", pairs=[[9, 1], [1, 99]]), 2, 4)
    assert len(err.value.problems) == 2
    assert "2 configuration problems" in str(err.value)
