"""The on-disk store of a teacher cache: its format and the memory-mapped reader.

A cache directory holds raw little-endian arrays plus ``meta.json`` (written last: its presence marks a
complete cache); the layout is in the package docstring. :class:`TeacherCache` opens and validates one and
reads a batch's rows; :mod:`.writer` writes one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textdistill.errors import DataError
from textdistill.training.teacher_cache.spec import FORMAT_VERSION, CacheSpec

# numpy has no bfloat16: bf16 arrays are stored as their raw 16-bit patterns and viewed back in torch.
_NUMPY_DTYPE = {"fp16": np.float16, "bf16": np.int16, "fp32": np.float32}
META = "meta.json"


@dataclass(frozen=True)
class _Array:
    file: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name


class CacheInvalid(Exception):
    """Internal: a cache directory that cannot be used (incomplete, corrupt, other format)."""


class TeacherCache:
    """A complete, validated cache directory, memory-mapped read-only.

    Open one with :meth:`open` (or build one with :func:`build_teacher_cache`). Arrays are mapped lazily,
    so opening is cheap and only the rows a batch reads are paged in.

    Attributes:
        directory: the cache directory.
        fingerprint: its fingerprint; ``components`` what it was computed from.
        spec: the stored layout.
        dtype: storage precision (``fp16``, ``bf16`` or ``fp32``).
        num_heads: attention heads of the teacher; ``num_layers`` its transformer layers.
        ids: ``(N,)`` example ids per row; ``lengths`` real tokens per row; ``offsets`` ``(N + 1,)``.
    """

    def __init__(self, directory: Path, meta: dict[str, Any], ids: np.ndarray, lengths: np.ndarray):
        self.directory = directory
        self.meta = meta
        self.fingerprint: str = meta["fingerprint"]
        self.components: dict[str, Any] = meta["components"]
        self.spec = CacheSpec.from_dict(meta["spec"])
        self.dtype: str = meta["dtype"]
        self.num_heads: int = int(meta["num_heads"])
        self.num_layers: int = int(meta["num_layers"])
        self.ids = ids
        self.lengths = lengths
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.pair_offsets = np.concatenate([[0], np.cumsum(lengths * lengths)]).astype(np.int64)
        self._order = np.argsort(ids, kind="stable")
        self._sorted_ids = ids[self._order]
        self._arrays = {
            k: _Array(v["file"], tuple(v["shape"]), v["dtype"]) for k, v in meta["arrays"].items()
        }
        self._maps: dict[str, np.memmap] = {}

    # -- opening ----------------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | Path, fingerprint: str | None = None) -> TeacherCache:
        """Open and validate a cache directory.

        Args:
            directory: the cache directory.
            fingerprint: when given, the cache must have been built with this fingerprint.

        Raises:
            CacheInvalid: missing or incomplete ``meta.json``, another format version or fingerprint, or an
                array file that is missing or has the wrong size (a partial or corrupted cache).
        """
        directory = Path(directory)
        try:
            meta = json.loads((directory / META).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CacheInvalid(f"no readable {META} ({exc})") from None
        if (
            not isinstance(meta, dict)
            or meta.get("format") != FORMAT_VERSION
            or meta.get("complete") is not True
        ):
            raise CacheInvalid(f"{META} is not a complete format-{FORMAT_VERSION} cache")
        if fingerprint is not None and meta.get("fingerprint") != fingerprint:
            raise CacheInvalid(f"fingerprint {meta.get('fingerprint')} differs from the wanted {fingerprint}")
        try:
            n, t, s = int(meta["num_examples"]), int(meta["num_tokens"]), int(meta["num_pairs"])
            ids = np.load(directory / "ids.npy", allow_pickle=False)
            lengths = np.load(directory / "lengths.npy", allow_pickle=False)
            if ids.shape != (n,) or lengths.shape != (n,) or int(lengths.sum()) != t:
                raise CacheInvalid("ids.npy / lengths.npy disagree with meta.json")
            if int((lengths * lengths).sum()) != s:
                raise CacheInvalid("lengths.npy disagrees with meta.json")
            for name, a in meta["arrays"].items():
                path = directory / a["file"]
                expected = int(np.prod(a["shape"])) * np.dtype(a["dtype"]).itemsize
                if not path.is_file() or path.stat().st_size != expected:
                    raise CacheInvalid(f"array {name} ({a['file']}) is missing or has the wrong size")
            cache = cls(directory, meta, ids.astype(np.int64), lengths.astype(np.int64))
        except CacheInvalid:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheInvalid(f"unreadable cache files ({type(exc).__name__}: {exc})") from None
        return cache

    def array(self, name: str) -> np.memmap:
        """The named stored array, memory-mapped read-only."""
        if name not in self._maps:
            a = self._arrays[name]
            self._maps[name] = np.memmap(self.directory / a.file, dtype=a.dtype, mode="r", shape=a.shape)
        return self._maps[name]

    @property
    def num_examples(self) -> int:
        return len(self.ids)

    def rows(self, example_ids: np.ndarray) -> np.ndarray:
        """Row index of each example id.

        Raises:
            DataError: an id that is not in the cache.
        """
        example_ids = np.asarray(example_ids, dtype=np.int64)
        pos = np.searchsorted(self._sorted_ids, example_ids)
        pos = np.minimum(pos, len(self._sorted_ids) - 1)
        found = self._sorted_ids[pos] == example_ids
        if not found.all():
            missing = example_ids[~found][:5].tolist()
            raise DataError(
                f"example ids {missing} are not in the teacher cache {self.directory} ({self.num_examples} "
                "examples). The cache covers the datasets it was built from: build it over every dataset the "
                "cached teacher is asked about (train and augmented examples), or set teacher.cache=false."
            )
        return self._order[pos]

    def token_index(self, rows: np.ndarray) -> np.ndarray:
        """Indices into the per-token arrays of the given rows' tokens, concatenated in row order."""
        starts, lens = self.offsets[rows], self.lengths[rows]
        return np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))

    def read(self, name: str, index: np.ndarray | slice) -> torch.Tensor:
        """Rows of a stored array as a CPU tensor in the storage dtype (bf16 re-viewed from its bits)."""
        rows = self.array(name)[index]
        if not rows.flags.writeable:  # a slice is a view of the read-only map: copy what the batch reads
            rows = np.array(rows)
        data = torch.from_numpy(rows)
        return data.view(torch.bfloat16) if self._is_bf16(name) else data

    def _is_bf16(self, name: str) -> bool:
        return self.dtype == "bf16" and self._arrays[name].dtype == "int16"

    def read_maps(self, name: str, rows: np.ndarray, real: torch.Tensor) -> torch.Tensor:
        """Per-example ``(heads, n, n)`` maps placed into a zero ``(B, heads, L, L)`` CPU tensor.

        Args:
            name: the stored map array (``scores_{l}`` or ``probs_{l}``).
            rows: ``(B,)`` cache rows.
            real: ``(B, L)`` bool CPU mask of the batch's real tokens.
        """
        b, length = real.shape
        flat = self.array(name)
        h = self.num_heads
        out = np.zeros((b, h, length, length), dtype=flat.dtype)
        for j, r in enumerate(rows.tolist()):
            n = int(self.lengths[r])
            start = int(self.pair_offsets[r]) * h
            block = np.asarray(flat[start : start + h * n * n]).reshape(h, n, n)
            pos = real[j].nonzero().squeeze(1).numpy()
            if n and pos[-1] == n - 1:  # right padding (the collator's): a plain slice
                out[j, :, :n, :n] = block
            else:
                out[j][:, pos[:, None], pos[None, :]] = block
        data = torch.from_numpy(out)
        return data.view(torch.bfloat16) if self._is_bf16(name) else data

    def __repr__(self) -> str:
        return (
            f"TeacherCache({str(self.directory)!r}, {self.num_examples} examples, {self.dtype}, "
            f"spec={self.spec})"
        )
