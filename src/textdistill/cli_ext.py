"""Subcommands contributed by the package's parts, each in its own module.

Every module listed here defines ``register(subparsers)``; a part that fails to import (an optional
dependency missing) leaves the others working.
"""

from __future__ import annotations

import importlib

MODULES = (
    "textdistill.pipeline.cli",  # run, recipes
    "textdistill.data.augment.cli",  # augment
    "textdistill.evaluation.cli",  # benchmark
    "textdistill.export.cli",  # export onnx
    "textdistill.provision",  # provision (real pretrained models from PyPI)
    "textdistill.models.vocab_cli",  # trim-vocab
    "textdistill.training.lm_generate_cli",  # generate-responses (sequence-level KD)
)


def _load() -> list:
    out = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that part is not there (yet); the others still register
                continue
            raise
        register = getattr(module, "register", None)
        if register is not None:
            out.append(register)
    return out


EXTENSIONS = _load()
