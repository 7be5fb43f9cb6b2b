"""Plain-text corpus streaming for general distillation."""

from __future__ import annotations

import gzip
import types

import pytest

from textdistill.data.corpus import corpus_files, iter_plain_text
from textdistill.errors import DataError


def test_streams_a_directory_recursively_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("second file\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("  first line  \n\n   \nsecond line\r\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("nested\n", encoding="utf-8")
    (tmp_path / ".hidden").write_text("never\n", encoding="utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x").write_text("never\n", encoding="utf-8")
    with gzip.open(tmp_path / "d.txt.gz", "wt", encoding="utf-8") as f:
        f.write("zipped one\nzipped two\n")
    it = iter_plain_text(str(tmp_path))
    assert isinstance(it, types.GeneratorType)
    assert list(it) == ["first line", "second line", "second file", "zipped one", "zipped two", "nested"]
    names = [p.name for p in corpus_files(tmp_path)]
    assert names == ["a.txt", "b.txt", "d.txt.gz", "c.txt"]


def test_files_and_directories_mixed_in_given_order(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("from dir\n", encoding="utf-8")
    single = tmp_path / "single.txt"
    single.write_text("\ufefffrom file\n", encoding="utf-8")
    assert list(iter_plain_text([single, tmp_path / "d"])) == ["from file", "from dir"]


def test_streams_without_reading_ahead(tmp_path):
    # 200 kB of good lines, then bytes that are not UTF-8: a reader that loaded the whole file would fail
    # before yielding anything; a streaming one yields the first lines and fails only when it gets there
    path = tmp_path / "big.txt"
    good = "".join(f"sentence number {i}\n" for i in range(10_000))
    path.write_bytes(good.encode() + b"caf\xe9\n")
    it = iter_plain_text(path)
    assert [next(it) for _ in range(3)] == ["sentence number 0", "sentence number 1", "sentence number 2"]
    with pytest.raises(DataError) as exc:
        for _ in it:
            pass
    assert f"{path}, line 10001: cannot decode" in str(exc.value) and "latin-1" in str(exc.value)
    assert sum(1 for _ in iter_plain_text(path, encoding="latin-1")) == 10_001


def test_errors(tmp_path):
    with pytest.raises(DataError, match="corpus path not found"):
        list(iter_plain_text(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no files"):
        list(iter_plain_text(tmp_path / "empty"))
    with pytest.raises(DataError, match="no corpus path given"):
        list(iter_plain_text([]))
