"""Choosing the compute precision at run time.

bf16 autocast is the largest CPU lever on CPUs with native bf16 matmuls (AMX or AVX512-BF16): ~6x over
fp32 on Sapphire Rapids. On CPUs without them (e.g. AVX2-only parts) PyTorch emulates bf16 and it runs far
*slower* than fp32, so ``auto`` must check the hardware instead of assuming.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

from textdistill.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> frozenset[str]:
    """CPU feature flags relevant to bf16 (``amx_bf16``, ``avx512_bf16``) found on this machine."""
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags.update(f for f in line.split() if f in ("amx_bf16", "amx_tile", "avx512_bf16"))
                break
    elif platform.machine().lower() in ("arm64", "aarch64"):
        # Apple silicon / Neoverse report bf16 through other means; stay conservative.
        pass
    return frozenset(flags)


def cpu_supports_fast_bf16() -> bool:
    """True when this CPU has native bf16 matrix instructions (AMX-BF16 or AVX512-BF16)."""
    return bool(cpu_bf16_flags() & {"amx_bf16", "avx512_bf16"})


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """Turn ``auto|fp32|bf16|fp16`` into the precision actually used on ``device``.

    Returns:
        ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Raises:
        ConfigError: unknown value, or fp16 requested on a CPU.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    dev = torch.device(device)
    if precision == "auto":
        if dev.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_supports_fast_bf16() else "fp32"
    if precision == "fp16" and dev.type == "cpu":
        raise ConfigError(
            "train.precision: fp16 autocast is for GPUs; on a CPU use bf16 (if it has AMX) or fp32"
        )
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype for a resolved precision (None for fp32)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def autocast(device: torch.device, precision: str):
    """An autocast context for a resolved precision (a disabled one for fp32)."""
    dtype = autocast_dtype(precision)
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
