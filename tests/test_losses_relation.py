"""MiniLM (v1) and MiniLMv2 relation terms against loop references written from the papers."""

from __future__ import annotations

import math

import pytest
import torch

from textdistill.config.schema import LayerMapConfig
from textdistill.errors import ConfigError
from textdistill.losses import LOSSES
from textdistill.models.layer_map import build_layer_map
from textdistill.models.outputs import ALL_FEATURES, ModelInfo, ModelOutputs

B, L = 3, 5
LENGTHS = [5, 3, 2]
MASK = torch.tensor([[1] * n + [0] * (L - n) for n in LENGTHS])
BATCH = {"attention_mask": MASK}


def info(layers: int, width: int, heads: int) -> ModelInfo:
    return ModelInfo("hf", "bert", layers, width, heads, 50, 3, ALL_FEATURES)


def outputs(layers: int, width: int, heads: int, seed: int) -> ModelOutputs:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).requires_grad_(True)

    key_pad = (MASK == 0)[:, None, None, :]
    attentions = {
        i: (2 * torch.randn(B, heads, L, L, generator=g))
        .masked_fill(key_pad, float("-inf"))
        .softmax(-1)
        .requires_grad_(True)
        for i in range(layers)
    }
    qkv = {i: (r(B, L, width), r(B, L, width), r(B, L, width)) for i in range(layers)}
    return ModelOutputs(logits=torch.zeros(B, 3), attentions=attentions, qkv=qkv, num_heads=heads)


def build(
    name: str,
    s: tuple[int, int, int],
    t: tuple[int, int, int],
    params: dict | None = None,
    layer_map: LayerMapConfig | None = None,
):
    """``s`` and ``t`` are (layers, width, heads)."""
    cls = LOSSES.get(name)
    lm = build_layer_map(layer_map, s[0], t[0], default_strategy=cls.default_layer_strategy)
    return cls(params or {}, info(*t), info(*s), lm)


# ------------------------------------------------------------------------------------ references
def kl_rows(pt: torch.Tensor, ps: torch.Tensor) -> tuple[float, int]:
    """Sum over rows of KL(pt[i] || ps[i]) for two (n, n) row-stochastic matrices, and the row count."""
    acc = 0.0
    for i in range(pt.shape[0]):
        for j in range(pt.shape[1]):
            acc += pt[i, j].item() * (math.log(pt[i, j].item()) - math.log(ps[i, j].item()))
    return acc, pt.shape[0]


def relation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """softmax(X Y^T / sqrt(d)) of one head, over the real tokens only (the masking, done by slicing)."""
    return torch.softmax(x @ y.T / math.sqrt(x.shape[-1]), dim=-1)


@torch.no_grad()
def ref_minilm(so: ModelOutputs, to: ModelOutputs, s: int, t: int, heads: int) -> float:
    """L_AT + L_VR, each ``1 / (A_h |x|) sum_a sum_t KL`` per example (MiniLM Eqs. 4-5), averaged over the batch."""
    vs, vt = so.qkv[s][2], to.qkv[t][2]
    ds, dt = vs.shape[-1] // heads, vt.shape[-1] // heads
    total = 0.0
    for b in range(B):
        n = LENGTHS[b]
        at = vr = 0.0
        for a in range(heads):
            at += kl_rows(to.attentions[t][b, a, :n, :n], so.attentions[s][b, a, :n, :n])[0]
            v_s = vs[b, :n, a * ds : (a + 1) * ds]
            v_t = vt[b, :n, a * dt : (a + 1) * dt]
            vr += kl_rows(relation(v_t, v_t), relation(v_s, v_s))[0]
        total += (at + vr) / (heads * n)
    return total / B


@torch.no_grad()
def ref_minilmv2(
    so: ModelOutputs, to: ModelOutputs, s: int, t: int, r_heads: int, relations: list[str]
) -> float:
    idx = {"q": 0, "k": 1, "v": 2}
    total = 0.0
    for rel in relations:
        xs, ys = so.qkv[s][idx[rel[0]]], so.qkv[s][idx[rel[1]]]
        xt, yt = to.qkv[t][idx[rel[0]]], to.qkv[t][idx[rel[1]]]
        ds, dt = xs.shape[-1] // r_heads, xt.shape[-1] // r_heads
        for b in range(B):
            n = LENGTHS[b]
            acc = 0.0
            for h in range(r_heads):
                rel_s = relation(xs[b, :n, h * ds : (h + 1) * ds], ys[b, :n, h * ds : (h + 1) * ds])
                rel_t = relation(xt[b, :n, h * dt : (h + 1) * dt], yt[b, :n, h * dt : (h + 1) * dt])
                acc += kl_rows(rel_t, rel_s)[0]
            total += acc / (r_heads * n) / B
    return total


# ------------------------------------------------------------------------------------ minilm v1
def test_minilm_matches_reference() -> None:
    term = build("minilm", (2, 8, 2), (4, 12, 2))
    so, to = outputs(2, 8, 2, 0), outputs(4, 12, 2, 1)
    assert term.layer_map.attention_keys == ((1, 3),)  # last <-> last
    value = term(so, to, BATCH, 0.0)
    torch.testing.assert_close(value, torch.tensor(ref_minilm(so, to, 1, 3, 2)))
    torch.testing.assert_close(value, torch.tensor(1.8279512))
    req = term.feature_request("teacher")
    assert req.attentions == {3} and req.qkv == {3} and not req.hidden_states


def test_minilm_configured_teacher_layer() -> None:
    term = build("minilm", (2, 8, 2), (4, 12, 2), layer_map=LayerMapConfig(strategy="last", teacher_layer=3))
    so, to = outputs(2, 8, 2, 0), outputs(4, 12, 2, 1)
    torch.testing.assert_close(term(so, to, BATCH, 0.0), torch.tensor(ref_minilm(so, to, 1, 2, 2)))


def test_minilm_needs_equal_heads() -> None:
    with pytest.raises(ConfigError, match="minilm compares attention heads one to one.*use minilmv2"):
        build("minilm", (2, 8, 2), (4, 12, 3))


# ------------------------------------------------------------------------------------ minilmv2
def test_minilmv2_different_widths_and_heads() -> None:
    # Student 8 wide with 2 heads, teacher 12 wide with 3 heads: both split into 4 relation heads.
    term = build("minilmv2", (2, 8, 2), (4, 12, 3), {"relation_heads": 4})
    so, to = outputs(2, 8, 2, 0), outputs(4, 12, 3, 1)
    value = term(so, to, BATCH, 0.0)
    torch.testing.assert_close(value, torch.tensor(ref_minilmv2(so, to, 1, 3, 4, ["qq", "kk", "vv"])))
    torch.testing.assert_close(value, torch.tensor(1.3770825))


def test_minilmv2_ernie_tiny_relations() -> None:
    term = build("minilmv2", (2, 8, 2), (4, 12, 3), {"relation_heads": 2, "relations": ["qk", "vv"]})
    so, to = outputs(2, 8, 2, 0), outputs(4, 12, 3, 1)
    torch.testing.assert_close(
        term(so, to, BATCH, 0.0), torch.tensor(ref_minilmv2(so, to, 1, 3, 2, ["qk", "vv"]))
    )


def test_minilmv2_qk_relation_is_the_attention_distribution() -> None:
    # With R = attention heads, the Q-K relation is softmax(QK^T / sqrt(d_head)): attention_kl on those maps.
    so, to = outputs(2, 8, 2, 0), outputs(2, 12, 2, 1)
    key_pad = (MASK == 0)[:, None, None, :]

    def attention(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        qh, kh = q.view(B, L, 2, -1).transpose(1, 2), k.view(B, L, 2, -1).transpose(1, 2)
        return (
            (qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1]))
            .masked_fill(key_pad, float("-inf"))
            .softmax(-1)
        )

    for out in (so, to):
        out.attentions = {1: attention(out.qkv[1][0], out.qkv[1][1])}
    v2 = build("minilmv2", (2, 8, 2), (2, 12, 2), {"relations": ["qk"]})
    att = LOSSES.get("attention_kl")(
        {}, info(2, 12, 2), info(2, 8, 2), build_layer_map(LayerMapConfig(strategy="last"), 2, 2)
    )
    torch.testing.assert_close(v2(so, to, BATCH, 0.0), att(so, to, BATCH, 0.0))


def test_minilmv2_teacher_layer_reads_only_that_layer() -> None:
    cfg = LayerMapConfig(strategy="last", teacher_layer=2)
    term = build("minilmv2", (2, 8, 2), (4, 12, 2), None, cfg)
    assert term.feature_request("teacher").qkv == {1}
    assert term.feature_request("student").qkv == {1}
    so, to = outputs(2, 8, 2, 0), outputs(4, 12, 2, 1)
    value = term(so, to, BATCH, 0.0)
    torch.testing.assert_close(value, torch.tensor(ref_minilmv2(so, to, 1, 1, 2, ["qq", "kk", "vv"])))
    to.qkv[3] = tuple(torch.randn(B, L, 12) for _ in range(3))  # the last teacher layer is not read
    torch.testing.assert_close(term(so, to, BATCH, 0.0), value)


def test_minilmv2_relation_heads_must_divide_widths() -> None:
    with pytest.raises(ConfigError) as err:
        build("minilmv2", (2, 8, 2), (4, 12, 3))  # default R = teacher heads = 3; 8 % 3 != 0
    assert "relation_heads: 3 relation heads do not divide the student's width 8" in str(err.value)
    assert "[1, 2, 4]" in str(err.value)


def test_minilmv2_bad_relations() -> None:
    with pytest.raises(ConfigError) as err:
        build("minilmv2", (2, 8, 2), (4, 12, 2), {"relations": ["qq", "qx"]})
    assert "relations: ['qx'] not valid; items must be among qq, qk, qv, kq, kk, kv, vq, vk, vv" in str(
        err.value
    )
    with pytest.raises(ConfigError, match="lists an item twice"):
        build("minilmv2", (2, 8, 2), (4, 12, 2), {"relations": ["vv", "vv"]})
    with pytest.raises(ConfigError, match="relation_heads: must be >= 1"):
        build("minilmv2", (2, 8, 2), (4, 12, 2), {"relation_heads": 0})


# ------------------------------------------------------------------------------------ shared properties
CASES = [("minilm", {}), ("minilmv2", {"relation_heads": 4})]


@pytest.mark.parametrize(("name", "params"), CASES)
def test_zero_when_student_copies_teacher(name: str, params: dict) -> None:
    term = build(name, (4, 12, 2), (4, 12, 2), params)
    to = outputs(4, 12, 2, 1)
    so = ModelOutputs(
        logits=to.logits,
        attentions={k: v.detach().clone() for k, v in to.attentions.items()},
        qkv={k: tuple(x.detach().clone() for x in v) for k, v in to.qkv.items()},
    )
    torch.testing.assert_close(term(so, to, BATCH, 0.0), torch.tensor(0.0), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_padded_positions_do_not_change_the_value(name: str, params: dict) -> None:
    term = build(name, (2, 8, 2), (4, 12, 2), params)
    so, to = outputs(2, 8, 2, 0), outputs(4, 12, 2, 1)
    pad = 1 - MASK.float()
    either = 1 - (1 - pad)[:, None, :, None] * (1 - pad)[:, None, None, :]

    def perturbed(out: ModelOutputs, seed: int) -> ModelOutputs:
        g = torch.Generator().manual_seed(seed)
        return ModelOutputs(
            logits=out.logits,
            attentions={
                k: v.detach() + either * torch.rand(v.shape, generator=g) for k, v in out.attentions.items()
            },
            qkv={
                k: tuple(x.detach() + 20 * pad[:, :, None] * torch.randn(x.shape, generator=g) for x in v)
                for k, v in out.qkv.items()
            },
        )

    torch.testing.assert_close(term(perturbed(so, 3), perturbed(to, 4), BATCH, 0.0), term(so, to, BATCH, 0.0))


@pytest.mark.parametrize(("name", "params"), CASES)
def test_gradients_reach_student_only(name: str, params: dict) -> None:
    term = build(name, (2, 8, 2), (4, 12, 2), params)
    so, to = outputs(2, 8, 2, 0), outputs(4, 12, 2, 1)
    term(so, to, BATCH, 0.0).backward()
    used = [so.attentions[1], so.qkv[1][2]] if name == "minilm" else list(so.qkv[1])
    for x in used:
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert so.qkv[0][0].grad is None  # only the mapped layer is read
    teacher = [x for v in to.qkv.values() for x in v] + list(to.attentions.values())
    assert all(x.grad is None for x in teacher)
