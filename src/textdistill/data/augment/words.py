"""Word-level text handling shared by the augmenters: BERT's basic tokenisation and word filters.

TinyBERT (Jiao et al. 2019) splits a sentence into *words* with BERT's basic tokenizer (clean-up, optional
lower-casing with accent stripping, whitespace and punctuation splitting; no word-pieces), augments those
words, and writes the augmented sentence as the words joined by single spaces. This module re-implements
that basic tokenizer so that every tokenizer family (and no tokenizer at all) gets the same word split; a
test checks it against the ``BertNormalizer`` + ``BertPreTokenizer`` pair of HF fast tokenizers.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

# The English stop-word list of TinyBERT's reference augmentation script (which is NLTK's list plus the
# contractions "'s" and "'re"): such words are never replaced, because swapping function words mostly
# produces ungrammatical text without adding lexical variety.
_STOP_WORDS_TEXT = """
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he
him his himself she she's her hers herself it it's its itself they them their theirs themselves this
that that'll these those am is are was were be been being have has had having do does did doing a an the
and but if or because as until while of at by for with about against between into through during before
after above below to from up down in out on off over under again further then once here there all any
both each few more most other some such no nor not only own same so than too very s t can will just don
don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't
hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan
shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't 's 're
"""
STOP_WORDS: frozenset[str] = frozenset(_STOP_WORDS_TEXT.split())

_ALPHA = re.compile(r"[a-z]+")


def is_replaceable(word: str) -> bool:
    """Whether TinyBERT may replace ``word``: ASCII letters only and not a stop word.

    The reference skips every token with a character outside ``a-z`` after lower-casing (punctuation,
    digits, accented letters of cased models, ``[UNK]``-like markers) and every stop word.
    """
    low = word.lower()
    return _ALPHA.fullmatch(low) is not None and low not in STOP_WORDS


def tokenizer_lowercases(tokenizer: Any | None) -> bool:
    """Whether ``tokenizer`` lower-cases its input (BERT *uncased*); True when no tokenizer is given.

    Looks at ``do_lower_case`` (slow and v5 BERT tokenizers), then at the ``lowercase`` flag of a fast
    tokenizer's normalizer.
    """
    if tokenizer is None:
        return True
    flag = getattr(tokenizer, "do_lower_case", None)
    if isinstance(flag, bool):
        return flag
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    if normalizer is not None:
        try:
            state = json.loads(normalizer.__getstate__())
        except (AttributeError, TypeError, ValueError):
            state = {}
        found = _find_key(state, "lowercase")
        if isinstance(found, bool):
            return found
    return False


def _find_key(state: Any, key: str) -> Any:
    """First value of ``key`` in a nested JSON state (normalizer sequences nest their members)."""
    if isinstance(state, dict):
        if key in state:
            return state[key]
        values = list(state.values())
    elif isinstance(state, list):
        values = state
    else:
        return None
    for value in values:
        found = _find_key(value, key)
        if found is not None:
            return found
    return None


def basic_tokenize(text: str, *, lowercase: bool = True) -> list[str]:
    """Split ``text`` into words the way BERT's basic tokenizer does.

    Steps: drop NUL, U+FFFD and control characters and map whitespace to spaces; put spaces around CJK
    ideographs; split on whitespace; when ``lowercase``, lower-case and strip accents (NFD, drop combining
    marks); split every punctuation character into its own word.

    Args:
        text: raw text.
        lowercase: BERT *uncased* behaviour.

    Returns:
        The words, without empty strings.
    """
    chars: list[str] = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            chars.append(" ")
        elif _is_cjk(cp):
            chars.extend((" ", ch, " "))
        else:
            chars.append(ch)
    words: list[str] = []
    for token in "".join(chars).split():
        if lowercase:
            token = "".join(
                c for c in unicodedata.normalize("NFD", token.lower()) if unicodedata.category(c) != "Mn"
            )
        current: list[str] = []
        for ch in token:
            if _is_punctuation(ch):
                if current:
                    words.append("".join(current))
                    current = []
                words.append(ch)
            else:
                current.append(ch)
        if current:
            words.append("".join(current))
    return words


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":  # whitespace, handled above
        return False
    return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # BERT treats every non-alphanumeric ASCII symbol ($, ^, `...) as punctuation, not only Unicode P*.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )
