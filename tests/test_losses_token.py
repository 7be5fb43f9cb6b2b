"""Per-token logit terms (token classification) against loop references over the labelled positions."""

from __future__ import annotations

import math

import pytest
import torch

from textdistill.losses import LOSSES
from textdistill.models.outputs import ALL_FEATURES, ModelInfo, ModelOutputs

C = 3
# sentence 0: words at positions 1 and 2; sentence 1: one word at position 1; sentence 2: words at 1, 2, 3
MASK = torch.tensor([[0, 1, 1, 0, 0], [0, 1, 0, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.bool)
LABELS = torch.tensor([[-100, 2, 0, -100, -100], [-100, -100, -100, -100, -100], [-100, 1, 1, 0, -100]])


def info() -> ModelInfo:
    return ModelInfo("hf", "bert", 2, 8, 2, 50, C, ALL_FEATURES)


def logits(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(3, 5, C, generator=g) * 2).requires_grad_(True)


def run(name: str, zs, zt, params=None, batch=None) -> torch.Tensor:
    t = LOSSES.get(name)(params or {}, info(), info(), None)
    batch = batch if batch is not None else {"token_mask": MASK, "labels": LABELS}
    return t(ModelOutputs(logits=zs), ModelOutputs(logits=zt), batch, 0.0)


def softmax(z: list[float], tau: float) -> list[float]:
    e = [math.exp(v / tau) for v in z]
    return [v / sum(e) for v in e]


def ref(per_position, mask=MASK) -> float:
    """(1/B) sum_b mean over b's masked positions of per_position(b, i)."""
    rows = []
    for b in range(mask.shape[0]):
        pos = [i for i in range(mask.shape[1]) if mask[b, i]]
        rows.append(sum(per_position(b, i) for i in pos) / len(pos))
    return sum(rows) / len(rows)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_token_kd_kl_golden(tau):
    zs, zt = logits(0), logits(1)

    def kl(b, i):
        ps, pt = softmax(zs[b, i].tolist(), tau), softmax(zt[b, i].tolist(), tau)
        return sum(pt[c] * (math.log(pt[c]) - math.log(ps[c])) for c in range(C))

    got = run("kd_kl", zs, zt, {"temperature": tau})
    assert got.item() == pytest.approx(tau**2 * ref(kl), rel=1e-5)


def test_token_kd_soft_ce_golden():
    zs, zt = logits(2), logits(3)

    def ce(b, i):
        ps, pt = softmax(zs[b, i].tolist(), 2.0), softmax(zt[b, i].tolist(), 2.0)
        return -sum(pt[c] * math.log(ps[c]) for c in range(C))

    assert run("kd_soft_ce", zs, zt, {"temperature": 2.0}).item() == pytest.approx(ref(ce), rel=1e-5)


def test_token_kd_mse_golden():
    zs, zt = logits(4), logits(5)

    def se(b, i):
        return sum((zs[b, i, c].item() - zt[b, i, c].item()) ** 2 for c in range(C)) / C

    assert run("kd_mse", zs, zt).item() == pytest.approx(ref(se), rel=1e-5)


def test_token_hard_ce_golden_skips_unlabelled_rows():
    zs = logits(6)

    def ce(b, i):
        p = softmax(zs[b, i].tolist(), 1.0)
        return -math.log(p[int(LABELS[b, i])])

    # sentence 1 has no gold tag (an unlabelled sentence): it is not averaged in
    expected = (sum(ce(0, i) for i in (1, 2)) / 2 + sum(ce(2, i) for i in (1, 2, 3)) / 3) / 2
    assert run("hard_ce", zs, None).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["kd_kl", "kd_soft_ce", "kd_mse"])
def test_unlabelled_positions_do_not_count(name):
    zs, zt = logits(7), logits(8)
    base = run(name, zs, zt).item()
    zs2, zt2 = zs.detach().clone(), zt.detach().clone()
    zs2[~MASK] = 50.0  # special tokens, continuation sub-tokens, padding: any value
    zt2[~MASK] = -50.0
    assert run(name, zs2, zt2).item() == pytest.approx(base, rel=1e-6)


@pytest.mark.parametrize("name", ["kd_kl", "kd_soft_ce", "kd_mse", "hard_ce"])
def test_micro_batches_weighted_by_rows_reproduce_the_batch(name):
    zs, zt = logits(9), logits(10)
    full = run(name, zs, zt)
    parts = [[0, 1], [2]]
    # soft terms: each part weighted by its share of rows; hard_ce by its share of rows with gold tags
    # (row 1 has none), as losses/token.py documents
    weights = [1 / 2, 1 / 2] if name == "hard_ce" else [2 / 3, 1 / 3]
    total = sum(
        w * run(name, zs[p], zt[p], batch={"token_mask": MASK[p], "labels": LABELS[p]})
        for p, w in zip(parts, weights)
    )
    assert total.item() == pytest.approx(full.item(), rel=1e-5)


def test_token_kd_gradient_reaches_only_labelled_positions():
    zs, zt = logits(11), logits(12)
    run("kd_kl", zs, zt, {"temperature": 2.0}).backward()
    assert torch.all(zs.grad[~MASK] == 0)
    assert torch.all(zs.grad[MASK].abs().sum(-1) > 0)


def test_positions_fall_back_to_labels_and_fail_clearly_without_either():
    from textdistill.errors import DataError

    zs, zt = logits(13), logits(14)
    by_labels = run("kd_mse", zs, zt, batch={"labels": torch.where(MASK, 0, -100)})
    assert by_labels.item() == pytest.approx(run("kd_mse", zs, zt).item(), rel=1e-6)
    with pytest.raises(DataError, match="token_mask"):
        run("kd_mse", zs, zt, batch={})
