"""Causal-LM terms against a float64 numpy reference written out from the papers' formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textdistill.errors import ConfigError, DataError
from textdistill.losses import LOSSES
from textdistill.models.outputs import LOGITS, ModelInfo, ModelOutputs, TokenTopK

B, L, V = 3, 6, 11


def info(vocab: int = V, kind: str = "causal_lm") -> ModelInfo:
    return ModelInfo(kind, "llama", 2, 8, 2, vocab, vocab, frozenset({LOGITS}))


def term(name: str, params: dict | None = None):
    return LOSSES.get(name)(params or {}, info(), info(), None)


def make(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(B, L, V, generator=g, dtype=torch.float64) * 2
    zt = torch.randn(B, L, V, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, V, (B, L), generator=g)
    labels[0, :3] = -100  # a prompt: no loss on predicting tokens 1, 2
    labels[1, 4:] = -100  # right padding
    labels[2, :] = -100  # an example with no loss position at all
    labels[2, 5] = 7
    return zs.float(), zt.float(), labels


# ------------------------------------------------------------------------------- numpy reference
def np_softmax(z: np.ndarray, tau: float) -> np.ndarray:
    z = z.astype(np.float64) / tau
    e = np.exp(z - z.max())
    return e / e.sum()


def np_kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(sum(pi * (np.log(pi) - np.log(qi)) for pi, qi in zip(p, q, strict=True) if pi > 0))


def np_div(name: str, p: np.ndarray, q: np.ndarray, **kw) -> float:
    if name == "lm_kl":
        return np_kl(p, q)
    if name == "lm_reverse_kl":
        return np_kl(q, p)
    if name == "lm_jsd":
        beta = kw["beta"]
        m = beta * p + (1 - beta) * q
        return beta * np_kl(p, m) + (1 - beta) * np_kl(q, m)
    if name == "lm_skew_kl":
        return np_kl(p, kw["alpha"] * p + (1 - kw["alpha"]) * q)
    if name == "lm_skew_reverse_kl":
        return np_kl(q, kw["alpha"] * q + (1 - kw["alpha"]) * p)
    if name == "lm_tvd":
        return 0.5 * float(np.abs(p - q).sum())
    raise AssertionError(name)


def reference(name, zs, zt, labels, tau=1.0, **kw) -> float:
    """Loop over examples and positions: position t (< L-1) counts when labels[b, t+1] != -100."""
    zs, zt, labels = zs.double().numpy(), zt.double().numpy(), labels.numpy()
    per_example = []
    for b in range(zs.shape[0]):
        vals = [
            np_div(name, np_softmax(zt[b, t], tau), np_softmax(zs[b, t], tau), **kw)
            for t in range(zs.shape[1] - 1)
            if labels[b, t + 1] != -100
        ]
        per_example.append(sum(vals) / len(vals) if vals else 0.0)
    return float(np.mean(per_example))


CASES = [
    ("lm_kl", {}),
    ("lm_reverse_kl", {}),
    ("lm_jsd", {"beta": 0.5}),
    ("lm_jsd", {"beta": 0.1}),
    ("lm_jsd", {"beta": 0.9}),
    ("lm_skew_kl", {"alpha": 0.1}),
    ("lm_skew_reverse_kl", {"alpha": 0.3}),
    ("lm_tvd", {}),
]


@pytest.mark.parametrize(("name", "kw"), CASES)
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_matches_numpy_reference(name, kw, tau):
    zs, zt, labels = make()
    got = term(name, {**kw, "temperature": tau})(
        ModelOutputs(logits=zs), ModelOutputs(logits=zt), {"labels": labels}
    )
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(reference(name, zs, zt, labels, tau, **kw), rel=1e-5, abs=1e-7)


def test_scale_t2_multiplies_by_tau_squared():
    zs, zt, labels = make(1)
    base = term("lm_kl", {"temperature": 3.0})(ModelOutputs(zs), ModelOutputs(zt), {"labels": labels})
    scaled = term("lm_kl", {"temperature": 3.0, "scale_t2": True})(
        ModelOutputs(zs), ModelOutputs(zt), {"labels": labels}
    )
    assert scaled.item() == pytest.approx(9.0 * base.item(), rel=1e-6)


def run(name, params, zs, zt, labels):
    return term(name, params)(ModelOutputs(zs), ModelOutputs(zt), {"labels": labels}).item()


def test_jsd_limits_are_forward_and_reverse_kl():
    zs, zt, labels = make(2)
    fwd, rev = run("lm_kl", {}, zs, zt, labels), run("lm_reverse_kl", {}, zs, zt, labels)
    assert run("lm_jsd", {"beta": 0.0}, zs, zt, labels) == fwd
    assert run("lm_jsd", {"beta": 1.0}, zs, zt, labels) == rev
    # The continuous limits: JSD(beta) / beta -> KL(p||q), JSD(beta) / (1 - beta) -> KL(q||p), with the
    # gap shrinking as beta approaches the end (the convergence is slow: O(beta) times a chi^2 term).
    gaps_fwd = [abs(run("lm_jsd", {"beta": e}, zs, zt, labels) / e - fwd) for e in (1e-2, 1e-3, 1e-4)]
    gaps_rev = [abs(run("lm_jsd", {"beta": 1 - e}, zs, zt, labels) / e - rev) for e in (1e-2, 1e-3, 1e-4)]
    assert gaps_fwd == sorted(gaps_fwd, reverse=True) and gaps_fwd[-1] < 1e-2 * fwd
    assert gaps_rev == sorted(gaps_rev, reverse=True) and gaps_rev[-1] < 1e-2 * rev
    eps = 1e-3
    assert run("lm_jsd", {"beta": eps}, zs, zt, labels) < run("lm_jsd", {"beta": 0.5}, zs, zt, labels)


def test_skew_alpha_zero_is_kl_and_symmetric_jsd_is_symmetric():
    zs, zt, labels = make(3)
    assert run("lm_skew_kl", {"alpha": 0.0}, zs, zt, labels) == run("lm_kl", {}, zs, zt, labels)
    assert run("lm_skew_reverse_kl", {"alpha": 0.0}, zs, zt, labels) == run(
        "lm_reverse_kl", {}, zs, zt, labels
    )
    assert run("lm_skew_kl", {"alpha": 0.1}, zs, zt, labels) < run("lm_kl", {}, zs, zt, labels)
    assert run("lm_jsd", {"beta": 0.5}, zs, zt, labels) == pytest.approx(
        run("lm_jsd", {"beta": 0.5}, zt, zs, labels), rel=1e-6
    )


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_masked_positions_never_leak(name, kw):
    zs, zt, labels = make(4)
    clean = run(name, kw, zs, zt, labels)
    dirty_s, dirty_t = zs.clone(), zt.clone()
    # Position t is masked when labels[b, t + 1] == -100; the last position is never compared.
    for b, t in [(0, 0), (0, 1), (1, 3), (1, 4), (1, 5), (2, 0), (2, 3), (0, 5)]:
        dirty_s[b, t] = torch.tensor([float("inf"), float("nan")] + [1e30] * (V - 2))
        dirty_t[b, t] = float("-inf")
    zs_g = dirty_s.clone().requires_grad_(True)
    loss = term(name, kw)(ModelOutputs(zs_g), ModelOutputs(dirty_t), {"labels": labels})
    assert loss.item() == pytest.approx(clean, rel=1e-6)
    loss.backward()
    assert torch.isfinite(zs_g.grad).all()
    assert zs_g.grad[1, 4].abs().sum() == 0


def test_attention_mask_used_without_labels_and_shape_errors():
    zs, zt, _ = make(5)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 4:] = 0
    labels = torch.where(mask.bool(), torch.zeros(B, L, dtype=torch.long), -100)
    t = term("lm_kl")
    by_mask = t(ModelOutputs(zs), ModelOutputs(zt), {"attention_mask": mask})
    by_labels = t(ModelOutputs(zs), ModelOutputs(zt), {"labels": labels})
    assert by_mask.item() == pytest.approx(by_labels.item(), rel=1e-6)
    with pytest.raises(DataError, match=r"labels of shape \(B, L\)"):
        t(ModelOutputs(zs), ModelOutputs(zt), {"labels": labels[:, 0]})
    with pytest.raises(DataError, match="vocabularies"):
        t(ModelOutputs(zs), ModelOutputs(zt[..., :5]), {"labels": labels})


def test_lm_ce_is_shifted_next_token_nll():
    zs, _, labels = make(6)
    got = LOSSES.get("lm_ce")({}, None, info(), None)(ModelOutputs(zs), None, {"labels": labels}).item()
    per_example = []
    for b in range(B):
        vals = [
            -np.log(np_softmax(zs[b, t].double().numpy(), 1.0)[labels[b, t + 1]])
            for t in range(L - 1)
            if labels[b, t + 1] != -100
        ]
        per_example.append(np.mean(vals) if vals else 0.0)
    assert got == pytest.approx(float(np.mean(per_example)), rel=1e-5)


def test_topk_buckets_with_full_k_equal_live_and_smaller_k_bias_down():
    zs, zt, labels = make(7)
    log_pt = torch.log_softmax(zt, -1)
    for name, kw in CASES:
        live = run(name, kw, zs, zt, labels)
        for k in (V, 4, 1):
            top = log_pt.topk(k, dim=-1)
            rest = torch.log1p(-top.values.exp().sum(-1).clamp(max=1.0))
            if k == V:
                rest = torch.full_like(rest, float("-inf"))
            teacher = ModelOutputs(logits=torch.empty(0), token_topk=TokenTopK(top.values, top.indices, rest))
            stored = term(name, kw)(ModelOutputs(zs), teacher, {"labels": labels}).item()
            if k == V:
                assert stored == pytest.approx(live, rel=1e-5, abs=1e-7), name
            else:  # data-processing inequality: bucketing never increases an f-divergence
                assert stored <= live + 1e-6, (name, k)


def test_bucket_reference_for_small_k():
    """k = 2: the loss over (top1, top2, rest) buckets, computed by hand in numpy."""
    zs, zt, labels = make(8)
    k = 2
    log_pt = torch.log_softmax(zt, -1)
    top = log_pt.topk(k, dim=-1)
    rest = torch.log1p(-top.values.exp().sum(-1))
    teacher = ModelOutputs(logits=torch.empty(0), token_topk=TokenTopK(top.values, top.indices, rest))
    got = term("lm_jsd", {"beta": 0.3})(ModelOutputs(zs), teacher, {"labels": labels}).item()
    per_example = []
    for b in range(B):
        vals = []
        for t in range(L - 1):
            if labels[b, t + 1] == -100:
                continue
            p, q = np_softmax(zt[b, t].numpy(), 1.0), np_softmax(zs[b, t].numpy(), 1.0)
            ids = np.argsort(-p)[:k]
            pb = np.append(p[ids], 1 - p[ids].sum())
            qb = np.append(q[ids], 1 - q[ids].sum())
            vals.append(np_div("lm_jsd", pb, qb, beta=0.3))
        per_example.append(np.mean(vals) if vals else 0.0)
    assert got == pytest.approx(float(np.mean(per_example)), rel=1e-4)


def test_topk_store_refuses_temperature():
    zs, zt, labels = make(9)
    top = torch.log_softmax(zt, -1).topk(3, dim=-1)
    teacher = ModelOutputs(
        logits=torch.empty(0), token_topk=TokenTopK(top.values, top.indices, torch.zeros(B, L))
    )
    with pytest.raises(DataError, match="cannot be re-tempered"):
        term("lm_kl", {"temperature": 2.0})(ModelOutputs(zs), teacher, {"labels": labels})


def test_config_problems():
    with pytest.raises(ConfigError, match="between 0 and 1"):
        term("lm_jsd", {"beta": 1.5})
    with pytest.raises(ConfigError, match="identically 0"):
        term("lm_skew_reverse_kl", {"alpha": 1.0})
    with pytest.raises(ConfigError, match="same tokenizer") as err:
        LOSSES.get("lm_kl")({}, info(V), info(V + 1), None)
    assert "sequence-level KD" in str(err.value)
    with pytest.raises(ConfigError, match="use kd_kl for classifiers"):
        LOSSES.get("lm_tvd")({}, info(V, kind="hf"), info(V), None)
