"""Tag schemes of sequence labelling (IOB1, IOB2, BIOES, BMES): entity spans, detection, conversion, repair.

A tag is ``O`` or ``P-TYPE`` with a one-letter prefix ``P`` and an entity type (``B-PER``, ``I-LOC``,
``S-ORG``, ``M-NS``). The schemes:

* ``iob1`` (the original CoNLL-2003 files): entities are ``I-`` runs; ``B-`` only starts an entity that
  directly follows another of the same type.
* ``iob2`` (HF ``conll2003``, WNUT): every entity starts with ``B-`` and continues with ``I-``.
* ``bioes`` (IOBES): ``S-`` single-token entities, ``B- I-* E-`` longer ones.
* ``bmes`` (Chinese word/entity segmentation): ``S-``, ``B- M-* E-``.

Entity spans are decoded like seqeval's default (conlleval-compatible, "lenient") ``get_entities``: a chunk
starts at ``B``/``S``, at an ``I``/``E``/``M`` after ``O``/``E``/``S``, or at a change of type; it ends
before such a start and after ``E``/``S``. That one decoder reads every scheme above (``M`` behaves as
``I``), which is what makes :func:`convert_tags` lossless between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from textdistill.errors import DataError

SCHEMES = ("iob1", "iob2", "bioes", "bmes")
"""Tag schemes :func:`convert_tags` reads and writes."""

_PREFIXES = {"iob1": "BIO", "iob2": "BIO", "bioes": "BIOES", "bmes": "BMESO"}


@dataclass(frozen=True)
class Span:
    """One entity: ``type`` over tokens ``start..end`` (inclusive, like seqeval's tuples)."""

    type: str
    start: int
    end: int


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``; a bare ``"B"`` -> ``("B", "_")``.

    As in seqeval, the prefix is the first character and the type what follows the first ``-`` (``_``
    when there is none), so ``B-ORG-PART`` has type ``ORG-PART``.
    """
    if tag == "O" or not tag:
        return "O", ""
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """seqeval's ``end_of_chunk``: whether the chunk open at the previous token ends there."""
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I", "M") and tag in ("B", "S", "O"):
        return True
    return prev_tag != "O" and prev_type != type_


def _starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """seqeval's ``start_of_chunk``: whether a chunk starts at this token."""
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I", "M"):
        return True
    return tag != "O" and prev_type != type_


def entity_spans(tags: Sequence[str]) -> list[Span]:
    """Entities of one sentence, decoded leniently (seqeval's default mode; conlleval).

    Example: ``["B-PER", "I-PER", "O", "I-LOC"]`` -> ``[Span("PER", 0, 1), Span("LOC", 3, 3)]`` (the
    ``I-LOC`` after ``O`` starts an entity, as conlleval counts it).
    """
    spans: list[Span] = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, raw in enumerate([*tags, "O"]):
        tag, type_ = split_tag(raw)
        if _ends(prev_tag, tag, prev_type, type_):
            spans.append(Span(prev_type, begin, i - 1))
        if _starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return spans


# ------------------------------------------------------------------------------------------ strict mode
_STRICT_INSIDE = {"iob2": {("B", "I"), ("I", "I")}, "bioes": {("B", "I"), ("B", "E"), ("I", "I"), ("I", "E")}}
_STRICT_START = {"iob2": {"B"}, "bioes": {"B", "S"}}
_STRICT_END = {"iob2": None, "bioes": {"S", "E"}}  # iob2: any start is complete


def strict_entity_spans(tags: Sequence[str], scheme: str) -> list[Span]:
    """Entities under seqeval's ``mode="strict"``: only well-formed chunks count.

    ``iob2``: a chunk is ``B-X`` followed by ``I-X``s; an ``I-`` that does not continue a chunk of its type
    is no entity. ``bioes``: ``S-X``, or ``B-X I-X* E-X``; an unfinished ``B- I-`` run is no entity.

    Raises:
        DataError: a scheme without a strict mode, or a tag whose prefix the scheme does not allow.
    """
    if scheme not in _STRICT_START:
        raise DataError(f"strict entity matching is defined for iob2 and bioes, not {scheme!r}.")
    allowed = "BIO" if scheme == "iob2" else "BIOES"
    parsed = [split_tag(t) for t in tags]
    for i, (p, _) in enumerate(parsed):
        if p not in allowed:
            raise DataError(
                f"tag {tags[i]!r} (token {i}) is not a {scheme} tag (prefixes {', '.join(allowed)}). Fix: "
                f"score in the data's scheme, or the default lenient mode."
            )
    ext = [*parsed, ("O", "")]
    spans: list[Span] = []
    i = 0
    while i < len(parsed):
        prefix, type_ = ext[i]
        if prefix not in _STRICT_START[scheme]:
            i += 1
            continue
        j = i + 1
        prev = ext[i]
        while (prev[0], ext[j][0]) in _STRICT_INSIDE[scheme] and ext[j][1] == prev[1]:
            prev = ext[j]
            j += 1
        ends = _STRICT_END[scheme]
        if ends is None or prev[0] in ends:
            spans.append(Span(type_, i, j - 1))
        i = j
    return spans


# ---------------------------------------------------------------------------------- detection, rendering
def detect_scheme(sentences: Sequence[Sequence[str]]) -> str:
    """The scheme of a corpus's tags.

    ``M-`` -> bmes; ``E-``/``S-`` -> bioes; otherwise iob1 when ``I-`` starts entities (after ``O`` or
    another type) and ``B-`` never does (IOB1 writes ``B-`` only between adjacent same-type entities),
    else iob2 (a few ``I-`` starts in IOB2 data are annotation errors, counted by :func:`repair_tags`).
    """
    prefixes: set[str] = set()
    i_starts = b_starts = 0
    for tags in sentences:
        prev_p, prev_t = "O", ""
        for raw in tags:
            p, t = split_tag(raw)
            prefixes.add(p)
            opens = prev_p == "O" or prev_t != t
            if p == "I" and opens:
                i_starts += 1
            if p == "B" and opens:
                b_starts += 1
            prev_p, prev_t = p, t
    if "M" in prefixes:
        return "bmes"
    if prefixes & {"E", "S"}:
        return "bioes"
    return "iob1" if i_starts and not b_starts else "iob2"


def render_tags(spans: Sequence[Span], length: int, scheme: str) -> list[str]:
    """Write entity spans as the tags of ``scheme`` for a sentence of ``length`` tokens."""
    if scheme not in SCHEMES:
        raise DataError(f"unknown tag scheme {scheme!r}; valid choices: {', '.join(SCHEMES)}.")
    tags = ["O"] * length
    prev_end, prev_type = -2, ""
    for s in spans:
        n = s.end - s.start + 1
        if scheme in ("iob1", "iob2"):
            first = "B" if scheme == "iob2" or (prev_end == s.start - 1 and prev_type == s.type) else "I"
            body = ["I"] * (n - 1)
            prefixes = [first, *body]
        else:
            middle = "M" if scheme == "bmes" else "I"
            prefixes = ["S"] if n == 1 else ["B", *[middle] * (n - 2), "E"]
        for k, p in enumerate(prefixes):
            tags[s.start + k] = f"{p}-{s.type}"
        prev_end, prev_type = s.end, s.type
    return tags


def convert_tags(tags: Sequence[str], target: str) -> list[str]:
    """Re-tag one sentence in ``target`` scheme (entities decoded leniently, so any source scheme works)."""
    return render_tags(entity_spans(tags), len(tags), target)


def repair_tags(tags: Sequence[str], scheme: str) -> tuple[list[str], int]:
    """Make one sentence well-formed in ``scheme``; returns the tags and how many were changed.

    Ill-formed tags (an ``I-`` after ``O`` in IOB2, a ``B-`` run without ``E-`` in BIOES, an ``I-X`` after
    ``B-Y``) are read the way conlleval and seqeval's default mode read them: the entity starts there.
    Re-rendering those entities in ``scheme`` therefore keeps every entity the evaluation would count, and
    a model trained on the result never learns an ill-formed transition. (Rejecting would lose whole
    sentences of otherwise good data over one tag; the count is reported so the user can see it.)
    """
    fixed = convert_tags(tags, scheme)
    return fixed, sum(a != b for a, b in zip(tags, fixed))


def scheme_labels(types: Sequence[str], scheme: str) -> list[str]:
    """Every tag of ``scheme`` over entity ``types``: ``O`` then per type its prefixes (a full label set)."""
    prefixes = [p for p in _PREFIXES[scheme] if p != "O"]
    return ["O", *[f"{p}-{t}" for t in sorted(types) for p in prefixes]]
