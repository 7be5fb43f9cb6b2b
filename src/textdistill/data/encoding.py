"""Tokenize examples once, up front, into a map-style dataset of plain Python lists.

Tokenizing in the training loop would repeat the same work every epoch (and in every dataloader worker);
doing it once in large batches lets a fast (Rust) tokenizer parallelise it. Padding is left to the
:class:`~textdistill.data.collate.Collator`, per batch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from textdistill.data.labels import LabelMap
from textdistill.data.readers import Example
from textdistill.errors import DataError

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""Class id stored for an example without a label (ignored by ``cross_entropy``'s default ignore_index)."""


class EncodedDataset(Dataset):
    """Examples tokenized once; items are small dicts of Python lists and numbers.

    Item keys: ``input_ids`` (list[int], with special tokens, truncated to ``max_length``),
    ``token_type_ids`` (only when the tokenizer produces them, e.g. BERT), ``label`` (class id; a float for
    regression; :data:`IGNORE_INDEX` / NaN when the example has no label), ``example_id`` (int) and
    ``is_original`` (bool).

    Args:
        examples: the examples; text pairs must be all-present or all-absent.
        tokenizer: a Hugging Face tokenizer (a fast one: batches are tokenized in parallel).
        max_length: tokens per example after truncation (pairs are truncated longest-first).
        label_map: class names -> ids; None for regression or unlabelled data.
        regression: labels are floats.
        batch_size: examples per tokenizer call.

    Raises:
        DataError: mixed single texts and pairs, a label unknown to ``label_map``, or a label that cannot
            be used (a string label without a label map, a non-numeric regression label).
    """

    def __init__(
        self,
        examples: Sequence[Example],
        tokenizer: Any,
        max_length: int,
        label_map: LabelMap | None = None,
        *,
        regression: bool = False,
        batch_size: int = 1000,
    ):
        if max_length < 2:
            raise DataError(
                f"data.max_length must be at least 2 (room for the special tokens), got {max_length}."
            )
        self.examples = list(examples)
        self.max_length = max_length
        self.regression = regression
        self.label_map = label_map
        if not getattr(tokenizer, "is_fast", False):
            log.warning(
                "tokenizer %s is not a fast tokenizer: encoding will be slow", type(tokenizer).__name__
            )
        self.has_token_type_ids = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        n_pairs = sum(e.text_pair is not None for e in self.examples)
        if 0 < n_pairs < len(self.examples):
            raise DataError(
                f"{n_pairs} of {len(self.examples)} examples have a text pair and the others do not; a data "
                f"set is either single-text or pairs. Fix: set data.text_pair_column consistently."
            )
        self.is_pair = n_pairs > 0

        self._input_ids: list[list[int]] = []
        self._token_type_ids: list[list[int]] | None = [] if self.has_token_type_ids else None
        for start in range(0, len(self.examples), batch_size):
            chunk = self.examples[start : start + batch_size]
            enc = tokenizer(
                [e.text for e in chunk],
                [e.text_pair for e in chunk] if self.is_pair else None,
                truncation=True,
                max_length=max_length,
                padding=False,
                return_attention_mask=False,  # the collator derives it from the lengths
                return_token_type_ids=self.has_token_type_ids,
            )
            self._input_ids.extend(list(ids) for ids in enc["input_ids"])
            if self._token_type_ids is not None:
                self._token_type_ids.extend(list(t) for t in enc["token_type_ids"])
        self._labels = [self._encode_label(e) for e in self.examples]
        self._lengths = [len(ids) for ids in self._input_ids]

    def _encode_label(self, example: Example) -> int | float:
        label = example.label
        if self.regression:
            if label is None:
                return math.nan
            try:
                return float(label)
            except (TypeError, ValueError):
                raise DataError(
                    f"example {example.id}: regression label {label!r} is not a number."
                ) from None
        if label is None:
            return IGNORE_INDEX
        if self.label_map is None:
            raise DataError(
                f"example {example.id} has the label {label!r} but no label map was given. Fix: pass the "
                f"task's label_map (or regression=True for real-valued labels)."
            )
        if label not in self.label_map:
            raise DataError(
                f"example {example.id}: label {label!r} is not one of the known labels "
                f"{list(self.label_map.names)}. Fix: correct the label or the label map (data.labels)."
            )
        return self.label_map.id(str(label))

    def __len__(self) -> int:
        return len(self._input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "input_ids": self._input_ids[i],
            "label": self._labels[i],
            "example_id": self.examples[i].id,
            "is_original": self.examples[i].is_original,
        }
        if self._token_type_ids is not None:
            item["token_type_ids"] = self._token_type_ids[i]
        return item

    @property
    def lengths(self) -> list[int]:
        """Token count of every item (special tokens included), for length-grouped batching."""
        return self._lengths
