"""Attention terms (attention_mse, attention_kl) against loop references from TinyBERT / MiniLM."""

from __future__ import annotations

import math

import pytest
import torch

from textdistill.config.schema import LayerMapConfig
from textdistill.errors import ConfigError
from textdistill.losses import LOSSES
from textdistill.models.layer_map import build_layer_map
from textdistill.models.outputs import ALL_FEATURES, ModelInfo, ModelOutputs

B, L, HEADS = 3, 5, 2
LENGTHS = [5, 3, 1]
MASK = torch.tensor([[1] * n + [0] * (L - n) for n in LENGTHS])
BATCH = {"attention_mask": MASK}


def info(layers: int, width: int, heads: int = HEADS) -> ModelInfo:
    return ModelInfo("hf", "bert", layers, width, heads, 50, 3, ALL_FEATURES)


def probs_from(scores: torch.Tensor) -> torch.Tensor:
    """Attention probabilities as a BERT computes them: padded keys get probability exactly 0."""
    key_pad = (MASK == 0)[:, None, None, :]
    return scores.masked_fill(key_pad, float("-inf")).softmax(-1)


def outputs(layers: int, seed: int, heads: int = HEADS) -> ModelOutputs:
    g = torch.Generator().manual_seed(seed)
    scores = {i: (2 * torch.randn(B, heads, L, L, generator=g)).requires_grad_(True) for i in range(layers)}
    probs = {i: probs_from(s.detach()).requires_grad_(True) for i, s in scores.items()}
    return ModelOutputs(logits=torch.zeros(B, 3), attention_scores=scores, attentions=probs, num_heads=heads)


def build(
    name: str,
    s_layers: int,
    t_layers: int,
    params: dict | None = None,
    layer_map: LayerMapConfig | None = None,
    s_width: int = 8,
    t_width: int = 12,
):
    cls = LOSSES.get(name)
    lm = build_layer_map(layer_map, s_layers, t_layers, default_strategy=cls.default_layer_strategy)
    return cls(params or {}, info(t_layers, t_width), info(s_layers, s_width), lm)


# ------------------------------------------------------------------------------------ references (loops)
@torch.no_grad()
def ref_attention_mse(so: ModelOutputs, to: ModelOutputs, keys) -> float:
    total = 0.0
    for s, t in keys:
        per_example = []
        for b in range(B):
            n = LENGTHS[b]
            acc = 0.0
            for h in range(HEADS):
                for i in range(n):
                    for j in range(n):
                        acc += (
                            so.attention_scores[s][b, h, i, j].item()
                            - to.attention_scores[t][b, h, i, j].item()
                        ) ** 2
            per_example.append(acc / (HEADS * n * n))
        total += sum(per_example) / B
    return total


@torch.no_grad()
def ref_attention_kl(so: ModelOutputs, to: ModelOutputs, keys) -> float:
    total = 0.0
    for s, t in keys:
        per_example = []
        for b in range(B):
            n = LENGTHS[b]
            acc = 0.0
            for h in range(HEADS):
                for i in range(n):
                    for j in range(n):
                        pt, ps = to.attentions[t][b, h, i, j].item(), so.attentions[s][b, h, i, j].item()
                        acc += pt * (math.log(pt) - math.log(ps))
            per_example.append(acc / (HEADS * n))  # MiniLM: 1 / (A_h |x|) per example
        total += sum(per_example) / B
    return total


# ------------------------------------------------------------------------------------ attention_mse
def test_attention_mse_matches_reference() -> None:
    term = build("attention_mse", 2, 4)
    so, to = outputs(2, 0), outputs(4, 1)
    assert term.layer_map.attention_keys == ((0, 1), (1, 3))
    value = term(so, to, BATCH, 0.0)
    torch.testing.assert_close(value, torch.tensor(ref_attention_mse(so, to, [(0, 1), (1, 3)])))
    torch.testing.assert_close(value, torch.tensor(12.3559049))


def test_attention_mse_layer_mean_and_explicit_map() -> None:
    cfg = LayerMapConfig(strategy="explicit", pairs=[[0, 0], [2, 3]])  # the embeddings pair has no attention
    term = build("attention_mse", 2, 4, {"layer_reduction": "mean"}, cfg)
    so, to = outputs(2, 0), outputs(4, 1)
    torch.testing.assert_close(term(so, to, BATCH, 0.0), torch.tensor(ref_attention_mse(so, to, [(1, 2)])))
    assert term.feature_request("student").attention_scores == {1}
    assert term.feature_request("teacher").attention_scores == {2}


def test_attention_kl_matches_reference() -> None:
    term = build("attention_kl", 2, 4)
    so, to = outputs(2, 0), outputs(4, 1)
    value = term(so, to, BATCH, 0.0)
    torch.testing.assert_close(value, torch.tensor(ref_attention_kl(so, to, [(0, 1), (1, 3)])))
    torch.testing.assert_close(value, torch.tensor(2.1533278))


def test_attention_kl_is_finite_when_student_probability_underflows() -> None:
    term = build("attention_kl", 2, 4)
    so, to = outputs(2, 0), outputs(4, 1)
    p = so.attentions[0].detach().clone()
    p[0, 0, 0, 1] = 0.0  # a real key the student gives probability 0
    so.attentions[0] = p
    assert torch.isfinite(term(so, to, BATCH, 0.0))


# ------------------------------------------------------------------------------------ shared properties
NAMES = ["attention_mse", "attention_kl"]


@pytest.mark.parametrize("name", NAMES)
def test_zero_when_student_copies_teacher(name: str) -> None:
    term = build(name, 4, 4, s_width=12)
    to = outputs(4, 1)
    so = ModelOutputs(
        logits=to.logits,
        attention_scores={k: v.detach().clone() for k, v in to.attention_scores.items()},
        attentions={k: v.detach().clone() for k, v in to.attentions.items()},
    )
    torch.testing.assert_close(term(so, to, BATCH, 0.0), torch.tensor(0.0))


@pytest.mark.parametrize("name", NAMES)
def test_padded_positions_do_not_change_the_value(name: str) -> None:
    term = build(name, 2, 4)
    so, to = outputs(2, 0), outputs(4, 1)
    pad = 1 - MASK.float()
    either_padded = 1 - (1 - pad)[:, None, :, None] * (1 - pad)[:, None, None, :]  # query or key padded

    def perturbed(out: ModelOutputs, seed: int) -> ModelOutputs:
        g = torch.Generator().manual_seed(seed)

        def noise(x: torch.Tensor) -> torch.Tensor:
            return x.detach() + 30.0 * either_padded * torch.rand(x.shape, generator=g)

        return ModelOutputs(
            logits=out.logits,
            attention_scores={k: noise(v) for k, v in out.attention_scores.items()},
            attentions={k: noise(v) for k, v in out.attentions.items()},
        )

    torch.testing.assert_close(term(perturbed(so, 5), perturbed(to, 6), BATCH, 0.0), term(so, to, BATCH, 0.0))


@pytest.mark.parametrize(
    ("name", "feature"), [("attention_mse", "attention_scores"), ("attention_kl", "attentions")]
)
def test_gradients_reach_student_only(name: str, feature: str) -> None:
    term = build(name, 2, 4)
    so, to = outputs(2, 0), outputs(4, 1)
    term(so, to, BATCH, 0.0).backward()
    for x in getattr(so, feature).values():
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        # Positions with a padded query or key get no gradient.
        assert x.grad[2, :, 1:, :].abs().sum() == 0 and x.grad[2, :, :, 1:].abs().sum() == 0
    for x in list(to.attention_scores.values()) + list(to.attentions.values()):
        assert x.grad is None
    assert list(term.parameters()) == []


def test_widths_may_differ_but_heads_must_match() -> None:
    build("attention_mse", 2, 4, s_width=4, t_width=16)  # widths are irrelevant for L x L maps
    for name in NAMES:
        cls = LOSSES.get(name)
        with pytest.raises(ConfigError) as err:
            cls({}, info(4, 12, heads=4), info(2, 8, heads=2), None)
        assert (
            f"{name} compares attention heads one to one, but the student has 2 heads and the teacher 4"
            in str(err.value)
        )
        assert "student.num_heads=4" in str(err.value)


def test_layer_map_without_attention_pairs() -> None:
    with pytest.raises(ConfigError, match="the embeddings \\(0\\) have no attention"):
        build("attention_kl", 2, 4, layer_map=LayerMapConfig(strategy="explicit", pairs=[[0, 0]]))


def test_unknown_param() -> None:
    with pytest.raises(
        ConfigError, match="attention_mse has no parameter 'temperature'; valid parameters: layer_reduction"
    ):
        build("attention_mse", 2, 4, {"temperature": 1.0})
