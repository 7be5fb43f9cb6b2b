"""Building a teacher cache: one inference pass over the distinct examples, on one process or several.

Several processes (``torch.distributed`` initialised, e.g. under ``accelerate launch``) take the same path
as one: process 0 checks the space and creates the temporary directory with every array file at its final
size; each process writes its contiguous run of rows (whole batches, cut by :func:`shard_rows` where the
padded-token work is balanced; all rows on a single process) into its byte range of those files; once every
process reported success, process 0 writes ``meta.json``, validates and renames the directory into place.
The batches are the single-process build's batches, so the arrays are the same.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from textdistill.errors import ConfigError, ModelError
from textdistill.models.outputs import FeatureRequest, ModelOutputs
from textdistill.training.distiller import all_gather_objects, broadcast_object, model_inputs
from textdistill.training.precision import autocast
from textdistill.training.teacher_cache.spec import (
    CacheSpec,
    _Examples,
    _num_layers,
    cache_fingerprint,
    prepare_fingerprint,
)
from textdistill.training.teacher_cache.store import CacheInvalid, TeacherCache
from textdistill.training.teacher_cache.writer import (
    _allocate,
    _byte_offsets,
    _complete,
    _meta,
    _Plan,
    _plan,
    _Writer,
)

T = TypeVar("T")


@dataclass
class _Pass:
    """One inference pass of the teacher over the distinct examples ``ex`` (build order), stored at
    ``dtype``: what every step of a build (probe, write, publish) shares."""

    teacher: nn.Module
    datasets: Sequence[Any]
    collator: Any
    ex: _Examples
    spec: CacheSpec
    dtype: str
    batch_size: int
    device: torch.device
    precision: str

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutputs:
        batch = {k: v.to(self.device) for k, v in batch.items() if torch.is_tensor(v)}
        with torch.inference_mode(), autocast(self.device, self.precision):
            return self.teacher(**model_inputs(batch), features=self.spec.request())

    def batches(self, rows: tuple[int, int]) -> Iterator[dict[str, torch.Tensor]]:
        """Collated batches of ``batch_size`` examples in build order, of the rows ``[start, end)`` only (a
        ``start`` that is a multiple of ``batch_size`` gives exactly the batches of the whole pass)."""
        start, end = rows
        for b in range(start, end, self.batch_size):
            items = self.ex.sources[b : min(b + self.batch_size, end)]
            yield self.collator([self.datasets[d][i] for d, i in items])

    def probe(self) -> dict[str, int]:
        """Feature widths from one forward on the shortest example (exact for any model, before the pass)."""
        d, i = self.ex.sources[0]
        out = self.forward(self.collator([self.datasets[d][i]]))
        spec = self.spec
        dims = {"labels": int(out.logits.shape[-1]), "heads": int(out.num_heads or 0), "hidden": 0, "qkv": 0}
        dims["token_logits"] = int(out.logits.dim() == 3)
        if spec.hidden:
            dims["hidden"] = int(out.hidden_states[0].shape[-1])
        if spec.qkv:
            dims["qkv"] = int(out.qkv[spec.qkv[0]][0].shape[-1])
        if (spec.scores or spec.probs) and not dims["heads"]:
            raise ModelError(
                "teacher cache: the teacher reports no num_heads, so its attention maps cannot be stored"
            )
        return dims

    def write(self, plan: _Plan, tmp: Path, rows: tuple[int, int]) -> None:
        """Run the teacher over the build-order rows ``[start, end)`` and write their outputs into the
        preallocated files from those rows' byte offsets on."""
        spec = self.spec
        writer = _Writer(tmp, plan, self.dtype, _byte_offsets(plan, self.ex, rows[0]))
        try:
            for batch in self.batches(rows):
                out = self.forward(batch)
                real = batch["attention_mask"].to(self.device).bool()
                writer.write("input_ids", batch["input_ids"].to(self.device)[real].to(torch.int32))
                if "token_logits" in plan.arrays:
                    writer.write("token_logits", out.logits[real])
                else:
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
            reached = writer.positions()
            expected = _byte_offsets(plan, self.ex, rows[1])
            if reached != expected:
                bad = sorted(k for k in expected if reached[k] != expected[k])
                raise ModelError(
                    f"teacher cache: rows {rows[0]}..{rows[1]} wrote arrays {bad} to other sizes than planned; "
                    "the teacher's outputs changed shape between batches. Set teacher.cache=false to run it "
                    "live."
                )
        finally:
            writer.close()

    def write_share(self, plan: _Plan, shared: Path, rank: int, world: int) -> None:
        """This process's rows of the pass, written in place into the preallocated files of ``shared``."""
        if not shared.is_dir():
            raise ConfigError(
                f"teacher cache: this process cannot see {shared}, which process 0 created: every process "
                "must see the cache directory. Fix: point teacher.cache_dir at a file system all machines "
                "share, or run the teacher live (teacher.cache=false)."
            )
        start, end = shard_rows(self.ex.lengths, self.batch_size, world)[rank]
        if start < end:
            self.write(plan, shared, (start, end))


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


def _agree(error: BaseException | None, doing: str, world: int) -> None:
    """Collective: raise on every process when any failed ``doing`` (this process's own error if it has one).

    Without it, the processes that did not fail would wait forever in the next collective. With one process
    (``world == 1``) it only re-raises ``error``: no collective is entered, even in an initialised group that
    the caller asked not to use.
    """
    if world == 1:
        if error is not None:
            raise error
        return
    messages = all_gather_objects(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if failed:
        r, m = failed[0]
        raise ModelError(f"teacher cache: process {r} failed while {doing}: {m}")


def _open_everywhere(directory: Path, fingerprint: str | None, world: int) -> TeacherCache:
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
    _agree(error, f"opening the teacher cache {directory}", world)
    assert cache is not None  # _agree raised otherwise
    return cache


def _flat_maps(maps: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Each example's real ``(heads, n, n)`` block of ``(B, heads, L, L)`` maps, flattened, concatenated."""
    blocks = []
    for j in range(maps.shape[0]):
        pos = real[j].nonzero().squeeze(1)
        blocks.append(maps[j].index_select(1, pos).index_select(2, pos).reshape(-1))
    return torch.cat(blocks)


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
    quiet = quiet or rank != 0
    cache = find_everywhere(directory, fingerprint, rank=rank, world=world, quiet=quiet)
    if cache is not None:
        return cache
    run = _Pass(teacher, datasets, collator, ex, spec, cache_dtype, batch_size, device, resolved)
    return _build(run, components, fingerprint, directory, quiet=quiet, world=(rank, world))


def find_everywhere(
    directory: Path,
    fingerprint: str,
    *,
    rank: int,
    world: int,
    quiet: bool,
    fallback: Callable[[], TeacherCache | None] | None = None,
) -> TeacherCache | None:
    """Collective: the usable cache process 0 finds in ``directory`` (else ``fallback()``), opened on every
    process; None (on every process) when there is none and a build is due."""
    found = None
    if rank == 0:
        try:
            found = TeacherCache.open(directory, fingerprint)
        except CacheInvalid as why:
            found = fallback() if fallback is not None else None
            if found is None and directory.exists() and not quiet:
                print(f"teacher cache: rebuilding {directory}: {why}")
    if world == 1:
        return found
    where = broadcast_object(None if found is None else (str(found.directory), found.fingerprint))
    return None if where is None else _open_everywhere(Path(where[0]), where[1], world)


def _on_first(rank: int, world: int, doing: str, step: Callable[[], T]) -> T | None:
    """Collective: ``step()`` on process 0 only (None elsewhere); its failure raises on every process."""
    result, error = None, None
    if rank == 0:
        try:
            result = step()
        except Exception as e:
            error = e
    _agree(error, doing, world)
    return result


def _build(
    run: _Pass,
    components: dict[str, Any],
    fingerprint: str,
    directory: Path,
    *,
    quiet: bool,
    world: tuple[int, int] = (0, 1),
) -> TeacherCache:
    """Run the pass and publish the cache (collective with several processes: see the module docstring)."""
    if run.batch_size < 1:
        raise ConfigError(
            f"train.eval_batch_size must be >= 1 for the teacher cache pass, got {run.batch_size}"
        )
    rank, size = world
    teacher, ex, dtype = run.teacher, run.ex, run.dtype
    was_training = teacher.training
    teacher.eval()  # no dropout: the stored outputs are targets
    tmp: Path | None = None
    try:
        dims = run.probe()  # same on every process
        plan = _plan(run.spec, ex, dims, dtype)
        note = f" ({size} processes)" if size > 1 else ""
        tmp = _on_first(
            rank,
            size,
            "preparing the cache directory",
            lambda: _allocate(directory, plan, ex, dtype, quiet=quiet, note=note),
        )
        shared = tmp if size == 1 else Path(broadcast_object(str(tmp)))
        started = time.perf_counter()
        error = None
        try:
            run.write_share(plan, shared, rank, size)
        except Exception as e:
            error = e
        _agree(error, "running the teacher over its share of the examples", size)
        seconds = time.perf_counter() - started
        seconds = max(all_gather_objects(seconds)) if size > 1 else seconds

        def publish() -> None:
            meta = _meta(
                fingerprint,
                components,
                run.spec,
                ex,
                plan,
                dtype=dtype,
                heads=dims["heads"],
                num_layers=_num_layers(teacher),
                seconds=seconds,
            )
            if size > 1:
                meta["build_processes"] = size
            _complete(tmp, directory, fingerprint, ex, meta)

        _on_first(rank, size, "publishing the cache", publish)
        tmp = None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        teacher.train(was_training)
    if not quiet:
        print(f"teacher cache: built in {seconds:.1f} s" + (f" by {size} processes" if size > 1 else ""))
    return _open_everywhere(directory, fingerprint, size)
