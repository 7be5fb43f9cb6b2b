"""Saving and loading students, and counting their parameters.

HF students are written in plain transformers format (safetensors weights, config with the label map,
tokenizer), so ``AutoModelForSequenceClassification.from_pretrained(dir)`` and
``transformers.pipeline("text-classification", model=dir)`` use them without textdistill installed.
The BiLSTM student is ``model.safetensors`` + ``textdistill_bilstm.json`` (its config and label map) + the
tokenizer whose ids it reads.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import uuid
from pathlib import Path

import torch
from torch import nn

from textdistill.errors import ModelError, pickle_refusal, shorten
from textdistill.models.bilstm import BiLSTMClassifier, BiLSTMConfig
from textdistill.models.hf import HFClassifier

BILSTM_CONFIG = "textdistill_bilstm.json"
BILSTM_WEIGHTS = "model.safetensors"
_BILSTM_FORMAT = "textdistill-bilstm"
_BILSTM_VERSION = 1


def _unwrap(model: nn.Module) -> nn.Module:
    # torch.compile wraps the module; its parameters and state dict live in _orig_mod.
    return getattr(model, "_orig_mod", model)


def save_model(
    model: nn.Module,
    out_dir: str | Path,
    tokenizer: object | None = None,
    id2label: dict[int, str] | None = None,
) -> Path:
    """Write a student (or teacher) to ``out_dir``, atomically.

    Everything is written into a temporary sibling directory which is then renamed onto ``out_dir``, so
    ``out_dir`` never holds a half-written model; an existing ``out_dir`` is replaced.

    Args:
        model: an :class:`HFClassifier`, a bare transformers model, or a :class:`BiLSTMClassifier`.
        out_dir: destination directory.
        tokenizer: the tokenizer whose ids the model reads (saved alongside; None: not saved, and
            ``pipeline`` will then need one passed explicitly).
        id2label: label names by id; stored in the model's config (and so updates the model's label map).

    Returns:
        ``out_dir`` as a Path.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ModelError(f"cannot save a model to {str(out)!r}: it is a file. Choose a directory path.")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Same parent directory, so the final rename stays on one filesystem (and is atomic).
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, _dir_mode())  # mkdtemp makes it 0700: the published model follows the umask
        inner = _unwrap(model)
        if isinstance(inner, BiLSTMClassifier):
            _save_bilstm(inner, tmp, id2label)
        else:
            hf = _unwrap(inner.model) if isinstance(inner, HFClassifier) else inner
            if not hasattr(hf, "save_pretrained"):
                raise ModelError(
                    f"cannot save a {type(hf).__name__}: expected an HF model or a BiLSTM student"
                )
            if id2label is not None:
                hf.config.id2label = {int(k): str(v) for k, v in id2label.items()}
                hf.config.label2id = {v: k for k, v in hf.config.id2label.items()}
            hf.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _dir_mode() -> int:
    """The mode ``mkdir`` gives a new directory under the process umask (read by setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o777 & ~mask


def replace_dir(src: Path, dst: Path) -> None:
    """Rename directory ``src`` onto ``dst``; an existing ``dst`` is moved aside first (a crash between the
    two renames still leaves a complete directory) and removed once the new one is in place."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def _save_bilstm(model: BiLSTMClassifier, directory: Path, id2label: dict[int, str] | None) -> None:
    from safetensors.torch import save_file

    if id2label is not None:
        model.config.id2label = {int(k): str(v) for k, v in id2label.items()}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / BILSTM_WEIGHTS), metadata={"format": "pt"})
    labels = model.config.id2label
    meta = {
        "format": _BILSTM_FORMAT,
        "version": _BILSTM_VERSION,
        "config": model.config.to_dict(),
        "label2id": {v: k for k, v in labels.items()},
    }
    (directory / BILSTM_CONFIG).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def load_student(
    directory: str | Path, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False
) -> nn.Module:
    """Load a model written by :func:`save_model` (or any HF classifier directory), in eval mode.

    Args:
        directory: the model directory.
        dtype: parameter dtype of HF models.
        trust_remote_code: allow code shipped in the directory (``auto_map`` in its config) to run. Always
            passed to transformers explicitly, so a model folder never runs code, nor makes transformers
            ask on stdin whether it may (a piped ``y`` would have answered that question).

    Returns:
        :class:`HFClassifier` for HF directories, :class:`BiLSTMClassifier` for BiLSTM ones.

    Raises:
        ModelError: missing directory, or neither ``config.json`` nor ``textdistill_bilstm.json`` in it.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ModelError(
            f"student directory {str(d)!r} does not exist; point at a directory written by textdistill."
        )
    if (d / BILSTM_CONFIG).is_file():
        return _load_bilstm(d)
    if (d / "config.json").is_file():
        from transformers import AutoConfig

        from textdistill.models.token_heads import auto_class, is_token_config

        try:
            token = is_token_config(AutoConfig.from_pretrained(str(d), trust_remote_code=trust_remote_code))
            model = auto_class(token).from_pretrained(
                str(d), dtype=dtype, trust_remote_code=trust_remote_code
            )
        except pickle.UnpicklingError as exc:
            raise ModelError(pickle_refusal(d, exc) + "; save the model as safetensors") from None
        except (OSError, ValueError, KeyError) as exc:
            if "custom code" in str(exc):
                raise ModelError(
                    f"refused to load {str(d)!r}: its config.json maps the model to code shipped in the "
                    "directory (auto_map), and textdistill never runs a model folder's code. Use a model of "
                    "a standard transformers architecture (e.g. one saved by textdistill)."
                ) from None
            raise ModelError(f"cannot load the model in {str(d)!r}: {shorten(str(exc), 500)}") from exc
        return HFClassifier(model.eval())
    raise ModelError(
        f"{str(d)!r} holds neither config.json (a transformers model) nor {BILSTM_CONFIG} (a BiLSTM student); "
        "point at a directory written by textdistill."
    )


def _load_bilstm(d: Path) -> BiLSTMClassifier:
    from safetensors.torch import load_file

    try:
        meta = json.loads((d / BILSTM_CONFIG).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"{str(d / BILSTM_CONFIG)!r} is not valid JSON ({exc}); re-save the student."
        ) from exc
    if meta.get("format") != _BILSTM_FORMAT or meta.get("version", 0) > _BILSTM_VERSION:
        raise ModelError(
            f"{str(d / BILSTM_CONFIG)!r} has format {meta.get('format')!r} version {meta.get('version')!r}; this "
            f"textdistill reads {_BILSTM_FORMAT!r} up to version {_BILSTM_VERSION}. Upgrade textdistill."
        )
    if not (d / BILSTM_WEIGHTS).is_file():
        raise ModelError(f"{str(d)!r} has {BILSTM_CONFIG} but no {BILSTM_WEIGHTS}; re-save the student.")
    model = BiLSTMClassifier(BiLSTMConfig.from_dict(meta["config"]))
    model.load_state_dict(load_file(str(d / BILSTM_WEIGHTS)), strict=True)
    return model.eval()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts; tied/shared parameters are counted once.

    Returns:
        ``{"total": n, "embedding": e, "non_embedding": n - e}`` where ``e`` counts the weights of every
        ``nn.Embedding`` (word, position, token-type tables).
    """
    params = {id(p): p.numel() for p in model.parameters()}
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    total = sum(params.values())
    embedding = sum(n for i, n in params.items() if i in embedding_ids)
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}
