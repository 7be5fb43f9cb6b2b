"""Label maps: precedence (config > named teacher > sorted train), teacher checks, unknown dev labels."""

from __future__ import annotations

import pytest

from conftest import write_tsv
from textdistill.data.labels import LabelMap, check_labels, is_named, resolve_label_map, sort_labels
from textdistill.data.readers import read_examples
from textdistill.errors import DataError

NAMED = {0: "negative", 1: "positive"}
UNNAMED3 = {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}


def test_label_map_round_trip():
    lm = LabelMap(("neg", "neu", "pos"))
    assert len(lm) == 3 and "neu" in lm and "x" not in lm
    assert [lm.id(n) for n in lm] == [0, 1, 2] and lm.name(2) == "pos"
    assert lm.to_id2label() == {0: "neg", 1: "neu", 2: "pos"}
    # config.json stores ids as strings
    assert resolve_label_map(["a"], None, {"1": "b", "0": "a"}).names == ("a", "b")
    with pytest.raises(DataError, match=r"repeats \['a'\]"):
        LabelMap(("a", "b", "a"))
    with pytest.raises(DataError, match="does not have the ids 0..1"):
        resolve_label_map(["a"], None, {0: "a", 2: "b"})


def test_sort_labels_is_numeric_aware():
    assert sort_labels(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert sort_labels(["b", "a", "10", "2"]) == ["10", "2", "a", "b"]  # mixed: plain string order
    assert sort_labels(["01", "1"]) == ["01", "1"]  # "01" is not a canonical integer


def test_is_named():
    assert not is_named(UNNAMED3)
    assert is_named(NAMED)
    assert is_named({0: "LABEL_0", 1: "spam"})


def test_sorted_train_labels_without_teacher():
    lm = resolve_label_map(["pos", "neg", "neu", "pos"], None, None)
    assert lm.names == ("neg", "neu", "pos") and lm.source == "train"
    assert resolve_label_map(["10", "9", "1"], None, None).names == ("1", "9", "10")


def test_configured_order_wins():
    lm = resolve_label_map(["pos", "neg"], ["pos", "neg"], None)
    assert lm.names == ("pos", "neg") and lm.source == "config"
    # the configured names may be more than the train labels (a class absent from train)
    assert resolve_label_map(["a"], ["b", "a"], None).to_id2label() == {0: "b", 1: "a"}
    # explicit config also wins over an unnamed teacher (same count)
    assert resolve_label_map(["x", "y", "z"], ["z", "y", "x"], UNNAMED3).names == ("z", "y", "x")


def test_named_teacher_order_wins_over_sorting():
    lm = resolve_label_map(["negative", "positive"], None, {0: "positive", 1: "negative"})
    assert lm.names == ("positive", "negative") and lm.source == "teacher"


def test_unnamed_teacher_integer_labels_are_ids_and_names_are_sorted():
    lm = resolve_label_map(["2", "0", "1"], None, UNNAMED3)
    assert lm.names == ("0", "1", "2")
    # a class may be absent from train: the ids still cover the teacher's outputs
    assert resolve_label_map(["0", "2"], None, UNNAMED3).names == ("0", "1", "2")
    assert resolve_label_map(["c", "a", "b"], None, UNNAMED3).names == ("a", "b", "c")


def test_mismatch_with_named_teacher_shows_both_maps_and_fix():
    with pytest.raises(DataError) as exc:
        resolve_label_map(["neg", "pos"], None, NAMED)
    msg = str(exc.value)
    assert msg.startswith("label map mismatch: the teacher's id2label is {0: 'negative', 1: 'positive'}")
    assert "the train labels give {0: 'neg', 1: 'pos'}" in msg
    assert "Fix: relabel the data with the teacher's class names ['negative', 'positive']" in msg


def test_mismatch_integer_labels_with_named_teacher_suggests_mapping():
    with pytest.raises(
        DataError, match="replace them by the teacher's names \\(0 -> negative, 1 -> positive\\)"
    ):
        resolve_label_map(["0", "1"], None, NAMED)


def test_mismatch_in_count():
    with pytest.raises(DataError) as exc:
        resolve_label_map(["a", "b"], None, UNNAMED3)
    msg = str(exc.value)
    assert "{0: 'LABEL_0', 1: 'LABEL_1', 2: 'LABEL_2'}" in msg and "{0: 'a', 1: 'b'}" in msg
    assert "the teacher has 3 classes and the data 2" in msg
    with pytest.raises(DataError, match="the teacher has 2 classes and the data 3"):
        resolve_label_map(["negative"], ["negative", "neutral", "positive"], NAMED)


def test_configured_order_that_contradicts_named_teacher():
    with pytest.raises(
        DataError, match="same names in another order; set data.labels to \\['negative', 'positive'\\]"
    ):
        resolve_label_map(["negative", "positive"], ["positive", "negative"], NAMED)
    with pytest.raises(DataError, match="differ only in case"):
        resolve_label_map(["Negative", "Positive"], ["Negative", "Positive"], NAMED)


def test_integer_labels_out_of_range_for_unnamed_teacher():
    with pytest.raises(DataError, match=r"integer labels must be ids 0..2 of the teacher; found \['3'\]"):
        resolve_label_map(["1", "2", "3"], None, UNNAMED3)


def test_train_label_outside_configured_map():
    with pytest.raises(DataError, match=r"train labels \['c'\] are not in the label map \{0: 'a', 1: 'b'\}"):
        resolve_label_map(["a", "c"], ["a", "b"], None)


def test_unknown_dev_label_names_file_line_and_known_labels(tmp_path):
    dev = write_tsv(tmp_path / "dev.tsv", [("good", "positive"), ("meh", "neutral"), ("bad", "negative")])
    result = read_examples(dev)
    lm = LabelMap(("negative", "positive"))
    with pytest.raises(DataError) as exc:
        check_labels(result, lm)
    msg = str(exc.value)
    assert msg.startswith(
        f"{dev}, line 3: label 'neutral' is not one of the known labels ['negative', 'positive']"
    )
    check_labels(read_examples(dev, require_labels=False), LabelMap(("negative", "neutral", "positive")))
