"""Run-time precision choice, the warm-up + decay learning-rate schedule and AdamW's no-decay groups."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import textdistill.training.precision as precision
from textdistill.errors import ConfigError
from textdistill.training.optim import build_optimizer, build_scheduler, lr_lambda, param_groups
from textdistill.training.precision import autocast, autocast_dtype, resolve_precision


@pytest.fixture
def cpu_flags(monkeypatch):
    """Set the CPU feature flags ``resolve_precision`` sees."""

    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: frozenset(flags))

    return set_flags


def test_auto_on_cpu_follows_native_bf16_support(cpu_flags):
    cpu_flags()
    assert resolve_precision("auto", "cpu") == "fp32"  # emulated bf16 would be slower than fp32
    cpu_flags("amx_tile")  # AMX without its bf16 part is not enough
    assert resolve_precision("auto", "cpu") == "fp32"
    cpu_flags("amx_bf16", "amx_tile")
    assert resolve_precision("auto", torch.device("cpu")) == "bf16"
    cpu_flags("avx512_bf16")
    assert resolve_precision("auto", "cpu") == "bf16"


def test_explicit_precisions(cpu_flags):
    cpu_flags()
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for explicitly: honoured even if slow
    with pytest.raises(ConfigError, match="fp16 autocast is for GPUs; on a CPU use bf16"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError) as e:
        resolve_precision("half", "cpu")
    assert e.value.problems == ["train.precision: 'half' is not one of auto, fp32, bf16, fp16"]


def test_auto_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda:0") == "bf16"
    assert resolve_precision("fp16", "cuda") == "fp16"


def test_autocast_contexts():
    assert autocast_dtype("fp32") is None
    assert autocast_dtype("bf16") is torch.bfloat16 and autocast_dtype("fp16") is torch.float16
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast(torch.device("cpu"), "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert (a @ b).dtype == torch.float32


def test_cpu_flags_are_read_from_cpuinfo():
    flags = precision.cpu_bf16_flags.__wrapped__()
    assert flags <= {"amx_bf16", "amx_tile", "avx512_bf16"}


# -- learning-rate schedule -----------------------------------------------------------------------------------
def _expected(step: int, total: int, warmup: int, schedule: str) -> float:
    """Independent statement of the schedule: linear warm-up to 1 over ``warmup`` steps (the first step
    already trains at 1/warmup), then linear or half-cosine decay reaching 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    t = (step - warmup) / (total - warmup)
    return 1.0 - t if schedule == "linear" else (1.0 + math.cos(math.pi * t)) / 2


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_lr_schedule_values(schedule):
    total, warmup = 10, 4
    f = lr_lambda(total, warmup, schedule)
    assert [f(s) for s in range(total + 1)] == pytest.approx(
        [_expected(s, total, warmup, schedule) for s in range(total + 1)]
    )
    assert f(warmup - 1) == 1.0  # peak reached at the end of warm-up
    if schedule != "constant":
        assert f(total) == pytest.approx(0.0, abs=1e-12)
        assert f(total + 5) == pytest.approx(0.0, abs=1e-12)  # never negative past the end


def test_lr_schedule_known_points_and_scheduler():
    assert lr_lambda(10, 0, "linear")(0) == 1.0
    assert lr_lambda(10, 0, "linear")(5) == 0.5
    assert lr_lambda(10, 0, "cosine")(5) == pytest.approx(0.5)
    assert lr_lambda(10, 2, "cosine")(6) == pytest.approx(0.5)  # half-way through the decay
    with pytest.raises(ConfigError, match="'step' is not one of linear, cosine, constant"):
        lr_lambda(10, 0, "step")
    # Through torch's LambdaLR: the lr used at optimizer step k (0-based) is peak * f(k). Warm-up ends at the
    # peak on its last step (no step is wasted at lr 0), the decay starts from the peak and would reach 0 at
    # step ``total``, one past the last.
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_scheduler(opt, total_steps=4, warmup_steps=2, schedule="linear")
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.05, 0.1, 0.1, 0.05])


# -- optimizer --------------------------------------------------------------------------------------------------
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.lin = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


def test_no_decay_param_groups():
    m = _Tiny()
    proj = nn.Linear(4, 4, bias=False)
    groups = param_groups([m, proj, m], weight_decay=0.01)  # a module listed twice counts once
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    assert decay == {id(m.emb.weight), id(m.lin.weight), id(proj.weight)}
    assert no_decay == {id(m.lin.bias), id(m.norm.weight), id(m.norm.bias)}
    # Frozen parameters are not optimised at all.
    assert id(m.frozen.weight) not in decay | no_decay


def test_optimizer_applies_decay_only_to_matrices():
    m = _Tiny()
    opt = build_optimizer([m], lr=0.1, weight_decay=0.5)
    assert isinstance(opt, torch.optim.AdamW)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)  # zero gradient: only weight decay moves a parameter
    opt.step()
    # AdamW's decoupled decay: p <- p * (1 - lr * wd)
    torch.testing.assert_close(m.lin.weight, before["lin.weight"] * (1 - 0.1 * 0.5))
    torch.testing.assert_close(m.lin.bias, before["lin.bias"])
    torch.testing.assert_close(m.norm.weight, before["norm.weight"])
