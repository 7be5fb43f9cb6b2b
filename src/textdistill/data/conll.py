"""Readers for token-level (sequence labelling) data: CoNLL column files and JSONL ``tokens``/``tags``.

* **CoNLL columns** (CoNLL-2003 ``token POS chunk NER``, WNUT ``token tag``, Chinese character-level files
  ``字 B-LOC``): one token per line, columns separated by spaces or by tabs (one or the other in a file),
  a blank line between sentences, ``-DOCSTART-`` document lines skipped. The token is column 0, the tag
  ``data.tag_column`` (default: the last).
* **JSONL**: one sentence per line, ``{"tokens": [...], "tags": [...]}`` (keys ``data.tokens_key`` /
  ``data.tags_key``); ``tags`` may be absent in unlabelled test files.

Each reader returns a :class:`TokenReadResult`. Bad input raises a :class:`~textdistill.errors.DataError`
naming the file, the line and the fix; with ``skip_bad_rows`` the sentence-level problems (a token line with
a different column count, token and tag lists of different lengths, an empty sentence, a malformed tag) are
counted and the sentence skipped instead. A file that mixes tab- and space-separated lines always raises:
which separator is meant cannot be guessed line by line.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textdistill.data.readers import _check_encoding, _decode_error, _lines, _open, _RowError
from textdistill.errors import DataError

CONLL_EXTENSIONS = (".conll", ".conllu", ".iob", ".iob2", ".bio", ".bioes", ".bmes", ".ner", ".txt")
"""Extensions ``data.format=auto`` reads as CoNLL column files."""

DOCSTART = "-DOCSTART-"
_TAG = re.compile(r"^(O|[BIESM]-\S+)$")
_SKIP_HINT = "Fix the sentence, or set data.skip_bad_rows=true to skip such sentences (they are counted)."


@dataclass
class TokenExample:
    """One sentence of a sequence-labelling task.

    Attributes:
        id: 0-based index of the sentence in the file (skipped sentences keep their number).
        tokens: the words (or characters), verbatim.
        tags: one tag per token, or None for an unlabelled sentence.
        is_original: always True (augmentation is refused for token tasks).
    """

    id: int
    tokens: list[str]
    tags: list[str] | None = None
    is_original: bool = True


@dataclass
class TokenReadResult:
    """What a token reader returns (the token counterpart of :class:`~textdistill.data.readers.ReadResult`)."""

    examples: list[TokenExample]
    source: str = ""
    lines: list[int] = field(default_factory=list)
    skipped: int = 0
    skipped_reasons: Counter[str] = field(default_factory=Counter)
    skip_messages: list[str] = field(default_factory=list)


def is_token_file(path: str | os.PathLike[str], format: str = "auto", tokens_key: str = "tokens") -> bool:
    """Whether a data file holds token-level data: CoNLL columns, or JSONL whose records have a token list.

    ``format=conll`` always does; ``auto`` goes by the extension (:data:`CONLL_EXTENSIONS`) and, for
    ``.jsonl``/``.json``, by the first record (its ``tokens_key`` holds a list).
    """
    if format == "conll":
        return True
    suffix = Path(path).suffix.lower()
    if format == "auto" and suffix in CONLL_EXTENSIONS:
        return True
    if format in ("auto", "jsonl") and suffix in (".jsonl", ".ndjson", ".json"):
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        record = json.loads(line)
                        return isinstance(record, dict) and isinstance(record.get(tokens_key), list)
        except (OSError, ValueError):
            return False  # the regular reader reports what is wrong with the file
    return False


def read_token_file(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    tag_column: int = -1,
    tokens_key: str = "tokens",
    tags_key: str = "tags",
    encoding: str = "utf-8",
    skip_bad_rows: bool = False,
    require_tags: bool = True,
) -> TokenReadResult:
    """Read a CoNLL column file or a JSONL token file (see the module docstring).

    Args:
        path: the file.
        format: ``auto`` (by extension: .jsonl/.json are JSONL, anything else CoNLL), ``conll`` or ``jsonl``.
        tag_column: 0-based column of the tag in CoNLL files (negative counts from the end; default last).
        tokens_key: JSONL key of the token list.
        tags_key: JSONL key of the tag list.
        encoding: text encoding.
        skip_bad_rows: skip and count bad sentences instead of raising.
        require_tags: when False, sentences without tags (a one-column CoNLL file, JSONL without
            ``tags_key``) are read with ``tags=None``.

    Raises:
        DataError: missing/unreadable file, bad encoding, mixed separators, no sentences, or (without
            ``skip_bad_rows``) the first bad sentence.
    """
    p = Path(path)
    _check_encoding(path, encoding)
    jsonl = format == "jsonl" or (format == "auto" and p.suffix.lower() in (".jsonl", ".ndjson", ".json"))
    out = TokenReadResult(examples=[], source=str(path))
    try:
        if jsonl:
            _read_token_jsonl(p, encoding, tokens_key, tags_key, require_tags, skip_bad_rows, out)
        else:
            _read_conll(p, encoding, tag_column, require_tags, skip_bad_rows, out)
    except UnicodeError as err:
        raise _decode_error(p, encoding, err) from None
    if not out.examples:
        if out.skipped:
            raise DataError(
                f"{path}: all {out.skipped} sentences were skipped as bad ({dict(out.skipped_reasons)}); first "
                f"problem: {out.skip_messages[0]}"
            )
        raise DataError(
            f"{path}: no sentences found. Fix: point to a file with token lines (CoNLL) or records."
        )
    return out


def _keep(out: TokenReadResult, skip: bool, line: int, build: Any) -> None:
    try:
        example = build()
    except _RowError as err:
        if not skip:
            raise DataError(err.message) from None
        out.skipped += 1
        out.skipped_reasons[err.reason] += 1
        if len(out.skip_messages) < 5:
            out.skip_messages.append(err.message)
        return
    out.examples.append(example)
    out.lines.append(line)


def _check_tags(where: str, tokens: list[str], tags: list[str]) -> None:
    if not tokens:
        raise _RowError("empty_sentence", f"{where}: the sentence has no tokens. {_SKIP_HINT}")
    if len(tokens) != len(tags):
        raise _RowError(
            "length_mismatch",
            f"{where}: {len(tokens)} tokens but {len(tags)} tags; every token needs exactly one tag. {_SKIP_HINT}",
        )
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not _TAG.match(tag):
            raise _RowError(
                "bad_tag",
                f"{where}: tag {tag!r} of token {i} ({tokens[i]!r}) is not O or PREFIX-TYPE with a prefix "
                f"B, I, E, S or M (e.g. B-PER). Fix the tag, or check data.tag_column (the tag column of a "
                f"CoNLL file; default: the last). {_SKIP_HINT}",
            )


def _split(line: str, sep: str | None) -> list[str]:
    return line.split("\t") if sep == "\t" else line.split()


def _read_conll(
    path: Path, encoding: str, tag_column: int, require_tags: bool, skip: bool, out: TokenReadResult
) -> None:
    sep: str | None = None  # the file's separator, fixed by its first token line
    sep_line = 0
    width: int | None = None
    rows: list[tuple[int, list[str]]] = []
    sentence_id = 0

    def flush() -> None:
        nonlocal rows, sentence_id
        if not rows:
            return
        first = rows[0][0]
        sentence, ident = rows, sentence_id
        rows = []
        sentence_id += 1
        _keep(out, skip, first, lambda: _conll_sentence(path, sentence, ident, tag_column, require_tags))

    with _open(path, encoding, "\n") as f:
        for lineno, line in _lines(f):
            if not line.strip():
                flush()
                continue
            line_sep = "\t" if "\t" in line else " "
            if sep is None:
                sep, sep_line = line_sep, lineno
            elif line_sep != sep:
                names = {"\t": "tab", " ": "space"}
                raise DataError(
                    f"{path}, line {lineno}: columns separated by {names[line_sep]}s, but line {sep_line} "
                    f"uses {names[sep]}s; a file must use one separator. Fix: rewrite the file with one "
                    f"separator (e.g. sed 's/\\t/ /g')."
                )
            fields = _split(line.strip("\n"), sep)
            if fields and fields[0] == DOCSTART:
                flush()
                continue
            if width is None:
                width = len(fields)
            rows.append((lineno, fields))
        flush()
    if width == 1 and require_tags:
        raise DataError(
            f"{path}: every line has a single column (tokens only, no tags), but this split needs tags. Fix: "
            f"give a tagged file (token ... tag per line)."
        )


def _conll_sentence(
    path: Path, rows: list[tuple[int, list[str]]], ident: int, tag_column: int, require_tags: bool
) -> TokenExample:
    width = len(rows[0][1])
    tokens: list[str] = []
    tags: list[str] = []
    for lineno, fields in rows:
        where = f"{path}, line {lineno}"
        if len(fields) != width:
            raise _RowError(
                "wrong_column_count",
                f"{where}: {len(fields)} columns, but the sentence's first line (line {rows[0][0]}) has "
                f"{width}; token and tag counts differ on this line. {_SKIP_HINT}",
            )
        tokens.append(fields[0])
        if width > 1:
            if not -width <= tag_column < width or tag_column in (0, -width):
                raise DataError(
                    f"{where}: data.tag_column={tag_column} does not name a tag column of this {width}-column "
                    f"file (column 0 is the token). Fix: set data.tag_column to 1..{width - 1} or -1 (last)."
                )
            tags.append(fields[tag_column])
    where = f"{path}, line {rows[0][0]}"
    if width == 1:
        if require_tags:
            raise _RowError("missing_tags", f"{where}: the sentence has no tag column. {_SKIP_HINT}")
        return TokenExample(ident, tokens, None)
    _check_tags(where, tokens, tags)
    return TokenExample(ident, tokens, tags)


def _read_token_jsonl(
    path: Path,
    encoding: str,
    tokens_key: str,
    tags_key: str,
    require_tags: bool,
    skip: bool,
    out: TokenReadResult,
) -> None:
    build = _jsonl_builder(tokens_key, tags_key, require_tags)
    with _open(path, encoding, "\n") as f:
        idx = 0
        for lineno, line in _lines(f):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            _keep(out, skip, lineno, lambda w=where, r=line, i=idx: build(w, r, i))
            idx += 1


def _parse_record(where: str, raw: str) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except ValueError as err:
        raise _RowError("bad_json", f"{where}: not valid JSON ({err}). {_SKIP_HINT}") from None
    if not isinstance(record, dict):
        raise _RowError("bad_json", f"{where}: expected a JSON object, got {type(record).__name__}.")
    return record


def _jsonl_builder(tokens_key: str, tags_key: str, require_tags: bool):
    def build(where: str, raw: str, ident: int) -> TokenExample:
        record = _parse_record(where, raw)
        tokens = record.get(tokens_key)
        if not isinstance(tokens, list) or not all(isinstance(t, str) and t.strip() for t in tokens):
            raise _RowError(
                "bad_tokens",
                f"{where}: key {tokens_key!r} must be a list of non-empty strings, got {str(tokens)[:60]}. "
                f"Fix the record, or set data.tokens_key to the key of the token list. {_SKIP_HINT}",
            )
        tags = record.get(tags_key)
        if tags is None:
            if require_tags:
                raise _RowError(
                    "missing_tags",
                    f"{where}: key {tags_key!r} (the tags) is missing. Fix the record, or set data.tags_key. "
                    f"{_SKIP_HINT}",
                )
            if not tokens:
                raise _RowError("empty_sentence", f"{where}: the sentence has no tokens. {_SKIP_HINT}")
            return TokenExample(ident, list(tokens), None)
        if not isinstance(tags, list):
            raise _RowError("bad_tag", f"{where}: key {tags_key!r} must be a list of tag strings.")
        _check_tags(where, list(tokens), list(tags))
        return TokenExample(ident, list(tokens), list(tags))

    return build
