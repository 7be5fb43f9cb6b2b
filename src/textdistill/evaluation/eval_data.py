"""Evaluation data as each benchmarked model sees it: the labelled file, its subset, the model's batches."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from textdistill.data.samplers import seeded_subset
from textdistill.data.task_inference import TaskSpec
from textdistill.errors import DataError, ModelError

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")


def model_tokenizer(directory: str | os.PathLike[str], fallback: Any | None = None) -> Any:
    """The tokenizer saved with a model directory, else ``fallback``.

    HF directories go through :func:`~textdistill.models.teacher.load_tokenizer`; a BiLSTM directory (no
    ``config.json``) is read with ``AutoTokenizer`` when it holds tokenizer files.

    Raises:
        ModelError: no tokenizer files in the directory and no fallback.
    """
    from textdistill.models.teacher import load_tokenizer

    d = Path(directory)
    if (d / "config.json").is_file():
        return load_tokenizer(d)
    if any((d / f).is_file() for f in _TOKENIZER_FILES):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(d), trust_remote_code=False)  # never runs its code
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ModelError(f"cannot load the tokenizer saved in {str(d)!r}: {exc}") from exc
    if fallback is not None:
        return fallback
    raise ModelError(
        f"{str(d)!r} holds no tokenizer files; save the model with its tokenizer "
        "(textdistill.models.io.save_model(model, dir, tokenizer))."
    )


def read_labelled(
    data_path: str | os.PathLike[str],
    *,
    id2label: Mapping[int, str] | None,
    text_column: str = "sentence",
    text_pair_column: str | None = None,
    label_column: str = "label",
    format: str = "auto",
    encoding: str = "utf-8",
    regression: bool = False,
    labels: list[str] | None = None,
    max_examples: int | None = None,
    seed: int = 0,
    skip_bad_rows: bool = False,
) -> tuple[list[Any], Any]:
    """Read a labelled evaluation file and map its labels onto a model's label map.

    Args:
        data_path: TSV/CSV/JSONL file with labels.
        id2label: the (teacher) model's label map; string labels are checked against it.
        text_column, text_pair_column, label_column, format, encoding, regression, skip_bad_rows: as in
            :func:`textdistill.data.read_examples`.
        labels: explicit class order (default: ``id2label``; see
            :func:`textdistill.data.resolve_label_map`).
        max_examples: keep a seeded random subset of this many examples, in file order.
        seed: seed of the subset.

    Returns:
        ``(examples, label_map)``; ``label_map`` is None for regression.

    Raises:
        DataError: unreadable file, unknown labels, or no examples.
    """
    from textdistill.data.labels import check_labels, resolve_label_map
    from textdistill.data.readers import read_examples

    read = read_examples(
        data_path,
        format=format,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        encoding=encoding,
        regression=regression,
        skip_bad_rows=skip_bad_rows,
    )
    label_map = None
    if not regression:
        known = [str(e.label) for e in read.examples if e.label is not None]
        label_map = resolve_label_map(known, labels, id2label)
        check_labels(read, label_map)
    # the subset a run with train.seed=seed and data.max_eval_examples evaluates: the same dev rows
    examples = seeded_subset(list(read.examples), max_examples, f"{seed}:dev")
    if not examples:
        raise DataError(f"{data_path}: no examples to evaluate on.")
    return examples, label_map


def infer_eval_task(
    data_path: str | os.PathLike[str],
    id2label: Mapping[int, str],
    model_dir: str | os.PathLike[str],
    read_kw: dict[str, Any],
    *,
    metric: str | None = None,
    announce: str | None = None,
) -> TaskSpec:
    """The task of the model in ``model_dir`` on a labelled file, from the read options in ``read_kw``
    (:func:`~textdistill.data.task_inference.eval_task`); printed on stderr as ``textdistill ANNOUNCE: ...``
    when ``announce`` names the command. For sentence data the inferred columns and kind are written into
    ``read_kw`` (the token reader takes no columns: evaluation/token_bench.py)."""
    from textdistill.data.task_inference import eval_task

    keys = ("text_column", "text_pair_column", "label_column", "format", "encoding", "regression", "labels")
    options = {k: read_kw[k] for k in keys if k in read_kw}
    spec = eval_task(data_path, id2label, names=[str(model_dir)], metric=metric, **options)
    if announce:
        print(f"textdistill {announce}: {spec.describe()}", file=sys.stderr)
    if spec.kind != "token_classification":
        read_kw.update(
            text_column=spec.text_column,
            text_pair_column=spec.text_pair_column,
            label_column=spec.label_column,
            regression=spec.regression,
        )
    return spec


class EvalData:
    """Examples as one model sees them: tokenized, collated into evaluation and speed batches.

    Args:
        examples: the examples (from :func:`read_labelled`).
        tokenizer: the model's tokenizer.
        label_map: class names -> ids (None for regression).
        regression: real-valued labels.
        max_length: tokens per example after truncation.
        batch_size: examples per batch.
        speed_examples: size of the seeded sample the speed batches hold.
        seed: seed of that sample.

    Attributes:
        eval_batches: every example, in file order, right-padded per batch.
        speed_batches: the seeded speed sample, same batching.
        lengths: real token count of every example.
        input_ids: token ids of every example (to compare two tokenizations).
    """

    def __init__(
        self,
        examples: list[Any],
        tokenizer: Any,
        *,
        label_map: Any,
        regression: bool,
        max_length: int,
        batch_size: int,
        speed_examples: int,
        seed: int,
    ):
        from textdistill.data.encoding import EncodedDataset

        dataset = EncodedDataset(examples, tokenizer, max_length, label_map, regression=regression)
        self._batch(dataset, tokenizer, batch_size, speed_examples, seed)

    def _batch(self, dataset: Any, tokenizer: Any, batch_size: int, speed_examples: int, seed: int) -> None:
        """The attributes above, from the encoded ``dataset``."""
        from torch.utils.data import Subset

        from textdistill.data.collate import Collator
        from textdistill.data.samplers import make_loader

        self.tokenizer = tokenizer
        collator = Collator.for_tokenizer(tokenizer)

        def batches(ds: Any) -> list[dict[str, torch.Tensor]]:
            loader = make_loader(
                ds, batch_size, shuffle=False, group_by_length=False, seed=seed, collator=collator
            )
            return list(loader)

        self.lengths = list(dataset.lengths)
        self.eval_batches = batches(dataset)
        speed_idx = seeded_subset(list(range(len(dataset))), speed_examples, seed + 1)
        self.speed_batches = batches(Subset(dataset, speed_idx))
        self.input_ids = [dataset[i]["input_ids"] for i in range(len(dataset))]
