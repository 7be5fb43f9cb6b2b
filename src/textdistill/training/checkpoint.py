"""Resumable checkpoints: written atomically, verified before use, pruned to the last few.

A checkpoint is a directory ``run_dir/checkpoints/step-N/``::

    student.safetensors     student weights (safetensors: reading them never runs code)
    objective.safetensors   learned projections of the objective (may hold no tensor)
    optimizer.pt            optimizer state     } only tensors, numbers, strings, lists, tuples and dicts,
    scheduler.pt            lr-scheduler state  } so ``torch.load(weights_only=True)`` reads them
    scaler.pt               grad-scaler state (only when fp16 loss scaling is active)
    rng.pt                  python, numpy, torch CPU and CUDA (per device) RNG states
    trainer_state.json      TrainState, callback states, sizes of append-only files, run facts
    config.yaml             the resolved config
    manifest.json           format version, step, and the sha256 and size of every file above

Writing: everything goes into a hidden temporary sibling (``.step-N.tmp-*``), each file is fsynced, the
manifest comes last, then one ``rename`` publishes the directory and the parent directory is fsynced. A crash
or SIGKILL at any moment therefore leaves either the complete new checkpoint or none (plus a temporary
directory that the next save removes); the previous checkpoint is never touched before the new one is in
place. Reading: :func:`latest_checkpoint` checks the manifest (missing file, size, sha256) of the newest
checkpoint and falls back to the previous one, saying why.

Only the main process writes (``accelerator.is_main_process``); every process reads on resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import pickle
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from textdistill.errors import ConfigError, RunDirError, pickle_refusal
from textdistill.models.io import replace_dir
from textdistill.training.distiller import Callback, Distiller, TrainState, all_gather_objects
from textdistill.training.faults import free_space, make_private_dir_public, os_error_in

CHECKPOINTS = "checkpoints"
"""Sub-directory of the run directory that holds the checkpoints."""
MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.json"
CONFIG = "config.yaml"
RANK_RNG = "rng-rank-{rank}.pt"
"""RNG state of process ``rank`` >= 1 of a multi-process run (process 0's is ``rng.pt``)."""
_FORMAT = "textdistill-checkpoint"
_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")
_CHUNK = 1 << 20

HARMLESS_KEYS = frozenset(
    {
        "output_dir",
        "overwrite",
        "teacher.cache_dir",
        "train.progress",
        "train.log_every",
        "train.save_every",
        "train.keep_checkpoints",
        "train.max_bad_steps",
    }
)
"""Config keys that may differ between a checkpoint and the run resuming it: they change where files go,
how often logs and checkpoints are written, or how many bad steps are tolerated, never the trained weights
of the steps that do run. Any other difference is refused (see :func:`config_differences`)."""


class CheckpointError(RunDirError):
    """A checkpoint that cannot be written, verified or used."""


@dataclasses.dataclass
class Checkpoint:
    """A verified checkpoint directory.

    Attributes:
        path: the ``step-N`` directory.
        step: the optimizer step it was written after.
        manifest: the parsed ``manifest.json``.
    """

    path: Path
    step: int
    manifest: dict[str, Any]
    loaded: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    """The ``.pt`` files, loaded once by :func:`verify_checkpoint` (so a refused pickle skips the
    checkpoint) and reused by :func:`restore_checkpoint`."""

    def load(self, name: str) -> Any:
        """The content of ``name`` (a ``.pt`` file of the checkpoint), loaded with ``weights_only=True``."""
        if name not in self.loaded:
            self.loaded[name] = _torch_load(self.path / name)
        return self.loaded[name]

    @property
    def run_dir(self) -> Path:
        """The run directory the checkpoint belongs to."""
        return self.path.parent.parent

    def trainer_state(self) -> dict[str, Any]:
        """The parsed ``trainer_state.json``."""
        return json.loads((self.path / TRAINER_STATE).read_text(encoding="utf-8"))

    def config(self) -> dict[str, Any]:
        """The resolved config the checkpoint was written with, as a plain mapping (``yaml.safe_load``)."""
        return yaml.safe_load((self.path / CONFIG).read_text(encoding="utf-8")) or {}


# -- finding and verifying -------------------------------------------------------------------------------
def checkpoints_dir(run_dir: str | Path) -> Path:
    """``run_dir/checkpoints``."""
    return Path(run_dir) / CHECKPOINTS


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-N`` directory, newest first (not verified)."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_checkpoint(path: str | Path) -> Checkpoint:
    """Check a checkpoint directory against its manifest.

    Raises:
        CheckpointError: no or unreadable manifest, wrong format, a missing file, or a file whose size or
            sha256 differs from the manifest (truncated or corrupted).
    """
    path = Path(path)
    m = _STEP_DIR.match(path.name)
    if not m or not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint directory (expected run_dir/checkpoints/step-N)")
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {MANIFEST} (the checkpoint is incomplete)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable {MANIFEST} ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: {MANIFEST} is not a textdistill checkpoint manifest")
    if manifest.get("version") != _VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {manifest.get('version')!r}, this textdistill reads {_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{path}: {MANIFEST} lists no files")
    for name, entry in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{path}: file {name} is missing")
        size = f.stat().st_size
        if size != entry.get("bytes"):
            raise CheckpointError(
                f"{path}: file {name} has {size} bytes, the manifest says {entry.get('bytes')}"
            )
        if sha256_file(f) != entry.get("sha256"):
            raise CheckpointError(
                f"{path}: file {name} does not match its sha256 in the manifest (corrupted)"
            )
    ckpt = Checkpoint(path=path, step=int(m.group(1)), manifest=manifest)
    for name in sorted(files):
        if name.endswith(".pt"):
            ckpt.load(name)  # a pickle that weights_only refuses makes the checkpoint unusable: skip it
    return ckpt


def latest_checkpoint(run_dir: str | Path, *, log: Callable[[str], None] | None = print) -> Checkpoint | None:
    """The newest checkpoint of ``run_dir`` that passes :func:`verify_checkpoint`, or None.

    Each newer checkpoint that fails verification is skipped, with a message through ``log``.
    """
    for _step, path in list_checkpoints(run_dir):
        try:
            return verify_checkpoint(path)
        except CheckpointError as e:
            if log is not None:
                log(f"textdistill: skipping checkpoint {path.name}: {e}")
    return None


# -- what a checkpoint holds -----------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Every global RNG state, as types ``torch.load(weights_only=True)`` accepts (no numpy arrays)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any], *, log: Callable[[str], None] | None = print) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        elif log is not None:
            log(
                f"textdistill: the checkpoint has CUDA RNG states for {len(cuda)} devices, this machine has "
                f"{torch.cuda.device_count()}: dropout will not replay exactly"
            )


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without moving any global RNG (python, numpy, torch, CUDA).

    Work that happens only sometimes before training, such as the teacher's dev evaluation when its cache
    is cold (a DataLoader draws its base seed from torch's generator), must not change the dropout masks
    and batch order that follow: otherwise a run's weights would depend on whether a cache was warm.
    """
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state, log=None)


def _fsync_path(path: Path) -> None:
    """fsync a file or directory (directories make a rename durable; not supported everywhere)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF):  # some filesystems cannot fsync a directory
            raise
    finally:
        os.close(fd)


def _torch_save(obj: Any, path: Path) -> None:
    with path.open("wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as e:
            # torch's stream writer hides the OSError (ENOSPC...) of the file's write in a RuntimeError
            # ("unexpected pos ..."): surface it so the caller reports a full disk as one.
            cause = os_error_in(e)
            if cause is None:
                raise
            raise cause from e
        f.flush()
        os.fsync(f.fileno())


def _text_save(text: str, path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _safetensors_save(module: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_model

    # save_model (not save_file) drops duplicates of shared tensors, which save_file refuses
    save_model(module, str(path), metadata={"format": "pt"})
    _fsync_path(path)


def _callback_key(i: int, cb: Callback) -> str:
    return f"{i}:{type(cb).__name__}"


def _file_sizes(run_dir: Path, names: Iterable[str]) -> dict[str, int]:
    return {n: (run_dir / n).stat().st_size if (run_dir / n).is_file() else 0 for n in names}


def save_checkpoint(
    distiller: Distiller,
    run_dir: str | Path,
    *,
    config_yaml: str,
    keep: int = 2,
    meta: dict[str, Any] | None = None,
    append_only: Iterable[str] = (),
    resume_hint: str = "",
) -> Path:
    """Write a checkpoint of ``distiller`` at its current step, atomically, and prune old ones.

    Call it at a step boundary (the state is complete there). Only the main process writes; all processes
    wait for it, so a checkpoint is complete before any of them moves on.

    Args:
        distiller: the training loop whose state to save.
        run_dir: the run directory (the checkpoint goes to ``run_dir/checkpoints/step-N``).
        config_yaml: the resolved config (YAML text), saved alongside.
        keep: how many checkpoints to keep (the newest ones, this one included), at least 1.
        meta: JSON-serialisable run facts stored in ``trainer_state.json`` (mode, precision...).
        append_only: names of append-only files in ``run_dir`` (``metrics.jsonl``): their sizes are stored
            so a resume can cut off what was appended after this checkpoint.
        resume_hint: the command that resumes this run, quoted in error messages.

    Returns:
        The checkpoint directory.

    Raises:
        CheckpointError: the checkpoint could not be written (e.g. no space left: the message names the
            directory and the free space); the previous checkpoints are untouched.
    """
    run_dir = Path(run_dir)
    acc = distiller.accelerator
    step = distiller.state.step
    root = checkpoints_dir(run_dir)
    final = root / f"step-{step}"
    # Every process's RNG state (collective): each draws its own dropout masks, so a multi-process resume
    # is exact only when every process gets its own stream back.
    rng_states = all_gather_objects(rng_state())
    if acc.is_main_process:
        _write_checkpoint(
            distiller, run_dir, final, config_yaml, meta or {}, list(append_only), resume_hint, rng_states
        )
        _prune(root, keep=max(1, keep), newest=step)
    acc.wait_for_everyone()
    return final


def _write_checkpoint(
    distiller: Distiller,
    run_dir: Path,
    final: Path,
    config_yaml: str,
    meta: dict[str, Any],
    append_only: list[str],
    resume_hint: str,
    rng_states: list[dict[str, Any]],
) -> None:
    root = final.parent
    step = distiller.state.step
    tmp: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        # Same parent directory, so the final rename stays on one filesystem (and is atomic).
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
        make_private_dir_public(tmp)  # mkdtemp makes it 0700; the published checkpoint follows the umask
        # RNG first: nothing below draws random numbers, but capture before anything could.
        _torch_save(rng_states[0], tmp / "rng.pt")
        for rank, state in enumerate(rng_states[1:], start=1):  # the other processes' dropout streams
            _torch_save(state, tmp / RANK_RNG.format(rank=rank))
        _safetensors_save(distiller.unwrapped_student(), tmp / "student.safetensors")
        _safetensors_save(
            distiller.accelerator.unwrap_model(distiller.objective), tmp / "objective.safetensors"
        )
        _torch_save(distiller.optimizer.state_dict(), tmp / "optimizer.pt")
        _torch_save(distiller.scheduler.state_dict(), tmp / "scheduler.pt")
        scaler = getattr(distiller.accelerator, "scaler", None)
        if scaler is not None:
            _torch_save(scaler.state_dict(), tmp / "scaler.pt")
        trainer_state = {
            "step": step,
            "state": distiller.state.to_dict(),
            "callbacks": {_callback_key(i, cb): cb.state_dict() for i, cb in enumerate(distiller.callbacks)},
            "append_only": _file_sizes(run_dir, append_only),
            "num_processes": len(rng_states),
            "meta": meta,
            "saved": time.time(),
        }
        _text_save(json.dumps(trainer_state, indent=2) + "\n", tmp / TRAINER_STATE)
        _text_save(config_yaml, tmp / CONFIG)
        files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(tmp.iterdir())}
        manifest = {"format": _FORMAT, "version": _VERSION, "step": step, "files": files}
        _text_save(json.dumps(manifest, indent=2) + "\n", tmp / MANIFEST)
        _fsync_path(tmp)
        # Re-saving a step (a resumed run replaying past a checkpoint that was found corrupt) replaces it.
        replace_dir(tmp, final)
        tmp = None
        _fsync_path(root)
    except (OSError, RuntimeError) as e:
        cause = os_error_in(e)
        if cause is None:
            raise
        if cause is not e:
            e = cause
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)  # frees the space the partial checkpoint took
        previous = [p.name for s, p in list_checkpoints(run_dir) if s != step]
        kept = (
            f"the previous checkpoint {previous[0]} is intact" if previous else "no earlier checkpoint exists"
        )
        hint = f" Then resume with: {resume_hint}" if resume_hint else ""
        if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise CheckpointError(
                f"no space left on the device holding {root} while writing checkpoint step-{step} "
                f"({free_space(root)} free now); {kept}. Free disk space or lower train.keep_checkpoints."
                f"{hint}"
            ) from e
        raise CheckpointError(
            f"cannot write checkpoint step-{step} to {root}: {e.strerror or e}; {kept}. Check that the "
            f"directory is writable.{hint}"
        ) from e
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _prune(root: Path, *, keep: int, newest: int) -> None:
    """Keep the ``keep`` newest checkpoints up to step ``newest``; remove the rest and leftovers.

    Checkpoints *after* ``newest`` are stale: they belong to a timeline abandoned when a run was resumed
    from an earlier checkpoint (the newer one was unreadable), and the resumed run re-creates them.
    """
    steps = list_checkpoints(root.parent)
    current = [(s, p) for s, p in steps if s <= newest]
    doomed = [p for s, p in steps if s > newest] + [p for _s, p in current[keep:]]
    doomed += [p for p in root.iterdir() if p.name.startswith(".step-")]  # interrupted saves / replacements
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)


# -- restoring -------------------------------------------------------------------------------------------
def _torch_load(path: Path) -> Any:
    # weights_only: tensors and plain containers only, never arbitrary pickled objects
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(pickle_refusal(path, e)) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}: {str(e)[:200]})") from None


def restore_checkpoint(
    distiller: Distiller, ckpt: Checkpoint, *, log: Callable[[str], None] | None = print
) -> None:
    """Load ``ckpt`` into ``distiller`` so that ``fit()`` continues exactly where the checkpoint was written.

    Restores the student and objective weights, optimizer, lr scheduler, grad scaler, TrainState, callback
    states and every RNG; cuts append-only files (``metrics.jsonl``) back to their size at the checkpoint,
    so lines written after it are not duplicated when the resumed run writes them again.

    Raises:
        CheckpointError: the checkpoint does not fit this run (other data size, other model).
    """
    from safetensors.torch import load_model

    saved = ckpt.trainer_state()
    s = saved["state"]
    st = distiller.state
    if (s["steps_per_epoch"], s["total_steps"]) != (st.steps_per_epoch, st.total_steps):
        raise CheckpointError(
            f"{ckpt.path}: the checkpoint was written with {s['steps_per_epoch']} batches per epoch and "
            f"{s['total_steps']} steps in total, this run has {st.steps_per_epoch} and {st.total_steps}: the "
            "training data or the batch size changed since. Resume with the same data, or start a new run."
        )
    try:
        load_model(distiller.unwrapped_student(), str(ckpt.path / "student.safetensors"), strict=True)
        load_model(
            distiller.accelerator.unwrap_model(distiller.objective),
            str(ckpt.path / "objective.safetensors"),
            strict=True,
        )
        distiller.optimizer.load_state_dict(ckpt.load("optimizer.pt"))
        distiller.scheduler.load_state_dict(ckpt.load("scheduler.pt"))
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"{ckpt.path} does not fit this run's model ({e}); resume with the config the checkpoint was "
            "written with, or start a new run"
        ) from e
    scaler = getattr(distiller.accelerator, "scaler", None)
    if scaler is not None and (ckpt.path / "scaler.pt").is_file():
        scaler.load_state_dict(ckpt.load("scaler.pt"))
    known = {f.name for f in dataclasses.fields(TrainState)}
    distiller.state = TrainState(**{k: v for k, v in s.items() if k in known})
    states = saved.get("callbacks", {})
    for i, cb in enumerate(distiller.callbacks):
        key = _callback_key(i, cb)
        if key in states:
            cb.load_state_dict(states[key])
    if distiller.accelerator.is_main_process:  # the files are the main process's to write
        for name, size in saved.get("append_only", {}).items():
            _truncate(ckpt.run_dir / name, size, log)
    # Last: nothing after this may draw random numbers before the loop continues.
    set_rng_state(_rank_rng_state(ckpt, distiller, saved, log), log=log)


def _rank_rng_state(
    ckpt: Checkpoint, distiller: Distiller, saved: dict[str, Any], log: Callable[[str], None] | None
) -> dict[str, Any]:
    """This process's RNG state in ``ckpt`` (process 0's, with a warning, when the checkpoint has none)."""
    rank, world = distiller.accelerator.process_index, distiller.accelerator.num_processes
    saved_world = saved.get("num_processes", 1)
    if saved_world != world and log is not None and distiller.accelerator.is_main_process:
        log(
            f"textdistill: warning: the checkpoint was written by {saved_world} process(es), this run has "
            f"{world}: dropout will not replay exactly"
        )
    name = RANK_RNG.format(rank=rank) if rank else "rng.pt"
    if name in ckpt.manifest.get("files", {}):
        return ckpt.load(name)
    if log is not None and saved_world == world:
        log(f"textdistill: warning: {ckpt.path} has no RNG state for process {rank}; using process 0's")
    return ckpt.load("rng.pt")


def _truncate(path: Path, size: int, log: Callable[[str], None] | None) -> None:
    if not path.is_file():
        if size and log is not None:
            log(f"textdistill: {path} is missing; it restarts from the resumed step")
        return
    if path.stat().st_size < size:
        if log is not None:
            log(f"textdistill: {path} is shorter than when the checkpoint was written; keeping it as is")
        return
    with path.open("r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())


# -- config comparison -----------------------------------------------------------------------------------
def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {f"{prefix}.#": len(value)}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}.{i}"))
        return out
    return {prefix: value}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Lines ``key: A in the checkpoint, B now`` for every key that differs and is not in HARMLESS_KEYS."""
    a, b = _flatten(saved), _flatten(current)
    out = []
    for key in sorted(set(a) | set(b)):
        if key in HARMLESS_KEYS or a.get(key) == b.get(key):
            continue
        shown = key.replace(".#", " (number of items)")
        out.append(f"{shown}: {a.get(key, '(absent)')!r} in the checkpoint, {b.get(key, '(absent)')!r} now")
    return out


def check_resume_config(ckpt: Checkpoint, config_yaml: str, mode: str) -> None:
    """Refuse to resume ``ckpt`` with a config (or mode) that would train differently.

    Args:
        ckpt: the checkpoint to resume.
        config_yaml: the resolved config of the resuming run (``dump_yaml(cfg)``).
        mode: ``distill`` or ``finetune``.

    Raises:
        ConfigError: one problem per differing key, with both values.
    """
    problems = []
    saved_mode = ckpt.trainer_state().get("meta", {}).get("mode")
    if saved_mode is not None and saved_mode != mode:
        problems.append(f"mode: the run was started with {saved_mode!r}, resumed with {mode!r}")
    problems += config_differences(ckpt.config(), yaml.safe_load(config_yaml) or {})
    if problems:
        problems.append(
            f"to resume, use the config the run was started with ({ckpt.run_dir / 'config.yaml'}); only "
            f"{', '.join(sorted(HARMLESS_KEYS))} may change. To train with the new settings, start a new run "
            "(another output_dir, or --overwrite)."
        )
        raise ConfigError(problems)


# -- the callback ----------------------------------------------------------------------------------------
class CheckpointSaver(Callback):
    """Writes checkpoints at step boundaries: every ``save_every`` steps, else after each evaluation; also
    when the loop stops on a signal, and when training ends (so a crash in the final evaluation does not
    cost any training).

    Args:
        run_dir: the run directory.
        save_every: steps between checkpoints (None: after each evaluation).
        keep: checkpoints to keep (>= 1).
        config_yaml: the resolved config, stored in every checkpoint.
        meta: run facts stored in every checkpoint (``mode`` is compared on resume).
        append_only: append-only files of ``run_dir`` to cut back on resume.
        resume_hint: the resume command, quoted in error messages.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        save_every: int | None,
        keep: int,
        config_yaml: str,
        meta: dict[str, Any] | None = None,
        append_only: Iterable[str] = ("metrics.jsonl",),
        resume_hint: str = "",
    ):
        if keep < 1:
            raise ConfigError(f"train.keep_checkpoints: must be >= 1 to write checkpoints, got {keep}")
        self.run_dir = Path(run_dir)
        self.save_every = save_every
        self.keep = keep
        self.config_yaml = config_yaml
        self.meta = dict(meta or {})
        self.append_only = list(append_only)
        self.resume_hint = resume_hint
        self.last_saved_step: int | None = None
        self.last_path: Path | None = None

    def _due(self, distiller: Distiller) -> bool:
        st = distiller.state
        if distiller.stop_signal is not None:
            return True
        if self.save_every is not None:
            return st.step % self.save_every == 0
        return st.last_eval_step == st.step

    def save(self, distiller: Distiller) -> Path | None:
        """Write a checkpoint now unless one exists for this step (a step 0 state is never saved)."""
        step = distiller.state.step
        if step == 0 or step == self.last_saved_step:
            return self.last_path if step == self.last_saved_step else None
        self.last_path = save_checkpoint(
            distiller,
            self.run_dir,
            config_yaml=self.config_yaml,
            keep=self.keep,
            meta=self.meta,
            append_only=self.append_only,
            resume_hint=self.resume_hint,
        )
        self.last_saved_step = step
        return self.last_path

    def resumed_from(self, ckpt: Checkpoint) -> None:
        """Record that the run continues from ``ckpt`` (it is not written again)."""
        self.last_saved_step, self.last_path = ckpt.step, ckpt.path

    def on_step_boundary(self, distiller: Distiller) -> None:
        if self._due(distiller):
            self.save(distiller)

    def on_train_end(self, distiller: Distiller) -> None:
        self.save(distiller)
