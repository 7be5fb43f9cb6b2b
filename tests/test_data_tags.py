"""Tag schemes: span decoding (seqeval's lenient and strict modes), detection, conversion and repair."""

from __future__ import annotations

import pytest

from textdistill.data.tags import (
    Span,
    convert_tags,
    detect_scheme,
    entity_spans,
    repair_tags,
    scheme_labels,
    split_tag,
    strict_entity_spans,
)
from textdistill.errors import DataError

IOB1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
IOB2 = ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
BIOES = ["B-PER", "E-PER", "S-PER", "O", "S-LOC"]
BMES = ["B-PER", "E-PER", "S-PER", "O", "S-LOC"]
SPANS = [Span("PER", 0, 1), Span("PER", 2, 2), Span("LOC", 4, 4)]


def test_split_tag_follows_seqeval():
    assert split_tag("B-PER") == ("B", "PER")
    assert split_tag("O") == ("O", "")
    assert split_tag("B-ORG-PART") == ("B", "ORG-PART")  # type = everything after the first '-'
    assert split_tag("B") == ("B", "_")


@pytest.mark.parametrize("tags", [IOB1, IOB2, BIOES, BMES])
def test_every_scheme_decodes_to_the_same_entities(tags):
    assert entity_spans(tags) == SPANS


def test_lenient_decoding_hand_cases():
    # an I- after O starts an entity (conlleval); a type change splits; B-X I-Y gives two entities
    assert entity_spans(["O", "I-PER", "I-PER"]) == [Span("PER", 1, 2)]
    assert entity_spans(["B-PER", "I-LOC", "O"]) == [Span("PER", 0, 0), Span("LOC", 1, 1)]
    assert entity_spans(["B-PER", "B-PER"]) == [Span("PER", 0, 0), Span("PER", 1, 1)]
    assert entity_spans(["E-PER", "E-PER"]) == [Span("PER", 0, 0), Span("PER", 1, 1)]
    assert entity_spans(["B-PER", "M-PER", "M-PER", "E-PER"]) == [Span("PER", 0, 3)]
    assert entity_spans(["O", "O"]) == []


def test_strict_iob2_drops_chunks_without_b():
    assert strict_entity_spans(["I-NP", "I-NP", "O"], "iob2") == []
    assert strict_entity_spans(["B-NP", "I-NP", "O"], "iob2") == [Span("NP", 0, 1)]
    # B-PER I-LOC: PER ends at 0, the I-LOC that follows is no entity
    assert strict_entity_spans(["B-PER", "I-LOC", "B-LOC"], "iob2") == [Span("PER", 0, 0), Span("LOC", 2, 2)]


def test_strict_bioes_needs_a_proper_end():
    assert strict_entity_spans(["S-PER", "B-LOC", "E-LOC"], "bioes") == [Span("PER", 0, 0), Span("LOC", 1, 2)]
    assert strict_entity_spans(["S-PER", "B-LOC", "I-LOC"], "bioes") == [Span("PER", 0, 0)]
    assert strict_entity_spans(["B-LOC", "E-PER"], "bioes") == []
    assert strict_entity_spans(["B-LOC", "I-LOC", "E-LOC", "O"], "bioes") == [Span("LOC", 0, 2)]


def test_strict_rejects_foreign_prefixes_and_schemes():
    with pytest.raises(DataError, match="not a iob2 tag"):
        strict_entity_spans(["S-PER"], "iob2")
    with pytest.raises(DataError, match="iob2 and bioes"):
        strict_entity_spans(["B-PER"], "iob1")


@pytest.mark.parametrize(
    ("target", "expected"), [("iob1", IOB1), ("iob2", IOB2), ("bioes", BIOES), ("bmes", BMES)]
)
def test_conversion_from_every_scheme(target, expected):
    for source in (IOB1, IOB2, BIOES, BMES):
        assert convert_tags(source, target) == expected


def test_conversion_of_long_entities():
    tags = ["B-ORG", "I-ORG", "I-ORG", "O"]
    assert convert_tags(tags, "bioes") == ["B-ORG", "I-ORG", "E-ORG", "O"]
    assert convert_tags(tags, "bmes") == ["B-ORG", "M-ORG", "E-ORG", "O"]
    assert convert_tags(tags, "iob1") == ["I-ORG", "I-ORG", "I-ORG", "O"]


def test_repair_counts_and_keeps_the_entities():
    tags = ["O", "I-PER", "I-PER", "B-LOC", "I-ORG"]
    fixed, changed = repair_tags(tags, "iob2")
    assert fixed == ["O", "B-PER", "I-PER", "B-LOC", "B-ORG"]
    assert changed == 2
    assert entity_spans(fixed) == entity_spans(tags)
    assert repair_tags(IOB2, "iob2") == (IOB2, 0)


def test_detect_scheme():
    assert detect_scheme([IOB1]) == "iob1"
    assert detect_scheme([IOB2, ["O", "I-PER"]]) == "iob2"  # one I- start in IOB2 data is an error, not IOB1
    assert detect_scheme([BIOES]) == "bioes"
    assert detect_scheme([["B-NS", "M-NS", "E-NS"]]) == "bmes"
    assert detect_scheme([["O", "O"]]) == "iob2"


def test_scheme_labels():
    assert scheme_labels(["PER"], "bioes") == ["O", "B-PER", "I-PER", "E-PER", "S-PER"]
    assert scheme_labels(["LOC", "PER"], "iob2") == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
