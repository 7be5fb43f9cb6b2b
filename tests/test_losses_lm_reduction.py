"""``reduction: token`` of the causal-LM terms against an independent float64 computation.

Per token: ``sum over every loss position of the batch / number of loss positions`` (TRL's
``generalized_jsd_loss`` and the pooled held-out token KL), on a batch whose examples have different numbers
of loss positions, so that it differs from the per-sequence mean.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textdistill.errors import ConfigError
from textdistill.losses import LOSSES
from textdistill.losses.lm import GLOBAL_LOSS_TOKENS, global_loss_tokens, masked_token_mean
from textdistill.models.outputs import LOGITS, ModelInfo, ModelOutputs, TokenTopK

B, L, V = 3, 7, 13


def info() -> ModelInfo:
    return ModelInfo("causal_lm", "llama", 2, 8, 2, V, V, frozenset({LOGITS}))


def term(name: str, params: dict | None = None):
    return LOSSES.get(name)(params or {}, info(), info(), None)


def make(seed: int = 0):
    """Examples with 6, 2 and 4 loss positions (prompt, right padding, a gap)."""
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(B, L, V, generator=g) * 2
    zt = torch.randn(B, L, V, generator=g) * 2
    labels = torch.randint(0, V, (B, L), generator=g)
    labels[1, 3:] = -100
    labels[2, :2] = -100
    labels[2, 4] = -100
    return zs, zt, labels


def softmax64(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def kl64(p: np.ndarray, q: np.ndarray) -> float:
    return float(sum(pi * np.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0))


def div64(name: str, p: np.ndarray, q: np.ndarray) -> float:
    if name == "lm_kl":
        return kl64(p, q)
    if name == "lm_reverse_kl":
        return kl64(q, p)
    if name == "lm_jsd":  # beta = 0.3
        m = 0.3 * p + 0.7 * q
        return 0.3 * kl64(p, m) + 0.7 * kl64(q, m)
    if name == "lm_tvd":
        return 0.5 * float(np.abs(p - q).sum())
    raise AssertionError(name)


PARAMS = {"lm_kl": {}, "lm_reverse_kl": {}, "lm_jsd": {"beta": 0.3}, "lm_tvd": {}}


def per_position(name, zs, zt, labels, k=None) -> list[list[float]]:
    """Each example's per-position values (float64 numpy), over the vocabulary or k + 1 buckets."""
    out = []
    for b in range(B):
        vals = []
        for t in range(L - 1):
            if labels[b, t + 1] == -100:
                continue
            p, q = softmax64(zt[b, t].numpy()), softmax64(zs[b, t].numpy())
            if k is not None:
                ids = np.argsort(-p, kind="stable")[:k]
                p = np.append(p[ids], 1 - p[ids].sum())
                q = np.append(q[ids], 1 - q[ids].sum())
            vals.append(div64(name, p, q))
        out.append(vals)
    return out


def per_token(values: list[list[float]]) -> float:
    flat = [v for row in values for v in row]
    return sum(flat) / len(flat)


def per_sequence(values: list[list[float]]) -> float:
    return float(np.mean([np.mean(row) if row else 0.0 for row in values]))


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_token_reduction_matches_float64_pooled_mean(name):
    zs, zt, labels = make()
    ref = per_position(name, zs, zt, labels)
    got = term(name, {**PARAMS[name], "reduction": "token"})(
        ModelOutputs(zs), ModelOutputs(zt), {"labels": labels}
    ).item()
    assert got == pytest.approx(per_token(ref), rel=1e-5)
    seq = term(name, PARAMS[name])(ModelOutputs(zs), ModelOutputs(zt), {"labels": labels}).item()
    assert seq == pytest.approx(per_sequence(ref), rel=1e-5)  # the default is still per sequence
    assert abs(per_token(ref) - per_sequence(ref)) > 1e-3 * per_token(ref)  # the batch tells them apart


@pytest.mark.parametrize("name", ["lm_kl", "lm_jsd"])
@pytest.mark.parametrize("k", [1, 4])
def test_token_reduction_with_topk_store(name, k):
    zs, zt, labels = make(3)
    top = torch.log_softmax(zt, -1).topk(k, dim=-1)
    rest = torch.log1p(-top.values.exp().sum(-1))
    teacher = ModelOutputs(logits=torch.empty(0), token_topk=TokenTopK(top.values, top.indices, rest))
    got = term(name, {**PARAMS[name], "reduction": "token"})(ModelOutputs(zs), teacher, {"labels": labels})
    assert got.item() == pytest.approx(per_token(per_position(name, zs, zt, labels, k)), rel=1e-4)


def test_lm_ce_token_reduction_is_torch_cross_entropy():
    zs, _, labels = make(5)
    got = term("lm_ce", {"reduction": "token"})(ModelOutputs(zs), None, {"labels": labels}).item()
    ref = torch.nn.functional.cross_entropy(
        zs[:, :-1].double().reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    assert got == pytest.approx(ref.item(), rel=1e-5)


def test_token_gradient_matches_float64_autograd():
    zs, zt, labels = make(6)
    zs.requires_grad_(True)
    term("lm_kl", {"reduction": "token"})(ModelOutputs(zs), ModelOutputs(zt), {"labels": labels}).backward()
    z64 = zs.detach().double().requires_grad_(True)
    mask = (labels[:, 1:] != -100).double()
    p = torch.softmax(zt[:, :-1].double(), -1)
    kl = (p * (p.log() - torch.log_softmax(z64[:, :-1], -1))).sum(-1)
    ((kl * mask).sum() / mask.sum()).backward()
    assert torch.allclose(zs.grad.double(), z64.grad, rtol=1e-4, atol=1e-7)


def test_no_loss_positions_gives_zero_and_bad_reduction_is_refused():
    values = torch.tensor([[float("nan"), 1.0]])
    assert masked_token_mean(values, torch.zeros(1, 2, dtype=torch.bool), "token").item() == 0.0
    assert masked_token_mean(values, torch.tensor([[False, True]]), "token").item() == 1.0
    with pytest.raises(ConfigError, match="reduction.*choose one of sequence, token"):
        term("lm_kl", {"reduction": "tokens"})
    with pytest.raises(ConfigError, match="reduction"):
        term("lm_ce", {"reduction": "mean"})
    with pytest.raises(ValueError, match="choose one of"):
        masked_token_mean(values, torch.ones(1, 2, dtype=torch.bool), "batch")


def test_micro_batches_with_global_count_add_up_to_the_token_mean():
    """Row-share-weighted micro-batch losses equal the full batch's token mean given the global count."""
    zs, zt, labels = make(4)
    full = {"labels": labels}
    tokens = global_loss_tokens({"input_ids": torch.zeros(B, L, dtype=torch.long), **full})
    assert tokens == (int((labels[:, 1:] != -100).sum()), B)
    ref = per_token(per_position("lm_kl", zs, zt, labels))
    lm_kl = term("lm_kl", {"reduction": "token"})
    parts = [slice(0, 1), slice(1, 3)]

    def accumulated(key: bool) -> float:
        total = 0.0
        for rows in parts:
            batch = {"labels": labels[rows]} | ({GLOBAL_LOSS_TOKENS: tokens} if key else {})
            value = lm_kl(ModelOutputs(zs[rows]), ModelOutputs(zt[rows]), batch).item()
            total += value * (rows.stop - rows.start) / B
        return total

    assert accumulated(True) == pytest.approx(ref, rel=1e-5)
    assert abs(accumulated(False) - ref) > 1e-4 * ref  # each micro-batch's own count would not be exact
    assert global_loss_tokens({"input_ids": torch.zeros(B, L), "labels": torch.zeros(B)}) is None
    # the whole batch as its own global batch: exactly its own count; no loss positions at all: 0
    own = term("lm_kl", {"reduction": "token"})(ModelOutputs(zs), ModelOutputs(zt), full).item()
    assert lm_kl(ModelOutputs(zs), ModelOutputs(zt), full | {GLOBAL_LOSS_TOKENS: tokens}).item() == own
    none = torch.full_like(labels, -100)
    assert (
        lm_kl(ModelOutputs(zs), ModelOutputs(zt), {"labels": none, GLOBAL_LOSS_TOKENS: (0, B)}).item() == 0.0
    )
