"""Hidden-state terms (embedding_mse, hidden_mse, hidden_cos, pkd) against loop references from the papers."""

from __future__ import annotations

import pytest
import torch

from textdistill.config.schema import LayerMapConfig
from textdistill.errors import ConfigError, ModelError
from textdistill.losses import LOSSES
from textdistill.models.layer_map import build_layer_map
from textdistill.models.outputs import ALL_FEATURES, ModelInfo, ModelOutputs

B, L = 3, 6
LENGTHS = [6, 4, 2]
MASK = torch.tensor([[1] * n + [0] * (L - n) for n in LENGTHS])
BATCH = {"attention_mask": MASK, "input_ids": torch.zeros(B, L, dtype=torch.long)}


def info(layers: int, width: int) -> ModelInfo:
    return ModelInfo("hf", "bert", layers, width, 2, 50, 3, ALL_FEATURES)


def outputs(layers: int, width: int, seed: int) -> ModelOutputs:
    g = torch.Generator().manual_seed(seed)
    states = tuple(torch.randn(B, L, width, generator=g).requires_grad_(True) for _ in range(layers + 1))
    return ModelOutputs(logits=torch.zeros(B, 3), hidden_states=states, attention_mask=MASK)


def copy_of(out: ModelOutputs) -> ModelOutputs:
    states = tuple(h.detach().clone().requires_grad_(True) for h in out.hidden_states)
    return ModelOutputs(logits=out.logits, hidden_states=states, attention_mask=MASK)


def build(
    name: str,
    params: dict | None,
    s_layers: int,
    s_width: int,
    t_layers: int,
    t_width: int,
    layer_map: LayerMapConfig | None = None,
):
    cls = LOSSES.get(name)
    lm = None
    if cls.default_layer_strategy is not None:
        lm = build_layer_map(layer_map, s_layers, t_layers, default_strategy=cls.default_layer_strategy)
    t = cls(params or {}, info(t_layers, t_width), info(s_layers, s_width), lm)
    # Seeded projection weights, so golden values do not depend on nn.Linear's init scheme.
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for lin in t.projections.maps:
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.3)
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * 0.1)
    return t


# ------------------------------------------------------------------------------------ references (loops)
def proj(term, pair_index: int, x: torch.Tensor) -> torch.Tensor:
    """W x + b for one token vector, with the term's weights (identity when there is no projection)."""
    maps = term.projections.maps
    if len(maps) == 0:
        return x
    lin = maps[0] if len(maps) == 1 else maps[pair_index]
    return torch.mv(lin.weight, x) + lin.bias


@torch.no_grad()
def ref_token_mse(term, so, to, pairs) -> float:
    """Sum over pairs of the batch mean of each example's MSE over its real tokens and the features."""
    total = 0.0
    for p, (s, t) in enumerate(pairs):
        d = to.hidden_states[t].shape[-1]
        per_example = []
        for b in range(B):
            acc = 0.0
            for i in range(LENGTHS[b]):
                diff = proj(term, p, so.hidden_states[s][b, i]) - to.hidden_states[t][b, i]
                acc += float((diff**2).sum())
            per_example.append(acc / (LENGTHS[b] * d))
        total += sum(per_example) / B
    return total


@torch.no_grad()
def ref_cos(term, so, to, pairs) -> float:
    total = 0.0
    for p, (s, t) in enumerate(pairs):
        per_example = []
        for b in range(B):
            acc = 0.0
            for i in range(LENGTHS[b]):
                u, v = proj(term, p, so.hidden_states[s][b, i]), to.hidden_states[t][b, i]
                acc += 1.0 - float(u @ v) / (float(u.norm()) * float(v.norm()))
            per_example.append(acc / LENGTHS[b])
        total += sum(per_example) / B
    return total


@torch.no_grad()
def ref_pkd(term, so, to, pairs) -> float:
    per_pair = []
    for p, (s, t) in enumerate(pairs):
        acc = 0.0
        for b in range(B):
            u = proj(term, p, so.hidden_states[s][b, 0])
            v = to.hidden_states[t][b, 0]
            acc += float(((u / u.norm() - v / v.norm()) ** 2).sum())
        per_pair.append(acc / (B * to.hidden_states[t].shape[-1]))
    return sum(per_pair) / len(per_pair)


# ------------------------------------------------------------------------------------ values
def test_hidden_mse_different_widths_matches_reference() -> None:
    term = build("hidden_mse", None, 2, 8, 4, 12)
    so, to = outputs(2, 8, 0), outputs(4, 12, 1)
    assert term.pairs == ((0, 0), (1, 2), (2, 4))
    assert len(term.projections.maps) == 3  # one W per matched pair
    value = term(so, to, BATCH, 0.0)
    torch.testing.assert_close(value, torch.tensor(ref_token_mse(term, so, to, term.pairs)))
    torch.testing.assert_close(value, torch.tensor(5.1070814))


def test_hidden_mse_shared_projection() -> None:
    term = build("hidden_mse", {"shared_projection": True}, 2, 8, 4, 12)
    assert len(term.projections.maps) == 1  # TinyBERT's single W_h
    so, to = outputs(2, 8, 0), outputs(4, 12, 1)
    torch.testing.assert_close(
        term(so, to, BATCH, 0.0), torch.tensor(ref_token_mse(term, so, to, term.pairs))
    )


def test_hidden_mse_without_embeddings_and_mean() -> None:
    term = build("hidden_mse", {"include_embeddings": False, "layer_reduction": "mean"}, 3, 12, 6, 12)
    assert term.pairs == ((1, 2), (2, 4), (3, 6))
    so, to = outputs(3, 12, 2), outputs(6, 12, 3)
    ref = ref_token_mse(term, so, to, term.pairs) / 3
    torch.testing.assert_close(term(so, to, BATCH, 0.0), torch.tensor(ref))


def test_embedding_mse_matches_reference() -> None:
    term = build("embedding_mse", None, 2, 8, 4, 12)
    assert term.layer_map is None
    so, to = outputs(2, 8, 0), outputs(4, 12, 1)
    value = term(so, to, BATCH, 0.0)
    torch.testing.assert_close(value, torch.tensor(ref_token_mse(term, so, to, [(0, 0)])))
    torch.testing.assert_close(value, torch.tensor(1.6582589))


def test_hidden_cos_matches_reference() -> None:
    term = build("hidden_cos", None, 2, 8, 4, 12)
    assert term.pairs == ((2, 4),)  # DistilBERT: last layers
    so, to = outputs(2, 8, 0), outputs(4, 12, 1)
    value = term(so, to, BATCH, 0.0)
    torch.testing.assert_close(value, torch.tensor(ref_cos(term, so, to, term.pairs)))
    torch.testing.assert_close(value, torch.tensor(1.1411353))


def test_pkd_matches_reference() -> None:
    term = build("pkd", None, 3, 8, 6, 12)
    assert term.pairs == ((1, 2), (2, 4))  # PKD-Skip; the last student layer is left to the logit loss
    so, to = outputs(3, 8, 4), outputs(6, 12, 5)
    value = term(so, to, BATCH, 0.0)
    torch.testing.assert_close(value, torch.tensor(ref_pkd(term, so, to, term.pairs)))
    torch.testing.assert_close(value, torch.tensor(0.16111883))
    term_all = build("pkd", {"exclude_last": False}, 3, 8, 6, 12)
    assert term_all.pairs == ((1, 2), (2, 4), (3, 6))


def test_pkd_ignores_vector_norms() -> None:
    term = build("pkd", None, 3, 12, 6, 12)
    so, to = outputs(3, 12, 4), outputs(6, 12, 5)
    scaled = ModelOutputs(logits=so.logits, hidden_states=tuple(3.0 * h for h in so.hidden_states))
    torch.testing.assert_close(term(scaled, to, BATCH, 0.0), term(so, to, BATCH, 0.0))


# ------------------------------------------------------------------------------------ shared properties
ALL = ["embedding_mse", "hidden_mse", "hidden_cos", "pkd"]


@pytest.mark.parametrize("name", ALL)
def test_zero_when_student_copies_teacher(name: str) -> None:
    term = build(name, None, 4, 12, 4, 12)
    assert len(term.projections.maps) == 0  # same widths: no projection
    to = outputs(4, 12, 1)
    torch.testing.assert_close(term(copy_of(to), to, BATCH, 0.0), torch.tensor(0.0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_padding_does_not_change_the_value(name: str) -> None:
    term = build(name, None, 2, 8, 4, 12)
    so, to = outputs(2, 8, 0), outputs(4, 12, 1)
    pad = (1 - MASK)[:, :, None].float()

    def perturbed(out: ModelOutputs, seed: int) -> ModelOutputs:
        g = torch.Generator().manual_seed(seed)
        states = tuple(h.detach() + 50.0 * pad * torch.randn(h.shape, generator=g) for h in out.hidden_states)
        return ModelOutputs(logits=out.logits, hidden_states=states)

    torch.testing.assert_close(term(perturbed(so, 7), perturbed(to, 8), BATCH, 0.0), term(so, to, BATCH, 0.0))


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_student_and_projections_only(name: str) -> None:
    term = build(name, None, 3, 8, 6, 12)
    so, to = outputs(3, 8, 0), outputs(6, 12, 1)
    term(so, to, BATCH, 0.0).backward()
    used = {s for s, _ in term.pairs}
    for i, h in enumerate(so.hidden_states):
        if i in used:
            assert h.grad is not None and torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0, i
        else:
            assert h.grad is None, i
    for p in term.projections.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert all(h.grad is None for h in to.hidden_states)
    assert len(list(term.parameters())) == 2 * len(term.pairs)


def test_feature_request() -> None:
    term = build("hidden_mse", None, 2, 8, 4, 12)
    for side in ("student", "teacher"):
        req = term.feature_request(side)
        assert req.hidden_states and not req.attentions and not req.attention_scores and not req.qkv


def test_missing_hidden_states_names_the_fix() -> None:
    term = build("hidden_mse", None, 2, 8, 4, 12)
    with pytest.raises(ModelError, match=r"objective.student_request\(\)"):
        term(ModelOutputs(logits=torch.zeros(B, 3)), outputs(4, 12, 1), BATCH, 0.0)


# ------------------------------------------------------------------------------------ config errors
def test_pkd_without_pairs_is_rejected() -> None:
    with pytest.raises(ConfigError, match="pkd has no layer pairs to compare"):
        build("pkd", None, 2, 8, 4, 12, LayerMapConfig(strategy="last"))


def test_unknown_param_and_bad_choice() -> None:
    with pytest.raises(ConfigError) as err:
        build("hidden_mse", {"shared_proj": True, "layer_reduction": "max"}, 2, 8, 4, 12)
    msg = str(err.value)
    assert (
        "hidden_mse has no parameter 'shared_proj'; valid parameters: include_embeddings, layer_reduction, "
        "projection_init, shared_projection. Did you mean 'shared_projection'?" in msg
    )
    assert "layer_reduction: 'max' is not valid; choose one of sum, mean" in msg


def test_projection_init_is_tinybert_normal_by_default_or_torch() -> None:
    def projection(params: dict) -> torch.nn.Linear:  # as built, without build()'s seeded weights
        lm = build_layer_map(None, 2, 4, default_strategy="uniform")
        return LOSSES.get("hidden_mse")(params, info(4, 64), info(2, 8), lm).projections.maps[0]

    torch.manual_seed(0)
    normal = projection({})
    assert torch.count_nonzero(normal.bias) == 0
    assert 0.015 < normal.weight.std().item() < 0.025  # N(0, 0.02) over 64 x 8 weights
    torch.manual_seed(0)
    default = projection({"projection_init": "torch"})
    bound = 1 / 8**0.5  # nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias too
    assert default.weight.abs().max().item() <= bound and default.weight.std().item() > 0.1
    assert torch.count_nonzero(default.bias) > 0
    with pytest.raises(
        ConfigError, match="projection_init: 'xavier' is not valid; choose one of normal, torch"
    ):
        build("hidden_mse", {"projection_init": "xavier"}, 2, 8, 4, 64)
