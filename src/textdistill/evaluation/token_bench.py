"""Token-classification data for ``benchmark`` and ``export``: tagged files read, encoded and batched once.

The token counterparts of :func:`~textdistill.evaluation.benchmark.read_labelled` and
:class:`~textdistill.evaluation.benchmark.EvalData`, plus :func:`evaluate_any`, which scores a model on
either kind (entity metrics and word-level logits for token data).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from textdistill.data.labels import LabelMap
from textdistill.data.samplers import seeded_subset
from textdistill.evaluation.eval_data import EvalData


def read_token_labelled(
    data_path: Any,
    *,
    id2label: Mapping[int, str],
    format: str = "auto",
    encoding: str = "utf-8",
    max_examples: int | None = None,
    seed: int = 0,
    **_: Any,
) -> tuple[list[Any], LabelMap]:
    """Read a tagged file (CoNLL or JSONL), re-tag it in the model's scheme and check every tag.

    Raises:
        DataError: unreadable file or a tag the model cannot output (file and sentence named).
    """
    from textdistill.evaluation.token_eval import read_for_model

    fmt = "auto" if format in ("auto", "tsv") else format
    result, label_map = read_for_model(data_path, dict(id2label), format=fmt, encoding=encoding)
    return seeded_subset(list(result.examples), max_examples, seed), label_map


class TokenEvalData(EvalData):
    """Tagged sentences as one model sees them (same attributes as ``EvalData``, plus ``dataset``)."""

    def __init__(
        self,
        examples: list[Any],
        tokenizer: Any,
        *,
        label_map: LabelMap,
        max_length: int,
        batch_size: int,
        speed_examples: int,
        seed: int,
        entity_mode: str = "lenient",
        **_: Any,
    ):
        from textdistill.data.token_encoding import TokenEncodedDataset
        from textdistill.evaluation.token_eval import model_scheme, strict_checked

        self.dataset = TokenEncodedDataset(examples, tokenizer, max_length, label_map)
        self.dataset.tag_scheme = model_scheme(label_map.names)
        self.dataset.entity_mode = strict_checked(entity_mode, self.dataset.tag_scheme)
        self._batch(self.dataset, tokenizer, batch_size, speed_examples, seed)


def evaluate_any(
    model: Any, enc: Any, *, regression: bool, **kw: Any
) -> tuple[dict[str, float], torch.Tensor]:
    """``evaluate_model`` for text data, :func:`~textdistill.evaluation.seq_metrics.evaluate_token_model`
    (word-level logits) for :class:`TokenEvalData`."""
    if isinstance(enc, TokenEvalData):
        from textdistill.evaluation.seq_metrics import evaluate_token_model

        return evaluate_token_model(model, enc.eval_batches, enc.dataset, **kw)
    from textdistill.evaluation.metrics import evaluate_model

    return evaluate_model(model, enc.eval_batches, regression=regression, **kw)


def real_token_rows(outputs: list[np.ndarray], batches: list[Mapping[str, Any]]) -> np.ndarray:
    """``(T, C)`` logits at the real tokens of per-batch ``(B, L, C)`` outputs (for parity agreement)."""
    rows = []
    for out, batch in zip(outputs, batches):
        mask = np.asarray(batch["attention_mask"]).astype(bool)
        rows.append(np.asarray(out)[mask[:, : np.asarray(out).shape[1]]])
    return np.concatenate(rows)
