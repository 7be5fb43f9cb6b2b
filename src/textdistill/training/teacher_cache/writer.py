"""Writing a teacher cache directory: the planned arrays, the disk-space check, the row writer, publication.

Files go to a temporary sibling directory, every array preallocated at its final size; ``meta.json`` is
written last, the directory is validated and then renamed into place, so a crash mid-pass never leaves a
directory that passes validation.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textdistill.errors import ConfigError, ModelError
from textdistill.training.faults import new_partial_dir
from textdistill.training.teacher_cache.spec import CACHE_DTYPES, FORMAT_VERSION, CacheSpec, _Examples
from textdistill.training.teacher_cache.store import _NUMPY_DTYPE, META, CacheInvalid, TeacherCache, _Array

# Free space required on top of the estimate: meta/ids files and file-system overhead.
_SPACE_MARGIN = 0.05
_SPACE_MIN_EXTRA = 16 * 2**20


@dataclass
class _Plan:
    """Arrays to write, known before the pass (for the disk estimate)."""

    arrays: dict[str, _Array] = field(default_factory=dict)

    def nbytes(self) -> int:
        return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in self.arrays.values())


def _plan(spec: CacheSpec, ex: _Examples, dims: dict[str, int], dtype: str) -> _Plan:
    n, t = len(ex.ids), int(ex.lengths.sum())
    s = int((ex.lengths * ex.lengths).sum())
    store = np.dtype(_NUMPY_DTYPE[dtype]).name
    p = _Plan()
    p.arrays["input_ids"] = _Array("input_ids.bin", (t,), "int32")
    if dims.get("token_logits"):  # token classification: (T, C), real tokens only, like hidden states
        p.arrays["token_logits"] = _Array("token_logits.bin", (t, dims["labels"]), store)
    else:
        p.arrays["logits"] = _Array("logits.bin", (n, dims["labels"]), store)
    for i in spec.hidden:
        p.arrays[f"hidden_{i}"] = _Array(f"hidden_{i}.bin", (t, dims["hidden"]), store)
    for layer in spec.qkv:
        for role in "qkv":
            p.arrays[f"{role}_{layer}"] = _Array(f"{role}_{layer}.bin", (t, dims["qkv"]), store)
    for kind, layers in (("scores", spec.scores), ("probs", spec.probs)):
        for layer in layers:
            p.arrays[f"{kind}_{layer}"] = _Array(f"{kind}_{layer}.bin", (dims["heads"] * s,), store)
    return p


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


class CacheTooLarge(ConfigError):
    """The teacher cache would not fit on the disk (``teacher.cache`` auto falls back to the live teacher)."""


def check_disk_space(directory: Path, needed: int) -> None:
    """Raise CacheTooLarge when ``needed`` bytes (plus a margin) would not fit where ``directory`` goes."""
    where = _existing_ancestor(directory)
    free = shutil.disk_usage(where).free
    required = int(needed * (1 + _SPACE_MARGIN)) + _SPACE_MIN_EXTRA
    if required > free:
        raise CacheTooLarge(
            f"teacher.cache: the teacher cache needs about {human_bytes(needed)} "
            f"(+{int(_SPACE_MARGIN * 100)}% margin) but {where} has only {human_bytes(free)} free. Fix: "
            "point teacher.cache_dir at a larger disk, store in 16 bits (teacher.cache_dtype=fp16 or bf16), "
            "cache fewer features (fewer layers in the layer map), or run the teacher live "
            "(teacher.cache=false)."
        )


class _Writer:
    """Writes each array's rows in build order into the preallocated files, from the byte ``offsets`` on
    (name -> byte offset: this process's first row; all zeros for a whole pass)."""

    def __init__(self, directory: Path, plan: _Plan, dtype: str, offsets: dict[str, int]):
        self.dtype = dtype
        self.files = {}
        for name, a in plan.arrays.items():
            f = open(directory / a.file, "r+b")  # noqa: SIM115
            f.seek(offsets[name])
            self.files[name] = f

    def positions(self) -> dict[str, int]:
        """The byte position each file has reached."""
        return {name: f.tell() for name, f in self.files.items()}

    def write(self, name: str, values: torch.Tensor) -> None:
        if name != "input_ids":
            values = self._store(name, values)
            values = values.view(torch.int16) if self.dtype == "bf16" else values
        self.files[name].write(values.contiguous().cpu().numpy().tobytes())

    def _store(self, name: str, values: torch.Tensor) -> torch.Tensor:
        stored = values.to(CACHE_DTYPES[self.dtype])
        if self.dtype == "fp16" and not torch.isfinite(stored).all() and torch.isfinite(values).all():
            raise ConfigError(
                f"teacher.cache_dtype=fp16: teacher {name} reaches {values.abs().max().item():.4g}, beyond "
                "fp16's largest value 65504. Fix: teacher.cache_dtype=bf16 (same size, wider range) or fp32."
            )
        return stored

    def close(self) -> None:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()


def _byte_offsets(plan: _Plan, ex: _Examples, row: int) -> dict[str, int]:
    """Byte offset of build-order row ``row`` in every planned array file (the end of the file for N).

    Per-example arrays (``logits``) advance by one entry per row, per-token arrays (``input_ids``, hidden
    states, Q/K/V) by the row's real tokens and attention maps by ``heads * n^2`` values per row.
    """
    tokens = int(ex.lengths[:row].sum())
    pairs = int((ex.lengths[:row] * ex.lengths[:row]).sum())
    total_pairs = int((ex.lengths * ex.lengths).sum())
    out = {}
    for name, a in plan.arrays.items():
        itemsize = np.dtype(a.dtype).itemsize
        if name == "logits":
            out[name] = row * int(np.prod(a.shape[1:])) * itemsize
        elif name.startswith(("scores_", "probs_")):
            out[name] = pairs * (a.shape[0] // max(total_pairs, 1)) * itemsize
        else:
            out[name] = tokens * int(np.prod(a.shape[1:])) * itemsize
    return out


def _allocate(
    directory: Path, plan: _Plan, ex: _Examples, dtype: str, *, quiet: bool, note: str = ""
) -> Path:
    """Announce the pass, check the disk space and create the temporary directory it writes into, with
    every planned array file at its final size (each process of a build writes its byte range in place)."""
    estimate = plan.nbytes() + 16 * len(ex.ids)
    if not quiet:
        print(
            f"teacher cache: {len(ex.ids)} examples, {int(ex.lengths.sum())} tokens, {dtype}, "
            f"about {human_bytes(estimate)} on disk -> {directory}{note}"
        )
    check_disk_space(directory, estimate)
    tmp = new_partial_dir(directory)  # also removes partial directories of builders that died
    try:
        for a in plan.arrays.values():
            with open(tmp / a.file, "wb") as f:
                f.truncate(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _complete(tmp: Path, directory: Path, fingerprint: str, ex: _Examples, meta: dict[str, Any]) -> None:
    """Write ids, lengths and ``meta.json`` (last), validate the temporary cache, publish it."""
    np.save(tmp / "ids.npy", ex.ids)
    np.save(tmp / "lengths.npy", ex.lengths)
    _write_text_synced(tmp / META, json.dumps(meta, indent=1))
    try:  # validate before publishing
        TeacherCache.open(tmp, fingerprint)
    except CacheInvalid as why:
        raise ModelError(
            f"teacher cache: the inference pass wrote an inconsistent cache ({why}); the teacher's outputs "
            "changed shape between batches. Set teacher.cache=false to run the teacher live."
        ) from None
    _publish(tmp, directory, fingerprint)


def _meta(
    fingerprint: str,
    components: dict[str, Any],
    spec: CacheSpec,
    ex: _Examples,
    plan: _Plan,
    *,
    dtype: str,
    heads: int,
    num_layers: int,
    seconds: float,
) -> dict[str, Any]:
    """The contents of ``meta.json`` (written last: its presence marks a complete cache)."""
    return {
        "format": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "components": components,
        "spec": spec.to_dict(),
        "dtype": dtype,
        "num_examples": len(ex.ids),
        "num_tokens": int(ex.lengths.sum()),
        "num_pairs": int((ex.lengths * ex.lengths).sum()),
        "num_heads": heads,
        "num_layers": num_layers,
        "arrays": {
            k: {"file": a.file, "shape": list(a.shape), "dtype": a.dtype} for k, a in plan.arrays.items()
        },
        "build_seconds": round(seconds, 3),
        "complete": True,
    }


def _write_text_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _publish(tmp: Path, directory: Path, fingerprint: str) -> None:
    """Move a complete temporary cache into place (replacing an invalid one); a valid concurrent one wins."""
    if directory.exists():
        try:
            TeacherCache.open(directory, fingerprint)
            shutil.rmtree(tmp, ignore_errors=True)  # another process published the same cache meanwhile
            return
        except CacheInvalid:
            # Rename aside first: a directory cannot be renamed over a non-empty one. Readers that still map
            # the old files keep them alive until they close them.
            trash = directory.with_name(f".{directory.name}.stale-{uuid.uuid4().hex[:8]}")
            os.rename(directory, trash)
            shutil.rmtree(trash, ignore_errors=True)
    os.rename(tmp, directory)
