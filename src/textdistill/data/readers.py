"""Readers for labelled text: TSV (GLUE layout), CSV, JSONL files and HF ``datasets``.

Every reader returns a :class:`ReadResult`: the examples, plus what was skipped and why. Bad input raises a
:class:`~textdistill.errors.DataError` whose message names the file, the line, the column and the fix; with
``skip_bad_rows`` the row-level problems (wrong field count, empty text or label, non-numeric regression
label, invalid JSON line, bad ``id`` / ``is_original`` value) are counted and skipped instead. File-level
problems (missing file, wrong encoding, missing column, duplicate ids, no rows at all) always raise: skipping
cannot repair them.

Files written by data augmentation (``textdistill.data.augment``) carry two more columns, honoured when the
file has them: ``id`` (the example id) and ``is_original`` (False for a new, unlabelled example). See
:func:`read_examples`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from textdistill.errors import DataError, clip, shorten, shorten_list

FORMATS = ("tsv", "csv", "jsonl")
"""File formats :func:`read_examples` understands (``hf`` goes through :func:`read_hf_dataset`)."""

_EXTENSIONS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_SKIP_HINT = "Fix or remove the row, or set data.skip_bad_rows=true to skip such rows (they are counted)."
_MAX_SKIP_MESSAGES = 5
_MISSING = object()  # a JSONL record without the key (distinct from an explicit null)
_ABSENT = object()  # the file has no such column at all (id / is_original): use the default
ID_COLUMN = "id"
"""Optional column holding the example id (written by augmentation); honoured when the file has it."""
IS_ORIGINAL_COLUMN = "is_original"
"""Optional column telling original from augmented examples (written by augmentation)."""
_MAX_ID = 2**63 - 1  # ids travel as int64 tensors (collate, teacher cache)
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
# The csv module refuses fields over csv.field_size_limit() (128 KiB by default) as "field larger than field
# limit"; a long document is not malformed, so raise the process-wide limit (never lower it). 2**31 - 1 fits
# the C long the setting is stored in on every platform (sys.maxsize overflows on Windows).
_CSV_FIELD_LIMIT = 2**31 - 1
_ENCODING_FIX = (
    "Fix: set data.encoding to the file's text encoding, e.g. utf-8, or latin-1 (it decodes any byte)."
)


@dataclass
class Example:
    """One labelled (or unlabelled) text example.

    Attributes:
        id: stable identifier: the value of the file's ``id`` column when it has one (augmented files),
            else the 0-based index of the data row in file order (header and blank lines excluded, skipped
            rows included), so ids do not move when bad rows are skipped. Augmented examples get fresh ids
            from their creator.
        text: the text (or the first text of a pair), verbatim.
        text_pair: the second text of a pair, or None for single-text tasks.
        label: class name (``str``; integer labels are kept as their string, e.g. ``"1"``), a ``float`` for
            regression, or None when the row has no label.
        is_original: False for examples made by data augmentation.
    """

    id: int
    text: str
    text_pair: str | None = None
    label: str | float | None = None
    is_original: bool = True


@dataclass
class ReadResult:
    """What a reader returns.

    Attributes:
        examples: the examples that were read, in file order.
        skipped: number of rows skipped (only with ``skip_bad_rows``).
        skipped_reasons: skipped rows per reason (``wrong_field_count``, ``empty_text``, ``empty_label``,
            ``non_numeric_label``, ``bad_json``, ``missing_key``, ``bad_value``, ``bad_id``).
        source: the file path (or ``hf:name/subset[split]``) the examples came from, for messages.
        lines: 1-based line (row for HF) of each example in ``source``, parallel to ``examples``; used to
            point at the offending line when a label turns out to be unknown.
        skip_messages: the messages of the first few skipped rows, to show the user what was dropped.
    """

    examples: list[Example]
    skipped: int = 0
    skipped_reasons: Counter[str] = field(default_factory=Counter)
    source: str = ""
    lines: list[int] = field(default_factory=list)
    skip_messages: list[str] = field(default_factory=list)


class _RowError(Exception):
    """A problem confined to one row: raised as DataError, or counted under ``reason`` when skipping."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class _Columns:
    """Which columns to read and how to interpret them."""

    text: str
    text_pair: str | None
    label: str
    regression: bool
    require_labels: bool

    def required(self) -> list[tuple[str, str]]:
        """(column, config key) pairs that must exist in the header."""
        out = [(self.text, "data.text_column")]
        if self.text_pair is not None:
            out.append((self.text_pair, "data.text_pair_column"))
        if self.require_labels:
            out.append((self.label, "data.label_column"))
        return out

    def meta_columns(self, names: Iterable[str]) -> tuple[bool, bool]:
        """Whether a file with these columns has an ``id`` and an ``is_original`` column to honour.

        A column already configured as text, pair or label keeps that role only.
        """
        taken = {self.text, self.text_pair, self.label}
        present = set(names)
        return (
            ID_COLUMN in present and ID_COLUMN not in taken,
            IS_ORIGINAL_COLUMN in present and IS_ORIGINAL_COLUMN not in taken,
        )

    def make(
        self,
        idx: int,
        where: str,
        text: Any,
        pair: Any,
        label: Any,
        id_value: Any = _ABSENT,
        is_original: Any = _ABSENT,
    ) -> Example:
        """Build an Example from raw values.

        ``_MISSING`` marks an absent JSONL key; ``_ABSENT`` for ``id_value`` / ``is_original`` means the file
        has no such column (the row index and True are used).
        """
        original = True if is_original is _ABSENT else _is_original(where, is_original)
        return Example(
            id=idx if id_value is _ABSENT else _example_id(where, id_value),
            text=self._text(where, self.text, text),
            text_pair=None if self.text_pair is None else self._text(where, self.text_pair, pair),
            # an augmented example has no hard label (the teacher labels it), so it may leave it empty
            label=self._label(where, label, required=self.require_labels and original),
            is_original=original,
        )

    @staticmethod
    def _text(where: str, column: str, value: Any) -> str:
        if value is _MISSING:
            raise _RowError("missing_key", f"{where}: key {column!r} is missing. {_SKIP_HINT}")
        if value is None or (isinstance(value, str) and not value.strip()):
            raise _RowError("empty_text", f"{where}: text column {column!r} is empty. {_SKIP_HINT}")
        if not isinstance(value, str):
            raise _RowError(
                "bad_value",
                f"{where}: text column {column!r} must be a string, got {type(value).__name__} "
                f"{shorten(value)}. {_SKIP_HINT}",
            )
        if "\x00" in value:
            # a NUL never belongs in text: binary data, or UTF-16 read as a one-byte encoding
            raise _RowError(
                "nul_in_text",
                f"{where}: text column {column!r} holds a NUL byte (\\x00) at character "
                f"{value.index(chr(0))}: binary data, or a file in UTF-16 read as UTF-8 (set data.encoding). "
                f"{_SKIP_HINT}",
            )
        return value  # verbatim: no stripping, the tokenizer decides what whitespace means

    def _label(self, where: str, value: Any, required: bool) -> str | float | None:
        col = self.label
        if value is _MISSING or value is None or (isinstance(value, str) and not value.strip()):
            if not required:
                return None
            if value is _MISSING:
                raise _RowError("missing_key", f"{where}: key {col!r} (the label) is missing. {_SKIP_HINT}")
            raise _RowError("empty_label", f"{where}: label column {col!r} is empty. {_SKIP_HINT}")
        if self.regression:
            number: float | None = None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                number = float(value)
            elif isinstance(value, str):
                try:
                    number = float(value.strip())
                except ValueError:
                    number = None
            if number is None or not math.isfinite(number):
                raise _RowError(
                    "non_numeric_label",
                    f"{where}: label column {col!r} holds {value!r}, which is not a finite number, but "
                    f"data.regression is true. Fix the row, or set data.regression=false for a "
                    f"classification task, or set data.skip_bad_rows=true to skip such rows.",
                )
            return number
        if isinstance(value, bool):  # JSON true/false: keep the JSON spelling
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            # 1.0 and 1 are the same class (pandas writes integer labels as floats when a value is missing)
            return str(int(value)) if value.is_integer() else str(value)
        if isinstance(value, str):
            return value.strip()  # surrounding blanks in a label are never meaningful
        raise _RowError(
            "bad_value",
            f"{where}: label column {col!r} must be a string or a number, got {type(value).__name__} "
            f"{value!r}. {_SKIP_HINT}",
        )


def _example_id(where: str, value: Any) -> int:
    """The value of an ``id`` column: a non-negative integer that fits int64 (JSON int or digit string)."""
    number: int | None = None
    if value is _MISSING:
        raise _RowError("missing_key", f"{where}: key {ID_COLUMN!r} is missing. {_SKIP_HINT}")
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)  # pandas writes integer columns with gaps as floats
    elif isinstance(value, str):
        digits = value.strip()
        # isascii: int() would also accept other scripts' digits; the length bound keeps int() clear of
        # Python's 4300-digit conversion limit (any longer value is out of range anyway)
        if digits.isascii() and digits.isdigit() and len(digits) <= 20:
            number = int(digits)
    if number is None or not 0 <= number <= _MAX_ID:
        raise _RowError(
            "bad_id",
            f"{where}: column {ID_COLUMN!r} holds {_short(value)}; example ids must be non-negative integers "
            f"(below 2**63). Fix the id, or rename the column if it is not an example id (then rows are "
            f"numbered by position). {_SKIP_HINT}",
        )
    return number


def _is_original(where: str, value: Any) -> bool:
    """The value of an ``is_original`` column: true/false/1/0 (any case; JSON booleans or 0/1)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
    if value is _MISSING:
        raise _RowError("missing_key", f"{where}: key {IS_ORIGINAL_COLUMN!r} is missing. {_SKIP_HINT}")
    raise _RowError(
        "bad_value",
        f"{where}: column {IS_ORIGINAL_COLUMN!r} holds {_short(value)}; expected true, false, 1 or 0. {_SKIP_HINT}",
    )


def _short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters (a JSON integer may have thousands of digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        # no str(): Python refuses to print integers over 4300 digits
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class _Collector:
    """Accumulates examples, or raises / counts row errors depending on ``skip_bad_rows``."""

    def __init__(self, source: str, skip_bad_rows: bool):
        self.result = ReadResult(examples=[], source=source)
        self.skip_bad_rows = skip_bad_rows
        self._id_lines: dict[int, int] = {}  # id -> line of the kept example that has it

    def add(self, line: int, build: Callable[[], Example]) -> None:
        """Call ``build()`` and keep its Example; on a row error raise or count it."""
        try:
            example = build()
        except _RowError as err:
            if not self.skip_bad_rows:
                raise DataError(err.message) from None
            self.result.skipped += 1
            self.result.skipped_reasons[err.reason] += 1
            if len(self.result.skip_messages) < _MAX_SKIP_MESSAGES:
                self.result.skip_messages.append(err.message)
            return
        first = self._id_lines.setdefault(example.id, line)
        if first != line:
            # not a row error: which of the two rows is right cannot be told, so skipping cannot repair it
            raise DataError(
                f"{self.result.source}, line {line}: duplicate example id {example.id} (line {first} has it "
                f"too); ids must be unique (the teacher cache and augmentation key examples by id). Fix: "
                f"renumber the {ID_COLUMN!r} column, or rename it to number the rows by position."
            )
        self.result.examples.append(example)
        self.result.lines.append(line)

    def finish(self, what: str) -> ReadResult:
        """Return the result, or raise when no example survived."""
        res = self.result
        if not res.examples:
            if res.skipped:
                reasons = ", ".join(f"{k}: {v}" for k, v in sorted(res.skipped_reasons.items()))
                raise DataError(
                    f"{res.source}: all {res.skipped} data rows were skipped as bad rows ({reasons}); "
                    f"first problem: {res.skip_messages[0]} Fix the file or the column settings."
                )
            raise DataError(
                f"{res.source}: the data set is empty ({what}). Fix: point to a file with data rows."
            )
        return res


def detect_format(path: str | os.PathLike[str], format: str = "auto") -> str:
    """Resolve ``format="auto"`` from the file extension (.tsv, .csv, .jsonl/.ndjson/.json).

    Raises:
        DataError: unknown format, or an extension auto cannot map.
    """
    if format != "auto":
        if format not in FORMATS:
            raise DataError(
                f"unknown data format {format!r} for {path}; valid choices: auto, {', '.join(FORMATS)}, hf."
            )
        return format
    ext = Path(path).suffix.lower()
    if ext not in _EXTENSIONS:
        raise DataError(
            f"{path}: cannot tell the format from the extension {ext or '(none)'!r}. "
            f"Fix: set data.format to one of {', '.join(FORMATS)}."
        )
    return _EXTENSIONS[ext]


def read_examples(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    text_column: str = "sentence",
    text_pair_column: str | None = None,
    label_column: str = "label",
    encoding: str = "utf-8",
    skip_bad_rows: bool = False,
    regression: bool = False,
    require_labels: bool = True,
) -> ReadResult:
    """Read a TSV, CSV or JSONL file of examples.

    - **TSV** (GLUE layout): header line required, fields split on tabs, no quoting (``csv.QUOTE_NONE``):
      quotes are part of the text and kept verbatim.
    - **CSV**: header line required, standard quoting (quoted fields may hold commas and newlines).
    - **JSONL**: one JSON object per line; the first object's keys play the role of the header.

    Blank lines are ignored. A UTF-8 byte-order mark at the start of the file is dropped.

    Files written by data augmentation have two more columns (keys), honoured only when the file has them
    (for JSONL: when the first record has them, as for the other keys):

    - ``id``: the example id (a non-negative integer, unique in the file) instead of the row index;
    - ``is_original``: ``true``/``false``/``1``/``0``. A row with ``is_original`` false may leave its
      label empty (it gets ``label=None``) even with ``require_labels``: augmented examples are labelled by
      the teacher.

    Args:
        path: the file.
        format: ``auto`` (by extension), ``tsv``, ``csv`` or ``jsonl``.
        text_column: column (key) of the text.
        text_pair_column: column of the second text of a pair, or None.
        label_column: column of the label (string or integer; a number for regression).
        encoding: text encoding of the file.
        skip_bad_rows: skip (and count) rows with a row-level problem instead of raising.
        regression: parse labels as finite floats.
        require_labels: when False a missing label column or empty label gives ``label=None``
            (unlabelled test sets); when True only rows with ``is_original`` false may lack a label.

    Returns:
        The examples with their line numbers and the skip counts.

    Raises:
        DataError: missing/unreadable file, unknown or non-text encoding, undecodable bytes, missing
            column, duplicate ids, empty data set, or (without ``skip_bad_rows``) the first bad row. The
            message names the file, the line and the fix.
    """
    fmt = detect_format(path, format)
    _check_encoding(path, encoding)
    cols = _Columns(text_column, text_pair_column, label_column, regression, require_labels)
    collector = _Collector(str(path), skip_bad_rows)
    reader = {"tsv": _read_tsv, "csv": _read_csv, "jsonl": _read_jsonl}[fmt]
    try:
        what = reader(Path(path), encoding, cols, collector)
    except UnicodeError as err:
        # UnicodeDecodeError for bad bytes; a plain UnicodeError from stateful codecs (utf-16 without a
        # byte-order mark, punycode, idna, undefined) that cannot say which bytes
        raise _decode_error(Path(path), encoding, err) from None
    return collector.finish(what)


def _check_encoding(path: str | os.PathLike[str], encoding: str) -> None:
    """Refuse an encoding ``open()`` would refuse, before touching the file.

    ``codecs.lookup`` raises ValueError (not LookupError) for a name with a NUL, and it also knows
    bytes-to-bytes codecs (base64, rot13, zlib, hex...) that ``open()`` then rejects with a LookupError; a
    text wrapper over an empty buffer runs exactly ``open()``'s checks.
    """
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError, ValueError):
        raise DataError(f"unknown text encoding {encoding!r} for {path}. {_ENCODING_FIX}") from None
    try:
        io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    except (LookupError, ValueError):
        raise DataError(
            f"data encoding {encoding!r} for {path} is not a text encoding (a bytes-to-bytes codec such as "
            f"base64 or rot13, or an invalid name). {_ENCODING_FIX}"
        ) from None


def _open(path: Path, encoding: str, newline: str | None) -> TextIO:
    """Open ``path`` for text reading, turning OS errors into DataErrors that name the file."""
    if not path.exists():
        raise DataError(
            f"data file not found: {path}. Fix: check the path (relative paths start at the cwd)."
        )
    if path.is_dir():
        raise DataError(f"{path} is a directory, expected a data file. Fix: point to the file inside it.")
    try:
        return open(path, encoding=encoding, newline=newline)  # noqa: SIM115 - closed by the caller's with
    except OSError as err:
        raise DataError(
            f"cannot read data file {path}: {err.strerror or err}. Fix: check its permissions."
        ) from None


def _lines(f: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line ending); the first line loses a UTF-8 BOM."""
    for lineno, line in enumerate(f, start=1):
        line = line.rstrip("\n").rstrip("\r")
        if lineno == 1:
            line = line.lstrip("\ufeff")
        yield lineno, line


def _missing_column(path: Path, column: str, key: str, found: list[str], fmt: str, header: str) -> DataError:
    hint = ""
    if fmt == "tsv" and len(found) == 1 and "," in header:
        hint = " The header has no tab but has commas: is this a CSV file? Then set data.format=csv."
    elif fmt == "csv" and len(found) == 1 and "\t" in header:
        hint = " The header has tabs: is this a TSV file? Then set data.format=tsv."
    what = "key" if fmt == "jsonl" else "column"
    where = f"{path}, line 1" if fmt != "jsonl" else f"{path} (first record)"
    return DataError(
        f"{where}: {what} {shorten(column)} not found; {what}s found: {shorten_list(found) or '(none)'}. "
        f"Fix: set {key} to one of them.{hint}"
    )


def _header_index(path: Path, header: list[str], raw: str, cols: _Columns, fmt: str) -> dict[str, int]:
    index = {name: i for i, name in enumerate(header)}
    for column, key in cols.required():
        if column not in index:
            raise _missing_column(path, column, key, header, fmt, raw)
    return index


def _read_tsv(path: Path, encoding: str, cols: _Columns, out: _Collector) -> str:
    # newline="\n": only LF ends a line, so a stray CR inside a field stays part of the text
    with _open(path, encoding, "\n") as f:
        lines = _lines(f)
        first = next(lines, None)
        if first is None:
            return "the file is empty; a header line is required"
        header = first[1].split("\t")
        index = _header_index(path, header, first[1], cols, "tsv")
        meta = cols.meta_columns(header)
        width = len(header)
        idx = 0
        for lineno, line in lines:
            if not line:
                continue
            fields = line.split("\t")  # QUOTE_NONE: quotes are ordinary characters
            out.add(lineno, _row_builder(path, lineno, idx, fields, width, header, index, cols, meta, "tab"))
            idx += 1
    return "only a header line, no data rows"


def _read_csv(path: Path, encoding: str, cols: _Columns, out: _Collector) -> str:
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    with _open(path, encoding, "") as f:  # newline="" is what the csv module requires
        reader = csv.reader(f)
        try:
            header = next(reader, None)
        except csv.Error as err:
            raise DataError(f"{path}, line 1: malformed CSV header ({err}).") from None
        if header is None:
            return "the file is empty; a header line is required"
        if header:
            header[0] = header[0].lstrip("\ufeff")
        index = _header_index(path, header, ",".join(header), cols, "csv")
        meta = cols.meta_columns(header)
        width = len(header)
        idx = 0
        while True:
            start = reader.line_num + 1  # a quoted field may span lines: report where the record starts
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                raise DataError(
                    f"{path}, line {start}: malformed CSV ({err}). Fix the quoting of that record."
                ) from None
            if not fields:
                continue
            out.add(start, _row_builder(path, start, idx, fields, width, header, index, cols, meta, "comma"))
            idx += 1
    return "only a header line, no data rows"


def _row_builder(
    path: Path,
    lineno: int,
    idx: int,
    fields: list[str],
    width: int,
    header: list[str],
    index: dict[str, int],
    cols: _Columns,
    meta: tuple[bool, bool],
    sep: str,
) -> Callable[[], Example]:
    where = f"{path}, line {lineno}"

    def build() -> Example:
        if len(fields) != width:
            extra = " (a tab inside the text? GLUE TSV has no quoting)" if sep == "tab" else ""
            raise _RowError(
                "wrong_field_count",
                f"{where}: expected {width} {sep}-separated fields (header: {clip(', '.join(header))}), "
                f"found {len(fields)}{extra}. {_SKIP_HINT}",
            )

        def get(column: str | None) -> Any:
            return None if column is None or column not in index else fields[index[column]]

        id_value = fields[index[ID_COLUMN]] if meta[0] else _ABSENT
        is_original = fields[index[IS_ORIGINAL_COLUMN]] if meta[1] else _ABSENT
        return cols.make(
            idx, where, get(cols.text), get(cols.text_pair), get(cols.label), id_value, is_original
        )

    return build


def _read_jsonl(path: Path, encoding: str, cols: _Columns, out: _Collector) -> str:
    with _open(path, encoding, "\n") as f:
        idx = 0
        checked_keys = False
        meta = (False, False)
        for lineno, line in _lines(f):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            record: Any = None
            message = ""
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                message = f"{where}: not valid JSON ({err.msg} at column {err.colno}). {_SKIP_HINT}"
            except ValueError as err:  # valid syntax Python refuses: an integer over 4300 digits
                message = f"{where}: the JSON cannot be read ({err}). {_SKIP_HINT}"
            except RecursionError:
                message = (
                    f"{where}: the JSON is nested too deeply for Python's parser (recursion limit). "
                    f"{_SKIP_HINT}"
                )
            if not message and not isinstance(record, dict):
                message = f"{where}: expected a JSON object, got {type(record).__name__}. {_SKIP_HINT}"
            if message:
                out.add(lineno, _raiser(_RowError("bad_json", message)))
                idx += 1
                continue
            if not checked_keys:
                # the first object acts as the header: a key missing there is a setting, not a bad row
                for column, key in cols.required():
                    if column not in record:
                        raise _missing_column(path, column, key, list(record), "jsonl", "")
                meta = cols.meta_columns(record)
                checked_keys = True

            def build(
                record: dict[str, Any] = record,
                where: str = where,
                idx: int = idx,
                meta: tuple[bool, bool] = meta,
            ) -> Example:
                return cols.make(
                    idx,
                    where,
                    record.get(cols.text, _MISSING),
                    None if cols.text_pair is None else record.get(cols.text_pair, _MISSING),
                    record.get(cols.label, _MISSING),
                    record.get(ID_COLUMN, _MISSING) if meta[0] else _ABSENT,
                    record.get(IS_ORIGINAL_COLUMN, _MISSING) if meta[1] else _ABSENT,
                )

            out.add(lineno, build)
            idx += 1
    return "no JSON records"


def _raiser(err: _RowError) -> Callable[[], Example]:
    def build() -> Example:
        raise err

    return build


def _decode_error(path: Path, encoding: str, err: UnicodeError) -> DataError:
    """Locate the first undecodable line (a second, binary pass: the text reader decodes in chunks).

    ``err`` is a UnicodeDecodeError (which names the bytes) or a plain UnicodeError (which does not).
    """
    lineno, bad = find_undecodable_line(path, encoding)
    where = f"{path}, line {lineno}" if lineno else str(path)
    if not bad and isinstance(err, UnicodeDecodeError):
        bad = err.object[err.start : err.end]
    what = f"bytes {bad[:16].hex(' ')}" if bad else "the text"
    reason = getattr(err, "reason", None) or str(err) or type(err).__name__
    hint = ""
    if "BOM" in reason:
        hint = " A file without a byte-order mark needs its byte order named: utf-16-le or utf-16-be."
    return DataError(
        f"{where}: cannot decode {what} as {encoding} ({reason}).{hint} Fix: set data.encoding to the "
        f"file's encoding, e.g. data.encoding=utf-8, or data.encoding=latin-1 (it decodes any byte) or cp1252."
    )


def find_undecodable_line(path: Path, encoding: str) -> tuple[int | None, bytes]:
    """The 1-based line holding the first bytes that ``encoding`` cannot decode, and those bytes.

    Returns ``(None, b"")`` when the whole file decodes, and empty bytes with the line when the codec
    raises a plain UnicodeError that does not say which bytes (utf-16 without a byte-order mark, punycode).
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    lineno = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                decoder.decode(raw)
            except UnicodeError as err:
                return lineno, _bad_bytes(err)
        try:
            decoder.decode(b"", final=True)
        except UnicodeError as err:
            return lineno, _bad_bytes(err)
    return None, b""


def _bad_bytes(err: UnicodeError) -> bytes:
    """The bytes a decoding error points at (empty when the error carries none)."""
    obj = getattr(err, "object", None)
    if isinstance(obj, (bytes, bytearray)) and isinstance(getattr(err, "start", None), int):
        return bytes(obj[err.start : err.end])  # type: ignore[attr-defined]
    return b""


def read_hf_dataset(
    name: str,
    subset: str | None = None,
    split: str = "train",
    *,
    text_column: str = "sentence",
    text_pair_column: str | None = None,
    label_column: str = "label",
    skip_bad_rows: bool = False,
    regression: bool = False,
    require_labels: bool = True,
) -> ReadResult:
    """Read one split of a Hugging Face ``datasets`` data set (imported lazily).

    ``ClassLabel`` integers become their class names (``glue/sst2``: ``negative``/``positive``); the
    label ``-1`` that GLUE uses for hidden test labels becomes ``None``.

    Args:
        name: data set name on the hub (or a local ``datasets`` script/directory).
        subset: configuration name (``sst2`` of ``glue``), or None.
        split: split name (``train``, ``validation``...).
        text_column: column of the text.
        text_pair_column: column of the second text, or None.
        label_column: column of the label.
        skip_bad_rows: skip and count bad rows instead of raising.
        regression: parse labels as floats.
        require_labels: when False, missing labels give ``label=None``.

    Returns:
        The examples; ``lines`` hold 1-based row numbers of the split.

    Raises:
        DataError: ``datasets`` not installed, the data set cannot be loaded (offline, unknown name or
            split), a missing column, or a bad row.
    """
    try:
        import datasets  # optional dependency: only format=hf needs it
    except ImportError:
        raise DataError(
            "data.format=hf needs the `datasets` package, which is not installed. Fix: pip install datasets, "
            "or pass local files (data.train=..., data.dev=..., data.format=tsv|csv|jsonl)."
        ) from None
    source = f"hf:{name}" + (f"/{subset}" if subset else "") + f"[{split}]"
    try:
        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as err:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError...)
        raise DataError(
            f"could not load the HF data set {name!r} (subset {subset!r}, split {split!r}): "
            f"{type(err).__name__}: {err}. This machine looks offline (the Hugging Face hub cannot be "
            f"reached), or the name/subset/split is wrong. Fix: pass local files instead "
            f"(data.train=train.tsv data.dev=dev.tsv data.format=tsv|csv|jsonl), or check data.train, "
            f"data.hf_subset and data.hf_train_split / data.hf_dev_split."
        ) from None
    found = list(ds.column_names)
    cols = _Columns(text_column, text_pair_column, label_column, regression, require_labels)
    for column, key in cols.required():
        if column not in found:
            raise DataError(
                f"{source}: column {column!r} not found; columns found: {', '.join(map(repr, found))}. "
                f"Fix: set {key} to one of them."
            )
    features = getattr(ds, "features", None) or {}
    names = getattr(features.get(label_column), "names", None)
    class_names = list(names) if names and not regression else None
    collector = _Collector(source, skip_bad_rows)
    for i, row in enumerate(ds):
        where = f"{source}, row {i + 1}"
        label = row.get(label_column, _MISSING)
        if class_names is not None and isinstance(label, int) and not isinstance(label, bool):
            # ClassLabel: -1 marks a hidden label (GLUE test splits)
            label = class_names[label] if 0 <= label < len(class_names) else None

        def build(row: dict[str, Any] = row, where: str = where, i: int = i, label: Any = label) -> Example:
            pair = None if text_pair_column is None else row.get(text_pair_column, _MISSING)
            return cols.make(i, where, row.get(text_column, _MISSING), pair, label)

        collector.add(i + 1, build)
    return collector.finish("the split has no rows")
