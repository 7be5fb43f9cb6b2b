"""The weighted objective: sums, schedules, feature requests, and validation that reports every problem."""

from __future__ import annotations

import pytest
import torch

from textdistill.config.schema import LayerMapConfig, LossTermConfig
from textdistill.errors import ConfigError
from textdistill.losses import Objective, validate_objective
from textdistill.models.outputs import ALL_FEATURES, LOGITS, ModelInfo, ModelOutputs

B, L, C = 2, 4, 3
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])


def info(layers: int, width: int, heads: int, labels: int = C) -> ModelInfo:
    return ModelInfo("hf", "bert", layers, width, heads, 50, labels, ALL_FEATURES)


TEACHER = info(4, 12, 2)
STUDENT = info(2, 8, 2)
BILSTM = ModelInfo("bilstm", "bilstm", 0, 16, 0, 50, C, frozenset({LOGITS}))


def outputs(layers: int, width: int, heads: int, seed: int) -> ModelOutputs:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).requires_grad_(True)

    return ModelOutputs(
        logits=r(B, C),
        hidden_states=tuple(r(B, L, width) for _ in range(layers + 1)),
        attention_scores={i: r(B, heads, L, L) for i in range(layers)},
        qkv={i: (r(B, L, width), r(B, L, width), r(B, L, width)) for i in range(layers)},
        attention_mask=MASK,
    )


BATCH = {"attention_mask": MASK, "labels": torch.tensor([2, 0]), "is_original": torch.tensor([True, True])}


def test_weighted_sum_with_schedules() -> None:
    terms = [
        LossTermConfig(
            "kd_kl", weight={"schedule": "linear", "start": 1.0, "end": 0.0}, params={"temperature": 2}
        ),
        LossTermConfig("hidden_mse", weight=2.0),
        LossTermConfig("hard_ce", weight={"schedule": "cosine", "start": 0.0, "end": 1.0}),
    ]
    obj = Objective(terms, TEACHER, STUDENT)
    so, to = outputs(2, 8, 2, 0), outputs(4, 12, 2, 1)
    total, parts = obj(so, to, BATCH, progress=0.25)
    assert list(parts) == ["kd_kl", "hidden_mse", "hard_ce"]
    assert all(not v.requires_grad and v.dim() == 0 for v in parts.values())
    weights = {n: w.value_at(0.25) for n, w in zip(obj.names, obj.weights)}
    assert weights["kd_kl"] == pytest.approx(0.75)
    assert weights["hidden_mse"] == 2.0
    assert weights["hard_ce"] == pytest.approx(0.5 * (1 - 0.5**0.5))  # 1 - (1 + cos(pi/4)) / 2
    expected = sum(weights[k] * parts[k] for k in parts)
    torch.testing.assert_close(total.detach(), expected)
    # Each part is the term's own value (unweighted).
    for name, term in zip(obj.names, obj.terms):
        torch.testing.assert_close(parts[name], term(so, to, BATCH, 0.25).detach())


def test_projections_are_trained_through_the_objective() -> None:
    obj = Objective([LossTermConfig("hidden_mse"), LossTermConfig("kd_mse")], TEACHER, STUDENT)
    params = list(obj.parameters())
    assert len(params) == 2 * 3  # one Linear (weight, bias) per matched pair 0<-0, 1<-2, 2<-4
    so, to = outputs(2, 8, 2, 0), outputs(4, 12, 2, 1)
    total, _ = obj(so, to, BATCH, 0.0)
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert so.logits.grad is not None and to.logits.grad is None


def test_requests_are_merged_per_side() -> None:
    terms = [
        LossTermConfig("hidden_mse"),
        LossTermConfig("attention_mse"),
        LossTermConfig(
            "minilmv2", params={"relation_heads": 4}, layer_map=LayerMapConfig("last", teacher_layer=3)
        ),
    ]
    obj = Objective(terms, TEACHER, STUDENT)
    s, t = obj.student_request(), obj.teacher_request()
    assert s.hidden_states and t.hidden_states
    assert s.attention_scores == {0, 1} and t.attention_scores == {1, 3}
    assert s.qkv == {1} and t.qkv == {2}
    assert not s.attentions and not t.attentions
    total, parts = obj(outputs(2, 8, 2, 0), outputs(4, 12, 2, 1), BATCH, 0.0)
    assert torch.isfinite(total) and set(parts) == {"hidden_mse", "attention_mse", "minilmv2"}


def test_repeated_terms_get_distinct_names() -> None:
    terms = [
        LossTermConfig("hidden_mse", layer_map=LayerMapConfig("last")),
        LossTermConfig("hidden_mse", params={"include_embeddings": False}),
    ]
    obj = Objective(terms, TEACHER, STUDENT)
    assert obj.names == ["hidden_mse.0", "hidden_mse.1"]


def test_without_teacher_only_hard_ce() -> None:
    obj = Objective([LossTermConfig("hard_ce")], None, STUDENT)
    assert not obj.needs_teacher
    assert obj.teacher_request().is_empty() and obj.student_request().is_empty()
    so = outputs(2, 8, 2, 0)
    total, parts = obj(so, None, BATCH, 0.0)
    torch.testing.assert_close(total, torch.nn.functional.cross_entropy(so.logits, BATCH["labels"]))
    (p,) = validate_objective([LossTermConfig("kd_kl")], None, STUDENT)
    assert p == (
        "objective.0 (kd_kl): kd_kl needs a teacher, but none is configured; set teacher.path or use only "
        "terms that need no teacher (hard_ce)"
    )


def test_bilstm_student_with_logit_terms_is_fine() -> None:
    assert validate_objective([LossTermConfig("kd_kl"), LossTermConfig("hard_ce")], TEACHER, BILSTM) == []


def test_loss_is_computed_in_float32_under_autocast() -> None:
    obj = Objective(
        [LossTermConfig("minilmv2", params={"relation_heads": 2}), LossTermConfig("kd_kl")], TEACHER, STUDENT
    )
    so, to = outputs(2, 8, 2, 0), outputs(4, 12, 2, 1)
    ref, _ = obj(so, to, BATCH, 0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _ = obj(so, to, BATCH, 0.0)
    assert total.dtype == torch.float32
    torch.testing.assert_close(total, ref)


def test_validation_reports_every_problem_at_once() -> None:
    terms = [
        LossTermConfig("hiden_mse"),
        LossTermConfig("kd_kl", params={"temprature": 2.0}),
        LossTermConfig("hidden_mse", layer_map=LayerMapConfig("explicit", pairs=[[1, 9]])),
        LossTermConfig("attention_mse"),
        LossTermConfig("kd_mse", weight=-1.0),
        LossTermConfig("kd_kl", layer_map=LayerMapConfig("last")),
        LossTermConfig("minilm"),
    ]
    problems = validate_objective(terms, TEACHER, info(2, 8, 4))
    expected = [
        "objective.0 (hiden_mse): unknown loss term 'hiden_mse'; valid choices: attention_kl, attention_mse, "
        "embedding_mse, hard_ce, hidden_cos, hidden_mse, kd_kl, kd_mse, kd_soft_ce, lm_ce, lm_jsd, lm_kl, lm_reverse_kl, lm_skew_kl, "
        "lm_skew_reverse_kl, lm_tvd, minilm, minilmv2, pkd. "
        "Did you mean 'hidden_mse'?",
        "objective.1 (kd_kl).params.temprature: kd_kl has no parameter 'temprature'; valid parameters: scale_t2, "
        "temperature. Did you mean 'temperature'?",
        "objective.2 (hidden_mse).layer_map.pairs.0: teacher layer 9 is out of range; valid: 0..4 "
        "(1-based layers, 0 = embeddings)",
        "objective.3 (attention_mse): attention_mse compares attention heads one to one, but the student has 4 "
        "heads and the teacher 2; set student.num_heads=2, or use minilmv2, which relates heads of any count",
        "objective.4 (kd_mse).weight: must be >= 0 throughout training, got -1.0",
        "objective.5 (kd_kl).layer_map: kd_kl compares no intermediate layers; remove layer_map",
        "objective.6 (minilm): minilm compares attention heads one to one, but the student has 4 heads and the "
        "teacher 2; set student.num_heads=2, or use minilmv2, which relates heads of any count",
    ]
    assert problems == expected
    with pytest.raises(ConfigError) as err:
        Objective(terms, TEACHER, info(2, 8, 4))
    assert err.value.problems == expected
    assert str(err.value).startswith("7 configuration problems:")


def test_bilstm_student_features_are_named() -> None:
    problems = validate_objective(
        [
            LossTermConfig("attention_mse"),
            LossTermConfig("pkd", layer_map=LayerMapConfig("last", teacher_layer=99)),
        ],
        TEACHER,
        BILSTM,
    )
    assert problems == [
        "objective.0 (attention_mse): attention_mse needs attention_scores from the student, but the student "
        "(kind 'bilstm', model_type 'bilstm') provides only logits; remove attention_mse or use a transformer "
        "student",
        "objective.1 (pkd): pkd needs hidden_states from the student, but the student (kind 'bilstm', "
        "model_type 'bilstm') provides only logits; remove pkd or use a transformer student",
    ]


def test_regression_objective() -> None:
    teacher, student = info(4, 12, 2, labels=1), info(2, 8, 2, labels=1)
    assert validate_objective([LossTermConfig("kd_mse"), LossTermConfig("hard_ce")], teacher, student) == []
    (p,) = validate_objective([LossTermConfig("kd_soft_ce")], teacher, student)
    assert "kd_soft_ce needs class probabilities, but the task is regression (1 output); use kd_mse" in p


def test_empty_and_malformed_objectives() -> None:
    assert validate_objective([], TEACHER, STUDENT) == [
        "objective: no loss terms; add at least one, e.g. [{name: kd_kl}] or [{name: hard_ce}]"
    ]
    (p,) = validate_objective(
        [LossTermConfig("kd_kl", weight={"schedule": "linear", "start": 1})], TEACHER, STUDENT
    )
    assert p.startswith("objective.0 (kd_kl).weight.end: missing")
    (p,) = validate_objective([LossTermConfig("hidden_mse", params=[1])], TEACHER, STUDENT)
    assert "objective.0 (hidden_mse).params: expected a mapping" in p


def test_gradient_accumulation_split_is_exact() -> None:
    # Every term is a mean over rows of a per-example value, so micro-batches weighted by their share of rows
    # (what the distiller does) reproduce the full batch, even when each micro-batch is padded to its own length.
    lengths = [4, 1, 3, 3]  # 5 and 6 real tokens in the two micro-batches
    n, length = len(lengths), max(lengths)
    mask = torch.tensor([[1] * k + [0] * (length - k) for k in lengths])
    key_pad = (mask == 0)[:, None, None, :]
    g = torch.Generator().manual_seed(3)

    def full(layers: int, width: int) -> ModelOutputs:
        def r(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=g)

        scores = {i: r(n, 2, length, length) for i in range(layers)}
        return ModelOutputs(
            logits=r(n, C),
            hidden_states=tuple(r(n, length, width) for _ in range(layers + 1)),
            attention_scores=scores,
            attentions={i: s.masked_fill(key_pad, float("-inf")).softmax(-1) for i, s in scores.items()},
            qkv={i: (r(n, length, width), r(n, length, width), r(n, length, width)) for i in range(layers)},
        )

    def rows(out: ModelOutputs, idx: list[int]) -> ModelOutputs:
        m = max(lengths[i] for i in idx)  # re-padded to the micro-batch's own longest example
        return ModelOutputs(
            logits=out.logits[idx],
            hidden_states=tuple(h[idx, :m] for h in out.hidden_states),
            attention_scores={k: v[idx, :, :m, :m] for k, v in out.attention_scores.items()},
            attentions={k: v[idx, :, :m, :m] for k, v in out.attentions.items()},
            qkv={k: tuple(x[idx, :m] for x in v) for k, v in out.qkv.items()},
        )

    names = ["kd_kl", "kd_soft_ce", "kd_mse", "hard_ce", "embedding_mse", "hidden_mse", "hidden_cos", "pkd"]
    names += ["attention_mse", "attention_kl", "minilm", "minilmv2"]
    obj = Objective([LossTermConfig(k) for k in names], TEACHER, STUDENT)
    so, to = full(2, 8), full(4, 12)
    labels = torch.tensor([0, 2, 1, 1])
    batch = {"attention_mask": mask, "labels": labels, "is_original": torch.ones(n, dtype=torch.bool)}
    total, parts = obj(so, to, batch, 0.0)

    acc_total = torch.tensor(0.0)
    acc_parts = dict.fromkeys(parts, torch.tensor(0.0))
    for idx in ([0, 1], [2, 3]):
        m = max(lengths[i] for i in idx)
        micro = {
            "attention_mask": mask[idx, :m],
            "labels": labels[idx],
            "is_original": batch["is_original"][idx],
        }
        t, p = obj(rows(so, idx), rows(to, idx), micro, 0.0)
        acc_total = acc_total + t * len(idx) / n
        acc_parts = {k: acc_parts[k] + p[k] * len(idx) / n for k in p}
    torch.testing.assert_close(acc_total.detach(), total.detach())
    for k in parts:
        torch.testing.assert_close(acc_parts[k], parts[k], msg=k)


def test_teacher_outputs_from_inference_mode_can_be_used() -> None:
    # Autograd cannot save inference tensors for backward; the terms must still accept such a teacher.
    names = ["kd_kl", "kd_mse", "hidden_mse", "attention_mse", "minilmv2"]
    obj = Objective([LossTermConfig(k) for k in names], TEACHER, STUDENT)
    so = outputs(2, 8, 2, 0)
    with torch.inference_mode():
        to = outputs(4, 12, 2, 1)
    assert to.logits.is_inference()
    total, _ = obj(so, to, BATCH, 0.0)
    total.backward()
    assert so.logits.grad is not None and so.hidden_states[1].grad is not None
