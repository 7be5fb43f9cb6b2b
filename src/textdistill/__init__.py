"""textdistill: knowledge distillation for NLP models.

The public API is imported lazily so that ``import textdistill`` stays light (no torch/transformers until
something is used).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "textdistill.config.schema",
    "ConfigError": "textdistill.errors",
    "DataError": "textdistill.errors",
    "Distiller": "textdistill.training.distiller",
    "ModelError": "textdistill.errors",
    "ModelOutputs": "textdistill.models.outputs",
    "TextDistillError": "textdistill.errors",
    "distill": "textdistill.api",
    "evaluate": "textdistill.api",
    "finetune": "textdistill.api",
    "load_config": "textdistill.config.loader",
    "load_student": "textdistill.models.io",
    "load_teacher": "textdistill.models.teacher",
    "run_training": "textdistill.training.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'textdistill' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
