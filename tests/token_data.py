"""Helpers of the token-classification tests: tiny NER files and a tiny token-classification teacher."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from conftest import FILLER, make_tokenizer, tiny_bert_config

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
PEOPLE = ["actor", "story"]  # tiny-vocab words that play person names
PLACES = ["movie", "film", "plot"]


def make_ner_sentences(n: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """``n`` sentences of filler words with PER / LOC entities of 1-2 words (IOB2 tags)."""
    rng = random.Random(seed)
    out = []
    fill = [w for w in FILLER if w not in PEOPLE + PLACES]
    for _ in range(n):
        tokens: list[str] = []
        tags: list[str] = []
        for _ in range(rng.randint(2, 5)):
            r = rng.random()
            if r < 0.25:
                kind, words = "PER", PEOPLE
            elif r < 0.45:
                kind, words = "LOC", PLACES
            else:
                tokens.append(rng.choice(fill))
                tags.append("O")
                continue
            for k in range(rng.randint(1, 2)):
                tokens.append(rng.choice(words))
                tags.append(("B-" if k == 0 else "I-") + kind)
        out.append((tokens, tags))
    return out


def write_conll(path: Path, sentences, sep: str = " ", extra_columns: int = 0) -> Path:
    """A CoNLL column file: token [extra columns] tag, blank line between sentences."""
    lines = []
    for tokens, tags in sentences:
        for tok, tag in zip(tokens, tags):
            lines.append(sep.join([tok, *["X"] * extra_columns, tag]))
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_token_teacher(directory: Path, *, layers: int = 4, hidden: int = 32, seed: int = 0) -> Path:
    """A saved, randomly initialised BertForTokenClassification over the tiny vocab with :data:`TAGS`."""
    from transformers import BertForTokenClassification

    tok = make_tokenizer(directory)
    torch.manual_seed(seed)
    cfg = tiny_bert_config(len(tok), layers=layers, hidden=hidden, num_labels=len(TAGS))
    names = sorted(TAGS)
    cfg.id2label = dict(enumerate(names))
    cfg.label2id = {n: i for i, n in enumerate(names)}
    BertForTokenClassification(cfg).save_pretrained(str(directory))
    return directory
