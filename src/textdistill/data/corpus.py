"""Streaming plain-text corpora (one document or sentence per line) for general distillation.

Unlabelled corpora can be far larger than memory, so lines are streamed file by file and never collected.
"""

from __future__ import annotations

import codecs
import gzip
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from textdistill.data.readers import find_undecodable_line
from textdistill.errors import DataError


def corpus_files(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The files behind ``paths``: files as given, directories expanded recursively in sorted order.

    Hidden files and directories (name starting with ``.``) inside a directory are left out.

    Raises:
        DataError: a path that does not exist, or no file at all.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise DataError("no corpus path given. Fix: pass one or more text files or directories.")
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not found:
                raise DataError(f"corpus directory {p} holds no files. Fix: point to the text files.")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(
                f"corpus path not found: {p}. Fix: check the path (relative paths start at the cwd)."
            )
    return files


def _open_text(path: Path, encoding: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="\n")
    return open(path, encoding=encoding, newline="\n")  # noqa: SIM115 - closed by the caller's with


def iter_plain_text(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, encoding: str = "utf-8"
) -> Iterator[str]:
    """Yield the non-blank lines of one or more files or directories, streaming.

    Lines lose their line ending and surrounding whitespace; blank lines are skipped. Files are read in the
    order given (directories: recursively, sorted by path); ``.gz`` files are decompressed on the fly.
    Nothing is read before the first ``next()`` except the file listing.

    Args:
        paths: a file, a directory, or a list of them.
        encoding: text encoding of every file.

    Yields:
        One line (document or sentence) at a time.

    Raises:
        DataError: a missing path, an empty directory, an unknown encoding, an unreadable file, or bytes
            that do not decode (naming the file and line).
    """
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"unknown text encoding {encoding!r}. Fix: use e.g. utf-8 or latin-1.") from None
    for path in corpus_files(paths):
        lineno = 0
        try:
            with _open_text(path, encoding) as f:
                for lineno, line in enumerate(f, start=1):
                    text = line.strip()
                    if lineno == 1:
                        text = text.lstrip("\ufeff")
                    if text:
                        yield text
        except UnicodeDecodeError as err:
            # the text decoder works on chunks, so find the line with a second, binary pass
            bad_line = None if path.suffix == ".gz" else find_undecodable_line(path, encoding)[0]
            where = f"line {bad_line}" if bad_line else f"after line {lineno}"
            raise DataError(
                f"{path}, {where}: cannot decode bytes as {encoding} ({err.reason}). "
                f"Fix: pass the corpus's encoding, e.g. encoding='latin-1'."
            ) from None
        except (OSError, EOFError) as err:
            raise DataError(f"cannot read corpus file {path}: {err}. Fix: check the file.") from None
