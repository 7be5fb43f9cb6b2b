"""Casing ("word shape") ids of sub-tokens, a feature a student can read next to the token ids.

An uncased teacher tokenizer (MiniLM, BERT-uncased) maps ``Paris`` and ``paris`` to the same ids, while the
capital letter is one of the strongest cues for named entities (Collobert et al. 2011 and Lample et al. 2016
feed it to their taggers as a separate feature). The shape of each word is one of :data:`SHAPES`; every
sub-token carries its word's shape and whether it is the word's first piece:

    case id = 1 + 2 * shape + (0 for a word's first sub-token, 1 for the others);  0 = special token / padding

so there are :data:`NUM_CASE_IDS` ids. Datasets of token tasks add them to every item (``case_ids``); only
models that declare them in ``extra_input_names`` (the BiLSTM token student with
``student.case_embedding_dim > 0``) read them.
"""

from __future__ import annotations

SHAPES = ("lower", "title", "upper", "mixed", "digits", "alnum", "other")
"""Word shapes: all letters lower-case; first letter upper-case then lower-case; all letters upper-case
(two or more); other mixes of cases; digits only; letters and digits; no letter and no digit."""

NUM_CASE_IDS = 1 + 2 * len(SHAPES)
"""Number of case ids (0 is padding / special tokens)."""


def word_shape(word: str) -> int:
    """Index in :data:`SHAPES` of ``word``'s shape."""
    letters = [c for c in word if c.isalpha()]
    has_digit = any(c.isdigit() for c in word)
    if not letters:
        if has_digit and all(c.isdigit() or c in ".,-/:" for c in word):
            return SHAPES.index("digits")
        return SHAPES.index("alnum") if has_digit else SHAPES.index("other")
    if has_digit:
        return SHAPES.index("alnum")
    if all(c.islower() for c in letters):
        return SHAPES.index("lower")
    if all(c.isupper() for c in letters):
        return SHAPES.index("upper") if len(letters) > 1 else SHAPES.index("title")
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return SHAPES.index("title")
    return SHAPES.index("mixed")


def case_ids(words: list[str], word_ids: list[int | None]) -> list[int]:
    """Per sub-token case ids (see the module docstring) of a sentence's ``words``, given each sub-token's
    word index (None for special tokens), as a fast tokenizer's ``word_ids()`` returns them."""
    out = []
    prev = None
    for w in word_ids:
        if w is None:
            out.append(0)
            continue
        out.append(1 + 2 * word_shape(words[w]) + (0 if w != prev else 1))
        prev = w
    return out
