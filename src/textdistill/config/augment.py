"""Configuration of data augmentation for distillation (TinyBERT / Tang et al. rules).

A plain stdlib dataclass, usable from Python without YAML; it is meant to become the ``augment`` section of
the main schema. :meth:`AugmentConfig.problems` lists every invalid field at once and
:meth:`AugmentConfig.validate` raises them as one :class:`~textdistill.errors.ConfigError`.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from textdistill.errors import ConfigError


@dataclass
class AugmentConfig:
    """How the training set is augmented before distillation.

    Augmented rows carry no label (``label=None``, ``is_original=False``): the distillation stage must label
    them with the teacher's soft labels; hard labels exist only for the original rows.
    """

    method: str = "none"
    """none | tinybert (Jiao et al. 2019, Algorithm 1) | tang (Tang et al. 2019: masking, POS, n-grams)."""
    n_aug: int = 20
    """N_a: new examples drawn per input (duplicates and unchanged copies are dropped, so at most N_a are
    kept). TinyBERT's script uses 20 for SST-2/QNLI, 10 for MNLI/QQP, 30 for the small GLUE tasks."""
    p_t: float = 0.4
    """tinybert: probability of replacing each eligible word by one of its candidates."""
    top_k: int = 15
    """tinybert: K, candidates per word (top-K masked-LM tokens or K nearest word vectors)."""
    p_mask: float = 0.1
    """tang: probability of replacing a word by the mask token."""
    p_pos: float = 0.1
    """tang: probability of replacing a word by another word of the same POS tag (needs a tagger)."""
    p_ng: float = 0.25
    """tang: probability of keeping only a random n-gram of the (masked/replaced) example."""
    ngram_range: tuple[int, int] = (1, 5)
    """tang: inclusive range of n for n-gram sampling (n drawn uniformly)."""
    mlm: str | None = None
    """tinybert: masked language model, a local directory or a hub id (an HF masked-LM checkpoint with a
    trained MLM head and a WordPiece tokenizer, e.g. bert-base-uncased)."""
    word_vectors: str | None = None
    """tinybert: GloVe-format text file (``word v1 ... vD`` per line) for multi-piece words. None: the
    teacher's (else the MLM's) input-embedding matrix over its whole-word vocabulary is used instead."""
    seed: int = 42
    """Seed of the sampling; each example draws from its own generator seeded by (seed, example id)."""
    max_length: int = 512
    """tinybert: longest masked-LM input ([CLS] masked [SEP] original [SEP]) in tokens; longer inputs are
    truncated and words past it keep their text (capped at the MLM's max_position_embeddings)."""
    batch_size: int = 32
    """tinybert: masked-LM inputs per forward pass (does not change the result, only speed and memory)."""
    cache_dir: str | None = None
    """Where augmented files are stored under their fingerprint when no output path is given."""

    def problems(self, *, mlm_given: bool = False) -> list[str]:
        """Every invalid field, one line each naming the key, the value received and the fix.

        Args:
            mlm_given: a masked LM is passed in-process, so ``mlm`` may be unset for method tinybert.
        """
        # lazy: the methods register when the textdistill.data.augment package is imported
        from textdistill.data.augment.methods import method_names

        out: list[str] = []
        methods = method_names()
        if self.method not in methods:
            close = difflib.get_close_matches(str(self.method), methods, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            out.append(
                f"augment.method={self.method!r} is unknown; valid choices: {', '.join(methods)}.{hint}"
            )
        if not _is_int(self.n_aug) or self.n_aug < 1:
            out.append(f"augment.n_aug={self.n_aug!r} must be an integer >= 1 (new examples per input).")
        for key in ("p_t", "p_mask", "p_pos", "p_ng"):
            value = getattr(self, key)
            if not _is_prob(value):
                out.append(f"augment.{key}={value!r} must be a probability in [0, 1].")
        if _is_prob(self.p_mask) and _is_prob(self.p_pos) and self.p_mask + self.p_pos > 1:
            out.append(
                f"augment.p_mask + augment.p_pos = {self.p_mask + self.p_pos:g} exceeds 1: a word is masked "
                f"or POS-replaced, not both. Lower one of them."
            )
        if not _is_int(self.top_k) or self.top_k < 1:
            out.append(f"augment.top_k={self.top_k!r} must be an integer >= 1 (candidates per word).")
        rng = self.ngram_range
        if (
            not isinstance(rng, (tuple, list))
            or len(rng) != 2
            or not all(_is_int(n) for n in rng)
            or not 1 <= rng[0] <= rng[1]
        ):
            out.append(
                f"augment.ngram_range={rng!r} must be two integers [lo, hi] with 1 <= lo <= hi, e.g. [1, 5]."
            )
        if not _is_int(self.seed):
            out.append(f"augment.seed={self.seed!r} must be an integer.")
        if not _is_int(self.max_length) or self.max_length < 8:
            out.append(f"augment.max_length={self.max_length!r} must be an integer >= 8 (tokens).")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            out.append(f"augment.batch_size={self.batch_size!r} must be an integer >= 1.")
        if self.method == "tinybert" and not self.mlm and not mlm_given:
            out.append(
                "augment.mlm is not set but augment.method=tinybert needs a masked language model. Set "
                "augment.mlm to a local directory or hub id of a masked-LM checkpoint (e.g. bert-base-uncased)."
            )
        return out

    def validate(self, *, mlm_given: bool = False) -> AugmentConfig:
        """Raise every problem at once.

        Args:
            mlm_given: a masked LM is passed in-process, so ``mlm`` may be unset for method tinybert.

        Returns:
            ``self`` with ``ngram_range`` normalised to a tuple.

        Raises:
            ConfigError: one line per invalid field.
        """
        problems = self.problems(mlm_given=mlm_given)
        if problems:
            raise ConfigError(problems)
        self.ngram_range = (int(self.ngram_range[0]), int(self.ngram_range[1]))
        return self


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_prob(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= value <= 1.0
    )
