"""Evaluate a saved model directory on a labelled data file."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from textdistill.config.loader import resolve_config
from textdistill.config.schema import DataConfig
from textdistill.errors import DataError

_READ_KEYS = (
    "text_column",
    "text_pair_column",
    "label_column",
    "format",
    "encoding",
    "regression",
    "labels",
    "skip_bad_rows",
)
"""The data options that say how to read the file (the ``data`` section's names)."""


def evaluate_dir(
    model_dir: str | Path,
    data: str | Path,
    *,
    overrides: list[str] | None = None,
    batch_size: int = 128,
    precision: str = "auto",
    announce: bool = False,
) -> dict[str, float]:
    """Accuracy / macro-F1 / MCC (or Pearson / Spearman for regression) of a saved model on ``data``.

    The label names in the file are mapped through the model's own label map (saved with every textdistill
    model); a label the model does not know is an error naming the file and line. A model with HF's
    placeholder names (``LABEL_0``, ``LABEL_1``...) reads integer labels as its ids. Columns are inferred
    from the header and a model with one output is scored as regression
    (:func:`~textdistill.data.task_inference.eval_task`); a model that predicts one class for every example
    gets a warning.

    Args:
        model_dir: a directory written by textdistill (HF or BiLSTM), a textdistill run directory (its
            ``model/`` is evaluated) or any HF sequence classifier.
        data: TSV/CSV/JSONL file with a label column.
        overrides: ``key=value`` settings of the data section (e.g. ``text_column=text``).
        batch_size: evaluation batch size.
        precision: auto | fp32 | bf16.
        announce: print the inferred task line (on stderr: stdout carries the metrics JSON).
    """
    from textdistill.data.encoding import EncodedDataset
    from textdistill.data.task_checks import single_class_warning, warn
    from textdistill.evaluation.eval_data import infer_eval_task, read_labelled
    from textdistill.evaluation.metrics import command_line_evaluation
    from textdistill.models.io import load_student
    from textdistill.models.teacher import load_tokenizer

    cfg = resolve_config({}, [o.removeprefix("data.") for o in overrides or []], DataConfig)
    # A wrong data path must fail before the weights load (seconds for a real model).
    if not Path(data).is_file():
        raise DataError(
            f"data file {str(data)!r} does not exist{' (it is a directory)' if Path(data).is_dir() else ''}; "
            "pass a labelled TSV/CSV/JSONL file"
        )
    model_dir = Path(model_dir)
    if (model_dir / "run.json").is_file() and (model_dir / "model").is_dir():
        model_dir = model_dir / "model"  # a run directory: its best model
    model = load_student(model_dir)
    tokenizer = load_tokenizer(model_dir)
    id2label = _id2label(model)
    from textdistill.models.token_heads import is_token_model

    if is_token_model(model):  # NER-style model: entity-level metrics on a tagged file
        from textdistill.evaluation.token_eval import evaluate_token_file

        return evaluate_token_file(
            model, tokenizer, str(data), cfg, id2label, batch_size=batch_size, precision=precision
        )
    read_kw = {key: getattr(cfg, key) for key in _READ_KEYS}
    try:
        # The model's label map decides the ids; a model whose id2label holds HF placeholders (LABEL_0...)
        # never named its classes: integer labels in the file are then taken as its ids.
        spec = infer_eval_task(data, id2label, model_dir, read_kw)
        examples, label_map = read_labelled(data, id2label=id2label, **read_kw)
    except DataError as e:
        # evaluate takes the data options as bare key=value overrides: name them as the user types them
        raise DataError(_evaluate_keys(str(e))) from None
    if announce:
        print(f"textdistill evaluate: {spec.describe()}", file=sys.stderr)
    regression = spec.regression
    ds = EncodedDataset(examples, tokenizer, cfg.max_length, label_map, regression=regression)
    metrics, logits = command_line_evaluation(
        model, ds, tokenizer, batch_size=batch_size, precision=precision, regression=regression
    )
    names = list(label_map.names) if label_map is not None else None
    warn(single_class_warning("the model", logits, regression=regression, class_names=names))
    return metrics


def _evaluate_keys(message: str) -> str:
    """``data.text_column`` -> ``text_column`` in a message: evaluate's overrides have no section."""
    renamed = re.sub(r"\bdata\.([a-z_]+)", r"\1", message)
    if renamed == message:
        return message
    return f"{renamed} (evaluate takes these settings as key=value arguments, e.g. text_column=text)"


def _id2label(model) -> dict[int, str]:
    inner = getattr(model, "model", None)
    config = getattr(inner, "config", None) or getattr(model, "config", None)
    raw = getattr(config, "id2label", None) or getattr(model, "id2label", None) or {}
    return {int(k): str(v) for k, v in dict(raw).items()}
