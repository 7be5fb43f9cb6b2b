"""Start a BiLSTM student's token embeddings from GloVe (Tang et al. 2019 initialise theirs from word2vec).

The student reads word pieces (the teacher's tokenizer, or a trimmed one), GloVe has words: each piece
takes the vector of its word (``##ing`` -> ``ing``, lower-cased); pieces without one (special tokens, rare
fragments) keep their initialisation. The vectors are rescaled to the table's standard deviation, so the
LSTM sees inputs of the scale it was initialised for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from textdistill.errors import ConfigError


def glove_dim(path: str | Path) -> int:
    """The vector width of a GloVe text file (from its first line)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError([f"student.glove: {str(p)!r} does not exist; run `textdistill provision glove`"])
    with p.open(encoding="utf-8") as f:
        return len(f.readline().rstrip("\n").split(" ")) - 1


def read_glove(path: str | Path, words: set[str]) -> dict[str, np.ndarray]:
    """The vectors of ``words`` found in a GloVe text file."""
    out: dict[str, np.ndarray] = {}
    with Path(path).expanduser().open(encoding="utf-8") as f:
        for line in f:
            word, _, rest = line.partition(" ")
            if word in words and word not in out:
                out[word] = np.array(rest.split(), dtype=np.float32)
    return out


def init_from_glove(embedding: torch.nn.Embedding, tokenizer: Any, path: str | Path) -> int:
    """Copy GloVe vectors into the rows of ``embedding`` whose token's word GloVe knows; returns how many.

    Raises:
        ConfigError: the file's width differs from the embedding's.
    """
    dim = glove_dim(path)
    if dim != embedding.embedding_dim:
        raise ConfigError(
            [
                f"student.glove has {dim}-d vectors but student.embedding_dim={embedding.embedding_dim}; set "
                f"student.embedding_dim={dim}"
            ]
        )
    specials = set(getattr(tokenizer, "all_special_tokens", []))
    rows = {
        t: i for t, i in tokenizer.get_vocab().items() if t not in specials and i < embedding.num_embeddings
    }
    word_of = {t: (t[2:] if t.startswith("##") else t).lower() for t in rows}
    vectors = read_glove(path, set(word_of.values()))
    hits = [(i, vectors[word_of[t]]) for t, i in rows.items() if word_of[t] in vectors]
    if not hits:
        return 0
    index = torch.tensor([i for i, _ in hits])
    values = torch.from_numpy(np.stack([v for _, v in hits]))
    with torch.no_grad():
        values = values * (embedding.weight.std() / values.std().clamp_min(1e-12))
        embedding.weight[index] = values.to(embedding.weight.dtype)
    return len(hits)
