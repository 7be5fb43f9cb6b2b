"""Hostile inputs: the data readers and the config loader either succeed correctly or raise a textdistill error.

Property, for every generated input: ``read_examples`` / ``load_config`` return a well-formed result, or
raise a :class:`~textdistill.errors.TextDistillError` subclass with a message — never another exception
type, and never a hang (a watchdog alarm fails the example after ``HANG_SECONDS``).

Example counts are bounded so the file stays fast; raise them to search harder, e.g.
``TEXTDISTILL_HOSTILE_EXAMPLES=2000 python -m pytest tests/test_hostile_inputs.py -q`` (the count tried is
recorded in docs/reliability.md).

Known reader bugs (reported, see the ``xfail(strict=True)`` tests at the end) are kept out of the random
strategies so that the properties guard everything else; when a bug is fixed its xfail turns into a
failure ("XPASS strict"): remove the mark and the exclusion noted next to it.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import signal
import string
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textdistill.config.loader import load_config
from textdistill.config.schema import Config
from textdistill.data.readers import ReadResult, read_examples
from textdistill.errors import ConfigError, DataError, TextDistillError

EXAMPLES = int(os.environ.get("TEXTDISTILL_HOSTILE_EXAMPLES", "60"))
HANG_SECONDS = 20
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
ENCODINGS = [
    "utf-8",
    "utf-16",
    "utf-8-sig",
    "latin-1",
    "cp1252",
    "ascii",
    "shift_jis",
    "utf-32",
    "utf-16-le",
    "utf-7",
    "cp037",
]
COLUMNS = ["sentence", "label", "sentence2", "text", "extra", "", "label "]


class Hang(BaseException):
    """Raised by the watchdog (a BaseException, so no ``except Exception`` in the code under test eats it)."""


@contextmanager
def watchdog(seconds: float = HANG_SECONDS):
    if not hasattr(signal, "setitimer"):  # Windows: no interval timers, run without the watchdog
        yield
        return

    def fire(signum, frame):
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(fn, *expected_errors: type[TextDistillError]):
    """Run ``fn`` under the watchdog: its result, or the textdistill error it raised (checked to have a message).

    Any other exception propagates, so hypothesis reports (and shrinks) the input that caused it.
    """
    with watchdog():
        try:
            return fn()
        except TextDistillError as e:
            assert str(e).strip(), f"{type(e).__name__} without a message"
            if expected_errors:
                assert isinstance(e, expected_errors), f"{type(e).__name__}: {e}"
            return e


# -- readers ----------------------------------------------------------------------------------------------------
def check_read_result(res: ReadResult, *, regression: bool, require_labels: bool, pair: bool) -> None:
    """A ReadResult is internally consistent and holds only well-typed examples."""
    assert res.examples, "an empty result must be a DataError"
    assert len(res.lines) == len(res.examples)
    assert res.lines == sorted(res.lines) and all(n >= 1 for n in res.lines)
    assert res.skipped == sum(res.skipped_reasons.values())
    ids = [e.id for e in res.examples]
    assert len(set(ids)) == len(ids)  # unique; files with an id column (augmented data) need not be sorted
    for e in res.examples:
        assert isinstance(e.text, str) and e.text.strip()
        if pair:
            assert isinstance(e.text_pair, str) and e.text_pair.strip()
        else:
            assert e.text_pair is None
        if e.label is None:
            assert not require_labels
        elif regression:
            assert isinstance(e.label, float) and math.isfinite(e.label)
        else:
            assert isinstance(e.label, str) and e.label.strip() == e.label and e.label


reader_options = st.fixed_dictionaries(
    {
        "skip_bad_rows": st.booleans(),
        "regression": st.booleans(),
        "require_labels": st.booleans(),
        "text_pair_column": st.sampled_from([None, "sentence2"]),
    }
)


def read(path: Path, fmt: str, encoding: str, opts: dict):
    res = outcome(lambda: read_examples(path, format=fmt, encoding=encoding, **opts), DataError)
    if isinstance(res, ReadResult):
        check_read_result(
            res,
            regression=opts["regression"],
            require_labels=opts["require_labels"],
            pair=opts["text_pair_column"] is not None,
        )
    return res


@SETTINGS
@given(
    data=st.binary(max_size=3000),
    fmt=st.sampled_from(["tsv", "csv", "jsonl"]),
    encoding=st.sampled_from(ENCODINGS),
    opts=reader_options,
)
def test_reader_random_bytes(tmp_path, data, fmt, encoding, opts):
    path = tmp_path / f"data.{fmt}"
    path.write_bytes(data)
    read(path, fmt, encoding, opts)


@SETTINGS
@given(
    text=st.text(max_size=400),
    header=st.sampled_from(["sentence\tlabel\n", "sentence,label\n", '{"sentence": "x", "label": "y"}\n']),
    fmt=st.sampled_from(["tsv", "csv", "jsonl"]),
    written=st.sampled_from(["utf-8", "utf-16", "utf-32", "latin-1", "cp1252", "utf-8-sig", "shift_jis"]),
    read_as=st.sampled_from(ENCODINGS),
    opts=reader_options,
)
def test_reader_wrong_encodings(tmp_path, text, header, fmt, written, read_as, opts):
    path = tmp_path / f"data.{fmt}"
    path.write_bytes((header + text).encode(written, errors="replace"))
    read(path, fmt, read_as, opts)


cell = st.text(alphabet=st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["", " ", "\t", ",", '"', '""', "\r", "\n", "\x00", "\ufeff", "nan", "inf", "-1e309", "1", "1.0", "pos"]
)


@SETTINGS
@given(
    header=st.lists(st.sampled_from(COLUMNS), min_size=0, max_size=5),
    rows=st.lists(st.lists(cell, min_size=0, max_size=6), max_size=12),
    sep=st.sampled_from(["\t", ","]),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    opts=reader_options,
)
def test_reader_wrong_columns_and_fields(tmp_path, header, rows, sep, newline, opts):
    fmt = "tsv" if sep == "\t" else "csv"
    path = tmp_path / f"data.{fmt}"
    lines = [sep.join(header)] + [sep.join(r) for r in rows]
    path.write_text(newline.join(lines) + newline, encoding="utf-8", newline="")
    read(path, fmt, "utf-8", opts)


# JSON values of every type; integers over Python's 4300-digit limit and deep nesting come as raw lines in
# json_lines (json.dumps cannot write the former, and recursive strategies stay shallow).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**50), max_value=10**50)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["", " ", "pos", "neg", "1", "2.5", "nan"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
json_records = st.dictionaries(st.sampled_from(COLUMNS) | st.text(max_size=6), json_values, max_size=5)
json_lines = st.one_of(
    json_records.map(json.dumps),  # NaN/Infinity included: Python's json writes and reads them
    json_values.map(json.dumps),  # not an object
    st.text(max_size=40),  # not JSON
    st.sampled_from(
        [
            '{"sentence": "a", "label": ' + "1" * 5000 + "}",  # over the 4300-digit int limit
            '{"sentence": "a", "label": ' + "[" * 100_000 + "]" * 100_000 + "}",  # RecursionError
        ]
    ),
)


@SETTINGS
@given(lines=st.lists(json_lines, max_size=12), opts=reader_options)
def test_reader_jsonl_wrong_types(tmp_path, lines, opts):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    read(path, "jsonl", "utf-8", opts)


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
def test_reader_huge_line(tmp_path, fmt):
    """A 2-million-character text field is read correctly in every format."""
    big = "good " * 400_000
    path = tmp_path / f"data.{fmt}"
    if fmt == "tsv":
        path.write_text(f"sentence\tlabel\n{big}\tpos\nshort\tneg\n", encoding="utf-8")
    elif fmt == "csv":
        path.write_text(f"sentence,label\n{big},pos\nshort,neg\n", encoding="utf-8")
    else:
        path.write_text(
            json.dumps({"sentence": big, "label": "pos"}) + '\n{"sentence": "short", "label": "neg"}\n'
        )
    res = outcome(lambda: read_examples(path), DataError)
    assert [e.text for e in res.examples] == [big, "short"]
    assert [e.label for e in res.examples] == ["pos", "neg"]


def test_reader_many_lines(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("sentence\tlabel\n" + "a b\tpos\n" * 50_000, encoding="utf-8")
    res = outcome(lambda: read_examples(path))
    assert len(res.examples) == 50_000 and res.lines[-1] == 50_001


# -- config loader -----------------------------------------------------------------------------------------------
KEYS = [
    "train",
    "train.lr",
    "train.batch_size",
    "train.max_steps",
    "train.precision",
    "data",
    "data.labels",
    "data.labels.0",
    "data.max_length",
    "objective",
    "objective.0",
    "objective.0.weight",
    "objective.0.params.temperature",
    "objective.0.layer_map.pairs",
    "objective.1.name",
    "student.num_layers",
    "teacher",
    "output_dir",
    "overwrite",
    "nope",
    "train.lr.sub",
]
yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=15),
    st.sampled_from(["5e-5", "1e400", ".inf", ".nan", "2001-02-30", "!!bool maybe", "~", "[a, b]", "{x: 1}"]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
yaml_trees = st.dictionaries(
    st.sampled_from(["train", "data", "objective", "student", "teacher", "output_dir", "overwrite", "extra"]),
    yaml_values
    | st.dictionaries(
        st.sampled_from(["lr", "batch_size", "labels", "name", "weight", "params", "x"]), yaml_values
    ),
    max_size=5,
)
yaml_text = st.one_of(
    yaml_trees.map(lambda t: yaml.safe_dump(t, allow_unicode=True)),
    st.text(max_size=300),  # mostly not YAML at all
    st.lists(
        st.sampled_from(
            ["train:", "  lr: 1e-3", "- a", "&x [1, *x]", "{", "]", "!!python/object:os.system", "\t"]
        )
    ).map("\n".join),
)
override_text = st.one_of(
    st.tuples(st.sampled_from(KEYS), st.text(max_size=20) | yaml_scalars.map(str)).map(
        lambda kv: f"{kv[0]}={kv[1]}"
    ),
    st.text(alphabet=string.printable, max_size=30),
)


def check_config(res) -> None:
    if isinstance(res, Config):
        # a correct result: it round-trips through its own YAML
        from textdistill.config.loader import dump_yaml, from_dict

        assert from_dict(Config, yaml.safe_load(dump_yaml(res))) == res
    else:
        assert isinstance(res, ConfigError) and res.problems


@SETTINGS
@given(text=yaml_text, overrides=st.lists(override_text, max_size=4))
def test_config_loader_random_yaml_and_overrides(tmp_path, text, overrides):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    check_config(outcome(lambda: load_config(path, overrides), ConfigError))


@SETTINGS
@given(data=st.binary(max_size=500))
def test_config_loader_random_bytes(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    check_config(outcome(lambda: load_config(path), ConfigError))


@pytest.mark.parametrize(
    "text, overrides, problem",
    [
        ("train: " + "[" * 700 + "]" * 700, [], "nested too deeply"),
        ("train: {lr: 2001-02-30}\n", [], "day is out of range"),
        ("train: {lr: !!bool maybe}\n", [], "a value cannot be read (KeyError"),
        ("train: {batch_size: " + "9" * 5000 + "}\n", [], "a value cannot be read (ValueError"),
        (
            "a: &a [1,1,1,1,1,1,1,1,1,1]\n"
            + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdef", "bcdefg"))
            + "train: {batch_size: *g}\n",
            [],
            "more than 100000 values",
        ),
        ("", ["train.batch_size=" + "9" * 5000], "train.batch_size: expected an integer, got '99999"),
        ("", ["train.lr=" + "[" * 700], "train.lr: expected a number"),
        ("", ["data.labels=[a,b]", "data.labels.0.x.y=1"], "data.labels.0 is 'a', not a mapping"),
    ],
    ids=[
        "deep",
        "bad-date",
        "bad-bool-tag",
        "long-int",
        "alias-bomb",
        "long-int-override",
        "deep-override",
        "key-in-a-string",
    ],
)
def test_config_loader_found_cases(tmp_path, text, overrides, problem):
    """Inputs that used to escape as RecursionError / ValueError / KeyError / TypeError, or to hang."""
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    res = outcome(lambda: load_config(path, overrides), ConfigError)
    assert isinstance(res, ConfigError) and problem in str(res)
    assert len(str(res)) < 2000  # values in messages are shortened


def test_config_loader_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("train: {lr: 1e-3}\n")

    def denied(self, *a, **kw):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    res = outcome(lambda: load_config(path), ConfigError)
    assert isinstance(res, ConfigError) and "cannot be read: Permission denied" in str(res)


# -- known reader bugs (reported to the lead; data/readers.py is not this suite's to change) ------------------
def known(*raises: type[BaseException]):
    """A reported bug: the test must fail with exactly these exception types (anything else is a failure)."""
    return pytest.mark.xfail(
        strict=True, raises=raises, reason="bug in data/readers.py, reported; remove the mark once fixed"
    )


def test_known_bug_bomless_utf16_escapes_as_unicode_error(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("sentence\tlabel\nhello\tpos\n", encoding="utf-8")  # no BOM: the utf-16 decoder raises
    outcome(lambda: read_examples(path, encoding="utf-16"))  # UnicodeError (not UnicodeDecodeError)


@pytest.mark.parametrize("encoding", ["rot13", "base64", "utf-8\x00", "punycode", "undefined"])
def test_known_bug_non_text_codecs_escape(tmp_path, encoding):
    assert codecs.lookup(encoding.replace("\x00", "")) is not None
    path = tmp_path / "d.tsv"
    path.write_text("sentence\tlabel\nhello\tpos\n", encoding="utf-8")
    outcome(lambda: read_examples(path, encoding=encoding))  # LookupError / ValueError / UnicodeError


def test_known_bug_jsonl_integer_over_4300_digits(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"sentence": "a", "label": ' + "1" * 5000 + "}\n")
    outcome(lambda: read_examples(path))  # ValueError from json.loads (int max str digits)


def test_known_bug_jsonl_deep_nesting(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"sentence": "a", "label": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    outcome(lambda: read_examples(path))  # RecursionError from json.loads
