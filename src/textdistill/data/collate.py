"""Dynamic padding: a batch is padded to its own longest sequence, not to ``max_length``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from textdistill.errors import DataError


class Collator:
    """Turns a list of :class:`~textdistill.data.encoding.EncodedDataset` items into a batch of tensors.

    Sequences are right-padded to the longest one in the batch. The batch holds:

    - ``input_ids`` ``(B, L)`` long, padded with ``pad_token_id``;
    - ``attention_mask`` ``(B, L)`` long, 1 on real tokens and 0 on padding (so attention and every
      token-level loss ignore the padding);
    - ``token_type_ids`` ``(B, L)`` long, padded with ``pad_token_type_id`` (only when the items have them);
    - ``labels`` ``(B,)`` long class ids, or float32 for regression (float items); ``(B, L)`` long for
      token classification (per sub-token, ``-100`` where unlabelled), with ``token_mask`` / ``word_mask``
      ``(B, L)`` bool (see :class:`~textdistill.data.token_encoding.TokenEncodedDataset`) and ``case_ids``
      ``(B, L)`` long (0 on padding);
    - ``example_ids`` ``(B,)`` long; ``is_original`` ``(B,)`` bool.

    Args:
        pad_token_id: the tokenizer's padding id.
        pad_token_type_id: segment id used for padding positions.
        pad_to_multiple_of: round ``L`` up to a multiple of this (tensor-core friendly), or None.
    """

    def __init__(
        self, pad_token_id: int, *, pad_token_type_id: int = 0, pad_to_multiple_of: int | None = None
    ):
        self.pad_token_id = int(pad_token_id)
        self.pad_token_type_id = int(pad_token_type_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, *, pad_to_multiple_of: int | None = None) -> Collator:
        """A collator using ``tokenizer``'s padding ids.

        Raises:
            DataError: the tokenizer has no padding token (e.g. GPT-2 style tokenizers).
        """
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            raise DataError(
                f"tokenizer {type(tokenizer).__name__} has no padding token. Fix: set one before "
                f"distilling, e.g. tokenizer.pad_token = tokenizer.eos_token."
            )
        return cls(
            pad,
            pad_token_type_id=getattr(tokenizer, "pad_token_type_id", 0) or 0,
            pad_to_multiple_of=pad_to_multiple_of,
        )

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        lengths = [len(it["input_ids"]) for it in items]
        width = max(lengths)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            width = (width + m - 1) // m * m
        b = len(items)
        input_ids = torch.full((b, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((b, width), dtype=torch.long)
        with_types = "token_type_ids" in items[0]
        token_type_ids = (
            torch.full((b, width), self.pad_token_type_id, dtype=torch.long) if with_types else None
        )
        for row, (it, n) in enumerate(zip(items, lengths)):
            input_ids[row, :n] = torch.tensor(it["input_ids"], dtype=torch.long)
            attention_mask[row, :n] = 1
            if token_type_ids is not None:
                token_type_ids[row, :n] = torch.tensor(it["token_type_ids"], dtype=torch.long)
        labels = [it["label"] for it in items]
        if isinstance(labels[0], list):  # token classification: one label per sub-token
            labels_t = _pad_rows(labels, width, -100)
        else:
            # regression items carry floats (NaN when unlabelled); class ids are ints (-100 when unlabelled)
            label_dtype = torch.float32 if any(isinstance(x, float) for x in labels) else torch.long
            labels_t = torch.tensor(labels, dtype=label_dtype)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels_t,
            "example_ids": torch.tensor([it["example_id"] for it in items], dtype=torch.long),
            "is_original": torch.tensor([bool(it["is_original"]) for it in items], dtype=torch.bool),
        }
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        for key in ("token_mask", "word_mask"):  # token classification: positions losses / metrics read
            if key in items[0]:
                batch[key] = _pad_rows([it[key] for it in items], width, 0).bool()
        if "case_ids" in items[0]:  # token tasks: casing of each sub-token's word (data/word_shape.py)
            batch["case_ids"] = _pad_rows([it["case_ids"] for it in items], width, 0)
        return batch


def _pad_rows(rows: Sequence[list[int]], width: int, fill: int) -> torch.Tensor:
    """``(B, width)`` long tensor of right-padded integer rows."""
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out
