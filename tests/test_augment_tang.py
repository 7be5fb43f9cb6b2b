"""Tang et al. 2019 rules: masking rate, n-gram lengths, POS-guided replacement, the driver's guarantees."""

from __future__ import annotations

import logging
import math
import random
from collections import Counter

import pytest

from textdistill.config.augment import AugmentConfig
from textdistill.data.augment import tang as tang_module
from textdistill.data.augment.core import augment_examples
from textdistill.data.augment.tang import TangAugmenter, _TagPool
from textdistill.data.augment.words import basic_tokenize
from textdistill.data.readers import Example
from textdistill.errors import ConfigError

SENTENCES = [
    "the movie was good and the plot was great",
    "a dull film with a boring story and bad actors",
    "it is not fun but it is very nice",
    "terrible plot , awful acting , worst film this year",
]
ADJ = {"good", "great", "dull", "boring", "bad", "fun", "nice", "terrible", "awful", "worst"}


def fake_tagger(sentences: list[list[str]]) -> list[list[str]]:
    """A deterministic stand-in for a POS tagger: adjectives by list, everything else by first letter."""
    return [["ADJ" if w in ADJ else "X" + w[0] for w in s] for s in sentences]


def prepared(sentences=SENTENCES, pos_tagger=None, **cfg_kw) -> TangAugmenter:
    cfg = AugmentConfig(method="tang", **cfg_kw).validate()
    aug = TangAugmenter(cfg, pos_tagger=pos_tagger)
    aug.prepare([basic_tokenize(s) for s in sentences])
    return aug


def within(observed: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(observed - n * p) < sigmas * math.sqrt(n * p * (1 - p))


def test_masking_rate_is_p_mask():
    aug = prepared(p_mask=0.15, p_pos=0.0, p_ng=0.0)
    rng = random.Random(0)
    masked = total = 0
    for _ in range(1500):
        for s, words in enumerate(aug.segments):
            new = aug.sample(s, rng)
            assert len(new) == len(words)
            assert all(n == w or n == "[MASK]" for n, w in zip(new, words))
            masked += new.count("[MASK]")
            total += len(words)
    assert within(masked, total, 0.15)


def test_ngram_lengths_within_range_and_contiguous():
    aug = prepared(p_mask=0.0, p_pos=0.0, p_ng=1.0, ngram_range=(2, 4))
    rng = random.Random(1)
    lengths = Counter()
    for _ in range(600):
        for s, words in enumerate(aug.segments):
            new = aug.sample(s, rng)
            assert 2 <= len(new) <= 4
            assert any(words[i : i + len(new)] == new for i in range(len(words)))  # a contiguous n-gram
            lengths[len(new)] += 1
    n = sum(lengths.values())
    assert set(lengths) == {2, 3, 4} and all(within(lengths[k], n, 1 / 3) for k in (2, 3, 4))


def test_ngram_sampling_happens_with_probability_p_ng_and_n_is_capped():
    aug = prepared(["good movie", "one two three four five six seven eight"], p_mask=0, p_pos=0, p_ng=0.25)
    rng = random.Random(2)
    shortened = sum(len(aug.sample(1, rng)) < 8 for _ in range(4000))  # n <= 5 < 8: every n-gram is shorter
    assert within(shortened, 4000, 0.25)
    assert all(1 <= len(aug.sample(0, rng)) <= 2 for _ in range(200))  # n > length keeps the whole text


def test_pos_replacement_keeps_the_tag_and_follows_unigram_counts():
    aug = prepared(p_mask=0.0, p_pos=1.0, p_ng=0.0, pos_tagger=fake_tagger)
    counts = Counter(w for s in aug.segments for w in s if w in ADJ)
    rng = random.Random(3)
    draws = Counter()
    n = 0
    for _ in range(400):
        for s, words in enumerate(aug.segments):
            new = aug.sample(s, rng)
            tags = fake_tagger([words])[0]
            assert fake_tagger([new])[0] == tags  # same tag at every position
            for w, t, x in zip(words, tags, new):
                pool = [v for v in {u for seg in aug.segments for u in seg} if fake_tagger([[v]])[0][0] == t]
                assert x != w or len(pool) == 1  # "another" word, unless the tag has no other word
                if w == "good":
                    draws[x] += 1
                    n += 1
    # replacing "good": every other adjective with probability count / (total - count("good"))
    total = sum(counts.values()) - counts["good"]
    assert set(draws) == set(ADJ) - {"good"}
    for word, c in counts.items():
        if word != "good":
            assert within(draws[word], n, c / total)


def test_tag_pool_draws_exactly_proportional_to_counts():
    pool = _TagPool(Counter({"a": 3, "b": 1, "c": 2, "d": 4}))

    class Enumerate:  # feeds every integer of the range once: the histogram must equal the counts
        def __init__(self):
            self.next = 0

        def randrange(self, n):
            value, self.next = self.next, self.next + 1
            assert value < n
            return value

    e = Enumerate()
    assert Counter(pool.draw_other("c", e) for _ in range(8)) == Counter({"a": 3, "b": 1, "d": 4})
    e = Enumerate()
    assert Counter(pool.draw_other("zzz", e) for _ in range(10)) == Counter({"a": 3, "b": 1, "c": 2, "d": 4})
    assert _TagPool(Counter({"only": 5})).draw_other("only", random.Random(0)) == "only"


class _TaggerWithoutData:
    """Stands in for nltk's tagger when its data package is absent (importing nltk itself takes seconds)."""

    name = "nltk-without-data"

    def __call__(self, sentences):
        raise LookupError("Resource averaged_perceptron_tagger_eng not found.")


def _raise_import_error():
    raise ImportError("No module named 'nltk'")


def test_missing_tagger_is_skipped_with_a_clear_message(monkeypatch, caplog):
    monkeypatch.setattr(tang_module, "NltkTagger", _TaggerWithoutData)
    with caplog.at_level(logging.WARNING, logger="textdistill.data.augment.tang"):
        aug = prepared(p_mask=0.0, p_pos=1.0, p_ng=0.0, pos_tagger="nltk")
    assert aug.tagger is None
    assert (
        "POS-guided replacement skipped" in caplog.text
        and "nltk.downloader averaged_perceptron" in caplog.text
    )
    assert aug.sample(0, random.Random(0)) == aug.segments[0]  # the POS band leaves words unchanged

    monkeypatch.setattr(tang_module, "NltkTagger", _raise_import_error)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="textdistill.data.augment.tang"):
        assert tang_module.load_nltk_tagger() is None
    assert "nltk is not installed (pip install nltk" in caplog.text


def test_unknown_tagger_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"pos_tagger='spacy' is unknown; valid choices: 'nltk', 'none'"):
        prepared(pos_tagger="spacy")


def test_n_new_examples_unique_and_unlabelled_and_deterministic():
    rows = [Example(i, s, None, "positive" if i % 2 else "negative") for i, s in enumerate(SENTENCES)]
    cfg = AugmentConfig(method="tang", n_aug=12, p_mask=0.3, p_pos=0.2, p_ng=0.25, seed=5)
    out = augment_examples(rows, cfg, tokenizer=None, pos_tagger=fake_tagger)
    assert out == augment_examples(rows, cfg, tokenizer=None, pos_tagger=fake_tagger)
    for ex in rows:
        new = [e for e in out if not e.is_original and 4 + ex.id * 12 <= e.id < 4 + (ex.id + 1) * 12]
        texts = [e.text for e in new]
        assert 8 <= len(new) <= 12 and len(set(texts)) == len(texts)
        assert " ".join(basic_tokenize(ex.text)) not in texts
        assert all(e.label is None and e.text_pair is None for e in new)
    assert sum(e.is_original for e in out) == 4 and [e for e in out if e.is_original] == rows


def test_duplicates_are_removed():
    # two words, masking only: at most 3 distinct changed variants exist
    rows = [Example(0, "good movie", None, "positive")]
    cfg = AugmentConfig(method="tang", n_aug=50, p_mask=0.5, p_pos=0.0, p_ng=0.0)
    out = augment_examples(rows, cfg, tokenizer=None)
    assert sorted(e.text for e in out[1:]) == ["[MASK] [MASK]", "[MASK] movie", "good [MASK]"]


def test_pairs_are_augmented_on_both_sides():
    rows = [Example(0, "the movie was good", "the plot was great and fun", "entailment")]
    cfg = AugmentConfig(method="tang", n_aug=30, p_mask=0.2, p_pos=0.0, p_ng=0.0)
    new = augment_examples(rows, cfg, tokenizer=None)[1:]
    assert len(new) >= 20
    assert any("[MASK]" in e.text for e in new) and any("[MASK]" in e.text_pair for e in new)
    for e in new:  # each side is a masked version of its own original
        for got, orig in ((e.text, rows[0].text), (e.text_pair, rows[0].text_pair)):
            assert all(g in (o, "[MASK]") for g, o in zip(got.split(), orig.split(), strict=True))


def test_mask_token_comes_from_the_tokenizer():
    class Tok:
        mask_token = "<mask>"
        do_lower_case = False

    rows = [Example(0, "Good Movie", None, None)]
    cfg = AugmentConfig(method="tang", n_aug=20, p_mask=0.5, p_pos=0.0, p_ng=0.0)
    texts = {e.text for e in augment_examples(rows, cfg, tokenizer=Tok())[1:]}
    assert texts == {"<mask> Movie", "Good <mask>", "<mask> <mask>"}  # cased tokenizer: case is kept
