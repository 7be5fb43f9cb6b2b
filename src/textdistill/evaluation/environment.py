"""What a measured number depends on: library versions, CPU model and bf16 support, threads, GPU."""

from __future__ import annotations

import importlib
import os
import platform
from typing import Any

import numpy as np
import torch

from textdistill.training.precision import cpu_supports_fast_bf16


def cpu_model() -> str:
    """Human-readable CPU model name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_support() -> dict[str, bool]:
    """Whether this CPU computes in bf16 natively (detected at run time).

    Returns:
        ``native``: the CPU has bf16 matrix instructions (AMX-BF16 or AVX512-BF16), so bf16 autocast is a
        real speed-up (:func:`~textdistill.training.precision.cpu_supports_fast_bf16`); ``onednn``:
        PyTorch's oneDNN reports bf16 kernels (they may be emulated, and then slower than fp32).
    """
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn = False
    return {"native": cpu_supports_fast_bf16(), "onednn": onednn}


def _version(module: str) -> str | None:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:  # noqa: BLE001 - a missing or broken optional package is reported as absent
        return None


def environment(threads: int | None = None) -> dict[str, Any]:
    """What a speed figure depends on: library versions, CPU, threads, bf16 support, GPU.

    Args:
        threads: the thread count the measurements use (default: ``torch.get_num_threads()``).
    """
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "numpy": np.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": int(threads if threads is not None else torch.get_num_threads()),
        "bf16": bf16_support(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda_version"] = torch.version.cuda
    return env
