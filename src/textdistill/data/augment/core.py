"""The augmentation driver: split texts into words, let an augmenter draw variants, build new examples.

An *augmenter* (registered in :data:`AUGMENTERS` by method name) sees the corpus as *segments*: the word
list of each text (a sentence pair has two segments). ``prepare`` sees all segments at once (so TinyBERT
can batch its masked-LM calls across the corpus, Tang can count POS unigrams), ``sample`` draws one variant
of one segment from a generator it is given. The driver owns everything else, identically for every
method: seeding, pairs, duplicate removal, ids and labels.

Conventions of the output (see :func:`augment_examples`):

- every original comes first, unchanged, followed by its new examples;
- new example ``k`` (1-based draw number) of the original with id ``i`` gets the id
  ``offset + i * n_aug + (k - 1)``, with ``offset = max(original ids) + 1``: unique, never an original's
  id, and stable across runs (a draw dropped as a duplicate leaves a gap rather than shifting later ids);
- new examples have ``label=None`` and ``is_original=False``: the distillation stage labels them with the
  teacher's soft labels; hard labels exist only for originals;
- texts of new examples are the augmented *words* joined by single spaces (TinyBERT's output format), so
  with an uncased tokenizer they are lower-cased and punctuation is space-separated.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from textdistill.config.augment import AugmentConfig
from textdistill.data.augment.methods import AUGMENTERS, Augmenter
from textdistill.data.augment.words import basic_tokenize, tokenizer_lowercases
from textdistill.errors import DataError

logger = logging.getLogger(__name__)


@runtime_checkable
class ExampleLike(Protocol):
    """What augmentation reads from an example (``textdistill.data.readers.Example`` satisfies it)."""

    id: int
    text: str
    text_pair: str | None
    label: str | float | None
    is_original: bool


def augment_examples(
    examples: Iterable[ExampleLike],
    cfg: AugmentConfig,
    *,
    tokenizer: Any | None,
    teacher_embeddings: Any | None = None,
    mlm: Any | None = None,
    pos_tagger: Any = "nltk",
    augmenter: Augmenter | None = None,
) -> list[Any]:
    """Augment ``examples``: each original followed by up to ``cfg.n_aug`` new examples.

    Deterministic under ``cfg.seed``: example ``i`` draws from its own generator seeded with
    ``(cfg.seed, i.id)``, so its variants do not depend on the other examples, their order, or the
    masked-LM batch size. For a sentence pair each draw augments both texts with the same method (first
    then second text, from the same generator), so a new pair is a coherent (text, text_pair) variant.
    A draw that equals the original (after word splitting) or an earlier draw is dropped, as in TinyBERT's
    script, so an example gets *at most* ``n_aug`` new ones.

    Args:
        examples: originals with unique, non-negative ids.
        cfg: the augmentation settings (validated here).
        tokenizer: the teacher's tokenizer: decides lower-casing of the word split, names the mask token
            (tang) and indexes ``teacher_embeddings``. None: the masked LM's tokenizer for tinybert,
            BERT-uncased word rules and ``[MASK]`` otherwise.
        teacher_embeddings: tinybert without ``cfg.word_vectors``: the teacher's input-embedding matrix
            ``[vocab_size, H]`` (rows indexed by ``tokenizer``), the word-vector substitute for multi-piece
            words. None: the masked LM's own input embeddings are used.
        mlm: tinybert: a loaded :class:`~textdistill.data.augment.mlm.MaskedLM` (default: load ``cfg.mlm``).
        pos_tagger: tang with ``p_pos > 0``: ``"nltk"`` (use nltk's perceptron tagger when it and its data
            are installed, else skip POS replacement with a logged warning), None/``"none"`` (skip), or a
            callable mapping a list of word lists to a list of tag lists.
        augmenter: a ready augmenter of ``cfg.method`` to use instead of building one (to inspect its
            candidates afterwards, e.g. ``TinyBertAugmenter.routes``); ``mlm``/``pos_tagger`` are then unused.

    Returns:
        Examples of the input's type (``dataclasses.replace`` of each original; ``readers.Example`` for
        non-dataclass inputs): originals unchanged, new ones with ``is_original=False``, ``label=None`` and
        ids ``offset + id * n_aug + k - 1`` (see the module docstring).

    Raises:
        ConfigError: invalid settings. DataError: duplicate or negative ids. ModelError: unusable models.
    """
    cfg.validate(mlm_given=mlm is not None or augmenter is not None)
    originals = list(examples)
    _check_ids(originals)
    if cfg.method == "none" or not originals:
        return [dataclasses.replace(ex) if dataclasses.is_dataclass(ex) else ex for ex in originals]
    start = time.perf_counter()
    if augmenter is None:
        augmenter = AUGMENTERS.get(cfg.method)(
            cfg, tokenizer=tokenizer, teacher_embeddings=teacher_embeddings, mlm=mlm, pos_tagger=pos_tagger
        )
    if tokenizer is None:
        # no teacher tokenizer: split words with the masked LM's casing rules (tinybert), else BERT-uncased
        tokenizer = getattr(getattr(augmenter, "mlm", None), "tokenizer", None)
    lowercase = tokenizer_lowercases(tokenizer)
    segments: list[list[str]] = []
    seg_of: list[tuple[int, int | None]] = []
    for ex in originals:
        a = len(segments)
        segments.append(basic_tokenize(ex.text, lowercase=lowercase))
        b = None
        if ex.text_pair is not None:
            b = len(segments)
            segments.append(basic_tokenize(ex.text_pair, lowercase=lowercase))
        seg_of.append((a, b))
    augmenter.prepare(segments)
    offset = max(ex.id for ex in originals) + 1
    out: list[Any] = []
    n_new = 0
    for ex, (a, b) in zip(originals, seg_of):
        out.append(dataclasses.replace(ex) if dataclasses.is_dataclass(ex) else ex)
        rng = random.Random(f"textdistill.augment:{cfg.seed}:{ex.id}")
        for k, text, pair in _variants(augmenter, segments, a, b, rng, cfg.n_aug):
            out.append(_new_example(ex, offset + ex.id * cfg.n_aug + k - 1, text, pair))
            n_new += 1
    logger.info(
        "augment[%s]: %d originals -> %d new examples (%.1f per original, %.1fs)",
        cfg.method,
        len(originals),
        n_new,
        n_new / len(originals),
        time.perf_counter() - start,
    )
    return out


def _variants(
    augmenter: Augmenter,
    segments: list[list[str]],
    a: int,
    b: int | None,
    rng: random.Random,
    n: int,
) -> Iterator[tuple[int, str, str | None]]:
    """``(k, text, text_pair)`` of the distinct draws ``k = 1..n`` that differ from the original."""
    original = (" ".join(segments[a]), None if b is None else " ".join(segments[b]))
    seen = {original}
    for k in range(1, n + 1):
        text = " ".join(augmenter.sample(a, rng))
        pair = None if b is None else " ".join(augmenter.sample(b, rng))
        key = (text, pair)
        if key in seen or not text or pair == "":
            continue  # an unchanged copy or a repeat adds no new input, only re-weights this one
        seen.add(key)
        yield k, text, pair


def _new_example(original: Any, new_id: int, text: str, pair: str | None) -> Any:
    fields = {"id": new_id, "text": text, "text_pair": pair, "label": None, "is_original": False}
    if dataclasses.is_dataclass(original) and not isinstance(original, type):
        return dataclasses.replace(original, **fields)
    from textdistill.data.readers import Example  # lazy: the readers module is optional for callers

    return Example(**fields)


def _check_ids(examples: Sequence[Any]) -> None:
    seen: set[int] = set()
    for ex in examples:
        if not isinstance(ex.id, int) or isinstance(ex.id, bool) or ex.id < 0:
            raise DataError(
                f"augmentation needs non-negative integer example ids (new ids are derived from them); got "
                f"id={ex.id!r} for text {ex.text[:60]!r}. Fix: number the examples 0, 1, 2, ..."
            )
        if ex.id in seen:
            raise DataError(
                f"duplicate example id {ex.id} (text {ex.text[:60]!r}); augmentation derives new ids and "
                f"seeds from the id, so ids must be unique. Fix: renumber the examples."
            )
        seen.add(ex.id)
