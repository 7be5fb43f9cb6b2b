"""Shared fixtures: tiny in-process BERT-family models and tokenizers, tiny text files. No network."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP barriers between
# threads cost more than the work itself: tests run single-threaded.
torch.set_num_threads(1)

WORDS = (
    "good great fine nice love happy excellent wonderful best fun "
    "bad awful poor hate sad terrible worst boring ugly dull "
    "the a movie film plot actor story was is it this very really not and but"
).split()
POSITIVE = WORDS[:10]
NEGATIVE = WORDS[10:20]
FILLER = WORDS[20:]


def make_vocab_file(path: Path) -> Path:
    """A WordPiece vocab with the special tokens, the test words and a few sub-word pieces."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = ["##s", "##ing", "##ed", "##ly", "un", "##able"] + list("abcdefghijklmnopqrstuvwxyz")
    pieces += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + list(".,!?'")
    path.write_text("\n".join(specials + WORDS + pieces) + "\n", encoding="utf-8")
    return path


def make_tokenizer(directory: Path):
    """A BertTokenizerFast over the tiny vocab, saved in ``directory``."""
    from transformers import BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = make_vocab_file(directory / "vocab.txt")
    tokens = vocab.read_text(encoding="utf-8").split("\n")[:-1]
    # transformers 5 takes the vocabulary as a mapping; 4.x takes a file path (vocab_file=).
    try:
        tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)
    except TypeError:
        tok = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    tok.save_pretrained(str(directory))
    return tok


def tiny_bert_config(
    vocab_size: int, *, layers: int = 4, hidden: int = 32, heads: int = 4, num_labels: int = 2
):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=64,
        num_labels=num_labels,
        id2label={i: f"LABEL_{i}" for i in range(num_labels)},
        label2id={f"LABEL_{i}": i for i in range(num_labels)},
    )


def make_sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (sentence, label) rows whose label follows the majority of polar words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["positive", "negative"])
        polar = POSITIVE if label == "positive" else NEGATIVE
        words = [rng.choice(polar) for _ in range(rng.randint(1, 3))]
        words += [rng.choice(FILLER) for _ in range(rng.randint(1, 6))]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_tsv(
    path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("sentence", "label")
) -> Path:
    lines = ["\t".join(header)] + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def tiny_tokenizer(tmp_path):
    return make_tokenizer(tmp_path / "tok")


@pytest.fixture
def tiny_teacher_dir(tmp_path) -> Path:
    """A saved, randomly initialised 4-layer BertForSequenceClassification with labels negative/positive."""
    from transformers import BertForSequenceClassification

    d = tmp_path / "teacher"
    tok = make_tokenizer(d)
    torch.manual_seed(0)
    cfg = tiny_bert_config(len(tok), num_labels=2)
    cfg.id2label = {0: "negative", 1: "positive"}
    cfg.label2id = {"negative": 0, "positive": 1}
    model = BertForSequenceClassification(cfg)
    model.save_pretrained(str(d))
    return d


@pytest.fixture
def sentiment_files(tmp_path) -> dict[str, Path]:
    """Tiny train/dev TSVs (GLUE layout, string labels)."""
    return {
        "train": write_tsv(tmp_path / "train.tsv", make_sentiment_rows(160, seed=1)),
        "dev": write_tsv(tmp_path / "dev.tsv", make_sentiment_rows(48, seed=2)),
    }
