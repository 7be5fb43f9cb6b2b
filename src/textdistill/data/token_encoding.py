"""Tokenize sentences of words once and align word tags with sub-tokens.

A word such as ``Kaczmarek`` becomes several sub-tokens (``ka ##cz ##mare ##k``). As in BERT's NER setup
(Devlin et al. 2019, §5.3) and Hugging Face's token-classification examples, the word's tag goes to its
first sub-token and the other sub-tokens are ignored (label ``-100``) by losses and metrics; with
``label_all_subtokens`` every sub-token carries the word's tag (then B- tags stay B- on every piece, as in
HF's ``label_all_tokens``). Metrics always read a word's prediction at its first sub-token, which is also
what ``pipeline("token-classification")`` does with ``aggregation_strategy="first"``/``"simple"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from textdistill.data.conll import TokenExample
from textdistill.data.encoding import IGNORE_INDEX
from textdistill.data.labels import LabelMap
from textdistill.data.word_shape import case_ids
from textdistill.errors import DataError

log = logging.getLogger(__name__)


class TokenEncodedDataset(Dataset):
    """Sentences tokenized once, with per-sub-token labels.

    Item keys: ``input_ids``, ``token_type_ids`` (when the tokenizer has them), ``label`` (list[int], one per
    sub-token: the tag id at labelled positions, :data:`IGNORE_INDEX` elsewhere and for untagged
    sentences), ``token_mask`` (list[int]: 1 where losses read the position, whether or not a gold tag is
    known), ``word_mask`` (1 at each word's first sub-token), ``case_ids`` (the casing of each sub-token's word,
    :mod:`textdistill.data.word_shape`: the one thing an uncased tokenizer loses), ``example_id``,
    ``is_original``.

    Attributes:
        words: number of words of each sentence; ``word_positions[i][w]`` is the sub-token position of word
            ``w`` of sentence ``i`` (-1 when truncation or an empty tokenisation left it without one).
        truncated_words: words that lost their position to ``max_length`` (they count as predicted ``O``).

    Raises:
        DataError: a slow tokenizer (word alignment needs a fast one), or a tag outside ``label_map``.
    """

    token_task = True

    def __init__(
        self,
        examples: Sequence[TokenExample],
        tokenizer: Any,
        max_length: int,
        label_map: LabelMap,
        *,
        label_all_subtokens: bool = False,
        batch_size: int = 1000,
    ):
        if not getattr(tokenizer, "is_fast", False):
            raise DataError(
                f"token classification needs a fast tokenizer (to map sub-tokens to words), but "
                f"{type(tokenizer).__name__} is a slow one. Fix: save the model with its tokenizer.json, or "
                f"load it with use_fast=True."
            )
        self.examples = list(examples)
        self.max_length = max_length
        self.label_map = label_map
        self.regression = False
        self.is_pair = False
        self.has_token_type_ids = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        self._items: list[dict[str, Any]] = []
        self.word_positions: list[list[int]] = []
        self.truncated_words = 0
        self.unencodable_words = 0
        for start in range(0, len(self.examples), batch_size):
            chunk = self.examples[start : start + batch_size]
            enc = tokenizer(
                [e.tokens for e in chunk],
                is_split_into_words=True,
                truncation=True,
                max_length=max_length,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=self.has_token_type_ids,
            )
            for j, example in enumerate(chunk):
                self._add(example, enc, j, label_all_subtokens)
        if self.truncated_words:
            log.warning(
                "%d words lie beyond data.max_length=%d sub-tokens and get no prediction (scored as O); raise "
                "data.max_length to cover them",
                self.truncated_words,
                max_length,
            )
        self._lengths = [len(it["input_ids"]) for it in self._items]

    def _add(self, example: TokenExample, enc: Any, j: int, label_all: bool) -> None:
        ids = list(enc["input_ids"][j])
        word_ids = enc.word_ids(j)
        n = len(example.tokens)
        positions = [-1] * n
        labels = [IGNORE_INDEX] * len(ids)
        token_mask = [0] * len(ids)
        word_mask = [0] * len(ids)
        tag_ids = None
        if example.tags is not None:
            try:
                tag_ids = [self.label_map.id(t) for t in example.tags]
            except KeyError as err:
                raise DataError(
                    f"sentence {example.id}: tag {err.args[0]!r} is not one of {list(self.label_map.names)}. "
                    "Fix: correct the tag or the tag set (data.labels)."
                ) from None
        prev = None
        for pos, w in enumerate(word_ids):
            if w is None:
                continue
            first = w != prev
            prev = w
            if first:
                positions[w] = pos
                word_mask[pos] = 1
            if first or label_all:
                token_mask[pos] = 1
                if tag_ids is not None:
                    labels[pos] = tag_ids[w]
        last_word = max((w for w in word_ids if w is not None), default=-1)
        self.truncated_words += n - 1 - last_word
        self.unencodable_words += sum(p < 0 for p in positions[: last_word + 1])
        item: dict[str, Any] = {
            "input_ids": ids,
            "label": labels,
            "token_mask": token_mask,
            "word_mask": word_mask,
            "case_ids": case_ids(example.tokens, word_ids),
            "example_id": example.id,
            "is_original": True,
        }
        if self.has_token_type_ids:
            item["token_type_ids"] = list(enc["token_type_ids"][j])
        self._items.append(item)
        self.word_positions.append(positions)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._items[i]

    @property
    def lengths(self) -> list[int]:
        """Sub-token count of every item (special tokens included), for length-grouped batching."""
        return self._lengths


def encode_token_task(
    task: Any, train_examples: Sequence[TokenExample], tokenizer: Any, max_length: int, label_all: bool
) -> tuple[TokenEncodedDataset, TokenEncodedDataset, TokenEncodedDataset | None]:
    """``(train, dev, test)`` datasets of a token task (test None when there is none); every dataset knows
    the task's tag scheme (``tag_scheme``), which strict scoring needs, and ``entity_mode``."""

    def encode(examples: Sequence[TokenExample]) -> TokenEncodedDataset:
        ds = TokenEncodedDataset(
            examples, tokenizer, max_length, task.label_map, label_all_subtokens=label_all
        )
        ds.tag_scheme = task.tag_scheme
        ds.entity_mode = getattr(task, "entity_mode", "lenient")
        return ds

    return encode(train_examples), encode(task.dev), encode(task.test) if task.test else None
