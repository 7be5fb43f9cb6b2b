"""Teacher-logit store for causal LMs: top-k next-token log-probabilities per position, plus the rest mass.

A causal-LM teacher's output is a ``V``-way distribution at every token (49,152 floats for SmolLM2): storing
it whole costs ~100 KB a token in fp16. The store keeps, for every real token position, the ``k`` most
probable next tokens (ids and temperature-1 log-probabilities) and ``log(1 - sum of their probabilities)``,
computed exactly as a log-sum-exp over the other ``V - k`` tokens (so ``-inf`` when ``k = V``, never a
rounding artefact of ``1 - 0.9999999``). The LM losses compare distributions over these ``k + 1`` buckets
(:func:`textdistill.losses.lm.topk_buckets`); with ``k = V`` that equals the live teacher.

Layout of a store directory (row order = the order of the rows given to the build)::

    meta.json        fingerprint and its components, k, vocabulary size, dtypes, counts; written last
    lengths.npy      (N,) int64 real tokens of each row
    input_ids.npy    (T,) int32 the rows' real tokens, concatenated (every lookup is checked against them)
    topk_ids.npy     (T, k) uint16 (vocab <= 65,536) or int32
    topk_logp.npy    (T, k) float32 or float16 (``store_dtype``)
    rest_logp.npy    (T,) float32
    target_logp.npy  (T,) float32 the teacher's log-probability of the actual next token (0 at a row's
                     last position): the teacher's perplexity without the teacher

The directory is written to a temporary sibling and renamed into place when complete: a crash never leaves
a store that opens. The fingerprint covers the teacher's weights and config, every row's tokens, ``k`` and the
dtype; a store whose fingerprint differs is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textdistill.errors import DataError
from textdistill.models.outputs import ModelOutputs, TokenTopK
from textdistill.training.teacher_cache.spec import cache_fingerprint, weights_hash

DTYPES = {"fp32": np.float32, "fp16": np.float16}


def _rows_hash(rows: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(np.asarray(r["input_ids"], dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()


def topk_of(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logprobs, ids, rest_logmass)`` of ``(..., V)`` logits at temperature 1.

    The rest mass is the log-sum-exp of the log-probabilities outside the top-k (exact; ``-inf`` for k = V).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    top = logp.topk(k, dim=-1)
    outside = torch.ones_like(logp, dtype=torch.bool).scatter(-1, top.indices, False)
    rest = torch.logsumexp(logp.masked_fill(~outside, -float("inf")), dim=-1)
    return top.values, top.indices, rest


class LMTopKStore:
    """A finished store, memory-mapped; :meth:`lookup` pads the rows of a batch back to ``(B, L, k)``."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"{str(directory)!r} is not a finished teacher-logit store (no meta.json)")
        self.meta = json.loads(meta_path.read_text())
        self.k = int(self.meta["k"])
        self.vocab_size = int(self.meta["vocab_size"])
        self.lengths = np.load(self.directory / "lengths.npy")
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        load = {name: np.load(self.directory / f"{name}.npy", mmap_mode="r") for name in self._ARRAYS}
        self.input_ids, self.ids, self.logp, self.rest, self.target_logp = (load[n] for n in self._ARRAYS)

    _ARRAYS = ("input_ids", "topk_ids", "topk_logp", "rest_logp", "target_logp")

    @property
    def fingerprint(self) -> str:
        """The build's fingerprint."""
        return str(self.meta["fingerprint"])

    def nbytes(self) -> int:
        """Bytes on disk of the stored arrays."""
        return sum(os.path.getsize(self.directory / f"{n}.npy") for n in (*self._ARRAYS, "lengths"))

    def lookup(
        self, example_ids: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> TokenTopK:
        """The stored top-k of the batch's rows, zero-padded to the batch's length.

        Raises:
            DataError: an id outside the store, or a row whose tokens differ from the stored ones (the store
                was built for other data: rebuild it).
        """
        b, length = input_ids.shape
        logp = torch.zeros(b, length, self.k)
        ids = torch.zeros(b, length, self.k, dtype=torch.long)
        rest = torch.zeros(b, length)
        for i, row in enumerate(example_ids.tolist()):
            if not 0 <= row < len(self.lengths):
                raise DataError(
                    f"example id {row} is not in the teacher-logit store ({len(self.lengths)} rows)"
                )
            start, end = int(self.offsets[row]), int(self.offsets[row + 1])
            n = int(attention_mask[i].sum())
            real = input_ids[i, :n].cpu().numpy()
            if end - start != n or not np.array_equal(self.input_ids[start:end], real):
                raise DataError(
                    f"row {row} of the batch differs from the row the teacher-logit store holds in "
                    f"{str(self.directory)!r}; the data changed since the store was built: rebuild it"
                )
            logp[i, :n] = torch.from_numpy(np.array(self.logp[start:end], dtype=np.float32))
            ids[i, :n] = torch.from_numpy(np.array(self.ids[start:end], dtype=np.int64))
            rest[i, :n] = torch.from_numpy(np.array(self.rest[start:end], dtype=np.float32))
        return TokenTopK(logprobs=logp, ids=ids, rest_logmass=rest)


def lookup_targets(store: LMTopKStore, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(B, L)`` the teacher's stored log-probability of the actual next token (0 at padding / last token).

    Rows are checked as in :meth:`LMTopKStore.lookup` (call that first for the same batch).
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    out = torch.zeros(ids.shape, dtype=torch.float32)
    for i, row in enumerate(batch["example_id"].tolist()):
        start, n = int(store.offsets[row]), int(mask[i].sum())
        out[i, :n] = torch.from_numpy(np.array(store.target_logp[start : start + n], dtype=np.float32))
    return out.to(ids.device)


class StoredLMTeacher:
    """A :class:`~textdistill.training.distiller.TeacherSource` reading the store (no teacher in memory).

    Batches must carry ``example_id`` (the row index given to :func:`build_lm_topk_store`).
    """

    def __init__(self, store: LMTopKStore):
        self.store = store

    def __call__(self, batch: dict[str, torch.Tensor]) -> ModelOutputs:
        if "example_id" not in batch:
            raise DataError("a teacher-logit store needs example_id in every batch (LMCollator adds it)")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        topk = self.store.lookup(batch["example_id"], ids, mask)
        device = ids.device
        topk = TokenTopK(topk.logprobs.to(device), topk.ids.to(device), topk.rest_logmass.to(device))
        return ModelOutputs(logits=torch.empty(ids.shape[0], ids.shape[1], 0, device=device), token_topk=topk)


def store_components(teacher_id: str, rows: list[dict[str, Any]], k: int, store_dtype: str) -> dict[str, Any]:
    """What the fingerprint of a store covers."""
    return {"teacher": teacher_id, "rows": _rows_hash(rows), "k": k, "dtype": store_dtype, "format": 2}


def find_lm_topk_store(
    directory: str | Path, teacher_id: str, rows: list[dict[str, Any]], k: int, store_dtype: str = "fp32"
) -> LMTopKStore | None:
    """The finished store in ``directory`` when it was built for this teacher, rows, k and dtype; else None."""
    if not (Path(directory) / "meta.json").is_file():
        return None
    try:
        store = LMTopKStore(directory)
    except (DataError, OSError, ValueError, KeyError):
        return None  # incomplete or corrupt: rebuilt
    wanted = cache_fingerprint(store_components(teacher_id, rows, k, store_dtype))
    return store if store.fingerprint == wanted else None


def teacher_files_hash(path: str | Path, gguf_file: str | None = None) -> str:
    """SHA-256 over a teacher folder's config, tokenizer and weight files (names and bytes).

    Computed from the files, so a warm store is recognised before (and without) loading the teacher.
    """
    folder = Path(path)
    h = hashlib.sha256()
    suffixes = (".json", ".safetensors", ".bin", ".model", ".txt", ".gguf")
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.suffix not in suffixes:
            continue
        if f.suffix == ".gguf" and f.name != gguf_file:
            continue
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
    return h.hexdigest()


def check_k(k: int, vocab_size: int) -> None:
    """Raise DataError unless ``1 <= k <= vocab_size``."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab_size:
        raise DataError(
            f"store top-k k={k!r} must be an integer between 1 and the teacher's vocabulary size {vocab_size}; "
            f"k = {vocab_size} stores the full distribution (exact), smaller k stores less (docs/lm.md: bias)"
        )


def build_lm_topk_store(
    teacher: torch.nn.Module,
    rows: list[dict[str, Any]],
    directory: str | Path,
    k: int,
    *,
    collate: Any,
    batch_size: int = 8,
    store_dtype: str = "fp32",
    teacher_id: str | None = None,
) -> LMTopKStore:
    """Run the teacher once over ``rows`` and store top-k per real position; reuse a matching store.

    Args:
        teacher: an :class:`~textdistill.models.causal_lm.HFCausalLM` (frozen).
        rows: encoded rows (``input_ids``, ``labels``); row ``i`` is looked up as ``example_id = i``.
        directory: where the store lives; an existing store with the same fingerprint is opened as is.
        k: log-probabilities kept per position (``1..V``).
        collate: an :class:`~textdistill.data.lm_data.LMCollator`.
        batch_size: rows per teacher forward.
        store_dtype: ``fp32`` or ``fp16`` for the log-probabilities.
        teacher_id: identity of the teacher for the fingerprint (:func:`teacher_files_hash` of its files,
            so a warm store is found without loading the teacher); None hashes the loaded weights.

    Raises:
        DataError: k outside ``1..V``, or an unknown ``store_dtype``.
    """
    vocab = int(teacher.config.vocab_size)
    check_k(k, vocab)
    if store_dtype not in DTYPES:
        raise DataError(f"store_dtype {store_dtype!r} is not valid; choose one of {', '.join(DTYPES)}")
    ident = teacher_id if teacher_id is not None else weights_hash(teacher.model)
    existing = find_lm_topk_store(directory, ident, rows, k, store_dtype)
    if existing is not None:
        return existing
    components = store_components(ident, rows, k, store_dtype)
    fingerprint = cache_fingerprint(components)
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays = _teacher_pass(teacher, rows, k, collate, batch_size)
    id_dtype = np.uint16 if vocab <= 65536 else np.int32
    np.save(tmp / "lengths.npy", arrays["lengths"])
    np.save(tmp / "input_ids.npy", arrays["input_ids"].astype(np.int32))
    np.save(tmp / "topk_ids.npy", arrays["ids"].astype(id_dtype))
    np.save(tmp / "topk_logp.npy", arrays["logp"].astype(DTYPES[store_dtype]))
    np.save(tmp / "rest_logp.npy", arrays["rest"].astype(np.float32))
    np.save(tmp / "target_logp.npy", arrays["target"].astype(np.float32))
    meta = {
        "fingerprint": fingerprint,
        "components": components,
        "k": k,
        "vocab_size": vocab,
        "rows": len(rows),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return LMTopKStore(directory)


def _teacher_pass(
    teacher: torch.nn.Module, rows: list[dict[str, Any]], k: int, collate: Any, batch_size: int
) -> dict[str, np.ndarray]:
    """Top-k of every real position of every row, concatenated in row order."""
    parts: dict[str, list[np.ndarray]] = {"input_ids": [], "ids": [], "logp": [], "rest": [], "target": []}
    lengths = []
    device = next(teacher.parameters()).device
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start : start + batch_size])
        real = batch["attention_mask"].bool()
        on_device = real.to(device)
        with torch.no_grad():  # the head at real tokens only: padding is a large share of short rows
            out = teacher(batch["input_ids"].to(device), on_device.long(), logit_rows=on_device)
        logits = (out.logits if out.logit_rows is not None else out.logits[on_device]).cpu()
        logp, ids, rest = topk_of(logits, k)  # (T, k) for the batch's T real tokens, row-major
        full = torch.log_softmax(logits.float(), dim=-1)
        nxt = torch.cat([batch["input_ids"][:, 1:], batch["input_ids"][:, :1]], dim=1)[real]
        target = full.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
        offset = 0
        for i in range(real.shape[0]):
            n = int(real[i].sum())
            lengths.append(n)
            rows_i = slice(offset, offset + n)
            offset += n
            parts["input_ids"].append(batch["input_ids"][i, :n].numpy())
            parts["ids"].append(ids[rows_i].numpy())
            parts["logp"].append(logp[rows_i].numpy())
            parts["rest"].append(rest[rows_i].numpy())
            t = target[rows_i].clone()
            t[n - 1] = 0.0  # the last real token predicts nothing stored
            parts["target"].append(t.numpy())
    out = {name: np.concatenate(v) for name, v in parts.items()}
    out["lengths"] = np.asarray(lengths, dtype=np.int64)
    return out
