"""Word vectors for TinyBERT's multi-piece words: K nearest neighbours by cosine similarity.

Two sources:

- **GloVe-format text file** (the paper's choice): ``word v1 ... vD`` per line (an optional word2vec
  ``count dim`` header line is skipped). Like the reference script only the first 100,000 words are read
  (GloVe files are sorted by frequency, so this keeps common words and bounds the search).
- **Substitute when no file is given**: an input-embedding matrix (the teacher's, else the masked LM's)
  over its *whole-word* vocabulary (alphabetic tokens that are not ``##`` continuations nor special
  tokens). A multi-piece word has no row of its own there, so its query vector is the mean of its
  word-pieces' embeddings. These are contextual-model input embeddings, not co-occurrence vectors, so the
  neighbours are noisier than GloVe's; use a GloVe file for the paper's setting.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from textdistill.errors import DataError, ModelError

logger = logging.getLogger(__name__)

_ASCII_WORD = re.compile(r"[A-Za-z]+")

GLOVE_MAX_WORDS = 100_000
"""Words read from a GloVe file (the reference script's limit)."""


@dataclass
class WordVectors:
    """L2-normalised word vectors with a nearest-neighbour search.

    Attributes:
        words: the searchable words, row order of ``matrix``.
        matrix: ``[V, D]`` float32, each row of unit length.
        source: where the vectors came from (for messages).
        piece_tokenizer: substitute vectors only: the tokenizer whose pieces compose a query word.
        piece_embeddings: substitute vectors only: ``[vocab, D]`` raw input embeddings.
    """

    words: list[str]
    matrix: torch.Tensor
    source: str
    piece_tokenizer: Any = None
    piece_embeddings: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def query(self, word: str) -> torch.Tensor | None:
        """The unit vector ``[D]`` of ``word``, or None when it has none (out of vocabulary)."""
        if word in self.index:
            return self.matrix[self.index[word]]
        if self.piece_tokenizer is None or self.piece_embeddings is None:
            return None
        ids = self.piece_tokenizer(word, add_special_tokens=False)["input_ids"]
        unk = getattr(self.piece_tokenizer, "unk_token_id", None)
        ids = [i for i in ids if i != unk and 0 <= i < self.piece_embeddings.shape[0]]
        if not ids:
            return None
        vec = self.piece_embeddings[ids].float().mean(dim=0)
        return vec / vec.norm().clamp_min(1e-12)

    def nearest(self, words: Iterable[str], k: int, *, chunk: int = 1024) -> dict[str, list[str]]:
        """The ``k`` nearest words of each word by cosine similarity, most similar first.

        The word itself is excluded (as in the reference). A word without a vector gets an empty list.

        Args:
            words: query words (duplicates are searched once).
            k: neighbours per word.
            chunk: queries per matrix product ``[chunk, D] @ [D, V]``.

        Returns:
            ``{word: neighbours}`` for every query word.
        """
        out: dict[str, list[str]] = {}
        known: list[str] = []
        vectors: list[torch.Tensor] = []
        for w in dict.fromkeys(words):
            v = self.query(w)
            if v is None:
                out[w] = []
            else:
                known.append(w)
                vectors.append(v)
        k_eff = min(k + 1, len(self.words))  # one spare: the word itself may be among the best
        for start in range(0, len(known), chunk):
            q = torch.stack(vectors[start : start + chunk])
            sims = q @ self.matrix.T  # [q, V] cosine similarities (rows are unit vectors)
            top = sims.topk(k_eff, dim=-1).indices.tolist()
            for w, ids in zip(known[start : start + chunk], top):
                out[w] = [self.words[i] for i in ids if self.words[i] != w][:k]
        return out


def load_glove(path: str | os.PathLike[str], *, max_words: int = GLOVE_MAX_WORDS) -> WordVectors:
    """Read a GloVe-format text file (first ``max_words`` words).

    Args:
        path: ``word v1 ... vD`` per line, UTF-8; a first line of two integers (word2vec header) is skipped.
        max_words: words to keep.

    Returns:
        Normalised vectors. ``<unk>`` and all-zero vectors are dropped (they have no direction).

    Raises:
        DataError: missing file, a non-numeric value, inconsistent dimensions, or no vectors at all.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"augment.word_vectors={str(path)!r}: file not found. Fix: point it at a GloVe text file "
            f"(e.g. glove.840B.300d.txt), or leave it unset to use the teacher's input embeddings instead."
        )
    words: list[str] = []
    rows: list[list[float]] = []
    seen: set[str] = set()
    dim: int | None = None
    with open(p, encoding="utf-8", errors="strict") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.rstrip("\n").rstrip("\r").rstrip(" ").split(" ")
            if not parts or parts == [""]:
                continue
            if lineno == 1 and len(parts) == 2 and all(x.isdigit() for x in parts):
                continue  # word2vec text header: "<count> <dim>"
            if dim is None:
                dim = len(parts) - 1
                if dim < 1:
                    raise DataError(f"{p}, line {lineno}: expected 'word v1 ... vD', got {line[:80]!r}.")
            if len(parts) - 1 < dim:
                raise DataError(
                    f"{p}, line {lineno}: {len(parts) - 1} values, but the first vector has {dim}. Fix the "
                    f"file (every line is 'word' followed by {dim} numbers separated by single spaces)."
                )
            # a few GloVe releases hold words with spaces: the vector is always the last `dim` fields
            word = " ".join(parts[: len(parts) - dim])
            try:
                vec = [float(x) for x in parts[len(parts) - dim :]]
            except ValueError:
                raise DataError(
                    f"{p}, line {lineno}: non-numeric vector value in {line[:80]!r}. Fix: a GloVe file holds "
                    f"'word v1 ... v{dim}' per line."
                ) from None
            if word in seen or word == "<unk>" or not any(vec):
                continue
            seen.add(word)
            words.append(word)
            rows.append(vec)
            if len(words) >= max_words:
                break
    if not words:
        raise DataError(f"{p}: no word vectors found. Fix: point augment.word_vectors at a GloVe text file.")
    matrix = torch.tensor(rows, dtype=torch.float32)
    matrix = matrix / matrix.norm(dim=1, keepdim=True)
    return WordVectors(words=words, matrix=matrix, source=str(p))


def from_embeddings(
    embeddings: torch.Tensor, tokenizer: Any, *, source: str = "input embeddings"
) -> WordVectors:
    """Word vectors from an input-embedding matrix over its tokenizer's whole-word vocabulary.

    Args:
        embeddings: ``[vocab_size, H]`` input embeddings (``model.get_input_embeddings().weight``).
        tokenizer: the tokenizer whose ids index ``embeddings``.
        source: a name for messages.

    Returns:
        Vectors of the alphabetic, non-special, non-``##`` tokens; multi-piece query words are composed
        from their pieces (see the module docstring).

    Raises:
        ModelError: the matrix does not match the tokenizer, or no whole word remains.
    """
    emb = embeddings.detach().float().cpu()
    if emb.dim() != 2:
        raise ModelError(f"{source}: expected a [vocab_size, hidden] matrix, got shape {tuple(emb.shape)}.")
    vocab = tokenizer.get_vocab()
    special = set(getattr(tokenizer, "all_special_tokens", []))
    pairs = sorted(
        (i, t) for t, i in vocab.items() if i < emb.shape[0] and t not in special and is_alpha_word(t)
    )
    if len(vocab) > emb.shape[0] or not pairs:
        raise ModelError(
            f"{source}: the embedding matrix has {emb.shape[0]} rows but the tokenizer has {len(vocab)} "
            f"tokens ({len(pairs)} whole words). Fix: pass the embeddings of the model this tokenizer "
            f"belongs to, or set augment.word_vectors to a GloVe file."
        )
    ids = torch.tensor([i for i, _ in pairs])
    rows = emb[ids]
    matrix = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return WordVectors(
        words=[t for _, t in pairs],
        matrix=matrix,
        source=source,
        piece_tokenizer=tokenizer,
        piece_embeddings=emb,
    )


def is_alpha_word(token: str) -> bool:
    """A whole-word vocabulary entry usable as a neighbour: ASCII letters only.

    Excludes ``##`` continuations, ``[unused]``/special markers, digits, punctuation and the single CJK
    characters of multilingual vocabularies. Stop words stay: only *replacing* them is skipped.
    """
    return _ASCII_WORD.fullmatch(token) is not None
