"""Word splitting and filters of augmentation, and AugmentConfig validation."""

from __future__ import annotations

import pytest
from tokenizers import normalizers, pre_tokenizers

from textdistill.config.augment import AugmentConfig
from textdistill.data.augment.words import STOP_WORDS, basic_tokenize, is_replaceable, tokenizer_lowercases
from textdistill.errors import ConfigError

TEXTS = [
    "Hello, World! It's a GREAT movie...",
    "Café naïve résumé — “quoted” (parens) [brackets] {braces}",
    "tabs\tand\nnewlines\r\n  spaces   ",
    "emoji 🙂 and math ∑ x^2 $5 100% a_b c-d e/f",
    "control\x00chars\x07 and \ufffd replacement",
    "中文字符 mixed with english",
    "ÀÉÎÕÜ ß Straße ÆØÅ",
    "",
]


@pytest.mark.parametrize("lowercase", [True, False])
def test_basic_tokenize_matches_hf_bert_normalizer_and_pretokenizer(lowercase):
    norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    pre = pre_tokenizers.BertPreTokenizer()
    for text in TEXTS:
        expected = [w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text))]
        assert basic_tokenize(text, lowercase=lowercase) == expected, text


def test_known_splits():
    assert basic_tokenize("It's GREAT, isn't it?") == [
        "it",
        "'",
        "s",
        "great",
        ",",
        "isn",
        "'",
        "t",
        "it",
        "?",
    ]
    assert basic_tokenize("Café", lowercase=False) == ["Café"]


def test_is_replaceable_follows_the_reference_filters():
    assert is_replaceable("movie") and is_replaceable("Movie")
    for word in ("the", "The", "not", "very", "isn", ",", "42", "x2", "[UNK]", "café", "it's"):
        assert not is_replaceable(word), word
    assert len(STOP_WORDS) == 173  # the reference script's list: 171 NLTK words plus "'s" and "'re"
    assert {"'s", "'re", "wouldn't", "i"} <= STOP_WORDS


def test_tokenizer_lowercases(tiny_tokenizer):
    assert tokenizer_lowercases(tiny_tokenizer) is True
    assert tokenizer_lowercases(None) is True

    class Cased:
        do_lower_case = False

    assert tokenizer_lowercases(Cased()) is False


def test_config_reports_every_problem_at_once():
    cfg = AugmentConfig(
        method="tang",
        n_aug=-1,
        p_mask=0.7,
        p_pos=0.6,
        ngram_range=(3, 2),
        top_k=0,
        batch_size=0,
        max_length=4,
        seed=1.5,
    )
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    problems = err.value.problems
    assert len(problems) == 7
    joined = "\n".join(problems)
    for fragment in (
        "augment.n_aug=-1",
        "augment.p_mask + augment.p_pos = 1.3 exceeds 1",
        "augment.ngram_range=(3, 2)",
        "augment.top_k=0",
        "augment.batch_size=0",
        "augment.max_length=4",
        "augment.seed=1.5",
    ):
        assert fragment in joined


def test_config_validate_normalises_and_accepts_defaults():
    cfg = AugmentConfig(method="tang", ngram_range=[1, 3]).validate()
    assert cfg.ngram_range == (1, 3)
    assert AugmentConfig().validate().method == "none"
    assert AugmentConfig(method="tinybert").problems(mlm_given=True) == []
    assert "augment.mlm is not set" in AugmentConfig(method="tinybert").problems()[0]
