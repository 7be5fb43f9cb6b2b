"""Logit terms (kd_kl, kd_soft_ce, kd_mse, hard_ce) against references written from the papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch

from textdistill.errors import ConfigError, DataError
from textdistill.losses import LOSSES
from textdistill.models.outputs import ALL_FEATURES, ModelInfo, ModelOutputs

B, C = 4, 3


def info(num_labels: int = C) -> ModelInfo:
    return ModelInfo("hf", "bert", 2, 8, 2, 50, num_labels, ALL_FEATURES)


def logits_pair(seed: int = 0, c: int = C) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    zs = (torch.randn(B, c, generator=g) * 2).requires_grad_(True)
    zt = (torch.randn(B, c, generator=g) * 2).requires_grad_(True)
    return zs, zt


def term(name: str, params: dict | None = None, num_labels: int = C):
    return LOSSES.get(name)(params or {}, info(num_labels), info(num_labels), None)


def run(
    name: str,
    zs: torch.Tensor,
    zt: torch.Tensor,
    params: dict | None = None,
    batch: dict | None = None,
    progress: float = 0.0,
) -> torch.Tensor:
    t = term(name, params, zs.shape[1])
    return t(ModelOutputs(logits=zs), ModelOutputs(logits=zt), batch or {}, progress)


# ------------------------------------------------------------------------------------ references (loops)
def softmax_row(z: list[float], tau: float) -> list[float]:
    e = [math.exp(v / tau) for v in z]
    return [v / sum(e) for v in e]


def ref_kd_kl(zs: torch.Tensor, zt: torch.Tensor, tau: float, t2: bool = True) -> float:
    total = 0.0
    for b in range(zs.shape[0]):
        ps, pt = softmax_row(zs[b].tolist(), tau), softmax_row(zt[b].tolist(), tau)
        total += sum(pt[c] * (math.log(pt[c]) - math.log(ps[c])) for c in range(len(ps)))
    return total / zs.shape[0] * (tau**2 if t2 else 1.0)


def ref_soft_ce(zs: torch.Tensor, zt: torch.Tensor, tau: float) -> float:
    total = 0.0
    for b in range(zs.shape[0]):
        ps, pt = softmax_row(zs[b].tolist(), tau), softmax_row(zt[b].tolist(), tau)
        total += -sum(pt[c] * math.log(ps[c]) for c in range(len(ps)))
    return total / zs.shape[0]


# ------------------------------------------------------------------------------------ kd_kl
@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_kd_kl_matches_reference(tau: float) -> None:
    zs, zt = logits_pair()
    value = run("kd_kl", zs, zt, {"temperature": tau})
    torch.testing.assert_close(value, torch.tensor(ref_kd_kl(zs, zt, tau)))


def test_kd_kl_golden() -> None:
    zs, zt = logits_pair()
    torch.testing.assert_close(run("kd_kl", zs, zt, {"temperature": 2.0}), torch.tensor(2.9070587))


def test_kd_kl_t2_factor() -> None:
    zs, zt = logits_pair()
    with_t2 = run("kd_kl", zs, zt, {"temperature": 4.0})
    without = run("kd_kl", zs, zt, {"temperature": 4.0, "scale_t2": False})
    torch.testing.assert_close(with_t2, 16.0 * without)


def test_kd_kl_high_temperature_limit_is_logit_matching() -> None:
    # Hinton et al. Sec. 2.1: for large tau, tau^2 * KL -> 1/(2C) * sum_c (d_c - mean(d))^2 with d = z_T - z_S,
    # so with the tau^2 factor the loss stays O(1) instead of vanishing as 1/tau^2.
    zs, zt = logits_pair()
    d = (zt - zs).detach()
    limit = ((d - d.mean(-1, keepdim=True)) ** 2).sum(-1).mean() / (2 * C)
    torch.testing.assert_close(run("kd_kl", zs, zt, {"temperature": 100.0}), limit, rtol=2e-2, atol=0)


def test_kd_kl_temperature_schedule() -> None:
    zs, zt = logits_pair()
    sched = {"schedule": "linear", "start": 4.0, "end": 1.0}
    torch.testing.assert_close(
        run("kd_kl", zs, zt, {"temperature": sched}, progress=0.5), torch.tensor(ref_kd_kl(zs, zt, 2.5))
    )
    torch.testing.assert_close(
        run("kd_kl", zs, zt, {"temperature": sched}, progress=1.0), torch.tensor(ref_kd_kl(zs, zt, 1.0))
    )


# ------------------------------------------------------------------------------------ kd_soft_ce
def test_kd_soft_ce_matches_reference_and_golden() -> None:
    zs, zt = logits_pair()
    value = run("kd_soft_ce", zs, zt, {"temperature": 2.0})
    torch.testing.assert_close(value, torch.tensor(ref_soft_ce(zs, zt, 2.0)))
    torch.testing.assert_close(value, torch.tensor(1.6123175))
    # No tau^2 by default (TinyBERT); scale_t2 adds it.
    torch.testing.assert_close(run("kd_soft_ce", zs, zt, {"temperature": 2.0, "scale_t2": True}), 4.0 * value)


def test_kd_soft_ce_is_kl_plus_teacher_entropy() -> None:
    zs, zt = logits_pair()
    pt = torch.softmax(zt.detach() / 3.0, -1)
    entropy = -(pt * pt.log()).sum(-1).mean()
    ce = run("kd_soft_ce", zs, zt, {"temperature": 3.0})
    kl = run("kd_kl", zs, zt, {"temperature": 3.0, "scale_t2": False})
    torch.testing.assert_close(ce, kl + entropy)


def test_kd_soft_ce_is_textbrewer_ce_and_c_times_tinybert_release() -> None:
    """Eq. 10 / TextBrewer's ``kd_ce_loss`` sum over classes; TinyBERT's ``soft_cross_entropy`` averages them."""
    zs, zt = logits_pair()
    tau, c = 2.0, zs.shape[-1]
    value = run("kd_soft_ce", zs, zt, {"temperature": tau})
    p_t, log_p_s = torch.softmax(zt.detach() / tau, -1), torch.log_softmax(zs.detach() / tau, -1)
    textbrewer = -(p_t * log_p_s).sum(dim=-1).mean()
    tinybert_release = (-p_t * log_p_s).mean()
    torch.testing.assert_close(value, textbrewer)
    torch.testing.assert_close(value, c * tinybert_release)
    assert c > 1  # the factor is visible


# ------------------------------------------------------------------------------------ kd_mse
def test_kd_mse_matches_reference_and_golden() -> None:
    zs, zt = logits_pair()
    ref = sum((zs[b, c].item() - zt[b, c].item()) ** 2 for b in range(B) for c in range(C)) / (B * C)
    value = run("kd_mse", zs, zt)
    torch.testing.assert_close(value, torch.tensor(ref))
    torch.testing.assert_close(value, torch.tensor(9.0235035))


def test_kd_mse_regression_single_logit() -> None:
    zs, zt = logits_pair(c=1)
    ref = sum((zs[b, 0].item() - zt[b, 0].item()) ** 2 for b in range(B)) / B
    torch.testing.assert_close(run("kd_mse", zs, zt), torch.tensor(ref))


# ------------------------------------------------------------------------------------ shared properties
@pytest.mark.parametrize("name", ["kd_kl", "kd_mse"])
def test_zero_when_student_copies_teacher(name: str) -> None:
    _, zt = logits_pair()
    value = run(name, zt.detach().clone(), zt, {"temperature": 2.0} if name == "kd_kl" else None)
    torch.testing.assert_close(value, torch.tensor(0.0))


def test_soft_ce_of_copy_is_teacher_entropy_with_zero_gradient() -> None:
    _, zt = logits_pair()
    zs = zt.detach().clone().requires_grad_(True)
    value = run("kd_soft_ce", zs, zt)
    pt = torch.softmax(zt.detach(), -1)
    torch.testing.assert_close(value, -(pt * pt.log()).sum(-1).mean())
    value.backward()
    torch.testing.assert_close(zs.grad, torch.zeros_like(zs))


@pytest.mark.parametrize("name", ["kd_kl", "kd_soft_ce", "kd_mse"])
def test_gradients_reach_student_only(name: str) -> None:
    zs, zt = logits_pair()
    run(name, zs, zt, {"temperature": 2.0} if name != "kd_mse" else None).backward()
    assert zs.grad is not None and torch.isfinite(zs.grad).all() and zs.grad.abs().sum() > 0
    assert zt.grad is None


def test_fp16_teacher_logits_are_upcast() -> None:
    zs, zt = logits_pair()
    value = run("kd_kl", zs, zt.detach().half(), {"temperature": 2.0})
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, torch.tensor(ref_kd_kl(zs, zt.detach().half().float(), 2.0)))


# ------------------------------------------------------------------------------------ hard_ce
def test_hard_ce_uses_only_original_rows() -> None:
    zs, _ = logits_pair()
    labels = torch.tensor([0, 2, 1, 2])
    keep = torch.tensor([True, False, True, True])
    ref = 0.0
    for b in (0, 2, 3):
        ref += -math.log(softmax_row(zs[b].tolist(), 1.0)[labels[b]])
    value = run("hard_ce", zs, None, batch={"labels": labels, "is_original": keep})
    torch.testing.assert_close(value, torch.tensor(ref / 3))
    torch.testing.assert_close(value, torch.tensor(0.27530792))
    # Without is_original every row counts.
    all_rows = run("hard_ce", zs, None, batch={"labels": labels})
    ref_all = sum(-math.log(softmax_row(zs[b].tolist(), 1.0)[labels[b]]) for b in range(B)) / B
    torch.testing.assert_close(all_rows, torch.tensor(ref_all))


def test_hard_ce_needs_no_teacher_and_skips_unlabelled() -> None:
    zs, _ = logits_pair()
    t = LOSSES.get("hard_ce")({}, None, info(), None)
    assert t.feature_request("teacher").is_empty()
    labels = torch.tensor([1, -100, -100, 0])
    value = t(ModelOutputs(logits=zs), None, {"labels": labels}, 0.0)
    ref = (-math.log(softmax_row(zs[0].tolist(), 1.0)[1]) - math.log(softmax_row(zs[3].tolist(), 1.0)[0])) / 2
    torch.testing.assert_close(value, torch.tensor(ref))


def test_hard_ce_no_original_rows_is_zero_with_graph() -> None:
    zs, _ = logits_pair()
    value = run(
        "hard_ce",
        zs,
        None,
        batch={"labels": torch.zeros(B, dtype=torch.long), "is_original": torch.zeros(B, dtype=torch.bool)},
    )
    assert value.item() == 0.0
    value.backward()  # still part of the graph: a step on an all-augmented batch does not crash
    torch.testing.assert_close(zs.grad, torch.zeros_like(zs))


def test_hard_ce_regression_is_mse() -> None:
    zs, _ = logits_pair(c=1)
    y = torch.tensor([0.5, -1.0, 2.0, 3.5])
    keep = torch.tensor([True, True, False, True])
    ref = sum((zs[b, 0].item() - y[b].item()) ** 2 for b in (0, 1, 3)) / 3
    value = run("hard_ce", zs, None, batch={"labels": y, "is_original": keep})
    torch.testing.assert_close(value, torch.tensor(ref))


def test_hard_ce_label_smoothing() -> None:
    zs, _ = logits_pair()
    labels = torch.tensor([0, 2, 1, 2])
    eps = 0.1
    ref = 0.0
    for b in range(B):
        logp = [math.log(p) for p in softmax_row(zs[b].tolist(), 1.0)]
        ref += -(1 - eps) * logp[labels[b]] - eps / C * sum(logp)
    value = run("hard_ce", zs, None, {"label_smoothing": eps}, batch={"labels": labels})
    torch.testing.assert_close(value, torch.tensor(ref / B))


def test_hard_ce_without_labels_is_data_error() -> None:
    zs, _ = logits_pair()
    with pytest.raises(DataError, match="hard_ce needs labels"):
        run("hard_ce", zs, None, batch={"input_ids": torch.zeros(B, 2)})


# ------------------------------------------------------------------------------------ config errors
def test_unknown_parameter_lists_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        term("kd_kl", {"temprature": 2.0})
    assert "kd_kl has no parameter 'temprature'; valid parameters: scale_t2, temperature." in str(err.value)
    assert "Did you mean 'temperature'?" in str(err.value)


def test_bad_temperature_values() -> None:
    with pytest.raises(ConfigError, match=r"temperature: must be > 0.0 throughout training"):
        term("kd_kl", {"temperature": {"schedule": "linear", "start": 2, "end": 0}})
    with pytest.raises(ConfigError, match=r"scale_t2: expected true or false, got 'yes'"):
        term("kd_soft_ce", {"scale_t2": "yes"})
    with pytest.raises(ConfigError, match="label_smoothing: must be below 1"):
        term("hard_ce", {"label_smoothing": 1.0})


@pytest.mark.parametrize("name", ["kd_kl", "kd_soft_ce"])
def test_probability_terms_reject_regression(name: str) -> None:
    with pytest.raises(ConfigError, match="task is regression .* use kd_mse for regression"):
        term(name, num_labels=1)


def test_label_count_mismatch() -> None:
    with pytest.raises(ConfigError, match="student has 2 outputs and the teacher 3"):
        LOSSES.get("kd_mse")({}, info(3), info(2), None)
