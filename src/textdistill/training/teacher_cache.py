"""Teacher-output cache: run the frozen teacher once per example, train against its stored outputs.

A distillation run calls the teacher on every batch of every epoch (and every stage of a pipeline), although
its outputs for an example never change. The cache runs one inference pass over the distinct examples
(large ``train.eval_batch_size`` batches, ``torch.inference_mode``, length-sorted so that batches carry
little padding) and stores what the objective reads on disk, memory-mapped, so caches larger than RAM stay
on disk and only the rows of the current batch are read.

Layout of a cache directory (all arrays raw little-endian, row order = the build order)::

    meta.json          fingerprint + its components, the stored arrays, shapes and dtypes; written last
    ids.npy            (N,) int64 example ids, one per row
    lengths.npy        (N,) int64 real tokens per example (padding is never stored)
    input_ids.bin      (T,) int32 real tokens of every example, concatenated (every lookup is checked on them)
    logits.bin         (N, C) teacher logits
    hidden_{i}.bin     (T, H) hidden_states[i] at real tokens (only the indices the objective reads)
    {q,k,v}_{l}.bin    (T, W) Q/K/V projections of 0-based layer l at real tokens
    scores_{l}.bin     (heads * sum n^2,) pre-softmax scores of layer l, each example's (heads, n, n) block
    probs_{l}.bin      (heads * sum n^2,) attention probabilities of layer l, same layout

``T = sum_b n_b`` real tokens; example ``r``'s tokens are rows ``offsets[r]:offsets[r + 1]`` with
``offsets = [0, cumsum(lengths)]``. Variable-length examples are therefore stored without padding and padded
back per batch (with zeros) to the batch's padded length at lookup time.

Derived features are not stored twice: a layer whose Q/K/V are cached gets its scores and probabilities
recomputed from Q and K with the very function the live hooks use
(:func:`~textdistill.models.hooks.attention_from_qk`), and a layer with cached scores gets its probabilities
as ``softmax(scores + mask)``, as the hooks compute them. For the ``(heads, n, n)`` maps of short sequences
storing the map is smaller than storing Q and K (``heads * n^2 < 2 * n * W`` while ``n < 2 * d_head``), so
Q/K are stored only when the objective asks for Q/K/V anyway.

Fingerprint (:func:`cache_fingerprint`): a SHA-256 over

* the teacher's weights: the bytes, dtypes, shapes and names of every tensor of the *loaded* model's
  ``state_dict`` (rather than the weight files' bytes or their size + mtime: the loaded tensors are what
  produce the outputs, whatever the file format, shard layout or hub cache location, and an in-memory edit
  changes them too; hashing ~0.5 GB of BERT-base takes well under a second), plus the model config (minus
  its path and library version);
* the tokenizer files in the teacher directory (when it is local);
* ``max_length``;
* the data: every distinct example's id, ``input_ids`` and ``token_type_ids`` as encoded (so any tokenizer
  or truncation change that alters an input changes the hash, even for a hub tokenizer);
* the stored features, the storage dtype and the compute precision of the pass.

A directory whose fingerprint differs, or which is incomplete or corrupt (missing ``meta.json``, a missing
or wrongly sized array), is rebuilt. The cache is written to a temporary sibling directory and renamed into
place when complete, so a crash mid-pass never leaves a directory that passes validation.

Several processes (``torch.distributed`` initialised, e.g. under ``accelerate launch``): the build is
collective and each process runs the teacher on its own share of the batches only. Process 0 creates the
temporary directory with every array file at its final size; each process writes its contiguous run of rows
(whole batches, cut where the padded-token work is balanced) into its byte range of those files; once every
process reported success, process 0 writes ``meta.json``, validates and renames the directory into place, as
a single process does. The batches are the single-process build's batches, so the arrays are the same.
Every process must see the cache directory (one machine, or a shared file system across machines).

Example:
    >>> cache = build_teacher_cache(teacher, [train_ds], collator, directory="cache/sst2",
    ...                             request=objective.teacher_request(), device=device)
    >>> source = CachedTeacher(cache, objective.teacher_request(), device)
    >>> teacher_out = source(batch)  # ModelOutputs, float32, shaped like the live teacher's
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from textdistill.config.schema import Config
from textdistill.errors import ConfigError, DataError, ModelError
from textdistill.models.hooks import probs_from_scores, scores_from_qk
from textdistill.models.outputs import HIDDEN_STATES, FeatureRequest, ModelOutputs
from textdistill.training.distiller import (
    LiveTeacher,
    TeacherSource,
    all_gather_objects,
    broadcast_object,
    model_inputs,
)
from textdistill.training.precision import autocast, resolve_precision

FORMAT_VERSION = 1
CACHE_DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# numpy has no bfloat16: bf16 arrays are stored as their raw 16-bit patterns and viewed back in torch.
_NUMPY_DTYPE = {"fp16": np.float16, "bf16": np.int16, "fp32": np.float32}
META = "meta.json"
DEFAULT_ROOT_NAME = ".textdistill-cache"
# Free space required on top of the estimate: meta/ids files and file-system overhead.
_SPACE_MARGIN = 0.05
_SPACE_MIN_EXTRA = 16 * 2**20
_TOKENIZER_FILE_PREFIXES = (
    "tokenizer",
    "vocab",
    "merges",
    "special_tokens",
    "added_tokens",
    "spiece",
    "sentencepiece",
)


# ------------------------------------------------------------------------------------------------ spec
@dataclass(frozen=True)
class CacheSpec:
    """What a cache stores (not what it can give: see :meth:`covers`).

    Attributes:
        hidden: indices into ``hidden_states`` (0 = embeddings) stored per token.
        qkv: 0-based layers whose Q/K/V projections are stored (their scores/probabilities are derived).
        scores: 0-based layers whose pre-softmax score maps are stored (their probabilities are derived).
        probs: 0-based layers whose attention-probability maps are stored.
    """

    hidden: tuple[int, ...] = ()
    qkv: tuple[int, ...] = ()
    scores: tuple[int, ...] = ()
    probs: tuple[int, ...] = ()

    @classmethod
    def from_request(
        cls, request: FeatureRequest, num_layers: int, hidden_layers: Iterable[int] | None = None
    ) -> CacheSpec:
        """The smallest layout that can answer ``request``.

        Args:
            request: what the consumer will ask for.
            num_layers: transformer layers of the teacher (``hidden_states`` has ``num_layers + 1`` entries).
            hidden_layers: the ``hidden_states`` indices actually read (see :func:`teacher_hidden_layers`);
                None stores all of them when ``request.hidden_states`` is set.

        Raises:
            ModelError: a hidden index or layer outside the teacher.
        """
        hidden: tuple[int, ...] = ()
        if request.hidden_states:
            wanted = range(num_layers + 1) if hidden_layers is None else hidden_layers
            hidden = tuple(sorted(set(wanted)))
            bad = [i for i in hidden if not 0 <= i <= num_layers]
            if bad:
                raise ModelError(
                    f"teacher cache: hidden_states indices {bad} do not exist; the teacher has {num_layers} "
                    f"layers, so valid indices are 0..{num_layers} (0 = embeddings). Fix the layer map."
                )
        layers = request.qkv | request.attention_scores | request.attentions
        bad = sorted(i for i in layers if not 0 <= i < num_layers)
        if bad:
            raise ModelError(
                f"teacher cache: attention/Q/K/V features of layers {bad} requested, but the teacher has "
                f"{num_layers} layers (valid 0-based layers: 0..{num_layers - 1}). Fix the layer map."
            )
        qkv = tuple(sorted(request.qkv))
        scores = tuple(sorted(request.attention_scores - request.qkv))
        probs = tuple(sorted(request.attentions - request.qkv - request.attention_scores))
        return cls(hidden=hidden, qkv=qkv, scores=scores, probs=probs)

    def request(self) -> FeatureRequest:
        """The teacher forward request that captures exactly what is stored."""
        return FeatureRequest(
            hidden_states=bool(self.hidden),
            attentions=set(self.probs),
            attention_scores=set(self.scores),
            qkv=set(self.qkv),
        )

    def missing(self, request: FeatureRequest, hidden_layers: Iterable[int] | None = None) -> list[str]:
        """What of ``request`` this layout cannot give (empty when it covers it)."""
        out = []
        if request.hidden_states:
            need = set(hidden_layers) if hidden_layers is not None else None
            if not self.hidden:
                out.append("hidden_states")
            elif need is not None and need - set(self.hidden):
                out.append(f"hidden_states{sorted(need - set(self.hidden))}")
        qkv, scores = set(self.qkv), set(self.scores)
        if request.qkv - qkv:
            out.append(f"qkv of layers {sorted(request.qkv - qkv)}")
        if request.attention_scores - qkv - scores:
            out.append(f"attention_scores of layers {sorted(request.attention_scores - qkv - scores)}")
        if request.attentions - qkv - scores - set(self.probs):
            out.append(f"attentions of layers {sorted(request.attentions - qkv - scores - set(self.probs))}")
        return out

    def covers(self, request: FeatureRequest, hidden_layers: Iterable[int] | None = None) -> bool:
        """True when every feature of ``request`` can be read (or derived) from this layout."""
        return not self.missing(request, hidden_layers)

    def to_dict(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CacheSpec:
        return cls(**{k: tuple(int(x) for x in d.get(k, ())) for k in ("hidden", "qkv", "scores", "probs")})


def teacher_hidden_layers(objective: nn.Module) -> set[int] | None:
    """The teacher ``hidden_states`` indices an objective reads (None: it needs all of them).

    Hidden-state terms expose their matched ``(student, teacher)`` index pairs as ``pairs``; a term that
    needs hidden states without saying which gets all of them (safe, only larger).

    Args:
        objective: an :class:`~textdistill.losses.objective.Objective` (anything with ``terms``).
    """
    wanted: set[int] = set()
    for term in getattr(objective, "terms", ()):
        if not getattr(term, "needs_teacher", True) or HIDDEN_STATES not in getattr(term, "needs", ()):
            continue
        pairs = getattr(term, "pairs", None)
        if pairs is None:
            return None
        wanted |= {int(t) for _, t in pairs}
    return wanted


# ------------------------------------------------------------------------------------------ examples
@dataclass
class _Examples:
    """The distinct examples of several datasets, in build order (by length, then id)."""

    ids: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (N,) int64
    sources: list[tuple[int, int]]  # (dataset index, item index) per row
    data_hash: str
    max_length: int | None


def _collect_examples(datasets: Sequence[Any]) -> _Examples:
    """Deduplicate the examples of ``datasets`` by id and hash their encoded inputs.

    Raises:
        DataError: no examples, an item without ``example_id``, or one id with two different inputs.
    """
    first: dict[int, tuple[int, int]] = {}
    for d, ds in enumerate(datasets):
        for i in range(len(ds)):
            item = ds[i]
            if "example_id" not in item:
                raise DataError(
                    f"dataset {d} item {i} has no 'example_id'; the teacher cache is keyed by example id. "
                    "Use textdistill.data.encoding.EncodedDataset (it adds the ids)."
                )
            eid = int(item["example_id"])
            if eid in first:
                d0, i0 = first[eid]
                other = datasets[d0][i0]
                if _inputs(other) != _inputs(item):
                    raise DataError(
                        f"example id {eid} appears twice with different inputs (dataset {d0} item {i0} and "
                        f"dataset {d} item {i}); the teacher cache is keyed by example id, so ids must be "
                        "unique across the cached datasets. Cache only the training data (train + augmented "
                        "examples, whose ids are fresh), or renumber the examples."
                    )
                continue
            first[eid] = (d, i)
    if not first:
        raise DataError("teacher cache: the datasets hold no examples; nothing to cache")
    ids = np.fromiter(first.keys(), dtype=np.int64, count=len(first))
    by_id = np.sort(ids)
    h = hashlib.sha256()
    lengths_by_id = np.empty(len(by_id), dtype=np.int64)
    for k, eid in enumerate(by_id.tolist()):
        d, i = first[eid]
        input_ids, types = _inputs(datasets[d][i])
        lengths_by_id[k] = len(input_ids)
        # Lengths and a presence flag separate the fields, so no two different inputs hash alike.
        h.update(np.array([eid, len(input_ids), types is not None], dtype=np.int64).tobytes())
        h.update(np.asarray(input_ids, dtype=np.int64).tobytes())
        if types is not None:
            h.update(np.asarray(types, dtype=np.int64).tobytes())
    order = np.lexsort((by_id, lengths_by_id))  # by length, ties by id: batches with little padding
    max_lengths = {getattr(ds, "max_length", None) for ds in datasets}
    max_lengths.discard(None)
    return _Examples(
        ids=by_id[order],
        lengths=lengths_by_id[order],
        sources=[first[int(e)] for e in by_id[order]],
        data_hash=h.hexdigest(),
        max_length=max(max_lengths) if max_lengths else None,
    )


def _inputs(item: dict[str, Any]) -> tuple[list[int], list[int] | None]:
    types = item.get("token_type_ids")
    return list(item["input_ids"]), None if types is None else list(types)


# --------------------------------------------------------------------------------------- fingerprint
def weights_hash(model: nn.Module) -> str:
    """SHA-256 of a model's ``state_dict``: every tensor's name, dtype, shape and bytes, plus its config.

    The config is included (minus ``_name_or_path`` and ``transformers_version``, which do not change the
    outputs) because it holds settings the weights do not, e.g. ``layer_norm_eps`` or ``hidden_act``.
    """
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        d = {k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    return h.hexdigest()


def tokenizer_hash(path: str | Path | None) -> str | None:
    """SHA-256 of the tokenizer files in a local model directory (None for a hub id or no path).

    Files whose names start with ``tokenizer``, ``vocab``, ``merges``, ``special_tokens``, ``added_tokens``,
    ``spiece`` or ``sentencepiece`` are hashed (name and bytes). The data hash covers the tokenization of
    the cached examples anyway; this also separates caches of tokenizers that differ elsewhere.
    """
    if path is None or not Path(path).is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(Path(path).iterdir()):
        if f.is_file() and f.name.lower().startswith(_TOKENIZER_FILE_PREFIXES):
            h.update(f.name.encode() + b"\0")
            h.update(f.read_bytes())
    return h.hexdigest()


def cache_fingerprint(components: dict[str, Any]) -> str:
    """The fingerprint of a cache: 20 hex digits of SHA-256 over its (JSON) components."""
    return hashlib.sha256(json.dumps(components, sort_keys=True).encode()).hexdigest()[:20]


def _num_layers(teacher: nn.Module) -> int:
    info = getattr(teacher, "info", None)
    if info is not None:
        return int(info.num_layers)
    config = getattr(teacher, "config", None)
    if config is not None and hasattr(config, "num_hidden_layers"):
        return int(config.num_hidden_layers)
    raise ModelError(
        f"teacher cache: cannot tell how many layers the teacher ({type(teacher).__name__}) has; it needs an "
        "`info` (ModelInfo) or a transformers `config`. Wrap it in textdistill.models.hf.HFClassifier."
    )


# ------------------------------------------------------------------------------------------- the cache
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


# ------------------------------------------------------------------------------------------- building
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


def _forward(
    teacher: nn.Module,
    batch: dict[str, torch.Tensor],
    request: FeatureRequest,
    device: torch.device,
    precision: str,
) -> ModelOutputs:
    batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
    with torch.inference_mode(), autocast(device, precision):
        return teacher(**model_inputs(batch), features=request)


def _batches(
    ex: _Examples,
    datasets: Sequence[Any],
    collator: Any,
    batch_size: int,
    rows: tuple[int, int] | None = None,
):
    """Collated batches of ``batch_size`` examples in build order (of the rows ``[start, end)`` only; a
    ``start`` that is a multiple of ``batch_size`` gives exactly the batches of the whole pass)."""
    start, end = rows if rows is not None else (0, len(ex.ids))
    for b in range(start, end, batch_size):
        yield collator([datasets[d][i] for d, i in ex.sources[b : min(b + batch_size, end)]])


class _Writer:
    """Appends each array's rows in build order; files are sized exactly as planned.

    With ``offsets`` (name -> byte offset), the files already exist at their final size and each one is
    written from its offset on (one process's rows of a distributed build).
    """

    def __init__(self, directory: Path, plan: _Plan, dtype: str, offsets: dict[str, int] | None = None):
        self.dtype = dtype
        if offsets is None:
            self.files = {name: open(directory / a.file, "wb") for name, a in plan.arrays.items()}  # noqa: SIM115
        else:
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


def _write_pass(
    teacher: nn.Module,
    datasets: Sequence[Any],
    collator: Any,
    ex: _Examples,
    spec: CacheSpec,
    plan: _Plan,
    tmp: Path,
    *,
    dtype: str,
    batch_size: int,
    device: torch.device,
    precision: str,
    rows: tuple[int, int] | None = None,
    offsets: dict[str, int] | None = None,
) -> int:
    """Run the teacher over every example (or the rows ``[start, end)``, written from the byte ``offsets``
    of preallocated files) and write the arrays; returns the teacher's head count."""
    request = spec.request()
    writer = _Writer(tmp, plan, dtype, offsets)
    heads = 0
    try:
        for batch in _batches(ex, datasets, collator, batch_size, rows):
            out = _forward(teacher, batch, request, device, precision)
            real = batch["attention_mask"].to(device).bool()
            heads = int(out.num_heads or 0)
            writer.write("input_ids", batch["input_ids"].to(device)[real].to(torch.int32))
            writer.write("logits", out.logits)
            for i in spec.hidden:
                writer.write(f"hidden_{i}", out.hidden_states[i][real])
            for layer in spec.qkv:
                for role, x in zip("qkv", out.qkv[layer]):
                    writer.write(f"{role}_{layer}", x[real])
            for kind, table, layers in (
                ("scores", out.attention_scores, spec.scores),
                ("probs", out.attentions, spec.probs),
            ):
                for layer in layers:
                    writer.write(f"{kind}_{layer}", _flat_maps(table[layer], real))
        if rows is not None:
            reached = writer.positions()
            expected = _byte_offsets(plan, ex, rows[1])
            if reached != expected:
                bad = sorted(k for k in expected if reached[k] != expected[k])
                raise ModelError(
                    f"teacher cache: rows {rows[0]}..{rows[1]} wrote arrays {bad} to other sizes than planned; "
                    "the teacher's outputs changed shape between batches. Set teacher.cache=false to run it "
                    "live."
                )
    finally:
        writer.close()
    return heads


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


def shard_rows(lengths: np.ndarray, batch_size: int, world: int) -> list[tuple[int, int]]:
    """Each process's contiguous rows ``[start, end)`` of a cache build, in rank order.

    Cuts fall between the pass's batches (multiples of ``batch_size``), so every batch is one of the
    single-process pass's batches, and where the work (padded tokens, ``rows * longest``: rows are sorted
    by length) is closest to an equal share. A process may get no rows when there are fewer batches.

    Args:
        lengths: ``(N,)`` tokens per row in build order (ascending).
        batch_size: rows per batch.
        world: number of processes.
    """
    n = len(lengths)
    starts = np.arange(0, n, batch_size)
    ends = np.minimum(starts + batch_size, n)
    work = (ends - starts) * np.asarray(lengths, dtype=np.int64)[ends - 1] if n else np.zeros(0)
    done = np.concatenate([[0], np.cumsum(work)])  # work before batch k, k = 0..B
    cuts = [0]
    for r in range(1, world):
        k = int(np.argmin(np.abs(done - done[-1] * r / world)))
        cuts.append(max(k, cuts[-1]))
    cuts.append(len(starts))
    return [(min(cuts[r] * batch_size, n), min(cuts[r + 1] * batch_size, n)) for r in range(world)]


def _process_group(distributed: bool) -> tuple[int, int]:
    """``(rank, world size)`` of the initialised torch.distributed group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if not distributed or not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _agree(error: BaseException | None, doing: str) -> None:
    """Collective: raise on every process when any failed ``doing`` (this process's own error if it has one).

    Without it, the processes that did not fail would wait forever in the next collective.
    """
    messages = all_gather_objects(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if failed:
        r, m = failed[0]
        raise ModelError(f"teacher cache: process {r} failed while {doing}: {m}")


def _open_everywhere(directory: Path, fingerprint: str | None) -> TeacherCache:
    """Collective: every process opens the cache that process 0 found or published."""
    cache, error = None, None
    try:
        cache = TeacherCache.open(directory, fingerprint)
    except CacheInvalid as why:
        error = ConfigError(
            f"teacher cache: this process cannot open {directory} ({why}), which process 0 found or wrote: "
            "every process must see the cache directory. Fix: point teacher.cache_dir at a file system all "
            "machines share, or run the teacher live (teacher.cache=false)."
        )
    _agree(error, f"opening the teacher cache {directory}")
    assert cache is not None  # _agree raised otherwise
    return cache


def _flat_maps(maps: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Each example's real ``(heads, n, n)`` block of ``(B, heads, L, L)`` maps, flattened, concatenated."""
    blocks = []
    for j in range(maps.shape[0]):
        pos = real[j].nonzero().squeeze(1)
        blocks.append(maps[j].index_select(1, pos).index_select(2, pos).reshape(-1))
    return torch.cat(blocks)


def _probe(
    teacher: nn.Module,
    datasets: Sequence[Any],
    collator: Any,
    ex: _Examples,
    spec: CacheSpec,
    device: torch.device,
    precision: str,
) -> dict[str, int]:
    """Feature widths from one forward on the shortest example (exact for any model, before the pass)."""
    d, i = ex.sources[0]
    out = _forward(teacher, collator([datasets[d][i]]), spec.request(), device, precision)
    dims = {"labels": int(out.logits.shape[-1]), "heads": int(out.num_heads or 0), "hidden": 0, "qkv": 0}
    if spec.hidden:
        dims["hidden"] = int(out.hidden_states[0].shape[-1])
    if spec.qkv:
        dims["qkv"] = int(out.qkv[spec.qkv[0]][0].shape[-1])
    if (spec.scores or spec.probs) and not dims["heads"]:
        raise ModelError(
            "teacher cache: the teacher reports no num_heads, so its attention maps cannot be stored"
        )
    return dims


def build_teacher_cache(
    teacher: nn.Module,
    datasets: Sequence[Any],
    collator: Any,
    *,
    directory: str | Path,
    request: FeatureRequest,
    device: torch.device | str = "cpu",
    hidden_layers: Iterable[int] | None = None,
    cache_dtype: str = "fp16",
    batch_size: int = 128,
    precision: str = "auto",
    max_length: int | None = None,
    tokenizer_path: str | Path | None = None,
    quiet: bool = False,
    distributed: bool = True,
) -> TeacherCache:
    """Open the cache in ``directory`` when its fingerprint matches; otherwise build it there.

    The build is one inference pass over the distinct examples of ``datasets`` (deduplicated by id, sorted
    by length, ``batch_size`` per batch) under ``torch.inference_mode`` and autocast at ``precision``
    (``auto``: bf16 where :mod:`textdistill.training.precision` finds fast bf16, fp16/bf16 on GPUs, else
    fp32). The estimated size is printed first and checked against the free disk space. Files go to a
    temporary sibling directory renamed into place when complete; a stale, partial or corrupt directory is
    replaced.

    Args:
        teacher: the frozen teacher (``forward(input_ids, attention_mask, token_type_ids, features)``
            returning :class:`ModelOutputs`), already on ``device``.
        datasets: map-style datasets of encoded items (``input_ids``, ``example_id``, optional
            ``token_type_ids``), e.g. :class:`~textdistill.data.encoding.EncodedDataset`.
        collator: turns a list of items into a batch (``attention_mask`` marks real tokens).
        directory: the cache directory.
        request: the features the consumer will read (``objective.teacher_request()``).
        device: where the teacher runs.
        hidden_layers: the ``hidden_states`` indices read (:func:`teacher_hidden_layers`); None: all.
        cache_dtype: storage precision, ``fp16`` (default), ``bf16`` or ``fp32``.
        batch_size: examples per inference batch (``train.eval_batch_size``).
        precision: compute precision of the pass, ``auto|fp32|bf16|fp16``.
        max_length: ``data.max_length`` (default: the datasets' ``max_length``).
        tokenizer_path: the teacher directory, whose tokenizer files enter the fingerprint.
        quiet: print nothing.
        distributed: with an initialised ``torch.distributed`` group of several processes, the call is
            collective (every process must make it) and each process runs the teacher on its share of the
            examples (see the module docstring); False builds on this process alone.

    Returns:
        The opened :class:`TeacherCache`.

    Raises:
        ConfigError: an unknown ``cache_dtype``, too little disk space, or fp16 overflow.
        DataError: no examples, or an id used for two different inputs.
        ModelError: layers the teacher does not have.
    """
    directory = Path(directory)
    device = torch.device(device)
    components, ex, spec, resolved = prepare_fingerprint(
        teacher,
        datasets,
        request=request,
        device=device,
        hidden_layers=hidden_layers,
        cache_dtype=cache_dtype,
        precision=precision,
        max_length=max_length,
        tokenizer_path=tokenizer_path,
    )
    fingerprint = cache_fingerprint(components)
    rank, world = _process_group(distributed)
    if world > 1:
        quiet = quiet or rank != 0
        found = None
        if rank == 0:
            try:
                TeacherCache.open(directory, fingerprint)
                found = str(directory)
            except CacheInvalid as why:
                if directory.exists() and not quiet:
                    print(f"teacher cache: rebuilding {directory}: {why}")
        if broadcast_object(found) is not None:
            return _open_everywhere(directory, fingerprint)
    else:
        try:
            return TeacherCache.open(directory, fingerprint)
        except CacheInvalid as why:
            if directory.exists() and not quiet:
                print(f"teacher cache: rebuilding {directory}: {why}")
    return _build(
        teacher,
        datasets,
        collator,
        ex,
        spec,
        components,
        fingerprint,
        directory,
        dtype=cache_dtype,
        batch_size=batch_size,
        device=device,
        precision=resolved,
        quiet=quiet,
        world=(rank, world),
    )


def prepare_fingerprint(
    teacher: nn.Module,
    datasets: Sequence[Any],
    *,
    request: FeatureRequest,
    device: torch.device | str,
    hidden_layers: Iterable[int] | None = None,
    cache_dtype: str = "fp16",
    precision: str = "auto",
    max_length: int | None = None,
    tokenizer_path: str | Path | None = None,
) -> tuple[dict[str, Any], _Examples, CacheSpec, str]:
    """Fingerprint components of a cache (no teacher forward): see the module docstring for what they cover.

    Returns:
        ``(components, examples, spec, resolved_precision)``; :func:`cache_fingerprint` of the components
        names the cache.
    """
    if cache_dtype not in CACHE_DTYPES:
        raise ConfigError(
            f"teacher.cache_dtype: {cache_dtype!r} is not one of {', '.join(CACHE_DTYPES)}; fp16 halves the "
            "disk size of fp32 with ~3 significant digits, bf16 keeps fp32's range with ~2"
        )
    resolved = resolve_precision(precision, device)
    spec = CacheSpec.from_request(request, _num_layers(teacher), hidden_layers)
    ex = _collect_examples(datasets)
    components = {
        "format": FORMAT_VERSION,
        "teacher_weights": weights_hash(teacher),
        "tokenizer": tokenizer_hash(tokenizer_path),
        "max_length": max_length if max_length is not None else ex.max_length,
        "data": ex.data_hash,
        "num_examples": len(ex.ids),
        "features": spec.to_dict(),
        "cache_dtype": cache_dtype,
        "precision": resolved,
    }
    return components, ex, spec, resolved


def _build(
    teacher: nn.Module,
    datasets: Sequence[Any],
    collator: Any,
    ex: _Examples,
    spec: CacheSpec,
    components: dict[str, Any],
    fingerprint: str,
    directory: Path,
    *,
    dtype: str,
    batch_size: int,
    device: torch.device,
    precision: str,
    quiet: bool,
    world: tuple[int, int] = (0, 1),
) -> TeacherCache:
    if batch_size < 1:
        raise ConfigError(f"train.eval_batch_size must be >= 1 for the teacher cache pass, got {batch_size}")
    if world[1] > 1:
        return _build_sharded(
            teacher,
            datasets,
            collator,
            ex,
            spec,
            components,
            fingerprint,
            directory,
            dtype=dtype,
            batch_size=batch_size,
            device=device,
            precision=precision,
            quiet=quiet,
            rank=world[0],
            world=world[1],
        )
    was_training = teacher.training
    teacher.eval()  # no dropout: the stored outputs are targets
    try:
        dims = _probe(teacher, datasets, collator, ex, spec, device, precision)
        plan = _plan(spec, ex, dims, dtype)
        estimate = plan.nbytes() + 16 * len(ex.ids)
        tmp = _prepare_directory(directory, ex, dtype, estimate, quiet=quiet)
        try:
            started = time.perf_counter()
            heads = _write_pass(
                teacher,
                datasets,
                collator,
                ex,
                spec,
                plan,
                tmp,
                dtype=dtype,
                batch_size=batch_size,
                device=device,
                precision=precision,
            )
            meta = _meta(
                fingerprint,
                components,
                spec,
                ex,
                plan,
                dtype=dtype,
                heads=heads or dims["heads"],
                num_layers=_num_layers(teacher),
                seconds=time.perf_counter() - started,
            )
            _complete(tmp, directory, fingerprint, ex, meta)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        teacher.train(was_training)
    if not quiet:
        print(f"teacher cache: built in {meta['build_seconds']:.1f} s")
    return TeacherCache.open(directory, fingerprint)


def _prepare_directory(
    directory: Path, ex: _Examples, dtype: str, estimate: int, *, quiet: bool, note: str = ""
) -> Path:
    """Announce the pass, check the disk space and create the temporary directory it writes into."""
    if not quiet:
        print(
            f"teacher cache: {len(ex.ids)} examples, {int(ex.lengths.sum())} tokens, {dtype}, "
            f"about {human_bytes(estimate)} on disk -> {directory}{note}"
        )
    check_disk_space(directory, estimate)
    directory.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-", dir=directory.parent))


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


def _build_sharded(
    teacher: nn.Module,
    datasets: Sequence[Any],
    collator: Any,
    ex: _Examples,
    spec: CacheSpec,
    components: dict[str, Any],
    fingerprint: str,
    directory: Path,
    *,
    dtype: str,
    batch_size: int,
    device: torch.device,
    precision: str,
    quiet: bool,
    rank: int,
    world: int,
) -> TeacherCache:
    """The collective build of :func:`_build`: each process writes its rows, process 0 publishes."""
    was_training = teacher.training
    teacher.eval()  # no dropout: the stored outputs are targets
    tmp: Path | None = None
    try:
        dims = _probe(teacher, datasets, collator, ex, spec, device, precision)  # same on every process
        plan = _plan(spec, ex, dims, dtype)
        estimate = plan.nbytes() + 16 * len(ex.ids)
        start, end = shard_rows(ex.lengths, batch_size, world)[rank]
        # 1. process 0: space check, temporary directory, every array file at its final size
        error: BaseException | None = None
        if rank == 0:
            try:
                tmp = _prepare_directory(
                    directory, ex, dtype, estimate, quiet=quiet, note=f" ({world} processes)"
                )
                for a in plan.arrays.values():
                    with open(tmp / a.file, "wb") as f:
                        f.truncate(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize)
            except Exception as e:
                error = e
        _agree(error, "preparing the cache directory")
        shared = Path(broadcast_object(str(tmp)))
        # 2. every process: its rows, in place
        started = time.perf_counter()
        error = None
        try:
            if not shared.is_dir():
                raise ConfigError(
                    f"teacher cache: this process cannot see {shared}, which process 0 created: every process "
                    "must see the cache directory. Fix: point teacher.cache_dir at a file system all machines "
                    "share, or run the teacher live (teacher.cache=false)."
                )
            if start < end:
                _write_pass(
                    teacher,
                    datasets,
                    collator,
                    ex,
                    spec,
                    plan,
                    shared,
                    dtype=dtype,
                    batch_size=batch_size,
                    device=device,
                    precision=precision,
                    rows=(start, end),
                    offsets=_byte_offsets(plan, ex, start),
                )
        except Exception as e:
            error = e
        _agree(error, "running the teacher over its share of the examples")
        seconds = max(all_gather_objects(time.perf_counter() - started))
        # 3. process 0: ids, lengths, meta (last), validation, publication
        error = None
        if rank == 0:
            assert tmp is not None
            try:
                meta = _meta(
                    fingerprint,
                    components,
                    spec,
                    ex,
                    plan,
                    dtype=dtype,
                    heads=dims["heads"],
                    num_layers=_num_layers(teacher),
                    seconds=seconds,
                )
                meta["build_processes"] = world
                _complete(tmp, directory, fingerprint, ex, meta)
                tmp = None
            except Exception as e:
                error = e
        _agree(error, "publishing the cache")
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        teacher.train(was_training)
    if not quiet:
        print(f"teacher cache: built in {seconds:.1f} s by {world} processes")
    return _open_everywhere(directory, fingerprint)


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


# --------------------------------------------------------------------------------------- cached source
def _nan_placeholder(b: int, length: int, width: int, device: torch.device) -> torch.Tensor:
    """A zero-memory ``(b, length, width)`` NaN tensor standing for a hidden state the cache does not hold."""
    return torch.full((1, 1, 1), float("nan"), device=device).expand(b, length, width)


class CachedHiddenStates(tuple):
    """``hidden_states`` of a cached teacher: all ``num_layers + 1`` positions, only the cached ones real.

    Indexing a position the cache does not hold raises :class:`ModelError` (iteration yields zero-memory NaN
    placeholders there, so a consumer that bypasses indexing gets a NaN loss, never silent zeros).
    """

    cached: frozenset[int]

    def __new__(cls, items: Sequence[torch.Tensor], cached: Iterable[int]) -> CachedHiddenStates:
        obj = super().__new__(cls, items)
        obj.cached = frozenset(cached)
        return obj

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, int):
            i = index + len(self) if index < 0 else index
            if 0 <= i < len(self) and i not in self.cached:
                raise ModelError(
                    f"teacher hidden_states[{index}] is not in the teacher cache (it holds indices "
                    f"{sorted(self.cached)}): the cache was built for another layer map. Build it with this "
                    "objective (build_teacher_source does), or set teacher.cache=false."
                )
        return super().__getitem__(index)


class CachedTeacher:
    """A :class:`~textdistill.training.distiller.TeacherSource` reading a :class:`TeacherCache`.

    ``__call__(batch)`` gathers the batch's examples by ``batch["example_ids"]`` and returns float32 tensors
    on ``device``, shaped like the live teacher's (padded to the batch's length ``L``, zeros at padding):
    ``logits (B, C)``; ``hidden_states`` (``num_layers + 1`` entries of ``(B, L, H)``, the uncached ones
    unusable, see :class:`CachedHiddenStates`); ``attention_scores`` / ``attentions`` (layer ->
    ``(B, heads, L, L)``); ``qkv`` (layer -> three ``(B, L, W)``); ``attention_mask`` (the batch's) and
    ``num_heads``. Every batch is checked against the cached ``input_ids``, so a cache built from other data
    can never be read silently.

    Args:
        cache: the opened cache.
        request: the features to return (``objective.teacher_request()``); each must be cached or derivable.
        device: where the returned tensors live.

    Raises:
        ModelError: ``request`` asks for a feature the cache does not hold.
    """

    def __init__(self, cache: TeacherCache, request: FeatureRequest, device: torch.device | str):
        missing = cache.spec.missing(request)
        if missing:
            raise ModelError(
                f"the teacher cache {cache.directory} does not hold {', '.join(missing)} (it stores "
                f"{cache.spec}); build the cache with this objective's teacher_request()."
            )
        self.cache = cache
        self.request = request
        self.device = torch.device(device)

    def _tokens(self, name: str, index: np.ndarray, real: torch.Tensor) -> torch.Tensor:
        rows = self.cache.read(name, index).to(self.device).float()
        out = torch.zeros(*real.shape, rows.shape[-1], device=self.device)
        out[real] = rows
        return out

    def __call__(self, batch: dict[str, torch.Tensor]) -> ModelOutputs:
        if "example_ids" not in batch:
            raise DataError(
                "the cached teacher needs batch['example_ids'] (the cache is keyed by example id); collate "
                "with textdistill.data.collate.Collator"
            )
        cache = self.cache
        rows = cache.rows(batch["example_ids"].cpu().numpy())
        mask = batch["attention_mask"]
        real_cpu = mask.cpu().bool()
        got = real_cpu.sum(1).numpy()
        if not np.array_equal(got, cache.lengths[rows]):
            bad = int(np.flatnonzero(got != cache.lengths[rows])[0])
            raise DataError(
                self._mismatch(
                    batch, bad, f"{got[bad]} real tokens, the cache has {cache.lengths[rows][bad]}"
                )
            )
        index = cache.token_index(rows)
        if not torch.equal(cache.read("input_ids", index).long(), batch["input_ids"].cpu()[real_cpu]):
            raise DataError(self._mismatch(batch, None, "other input_ids"))
        real = real_cpu.to(self.device)
        req = self.request

        hidden = None
        if req.hidden_states:
            b, length = real.shape
            width = cache.array(f"hidden_{cache.spec.hidden[0]}").shape[-1]
            hidden = CachedHiddenStates(
                [
                    self._tokens(f"hidden_{i}", index, real)
                    if i in cache.spec.hidden
                    else _nan_placeholder(b, length, width, self.device)
                    for i in range(cache.num_layers + 1)
                ],
                cache.spec.hidden,
            )
        projections: dict[tuple[int, str], torch.Tensor] = {}

        def proj(layer: int, role: str) -> torch.Tensor:
            if (layer, role) not in projections:
                projections[layer, role] = self._tokens(f"{role}_{layer}", index, real)
            return projections[layer, role]

        mask_dev = mask.to(self.device)
        query_real = real[:, None, :, None]
        scores: dict[int, torch.Tensor] = {}
        probs: dict[int, torch.Tensor] = {}
        for layer in sorted(req.attention_scores | req.attentions):
            if layer in cache.spec.qkv:
                # The live hooks' own functions on the same Q/K: identical values at real positions.
                scores[layer] = scores_from_qk(proj(layer, "q"), proj(layer, "k"), cache.num_heads)
            elif layer in cache.spec.scores:
                scores[layer] = cache.read_maps(f"scores_{layer}", rows, real_cpu).to(self.device).float()
            if layer in req.attentions:  # probabilities only when asked for (a softmax per layer)
                if layer in scores:
                    probs[layer] = probs_from_scores(scores[layer], mask_dev) * query_real
                else:
                    probs[layer] = cache.read_maps(f"probs_{layer}", rows, real_cpu).to(self.device).float()
        return ModelOutputs(
            logits=cache.read("logits", rows).to(self.device).float(),
            hidden_states=hidden,
            attentions={k: probs[k] for k in sorted(req.attentions)} if req.attentions else None,
            attention_scores={k: scores[k] for k in sorted(req.attention_scores)}
            if req.attention_scores
            else None,
            qkv={k: (proj(k, "q"), proj(k, "k"), proj(k, "v")) for k in sorted(req.qkv)} if req.qkv else None,
            attention_mask=mask,
            num_heads=cache.num_heads,
        )

    def _mismatch(self, batch: dict[str, torch.Tensor], row: int | None, what: str) -> str:
        ids = batch["example_ids"].tolist()
        which = f"example id {ids[row]}" if row is not None else f"one of the example ids {ids[:8]}"
        return (
            f"{which} does not match the teacher cache {self.cache.directory} ({what}): the batch comes from "
            "other data (or another tokenizer / max_length) than the cache was built from. Rebuild the "
            "cache for this data (build_teacher_source does when the fingerprint changes) or set "
            "teacher.cache=false."
        )


# ------------------------------------------------------------------------------------------ the source
def default_cache_root(cfg: Config) -> Path:
    """``teacher.cache_dir`` when set, else ``<output_dir parent>/.textdistill-cache``.

    The root is shared by every run next to this one, so runs and pipeline stages on the same teacher and
    data find each other's caches; each cache lives in ``<root>/<fingerprint>``.
    """
    if cfg.teacher.cache_dir:
        return Path(cfg.teacher.cache_dir).expanduser()
    return Path(cfg.output_dir).expanduser().absolute().parent / DEFAULT_ROOT_NAME


def find_compatible_cache(
    root: Path, components: dict[str, Any], request: FeatureRequest, hidden_layers: Iterable[int] | None
) -> TeacherCache | None:
    """A valid cache under ``root`` built from the same teacher and data that stores a superset of
    the features (e.g. a TinyBERT intermediate stage's cache serving the prediction stage), or None."""
    if not root.is_dir():
        return None
    base = {k: v for k, v in components.items() if k != "features"}
    for meta_path in sorted(root.glob(f"*/{META}")):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            other = {k: v for k, v in meta.get("components", {}).items() if k != "features"}
            if other != base or not CacheSpec.from_dict(meta["spec"]).covers(request, hidden_layers):
                continue
            return TeacherCache.open(meta_path.parent, meta["fingerprint"])
        except (CacheInvalid, OSError, ValueError, KeyError, TypeError):
            continue
    return None


def build_teacher_source(
    cfg: Config,
    teacher: nn.Module,
    objective: nn.Module,
    datasets: list[Any],
    collator: Any,
    device: torch.device | str,
    precision: str,
    cache_root: str | Path | None = None,
    *,
    quiet: bool = False,
    distributed: bool = True,
) -> TeacherSource:
    """The teacher source of a distillation run: live, or a cache built (or reused) over ``datasets``.

    With ``teacher.cache`` false this is ``LiveTeacher(teacher, objective.teacher_request(), precision,
    device)``. With it true or null (auto), the cache lives in ``<root>/<fingerprint>`` where ``root`` is ``cache_root``,
    else ``teacher.cache_dir``, else ``<output_dir parent>/.textdistill-cache``. A cache there is reused, as
    is any cache under ``root`` from the same teacher and data that stores a superset of the features;
    otherwise one inference pass (``train.eval_batch_size`` examples per batch, at ``precision``) builds it.
    When that cache would not fit on the disk, auto falls back to the live teacher (with a note) and true
    raises :class:`CacheTooLarge` (with several processes both raise). Only the teacher ``hidden_states`` indices the objective reads are stored.

    Args:
        cfg: the run config (``teacher.*``, ``data.max_length``, ``train.eval_batch_size``, ``output_dir``).
        teacher: the loaded teacher, on ``device``.
        objective: the built objective (its ``teacher_request()`` and hidden-state layer pairs).
        datasets: every dataset the source will be asked about (the training data, augmented included);
            example ids must be unique across them.
        collator: the run's collator.
        device: the training device.
        precision: the run's resolved precision (the live teacher's autocast; the cache pass uses the same,
            so cached and live outputs agree).
        cache_root: overrides the cache root.
        quiet: print nothing.
        distributed: with an initialised ``torch.distributed`` group of several processes, the call is
            collective (every process must make it): process 0 decides whether a usable cache exists and, if
            none does, each process computes its share of it (:func:`build_teacher_cache`). False: this
            process alone.
    """
    device = torch.device(device)
    request = objective.teacher_request()
    if cfg.teacher.cache is False:
        return LiveTeacher(teacher, request, precision, device)
    hidden_layers = teacher_hidden_layers(objective) if request.hidden_states else None
    components, ex, spec, resolved = prepare_fingerprint(
        teacher,
        datasets,
        request=request,
        device=device,
        hidden_layers=hidden_layers,
        cache_dtype=cfg.teacher.cache_dtype,
        precision=precision,
        max_length=cfg.data.max_length,
        tokenizer_path=cfg.teacher.path,
    )
    fingerprint = cache_fingerprint(components)
    root = Path(cache_root).expanduser() if cache_root is not None else default_cache_root(cfg)
    directory = root / fingerprint
    rank, world = _process_group(distributed)
    if world > 1:
        return _distributed_source(
            cfg,
            teacher,
            datasets,
            collator,
            device,
            request,
            components,
            ex,
            spec,
            resolved,
            root,
            directory,
            quiet=quiet or rank != 0,
            rank=rank,
            world=world,
        )
    try:
        cache = TeacherCache.open(directory, fingerprint)
    except CacheInvalid as why:
        cache = find_compatible_cache(root, components, request, spec.hidden)
        if cache is None:
            if directory.exists() and not quiet:
                print(f"teacher cache: rebuilding {directory}: {why}")
            try:
                cache = _build(
                    teacher,
                    datasets,
                    collator,
                    ex,
                    spec,
                    components,
                    fingerprint,
                    directory,
                    dtype=cfg.teacher.cache_dtype,
                    batch_size=cfg.train.eval_batch_size,
                    device=device,
                    precision=resolved,
                    quiet=quiet,
                )
            except CacheTooLarge as e:
                if cfg.teacher.cache:  # asked for explicitly: the error stands
                    raise
                if not quiet:
                    print(f"teacher cache: not used, the teacher runs live ({e})")
                return LiveTeacher(teacher, request, precision, device)
    if not quiet:
        print(f"teacher cache: using {cache.directory} ({cache.num_examples} examples, {cache.dtype})")
    return CachedTeacher(cache, request, device)


def _distributed_source(
    cfg: Config,
    teacher: nn.Module,
    datasets: list[Any],
    collator: Any,
    device: torch.device,
    request: FeatureRequest,
    components: dict[str, Any],
    ex: _Examples,
    spec: CacheSpec,
    resolved: str,
    root: Path,
    directory: Path,
    *,
    quiet: bool,
    rank: int,
    world: int,
) -> TeacherSource:
    """:func:`build_teacher_source` over several processes: process 0 looks, all build, all open."""
    fingerprint = cache_fingerprint(components)
    found: tuple[str, str] | None = None
    if rank == 0:
        try:
            found = (str(directory), TeacherCache.open(directory, fingerprint).fingerprint)
        except CacheInvalid as why:
            other = find_compatible_cache(root, components, request, spec.hidden)
            if other is not None:
                found = (str(other.directory), other.fingerprint)
            elif directory.exists() and not quiet:
                print(f"teacher cache: rebuilding {directory}: {why}")
    found = broadcast_object(found)
    if found is not None:
        cache = _open_everywhere(Path(found[0]), found[1])
    else:
        cache = _build(
            teacher,
            datasets,
            collator,
            ex,
            spec,
            components,
            fingerprint,
            directory,
            dtype=cfg.teacher.cache_dtype,
            batch_size=cfg.train.eval_batch_size,
            device=device,
            precision=resolved,
            quiet=quiet,
            world=(rank, world),
        )
    if not quiet:
        print(f"teacher cache: using {cache.directory} ({cache.num_examples} examples, {cache.dtype})")
    return CachedTeacher(cache, request, device)


__all__ = [
    "CACHE_DTYPES",
    "CacheSpec",
    "CachedHiddenStates",
    "CachedTeacher",
    "TeacherCache",
    "build_teacher_cache",
    "build_teacher_source",
    "cache_fingerprint",
    "check_disk_space",
    "default_cache_root",
    "find_compatible_cache",
    "prepare_fingerprint",
    "probs_from_scores",
    "shard_rows",
    "teacher_hidden_layers",
    "tokenizer_hash",
    "weights_hash",
]


# ------------------------------------------------------------------------------- teacher evaluations
EVAL_DIR = "eval"


def dataset_inputs_hash(dataset: Any) -> str:
    """SHA-256 of what an evaluation of ``dataset`` depends on: every item's token ids, token types, label
    and example id, in order (so the file, its subset, the tokenizer and ``max_length`` are all covered)."""
    h = hashlib.sha256()
    for i in range(len(dataset)):
        item = dataset[i]
        types = item.get("token_type_ids")
        row = [
            [int(t) for t in item["input_ids"]],
            None if types is None else [int(t) for t in types],
            None if item.get("label") is None else float(item["label"]),
            int(item["example_id"]),
        ]
        h.update(json.dumps(row).encode())
    return h.hexdigest()


def teacher_dev_evaluation(
    cfg: Config,
    teacher: nn.Module,
    dataset: Any,
    precision: str,
    compute: Callable[[], tuple[dict[str, float], torch.Tensor]],
    *,
    world: int = 1,
    quiet: bool = False,
) -> tuple[dict[str, float], torch.Tensor]:
    """The teacher's metrics and logits on an evaluation set, cached on disk next to the teacher cache.

    Every distillation run scores its teacher on the dev data (for retention and agreement), and every
    run and stage on the same teacher and dev data would repeat that pass; the result is stored in
    ``<cache root>/eval/<fingerprint>.npz``, fingerprinted by the teacher's weights and config, the dev
    inputs (:func:`dataset_inputs_hash`) and the precision. ``compute`` runs on a miss, with
    ``teacher.cache=false`` (nothing is stored then) and with several processes (it is collective there).

    Returns:
        ``(metrics, logits)`` as ``compute`` returns them.
    """
    if cfg.teacher.cache is False or world > 1:
        return compute()
    components = {
        "kind": "teacher-eval",
        "format": 1,
        "weights": weights_hash(teacher),
        "inputs": dataset_inputs_hash(dataset),
        "precision": precision,
    }
    path = default_cache_root(cfg) / EVAL_DIR / f"{cache_fingerprint(components)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                logits = torch.from_numpy(np.array(z["logits"], dtype=np.float32))
                metrics = json.loads(str(z["metrics"]))
            if logits.shape[0] == len(dataset):
                if not quiet:
                    print(f"teacher evaluation: reused {path}")
                return metrics, logits
        except (OSError, ValueError, KeyError):
            pass  # unreadable: computed again and rewritten below
    metrics, logits = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
        np.savez(tmp, logits=np.asarray(logits, dtype=np.float32), metrics=np.array(json.dumps(metrics)))
        os.replace(tmp, path)
    except OSError as e:  # a read-only or full disk costs the reuse, not the run
        if not quiet:
            print(f"teacher evaluation: not cached ({e})")
    return metrics, logits
