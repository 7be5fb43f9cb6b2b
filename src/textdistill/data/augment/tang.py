"""Rule-based augmentation of Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into Simple
Neural Networks" (arXiv:1903.12136), Section 3.3.

One draw of a word list:

1. for each word draw ``X ~ U[0, 1]``: if ``X < p_mask`` the word becomes the mask token (*masking*);
   else if ``X < p_mask + p_pos`` it becomes another word with the same part-of-speech tag, drawn from the
   corpus unigram distribution of that tag (*POS-guided replacement*); else it stays. The two rules are
   exclusive for a word;
2. then with probability ``p_ng`` only a random n-gram of the result is kept, ``n`` uniform in
   ``ngram_range`` (capped at the length), its start uniform (*n-gram sampling*).

``N`` draws per example, duplicates discarded (by the driver). POS-guided replacement needs a tagger:
``"nltk"`` uses nltk's averaged-perceptron tagger when nltk and its tagger data are installed; otherwise,
or with ``pos_tagger=None``, the rule is skipped with a logged warning (words in the ``p_pos`` band then
stay unchanged, so masking keeps its rate ``p_mask``).
"""

from __future__ import annotations

import bisect
import logging
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from textdistill.config.augment import AugmentConfig
from textdistill.data.augment.methods import AUGMENTERS
from textdistill.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

PosTagger = Callable[[list[list[str]]], list[list[str]]]
"""Tags a batch of word lists: one tag per word, aligned with the input."""

NLTK_TAGGER_DATA = "averaged_perceptron_tagger_eng"


class NltkTagger:
    """nltk's averaged-perceptron POS tagger (Penn Treebank tags) over word lists."""

    def __init__(self) -> None:
        import nltk

        self._nltk = nltk
        self.name = f"nltk-{nltk.__version__}-perceptron"

    def __call__(self, sentences: list[list[str]]) -> list[list[str]]:
        return [[tag for _, tag in tagged] for tagged in self._nltk.pos_tag_sents(sentences)]


def load_nltk_tagger() -> NltkTagger | None:
    """nltk's tagger, or None (with a warning that says how to install it) when it cannot run."""
    try:
        tagger = NltkTagger()
    except ImportError:
        logger.warning(
            "augment: POS-guided replacement skipped: nltk is not installed (pip install nltk, then "
            "python -m nltk.downloader %s). Masking and n-gram sampling still run.",
            NLTK_TAGGER_DATA,
        )
        return None
    try:
        tagger([["probe"]])
    except LookupError:
        logger.warning(
            "augment: POS-guided replacement skipped: nltk's tagger data %r is not installed. Fix: python -m "
            "nltk.downloader %s (or pass a pos_tagger callable). Masking and n-gram sampling still run.",
            NLTK_TAGGER_DATA,
            NLTK_TAGGER_DATA,
        )
        return None
    return tagger


def resolve_pos_tagger(pos_tagger: Any) -> PosTagger | None:
    """Turn the ``pos_tagger`` argument into a tagger, or None when POS replacement is skipped.

    Args:
        pos_tagger: ``"nltk"``, None / ``"none"``, or a callable (see :data:`PosTagger`).

    Raises:
        ConfigError: an unknown name.
    """
    if pos_tagger is None or pos_tagger == "none":
        return None
    if pos_tagger == "nltk":
        return load_nltk_tagger()
    if callable(pos_tagger):
        return pos_tagger
    raise ConfigError(f"pos_tagger={pos_tagger!r} is unknown; valid choices: 'nltk', 'none', or a callable.")


def tagger_name(tagger: PosTagger | None) -> str:
    """A stable name of a tagger for fingerprints (``name`` attribute, else the qualified name)."""
    if tagger is None:
        return "none"
    name = getattr(tagger, "name", None)
    if isinstance(name, str):
        return name
    return (
        f"{getattr(tagger, '__module__', '?')}.{getattr(tagger, '__qualname__', type(tagger).__qualname__)}"
    )


class _TagPool:
    """Unigram distribution of the words of one POS tag, sampled with integer draws (exact, seedable)."""

    def __init__(self, counts: Counter[str]):
        self.words = sorted(counts)  # sorted: the pool does not depend on corpus order
        self.counts = [counts[w] for w in self.words]
        self.cum: list[int] = []
        total = 0
        for c in self.counts:
            total += c
            self.cum.append(total)
        self.index = {w: i for i, w in enumerate(self.words)}

    def draw_other(self, word: str, rng: random.Random) -> str:
        """A word other than ``word``, with probability proportional to its count (``word``: no other)."""
        i = self.index.get(word)
        own = self.counts[i] if i is not None else 0
        total = self.cum[-1] - own
        if total <= 0:
            return word
        u = rng.randrange(total)
        if i is not None and u >= self.cum[i] - own:
            u += own  # skip over the word's own share of the cumulative range
        return self.words[bisect.bisect_right(self.cum, u)]


@AUGMENTERS.register("tang")
class TangAugmenter:
    """Masking, POS-guided replacement and n-gram sampling (see the module docstring).

    Args:
        cfg: uses ``p_mask``, ``p_pos``, ``p_ng``, ``ngram_range``.
        tokenizer: gives the mask token (``[MASK]`` when None or it has none).
        pos_tagger: see :func:`resolve_pos_tagger`; only consulted when ``p_pos > 0``.
        teacher_embeddings: ignored. mlm: ignored.
    """

    def __init__(
        self,
        cfg: AugmentConfig,
        *,
        tokenizer: Any | None = None,
        pos_tagger: Any = "nltk",
        teacher_embeddings: Any | None = None,
        mlm: Any | None = None,
    ):
        self.cfg = cfg
        self.mask = getattr(tokenizer, "mask_token", None) or "[MASK]"
        self.tagger = resolve_pos_tagger(pos_tagger) if cfg.p_pos > 0 else None
        self.segments: list[list[str]] = []
        self.tags: list[list[str]] | None = None
        self.pools: dict[str, _TagPool] = {}

    def prepare(self, segments: list[list[str]]) -> None:
        """Tag every segment and build the per-tag unigram distributions of the corpus."""
        self.segments = segments
        self.tags = None
        self.pools = {}
        if self.tagger is None:
            return
        tags = self.tagger(segments)
        if len(tags) != len(segments) or any(len(t) != len(s) for t, s in zip(tags, segments)):
            raise ModelError(
                f"the POS tagger {tagger_name(self.tagger)} returned tags that do not align with the words "
                f"(one tag per word per sentence is required)."
            )
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for words, seg_tags in zip(segments, tags):
            for w, t in zip(words, seg_tags):
                counts[t][w] += 1
        self.tags = [list(t) for t in tags]
        self.pools = {t: _TagPool(c) for t, c in counts.items()}

    def sample(self, segment: int, rng: random.Random) -> list[str]:
        """One draw: per-word masking / POS replacement, then n-gram sampling with probability p_ng."""
        cfg = self.cfg
        words = self.segments[segment]
        out: list[str] = []
        for j, w in enumerate(words):
            x = rng.random()
            if x < cfg.p_mask:
                out.append(self.mask)
            elif x < cfg.p_mask + cfg.p_pos and self.tags is not None:
                out.append(self.pools[self.tags[segment][j]].draw_other(w, rng))
            else:
                out.append(w)
        if out and rng.random() < cfg.p_ng:
            lo, hi = cfg.ngram_range
            n = min(rng.randint(lo, hi), len(out))
            start = rng.randrange(len(out) - n + 1)
            out = out[start : start + n]
        return out
