"""Vocabulary trimming: keep only the tokens a task uses, so the embedding table stops dominating a student.

A 3-layer MiniLM with BERT's 30,522-token vocabulary holds 11.7M embedding parameters against 5.3M in its
layers; SST-2 uses about 14k of those tokens. Trimming keeps the tokens seen in the training text (plus every
special token), renumbers them ``0..K-1`` in their original order, copies their embedding rows, and writes a
real Hugging Face tokenizer over the kept vocabulary: same normaliser and pre-tokeniser, so any text whose
tokens were all kept is split into the same pieces and the model computes the same logits. A word with a
piece that was dropped is split into shorter kept pieces when WordPiece can (``zyzzyva`` -> ``z ##y ##zz
##y ##va``), else it becomes ``[UNK]`` (WordPiece's rule for a word it cannot split).

WordPiece tokenizers (BERT, MiniLM, MPNet, ELECTRA, ERNIE ...) are supported; BPE/Unigram vocabularies are
refused (dropping a BPE token breaks the merges that produce other tokens).

``student.vocab`` / ``textdistill trim-vocab`` choose what is kept:

* ``full``: nothing trimmed;
* ``auto``: every token seen in the data;
* an integer ``N``: the ``N`` most frequent tokens seen (ties: lower id first), plus the special tokens;
* a file: one token per line (tokens unknown to the tokenizer are an error).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from textdistill.errors import ConfigError, DataError, ModelError

VOCAB_MODES = ("full", "auto")


def vocab_problems(value: Any, key: str = "student.vocab") -> list[str]:
    """Config-time check of a vocabulary choice (empty: valid)."""
    if value in VOCAB_MODES:
        return []
    if isinstance(value, bool):
        return [f"{key} must be full, auto, a positive integer or a token file, got {value!r}"]
    if isinstance(value, int):
        return [] if value > 0 else [f"{key}: a size cap must be a positive integer, got {value}"]
    if isinstance(value, str) and value.strip().isdigit():
        return vocab_problems(int(value), key)
    if isinstance(value, str) and Path(value).expanduser().is_file():
        return []
    return [
        f"{key}={value!r} is not full, auto, a positive integer (keep the N most frequent tokens) or an "
        "existing file of tokens (one per line); fix the value or create the file"
    ]


def special_ids(tokenizer: Any) -> list[int]:
    """Ids of every special and added token (always kept)."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids |= set(tokenizer.get_added_vocab().values())
    return sorted(int(i) for i in ids if i is not None)


def count_tokens(tokenizer: Any, texts: Iterable[str], batch_size: int = 1000) -> Counter:
    """How often each token id occurs in ``texts`` (no special tokens added, no truncation)."""
    counts: Counter = Counter()
    chunk: list[str] = []

    def flush() -> None:
        if chunk:
            for ids in tokenizer(chunk, add_special_tokens=False, truncation=False)["input_ids"]:
                counts.update(ids)
            chunk.clear()

    for text in texts:
        if text:
            chunk.append(text)
        if len(chunk) >= batch_size:
            flush()
    flush()
    return counts


def select_vocab(tokenizer: Any, counts: Counter, spec: Any) -> list[int]:
    """The kept token ids (sorted: the new id of a token is its position here), specials always included.

    Raises:
        DataError: the data yields no token, or a token file names tokens the tokenizer does not have.
    """
    specials = special_ids(tokenizer)
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec)
    if spec == "full":
        return list(range(len(tokenizer)))
    if spec == "auto" or isinstance(spec, int):
        seen = [i for i in counts if i not in set(specials)]
        if not seen:
            raise DataError(
                "vocabulary trimming: the data yields no tokens (empty texts?); give the training text with "
                "--data / data.train, or keep the full vocabulary (student.vocab=full)"
            )
        if isinstance(spec, int):
            seen = sorted(seen, key=lambda i: (-counts[i], i))[:spec]
        return sorted(set(seen) | set(specials))
    path = Path(str(spec)).expanduser()
    if not path.is_file():
        raise DataError(f"vocabulary file {str(path)!r} does not exist; give full, auto, N or a token file")
    vocab = tokenizer.get_vocab()
    tokens = [t for t in path.read_text(encoding="utf-8").split("\n") if t]
    unknown = [t for t in tokens if t not in vocab]
    if unknown:
        raise DataError(
            f"{path}: {len(unknown)} tokens are not in the tokenizer's vocabulary (e.g. {unknown[:5]}); list "
            "tokens as the tokenizer writes them (e.g. '##ing' for a continuation piece)"
        )
    if not tokens:
        raise DataError(f"{path} lists no tokens; one token per line")
    return sorted({vocab[t] for t in tokens} | set(specials))


# ------------------------------------------------------------------------------------------------ tokenizer
def _remap_processor(proc: dict[str, Any] | None, new_id: dict[int, int]) -> None:
    if not proc:
        return
    kind = proc.get("type")
    if kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            proc[key] = [proc[key][0], new_id[int(proc[key][1])]]
    elif kind == "TemplateProcessing":
        for tok in proc.get("special_tokens", {}).values():
            tok["ids"] = [new_id[int(i)] for i in tok["ids"]]
    elif kind == "Sequence":
        for p in proc.get("processors", []):
            _remap_processor(p, new_id)


def trim_tokenizer(tokenizer: Any, kept: Sequence[int]) -> Any:
    """A tokenizer of the same class and normalisation whose vocabulary is ``kept`` (renumbered 0..K-1).

    The tokenizer is saved, its ``tokenizer.json`` (WordPiece model vocabulary, added tokens, post-processor
    ids), ``vocab.txt`` and ``tokenizer_config.json`` rewritten, and the result loaded with ``AutoTokenizer``
    (so what is returned is exactly what a saved student's users get).

    Raises:
        ModelError: not a fast WordPiece tokenizer.
    """
    from transformers import AutoTokenizer

    new_id = {int(old): new for new, old in enumerate(kept)}
    old_vocab = {i: t for t, i in tokenizer.get_vocab().items()}
    tmp = Path(tempfile.mkdtemp(prefix="textdistill-vocab-"))
    try:
        tokenizer.save_pretrained(str(tmp))
        tj_path = tmp / "tokenizer.json"
        if not tj_path.is_file():
            raise ModelError(
                f"vocabulary trimming needs a fast tokenizer (tokenizer.json); {type(tokenizer).__name__} has none"
            )
        tj = json.loads(tj_path.read_text(encoding="utf-8"))
        model = tj.get("model", {})
        if model.get("type") != "WordPiece":
            raise ModelError(
                f"vocabulary trimming supports WordPiece tokenizers (BERT, MiniLM, MPNet, ELECTRA ...); this one "
                f"is {model.get('type')!r}, whose tokens cannot be dropped independently. Use student.vocab=full"
            )
        model["vocab"] = {old_vocab[old]: new for old, new in new_id.items()}
        for tok in tj.get("added_tokens", []):
            tok["id"] = new_id[int(tok["id"])]
        _remap_processor(tj.get("post_processor"), new_id)
        tj_path.write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
        if (tmp / "vocab.txt").is_file():
            words = [old_vocab[old] for old in kept]
            (tmp / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
        cfg_path = tmp / "tokenizer_config.json"
        if cfg_path.is_file():
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            if "added_tokens_decoder" in cfg:
                cfg["added_tokens_decoder"] = {
                    str(new_id[int(k)]): v for k, v in cfg["added_tokens_decoder"].items()
                }
            cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
        return AutoTokenizer.from_pretrained(str(tmp), trust_remote_code=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- model
def trim_embeddings(model: nn.Module, kept: Sequence[int]) -> nn.Module:
    """Keep rows ``kept`` of the model's token embedding table (in place; returns the model).

    Works for an :class:`~textdistill.models.hf.HFClassifier`, a bare transformers model, or a
    :class:`~textdistill.models.bilstm.BiLSTMClassifier`; token ids stored in the config (pad, bos, eos ...)
    are renumbered.
    """
    from textdistill.models.bilstm import BiLSTMClassifier
    from textdistill.models.hf import HFClassifier

    index = torch.tensor(list(kept), dtype=torch.long)
    new_id = {int(old): new for new, old in enumerate(kept)}
    if isinstance(model, BiLSTMClassifier):
        old = model.embeddings
        pad = new_id.get(model.config.pad_token_id, 0)
        emb = nn.Embedding(len(kept), old.embedding_dim, padding_idx=pad)
        with torch.no_grad():
            emb.weight.copy_(old.weight[index])
        model.embeddings = emb
        model.config.vocab_size, model.config.pad_token_id = len(kept), pad
        return model
    hf = model.model if isinstance(model, HFClassifier) else model
    old = hf.get_input_embeddings()
    if int(index.max()) >= old.num_embeddings:
        raise ModelError(
            f"token id {int(index.max())} is beyond the model's {old.num_embeddings} embedding rows"
        )
    emb = nn.Embedding(len(kept), old.embedding_dim, padding_idx=None)
    with torch.no_grad():
        emb.weight.copy_(old.weight[index])
    emb.to(old.weight.device)
    hf.set_input_embeddings(emb)
    config = hf.config
    config.vocab_size = len(kept)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            setattr(config, key, new_id.get(value))
    return model


# ------------------------------------------------------------------------------------------- saved models
def read_texts(files: Sequence[str | Path], text_column: str, text_pair_column: str | None) -> list[str]:
    """Every text (and text pair) of the data files, in order; each file must exist."""
    from textdistill.data.readers import read_examples

    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise DataError(f"--data file(s) {missing} do not exist; give the training text files of the task")
    texts: list[str] = []
    for f in files:
        examples = read_examples(
            f,
            text_column=text_column,
            text_pair_column=text_pair_column,
            require_labels=False,
        ).examples
        for e in examples:
            texts.append(e.text)
            if e.text_pair:
                texts.append(e.text_pair)
    return texts


def trim_model_dir(
    model_dir: str | Path,
    data: Sequence[str | Path],
    out_dir: str | Path,
    *,
    vocab: Any = "auto",
    text_column: str = "sentence",
    text_pair_column: str | None = None,
) -> dict[str, Any]:
    """``textdistill trim-vocab``: a saved model with its vocabulary trimmed to ``data``'s tokens.

    Everything is checked before anything is written; ``out_dir`` is written atomically
    (:func:`~textdistill.models.io.save_model`).

    Returns:
        ``{"out": path, "vocab_before", "vocab_after", "parameters_before", "parameters_after"}``.
    """
    from textdistill.evaluation.benchmark import model_tokenizer
    from textdistill.models.io import count_parameters, load_student, save_model

    problems = vocab_problems(vocab, "--vocab")
    if problems:
        raise ConfigError(problems)
    texts = read_texts(data, text_column, text_pair_column)
    model = load_student(model_dir)
    tokenizer = model_tokenizer(model_dir)
    before = count_parameters(model)
    kept = select_vocab(tokenizer, count_tokens(tokenizer, texts), vocab)
    new_tok = trim_tokenizer(tokenizer, kept)
    trim_embeddings(model, kept)
    save_model(model, out_dir, new_tok)
    return {
        "out": str(out_dir),
        "vocab_before": len(tokenizer),
        "vocab_after": len(kept),
        "parameters_before": before,
        "parameters_after": count_parameters(model),
    }
