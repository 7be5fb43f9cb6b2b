"""Teacher loading: config-only facts first (for validation), weights only when the run starts."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from textdistill.errors import ModelError, pickle_refusal
from textdistill.models.hf import HFClassifier, info_from_config
from textdistill.models.outputs import ModelInfo

FINETUNE_HINT = "fine-tune it first with `textdistill finetune`"
# A hub id is "name" or "namespace/name"; anything else that does not exist locally is a missing directory.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def resolve_model_path(path: str | Path, what: str = "model", *, require_config: bool = True) -> str:
    """Check a local model directory, or pass a hub id through to transformers.

    Args:
        path: a local directory (must exist and hold ``config.json``) or a hub id (``org/name``).
        what: how the path is named in error messages (``"teacher"``, ``"student"``).
        require_config: a local directory must hold ``config.json`` (off for tokenizer-only directories, e.g.
            a BiLSTM student's).

    Returns:
        The path as a string for ``from_pretrained``.

    Raises:
        ModelError: a missing directory, a file instead of a directory, or a directory without config.json.
    """
    text = str(path)
    local = Path(text).expanduser()
    # Only a teacher is fine-tuned by textdistill; for other models the fix is to point at a saved one.
    hint = FINETUNE_HINT if what in ("teacher", "model") else "save one with save_pretrained first"
    if local.exists():
        if not local.is_dir():
            raise ModelError(
                f"{what} path {text!r} is a file, not a model directory. Point it at the directory written by "
                f"save_pretrained (holding config.json and the weights), or {hint}."
            )
        if require_config and not (local / "config.json").is_file():
            raise ModelError(
                f"{what} directory {text!r} has no config.json, so it is not a saved transformers model. Point "
                f"it at a directory written by save_pretrained, or {hint}."
            )
        return str(local)
    # "runs/teacher" next to an existing "runs/" is a mistyped local path, not a hub id: fail fast
    # instead of letting transformers retry the hub for half a minute.
    parent_exists = "/" in text and local.parent.is_dir()
    if isinstance(path, Path) or parent_exists or not _HUB_ID.fullmatch(text):
        raise ModelError(
            f"{what} directory {text!r} does not exist. Check the path, or {hint} "
            "(hub ids look like 'bert-base-uncased' or 'org/name')."
        )
    return text


def _load_config(path: str | Path, what: str, trust_remote_code: bool):
    from transformers import AutoConfig

    resolved = resolve_model_path(path, what)
    try:
        return AutoConfig.from_pretrained(resolved, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(
            f"cannot read the config of {what} {str(path)!r}: {exc}. A hub id needs network access (or a "
            "local copy in the HF cache); a local directory needs a valid config.json."
        ) from exc


def classifier_problem(config: object, path: str | Path) -> str | None:
    """Why a config is not a sequence-classification model (None when it is or cannot be told)."""
    archs = getattr(config, "architectures", None)
    if archs and not any(a.endswith(("ForSequenceClassification", "ForTokenClassification")) for a in archs):
        return (
            f"{str(path)!r} holds a {', '.join(archs)}, not a sequence-classification model, so it has no "
            f"trained classifier head to distil from; {FINETUNE_HINT}"
        )
    return None


def model_info(
    path_or_config: str | Path | object,
    *,
    trust_remote_code: bool = False,
    require_classifier: bool = False,
    num_labels: int | None = None,
) -> ModelInfo:
    """Static facts about a model from its config alone (no weights are read).

    Args:
        path_or_config: a local directory, a hub id, or a transformers ``PretrainedConfig``.
        trust_remote_code: allow custom config classes shipped with the checkpoint.
        require_classifier: raise if the config's architecture is not a sequence classifier.
        num_labels: override the config's label count (a student with a new head).

    Raises:
        ModelError: missing directory, no config.json, unreadable config, or (with ``require_classifier``)
            a non-classifier architecture.
    """
    if isinstance(path_or_config, (str, Path)):
        config = _load_config(path_or_config, "model", trust_remote_code)
        where: str | Path = path_or_config
    else:
        config = path_or_config
        where = getattr(config, "name_or_path", "") or "<config>"
    if require_classifier:
        problem = classifier_problem(config, where)
        if problem:
            raise ModelError(problem + ".")
    return info_from_config(config, num_labels=num_labels)


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False):
    """Load the tokenizer saved with a model.

    Args:
        path: model directory or hub id.
        trust_remote_code: allow tokenizer code shipped with the checkpoint.

    Raises:
        ModelError: missing directory or no tokenizer files in it.

    A local directory needs tokenizer files only (no config.json), so the BiLSTM student's directory works.
    """
    from transformers import AutoTokenizer

    resolved = resolve_model_path(path, "tokenizer", require_config=False)
    try:
        return AutoTokenizer.from_pretrained(resolved, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelError(
            f"cannot load a tokenizer from {str(path)!r}: {exc}. Save the tokenizer next to the model "
            "(tokenizer.save_pretrained(dir)); models written by textdistill always include it."
        ) from exc


def load_teacher(
    path: str | Path,
    *,
    trust_remote_code: bool = False,
    require_classifier: bool = True,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = None,
) -> HFClassifier:
    """Load a frozen teacher: eval mode (no dropout: its outputs are targets, not samples) and no gradients.

    Args:
        path: local directory or hub id of an ``AutoModelForSequenceClassification`` checkpoint.
        trust_remote_code: allow model code shipped with the checkpoint to run.
        require_classifier: refuse checkpoints without a trained classification head.
        dtype: parameter dtype (transformers 5 would otherwise pick the checkpoint's dtype).
        attn_implementation: ``"sdpa"`` / ``"eager"`` / None (transformers' default). Attention features
            come from hooks and work with any implementation.

    Raises:
        ModelError: missing directory, no config.json, a non-classifier architecture, or classifier weights
            missing from the checkpoint; every message names the path and the fix.
    """
    from textdistill.models.token_heads import auto_class, is_token_config

    config = _load_config(path, "teacher", trust_remote_code)
    if require_classifier:
        problem = classifier_problem(config, path)
        if problem:
            raise ModelError(f"teacher {problem}.")
    kwargs: dict[str, object] = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model, loading = auto_class(is_token_config(config)).from_pretrained(
            resolve_model_path(path, "teacher"),
            output_loading_info=True,
            trust_remote_code=trust_remote_code,
            **kwargs,
        )
    except pickle.UnpicklingError as exc:
        raise ModelError(pickle_refusal(path, exc) + "; save the teacher as safetensors") from None
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load teacher weights from {str(path)!r}: {exc}") from exc
    if require_classifier and loading.get("missing_keys"):
        missing = sorted(loading["missing_keys"])
        raise ModelError(
            f"teacher {str(path)!r} has no weights for {missing[:4]}{' ...' if len(missing) > 4 else ''}: its "
            f"classifier head would be random; {FINETUNE_HINT}."
        )
    model.eval()
    model.requires_grad_(False)
    return HFClassifier(model)
