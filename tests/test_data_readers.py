"""Readers: TSV/CSV/JSONL parsing, error messages that name file + line, skip_bad_rows, the HF reader."""

from __future__ import annotations

import json
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from conftest import make_sentiment_rows, write_tsv
from textdistill.data.readers import Example, detect_format, read_examples, read_hf_dataset
from textdistill.errors import DataError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# ---------------------------------------------------------------- formats


def test_tsv_reads_rows_in_order_with_ids_and_lines(tmp_path):
    rows = make_sentiment_rows(5, seed=3)
    path = write_tsv(tmp_path / "train.tsv", rows)
    res = read_examples(path)
    assert [(e.text, e.label) for e in res.examples] == rows
    assert [e.id for e in res.examples] == [0, 1, 2, 3, 4]
    assert res.lines == [2, 3, 4, 5, 6]  # line 1 is the header
    assert all(e.text_pair is None and e.is_original for e in res.examples)
    assert res.skipped == 0 and res.source == str(path)


def test_tsv_keeps_quotes_verbatim(tmp_path):
    # GLUE TSV has no quoting: a leading quote or an unbalanced quote is part of the text
    texts = ['"quoted start', 'he said "hi" and left', "it's a \"film'", 'ends with quote"', '""']
    path = write(tmp_path / "q.tsv", "sentence\tlabel\n" + "".join(f"{t}\t1\n" for t in texts))
    res = read_examples(path)
    assert [e.text for e in res.examples] == texts
    assert [e.label for e in res.examples] == ["1"] * len(texts)


def test_tsv_crlf_line_endings_and_bom_and_blank_lines(tmp_path):
    path = write(tmp_path / "w.tsv", "\ufeffsentence\tlabel\r\ngood film\tpos\r\n\r\n\nbad film\tneg\r\n")
    res = read_examples(path)
    assert [(e.text, e.label) for e in res.examples] == [("good film", "pos"), ("bad film", "neg")]
    assert res.lines == [2, 5]
    assert [e.id for e in res.examples] == [0, 1]


def test_tsv_selects_columns_by_name_and_reads_pairs(tmp_path):
    path = write(
        tmp_path / "qnli.tsv",
        "index\tquestion\tsentence\tlabel\n0\twho is it\tit is me\tentailment\n1\twhy\tno reason\tnot_entailment\n",
    )
    res = read_examples(path, text_column="question", text_pair_column="sentence")
    assert [(e.text, e.text_pair, e.label) for e in res.examples] == [
        ("who is it", "it is me", "entailment"),
        ("why", "no reason", "not_entailment"),
    ]


def test_csv_standard_quoting_multiline_records_and_int_labels(tmp_path):
    text = 'text,label\n"a, b and c",1\n"line one\nline two",0\nplain,2\n'
    res = read_examples(write(tmp_path / "d.csv", text), text_column="text")
    assert [e.text for e in res.examples] == ["a, b and c", "line one\nline two", "plain"]
    assert [e.label for e in res.examples] == ["1", "0", "2"]  # integers are kept as strings
    # the multi-line record starts on line 3, so the next one is on line 5
    assert res.lines == [2, 3, 5]


def test_jsonl_labels_of_every_type(tmp_path):
    records = [
        {"sentence": "a", "label": 1},
        {"sentence": "b", "label": "positive"},
        {"sentence": "c", "label": 2.0},
        {"sentence": "d", "label": " neg "},
    ]
    path = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in records) + "\n\n")
    res = read_examples(path)
    assert [e.label for e in res.examples] == ["1", "positive", "2", "neg"]
    assert [e.text for e in res.examples] == ["a", "b", "c", "d"]


def test_jsonl_regression_and_unlabelled(tmp_path):
    lines = [{"s": "a", "y": 0.5}, {"s": "b", "y": "3"}, {"s": "c", "y": -2}]
    path = write(tmp_path / "r.jsonl", "\n".join(json.dumps(r) for r in lines))
    res = read_examples(path, text_column="s", label_column="y", regression=True)
    assert [e.label for e in res.examples] == [0.5, 3.0, -2.0]
    assert all(isinstance(e.label, float) for e in res.examples)

    path = write(tmp_path / "u.jsonl", '{"s": "a"}\n{"s": "b", "y": null}\n{"s": "c", "y": "x"}\n')
    res = read_examples(path, text_column="s", label_column="y", require_labels=False)
    assert [e.label for e in res.examples] == [None, None, "x"]


def test_tsv_without_label_column_when_labels_not_required(tmp_path):
    path = write(tmp_path / "test.tsv", "index\tsentence\n0\tfine\n1\tawful\n")
    res = read_examples(path, require_labels=False)
    assert [(e.text, e.label) for e in res.examples] == [("fine", None), ("awful", None)]


def test_regression_parses_floats_in_tsv(tmp_path):
    path = write(tmp_path / "stsb.tsv", "sentence\tlabel\na\t3.25\nb\t0\n")
    assert [e.label for e in read_examples(path, regression=True).examples] == [3.25, 0.0]


def test_latin1_file_reads_with_latin1_encoding(tmp_path):
    path = write(tmp_path / "l.csv", "text,label\ncaf\u00e9 \u00d1,pos\n", encoding="latin-1")
    res = read_examples(path, text_column="text", encoding="latin-1")
    assert res.examples[0].text == "caf\u00e9 \u00d1"


def test_format_detection():
    assert detect_format("a/b.TSV") == "tsv"
    assert detect_format("x.csv") == "csv"
    assert detect_format("x.jsonl") == "jsonl" and detect_format("x.ndjson") == "jsonl"
    assert detect_format("x.txt", "csv") == "csv"
    with pytest.raises(
        DataError, match=r"x\.txt: cannot tell the format from the extension '\.txt'.*data\.format"
    ):
        detect_format("x.txt")
    with pytest.raises(DataError, match="unknown data format 'xml'.*valid choices"):
        detect_format("x.tsv", "xml")


# ---------------------------------------------------------------- errors name file + line + fix


def test_missing_file_and_directory(tmp_path):
    missing = tmp_path / "nope.tsv"
    with pytest.raises(DataError, match=f"data file not found: {missing}"):
        read_examples(missing)
    d = tmp_path / "dir.tsv"
    d.mkdir()
    with pytest.raises(DataError, match="is a directory"):
        read_examples(d)


def test_undecodable_bytes_name_the_line_and_suggest_latin1(tmp_path):
    body = "sentence\tlabel\ngood\tpos\nfine\tpos\n"
    path = tmp_path / "bad.tsv"
    path.write_bytes(body.encode() + b"caf\xe9\tneg\n")
    with pytest.raises(DataError) as exc:
        read_examples(path)
    msg = str(exc.value)
    assert f"{path}, line 4:" in msg
    assert "e9" in msg and "utf-8" in msg and "data.encoding=latin-1" in msg


def test_missing_column_lists_the_columns_found(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", [("good", "pos")], header=("text", "label"))
    with pytest.raises(DataError) as exc:
        read_examples(path)
    msg = str(exc.value)
    assert f"{path}, line 1: column 'sentence' not found" in msg
    assert "columns found: 'text', 'label'" in msg and "data.text_column" in msg


def test_missing_label_column_and_csv_hint_for_tsv(tmp_path):
    path = write(tmp_path / "c.tsv", "sentence,label\ngood,pos\n")
    with pytest.raises(DataError, match="is this a CSV file\\? Then set data.format=csv"):
        read_examples(path)
    path = write(tmp_path / "nolabel.csv", "sentence,score\ngood,1\n")
    with pytest.raises(
        DataError, match="column 'label' not found; columns found: 'sentence', 'score'.*data.label_column"
    ):
        read_examples(path)


def test_jsonl_first_record_missing_key_lists_keys(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n')
    with pytest.raises(
        DataError, match=r"\(first record\): key 'sentence' not found; keys found: 'text', 'label'"
    ):
        read_examples(path)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("header.tsv", "sentence\tlabel\n", "the data set is empty (only a header line, no data rows)"),
        ("empty.tsv", "", "the data set is empty (the file is empty; a header line is required)"),
        ("empty.csv", "sentence,label\n\n", "the data set is empty (only a header line"),
        ("empty.jsonl", "\n\n", "the data set is empty (no JSON records)"),
    ],
)
def test_empty_data_set(tmp_path, name, content, expected):
    path = write(tmp_path / name, content)
    with pytest.raises(DataError) as exc:
        read_examples(path)
    assert str(path) in str(exc.value) and expected in str(exc.value)


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "line", "expected"),
    [
        ("f.tsv", "sentence\tlabel\nok\tpos\na\ttab\tpos\n", {}, 3, "expected 2 tab-separated fields"),
        ("f.tsv", "sentence\tlabel\nok\tpos\nonly text\n", {}, 3, "found 1"),
        ("f.csv", 'sentence,label\nok,pos\n"a",b,c\n', {}, 3, "expected 2 comma-separated fields"),
        ("e.tsv", "sentence\tlabel\nok\tpos\n  \tpos\n", {}, 3, "text column 'sentence' is empty"),
        ("e.tsv", "sentence\tlabel\nok\tpos\nfine\t\n", {}, 3, "label column 'label' is empty"),
        ("e.jsonl", '{"sentence": "a", "label": 1}\n{"sentence": "b", "label": null}\n', {}, 2, "is empty"),
        ("e.jsonl", '{"sentence": "a", "label": 1}\n{"label": 0}\n', {}, 2, "key 'sentence' is missing"),
        ("e.jsonl", '{"sentence": "a", "label": 1}\n{"sentence": "b", \n', {}, 2, "not valid JSON"),
        ("e.jsonl", '{"sentence": "a", "label": 1}\n[1, 2]\n', {}, 2, "expected a JSON object, got list"),
        (
            "r.tsv",
            "sentence\tlabel\na\t1.5\nb\thigh\n",
            {"regression": True},
            3,
            "'high', which is not a finite",
        ),
        ("r.tsv", "sentence\tlabel\na\tnan\n", {"regression": True}, 2, "not a finite number"),
    ],
)
def test_bad_rows_raise_with_file_line_and_fix(tmp_path, name, content, kwargs, line, expected):
    path = write(tmp_path / name, content)
    with pytest.raises(DataError) as exc:
        read_examples(path, **kwargs)
    msg = str(exc.value)
    assert msg.startswith(f"{path}, line {line}: "), msg
    assert expected in msg
    assert "data.skip_bad_rows=true" in msg


def test_regression_error_mentions_the_regression_setting(tmp_path):
    path = write(tmp_path / "r.tsv", "sentence\tlabel\nb\tpositive\n")
    with pytest.raises(DataError, match="label column 'label' holds 'positive'.*data.regression is true"):
        read_examples(path, regression=True)


# ---------------------------------------------------------------- skip_bad_rows


def test_skip_bad_rows_counts_reasons_and_keeps_stable_ids(tmp_path):
    content = (
        "sentence\tlabel\n"
        "good one\tpos\n"  # id 0
        "too\tmany\tfields\n"  # id 1: wrong_field_count
        "\tneg\n"  # id 2: empty_text
        "no label\t\n"  # id 3: empty_label
        "bad one\tneg\n"  # id 4
        "x\n"  # id 5: wrong_field_count
    )
    res = read_examples(write(tmp_path / "s.tsv", content), skip_bad_rows=True)
    assert [(e.id, e.text) for e in res.examples] == [(0, "good one"), (4, "bad one")]
    assert res.lines == [2, 6]
    assert res.skipped == 4
    assert res.skipped_reasons == Counter({"wrong_field_count": 2, "empty_text": 1, "empty_label": 1})
    assert len(res.skip_messages) == 4 and res.skip_messages[0].startswith(f"{tmp_path / 's.tsv'}, line 3")


def test_skip_bad_rows_jsonl_and_regression(tmp_path):
    content = '{"sentence": "a", "label": 1}\nnot json\n{"sentence": "b", "label": "x"}\n{"sentence": "c"}\n'
    res = read_examples(write(tmp_path / "s.jsonl", content), skip_bad_rows=True, regression=True)
    assert [(e.id, e.label) for e in res.examples] == [(0, 1.0)]
    assert res.skipped_reasons == Counter({"bad_json": 1, "non_numeric_label": 1, "missing_key": 1})


def test_all_rows_skipped_is_an_error(tmp_path):
    path = write(tmp_path / "s.tsv", "sentence\tlabel\na\t\nb\t\n")
    with pytest.raises(DataError, match=r"all 2 data rows were skipped as bad rows \(empty_label: 2\)"):
        read_examples(path, skip_bad_rows=True)


def test_decoding_errors_are_not_skipped(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"sentence\tlabel\ncaf\xe9\tneg\n")
    with pytest.raises(DataError, match="line 2: cannot decode"):
        read_examples(path, skip_bad_rows=True)


# ---------------------------------------------------------------- HF datasets (faked: no network, no package)


class _FakeClassLabel:
    def __init__(self, names):
        self.names = names


class _FakeDataset:
    def __init__(self, rows, features):
        self._rows = rows
        self.column_names = list(rows[0])
        self.features = features

    def __iter__(self):
        return iter(self._rows)


def _fake_datasets(monkeypatch, load):
    module = types.ModuleType("datasets")
    module.load_dataset = load
    monkeypatch.setitem(sys.modules, "datasets", module)


def test_hf_reader_without_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(DataError, match="needs the `datasets` package.*pip install datasets.*local files"):
        read_hf_dataset("glue", "sst2", "train")


def test_hf_reader_offline_failure_says_offline_and_local_files(monkeypatch):
    def load(name, subset, split):
        raise ConnectionError("Couldn't reach 'glue' on the Hub")

    _fake_datasets(monkeypatch, load)
    with pytest.raises(DataError) as exc:
        read_hf_dataset("glue", "sst2", "train")
    msg = str(exc.value)
    assert "'glue' (subset 'sst2', split 'train')" in msg and "ConnectionError" in msg
    assert "offline" in msg and "pass local files" in msg


def test_hf_reader_maps_class_labels_and_checks_columns(monkeypatch):
    calls = []

    def load(name, subset, split):
        calls.append((name, subset, split))
        rows = [{"sentence": "fine", "label": 1, "idx": 0}, {"sentence": "bad", "label": 0, "idx": 1}]
        return _FakeDataset(rows, {"label": _FakeClassLabel(["negative", "positive"])})

    _fake_datasets(monkeypatch, load)
    res = read_hf_dataset("glue", "sst2", "validation")
    assert calls == [("glue", "sst2", "validation")]
    assert res.examples == [Example(0, "fine", None, "positive"), Example(1, "bad", None, "negative")]
    assert res.source == "hf:glue/sst2[validation]" and res.lines == [1, 2]
    with pytest.raises(
        DataError, match=r"hf:glue/sst2\[validation\]: column 'text' not found.*'sentence', 'label', 'idx'"
    ):
        read_hf_dataset("glue", "sst2", "validation", text_column="text")
