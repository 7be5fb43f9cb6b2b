"""Readers: TSV/CSV/JSONL parsing, error messages that name file + line, skip_bad_rows, the HF reader."""

from __future__ import annotations

import csv
import json
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from conftest import make_sentiment_rows, write_tsv
from textdistill.data.readers import (
    Example,
    detect_format,
    find_undecodable_line,
    read_examples,
    read_hf_dataset,
)
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


# ---------------------------------------------------------------- encodings that used to escape


def test_utf16_without_bom_is_a_data_error_naming_the_byte_order_fix(tmp_path):
    path = write(tmp_path / "d.tsv", "sentence\tlabel\nhello\tpos\n")  # utf-8 bytes: no UTF-16 BOM
    with pytest.raises(DataError) as exc:
        read_examples(path, encoding="utf-16")
    msg = str(exc.value)
    assert msg.startswith(f"{path}, line 1: cannot decode the text as utf-16 (UTF-16 stream does not start")
    assert "utf-16-le or utf-16-be" in msg and "data.encoding=latin-1" in msg
    assert find_undecodable_line(path, "utf-16") == (1, b"")  # the codec names no bytes


def test_utf16_with_bom_and_utf16le_without_bom_read_the_same_rows(tmp_path):
    text = "sentence\tlabel\nh\u00e9llo w\u00f6rld\tpos\n\u65e5\u672c\tneg\n"
    expected = [("h\u00e9llo w\u00f6rld", "pos"), ("\u65e5\u672c", "neg")]
    with_bom = write(tmp_path / "bom.tsv", text, encoding="utf-16")  # Python writes a BOM for utf-16
    assert with_bom.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")
    res = read_examples(with_bom, encoding="utf-16")
    assert [(e.text, e.label) for e in res.examples] == expected
    le = write(tmp_path / "le.tsv", text, encoding="utf-16-le")
    assert [(e.text, e.label) for e in read_examples(le, encoding="utf-16-le").examples] == expected


@pytest.mark.parametrize("encoding", ["rot13", "base64", "hex", "zlib", "uu", "bz2", "quopri", "utf-8\x00"])
def test_non_text_codecs_are_refused_by_name(tmp_path, encoding):
    path = write(tmp_path / "d.tsv", "sentence\tlabel\nhello\tpos\n")
    with pytest.raises(DataError) as exc:
        read_examples(path, encoding=encoding)
    msg = str(exc.value)
    assert repr(encoding) in msg and str(path) in msg
    assert "utf-8" in msg.split("Fix:")[1] and "latin-1" in msg.split("Fix:")[1]


@pytest.mark.parametrize("encoding", ["punycode", "undefined"])
def test_codecs_that_raise_plain_unicode_errors_are_data_errors(tmp_path, encoding):
    path = write(tmp_path / "d.csv", "sentence,label\nhello,pos\n")
    with pytest.raises(DataError) as exc:
        read_examples(path, encoding=encoding)
    msg = str(exc.value)
    assert msg.startswith(f"{path}, line 1: cannot decode the text as {encoding} (")
    assert "data.encoding=utf-8" in msg and "data.encoding=latin-1" in msg


# ---------------------------------------------------------------- JSON Python cannot load, long CSV fields


def test_jsonl_integer_over_python_digit_limit_names_the_line(tmp_path):
    huge = "7" * 5000  # valid JSON; Python refuses to convert integers over 4300 digits
    content = (
        '{"sentence": "a", "label": 1}\n{"sentence": "b", "label": '
        + huge
        + '}\n{"sentence": "c", "label": 0}\n'
    )
    path = write(tmp_path / "d.jsonl", content)
    with pytest.raises(DataError) as exc:
        read_examples(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}, line 2: the JSON cannot be read (") and "4300" in msg
    assert huge not in msg and "data.skip_bad_rows=true" in msg
    res = read_examples(path, skip_bad_rows=True)
    assert [(e.id, e.text) for e in res.examples] == [(0, "a"), (2, "c")]
    assert res.skipped_reasons == Counter({"bad_json": 1})


def test_jsonl_deep_nesting_names_the_line(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    content = '{"sentence": "a", "label": 1}\n\n{"sentence": "b", "label": ' + deep + "}\n"
    path = write(tmp_path / "d.jsonl", content)
    with pytest.raises(DataError, match=f"^{path}, line 3: the JSON is nested too deeply"):
        read_examples(path)
    res = read_examples(path, skip_bad_rows=True)
    assert [e.text for e in res.examples] == ["a"] and res.skipped_reasons == Counter({"bad_json": 1})


def test_csv_fields_over_the_csv_module_default_limit_are_read(tmp_path):
    old = csv.field_size_limit(1000)  # as if something had lowered it; the reader raises it again
    try:
        big = 'word, and "quoted"\nnext line ' * 20_000  # ~600k characters with commas, quotes, newlines
        quoted = '"' + big.replace('"', '""') + '"'
        path = write(tmp_path / "d.csv", f"sentence,label\n{quoted},pos\nshort,neg\n")
        res = read_examples(path)
        assert [e.text for e in res.examples] == [big, "short"]
        assert [e.label for e in res.examples] == ["pos", "neg"] and res.lines == [
            2,
            20_003,
        ]  # the record spans 20,001 lines
        assert csv.field_size_limit() >= len(big)
    finally:
        csv.field_size_limit(old)


# ---------------------------------------------------------------- augmented files: id and is_original columns


def test_tsv_id_and_is_original_columns_are_honoured(tmp_path):
    content = (
        "id\tsentence\tlabel\tis_original\n"
        "7\tgood film\tpos\ttrue\n"
        "30\tgood movie\t\tfalse\n"  # augmented: no label, allowed although labels are required
        "12\tbad film\tneg\t1\n"
        "31\tbad movie\t\t0\n"
        "13\tfine\tpos\tTRUE\n"
    )
    res = read_examples(write(tmp_path / "aug.tsv", content))
    assert [(e.id, e.text, e.label, e.is_original) for e in res.examples] == [
        (7, "good film", "pos", True),
        (30, "good movie", None, False),
        (12, "bad film", "neg", True),
        (31, "bad movie", None, False),
        (13, "fine", "pos", True),
    ]
    assert res.lines == [2, 3, 4, 5, 6]


def test_csv_and_jsonl_id_and_is_original(tmp_path):
    csv_path = write(tmp_path / "a.csv", 'is_original,text,label,id\nfalse,"new, words",,4\ntrue,old,x,0\n')
    res = read_examples(csv_path, text_column="text")
    assert [(e.id, e.text, e.label, e.is_original) for e in res.examples] == [
        (4, "new, words", None, False),
        (0, "old", "x", True),
    ]
    records = [
        {"id": 0, "sentence": "a", "label": 2.5, "is_original": True},
        {"id": 5, "sentence": "b", "label": None, "is_original": False},
        {"id": 6.0, "sentence": "c", "label": "", "is_original": 0},  # pandas-style float id
        {"id": "9", "sentence": "d", "label": "1", "is_original": "true"},
    ]
    path = write(tmp_path / "a.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    res = read_examples(path, regression=True)
    assert [(e.id, e.label, e.is_original) for e in res.examples] == [
        (0, 2.5, True),
        (5, None, False),
        (6, None, False),
        (9, 1.0, True),
    ]


def test_an_original_row_still_needs_its_label(tmp_path):
    content = "id\tsentence\tlabel\tis_original\n0\ta\tpos\ttrue\n1\tb\t\ttrue\n"
    path = write(tmp_path / "a.tsv", content)
    with pytest.raises(DataError, match=f"^{path}, line 3: label column 'label' is empty"):
        read_examples(path)
    # without an is_original column every row is an original, as before
    path = write(tmp_path / "b.tsv", "id\tsentence\tlabel\n0\ta\tpos\n1\tb\t\n")
    with pytest.raises(DataError, match=f"^{path}, line 3: label column 'label' is empty"):
        read_examples(path)
    res = read_examples(path, require_labels=False)
    assert [(e.id, e.label, e.is_original) for e in res.examples] == [(0, "pos", True), (1, None, True)]


@pytest.mark.parametrize("bad", ["-1", "1.5", "abc", "", " ", "\u0663", "9" * 25, "9223372036854775808"])
def test_bad_tsv_ids_are_row_errors(tmp_path, bad):
    path = write(tmp_path / "a.tsv", f"id\tsentence\tlabel\n0\tok\tpos\n{bad}\tb\tneg\n3\tc\tneg\n")
    with pytest.raises(DataError) as exc:
        read_examples(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}, line 3: column 'id' holds {bad[:40]!r}")
    assert "non-negative integers" in msg and "data.skip_bad_rows=true" in msg
    res = read_examples(path, skip_bad_rows=True)
    assert [e.id for e in res.examples] == [0, 3] and res.skipped_reasons == Counter({"bad_id": 1})


def test_largest_int64_id_is_accepted(tmp_path):
    path = write(tmp_path / "a.tsv", "id\tsentence\tlabel\n9223372036854775807\tok\tpos\n 00042 \tb\tneg\n")
    assert [e.id for e in read_examples(path).examples] == [2**63 - 1, 42]


@pytest.mark.parametrize(
    "bad",
    [True, 1.5, -3, "x", None, 2**63, 10**4000, [1]],
    ids=["bool", "float", "negative", "string", "null", "2**63", "4001-digits", "list"],
)
def test_bad_jsonl_ids_are_row_errors(tmp_path, bad):
    records = [{"id": 0, "sentence": "a", "label": 1}, {"id": bad, "sentence": "b", "label": 1}]
    path = write(tmp_path / "a.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(DataError) as exc:
        read_examples(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}, line 2: column 'id' holds ") and len(msg) < 400
    res = read_examples(path, skip_bad_rows=True)
    assert [e.id for e in res.examples] == [0] and res.skipped_reasons == Counter({"bad_id": 1})


@pytest.mark.parametrize("bad", ["yes", "2", "", "t"])
def test_bad_is_original_values_are_row_errors(tmp_path, bad):
    path = write(tmp_path / "a.tsv", f"sentence\tlabel\tis_original\na\tpos\ttrue\nb\t\t{bad}\n")
    with pytest.raises(DataError) as exc:
        read_examples(path)
    assert str(exc.value).startswith(
        f"{path}, line 3: column 'is_original' holds {bad!r}; expected true, false, 1 or 0."
    )
    res = read_examples(path, skip_bad_rows=True)
    assert [e.text for e in res.examples] == ["a"] and res.skipped_reasons == Counter({"bad_value": 1})


def test_duplicate_ids_raise_even_when_skipping(tmp_path):
    content = "id\tsentence\tlabel\n3\ta\tpos\n4\tb\tneg\n\n3\tc\tneg\n"
    path = write(tmp_path / "a.tsv", content)
    for skip in (False, True):
        with pytest.raises(DataError) as exc:
            read_examples(path, skip_bad_rows=skip)
        msg = str(exc.value)
        assert msg.startswith(f"{path}, line 5: duplicate example id 3 (line 2 has it too)")
        assert "renumber the 'id' column" in msg
    # a skipped row does not claim its id
    path = write(tmp_path / "b.tsv", "id\tsentence\tlabel\n3\t \tpos\n3\tb\tneg\n")
    res = read_examples(path, skip_bad_rows=True)
    assert [(e.id, e.text) for e in res.examples] == [(3, "b")] and res.lines == [3]


def test_jsonl_first_record_decides_the_id_and_is_original_keys(tmp_path):
    # the first record acts as the header: keys it lacks are not columns of the file
    records = [{"sentence": "a", "label": 1}, {"sentence": "b", "label": None, "id": 9, "is_original": False}]
    path = write(tmp_path / "a.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(DataError, match=f"^{path}, line 2: label column 'label' is empty"):
        read_examples(path)
    res = read_examples(path, require_labels=False)
    assert [(e.id, e.is_original) for e in res.examples] == [(0, True), (1, True)]
    # ... and keys it has are required in every record
    records = [{"id": 0, "sentence": "a", "label": 1, "is_original": True}, {"sentence": "b", "label": 2}]
    path = write(tmp_path / "b.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(DataError, match=f"^{path}, line 2: key 'is_original' is missing"):
        read_examples(path)
    res = read_examples(path, skip_bad_rows=True)
    assert [e.text for e in res.examples] == ["a"] and res.skipped_reasons == Counter({"missing_key": 1})


def test_a_column_configured_as_text_or_label_keeps_that_role(tmp_path):
    path = write(tmp_path / "a.tsv", "sentence\tid\n hello\tx7\nbye\tx8\n")
    res = read_examples(path, label_column="id")
    assert [(e.id, e.label) for e in res.examples] == [(0, "x7"), (1, "x8")]


def test_augmented_files_read_back_as_augmentation_made_them(tmp_path):
    """Round trip through the real writer: augment_to_file's TSV and JSONL give back its examples."""
    from textdistill.config.augment import AugmentConfig
    from textdistill.data.augment.core import augment_examples
    from textdistill.data.augment.files import augment_to_file

    rows = [("a good film indeed", "pos"), ("a dull and bad plot", "neg"), ("fine acting , weak end", "pos")]
    train = write(tmp_path / "train.tsv", "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    cfg = AugmentConfig(method="tang", n_aug=4, p_mask=0.5, p_pos=0.0, p_ng=0.2, seed=3)
    expected = augment_examples(read_examples(train).examples, cfg, tokenizer=None)
    assert any(not e.is_original for e in expected)
    for name in ("aug.tsv", "aug.jsonl"):
        augment_to_file(train, tmp_path / name, cfg)
        back = read_examples(tmp_path / name)  # labels required: only the new rows may lack one
        assert back.examples == expected, name
        assert [e.id for e in back.examples] != sorted(e.id for e in back.examples)  # ids from the file
