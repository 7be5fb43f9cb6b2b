"""The frame around a training run: one process per run directory, and every way out recorded.

:func:`run_guard` wraps ``run_training``:

* takes the run directory lock (:class:`~textdistill.training.run_lock.RunLock`; process 0 only) and
  removes what interrupted atomic writes of dead processes left in the directory;
* turns SIGINT/SIGTERM outside the training loop (startup, teacher-cache build, final evaluation) into
  :class:`~textdistill.training.signals.TrainingInterrupted` instead of a silent exit;
* on any way out that is not success, makes sure ``run.json`` no longer says ``running`` (``interrupted``
  or ``failed``, with the resume command) and that the message holds the resume command;
* turns an ``OSError`` (disk full, read-only file system, permission denied) into a
  :class:`~textdistill.errors.RunDirError` that says what could not be written and how to go on.

Writing ``run.json`` on these paths is itself protected (:func:`record_run_json`): on a disk that just
turned read-only, the first, precise error must reach the user, not the second one from the bookkeeping.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from textdistill.errors import RunDirError, TextDistillError
from textdistill.training.faults import os_error_in, remove_stale_temporaries, write_problem
from textdistill.training.run_dir import resume_command
from textdistill.training.signals import TrainingInterrupted, interrupt_outside_loop, signal_name


def record_run_json(run_dir: Path, run_json: dict[str, Any]) -> bool:
    """Write ``run.json`` on a failure path; a write error is reported as a note, never raised.

    Returns:
        True when it was written.
    """
    from textdistill.training.callbacks import write_json_atomic

    try:
        write_json_atomic(Path(run_dir) / "run.json", run_json)
        return True
    except OSError as e:
        print(
            f"textdistill: note: could not record the run's status in {Path(run_dir) / 'run.json'} "
            f"({e.strerror or e})",
            file=sys.stderr,
        )
        return False


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _mark_stopped(
    run_dir: Path, status: str, error: str, hint: str, signum: int | None, untouched: int | None
) -> None:
    """Set ``run.json`` from ``running`` to ``status`` (left alone when the run already recorded how it
    ended, has no run.json yet, or this process has not written it: ``untouched`` is its mtime when the
    guard began, so an earlier run's record is never rewritten with this process's error)."""
    path = run_dir / "run.json"
    if _mtime(path) == untouched:
        return
    try:
        run_json = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(run_json, dict):
        return
    if run_json.get("status") == "running" or (
        status == "interrupted" and run_json.get("status") == "interrupted" and not run_json.get("signal")
    ):
        run_json.update(status=status, error=error, ended=time.time(), resume_command=hint)
        if signum is not None:
            run_json["signal"] = signal_name(signum)
        record_run_json(run_dir, run_json)


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def run_guard(run_dir: str | Path, mode: str, *, quiet: bool = False) -> Iterator[None]:
    """Hold the run directory for the block and record every way out of it (see the module docstring).

    Raises:
        RunDirError: another process holds the run directory, or a file of the run cannot be written.
        TrainingInterrupted: a signal stopped the run (its message holds the resume command).
    """
    from textdistill.training.run_lock import RunLock

    run_dir = Path(run_dir)
    hint = resume_command(run_dir, mode)
    lock = RunLock(run_dir).acquire() if _is_main_process() else None
    untouched = _mtime(run_dir / "run.json")
    try:
        if lock is not None:
            remove_stale_temporaries(run_dir)
        with interrupt_outside_loop(hint):
            yield
    except TrainingInterrupted as e:
        if lock is not None:
            _mark_stopped(run_dir, "interrupted", f"TrainingInterrupted: {e}", hint, e.signum, untouched)
        if "resume with" in str(e) or "cannot be resumed" in str(e):
            raise  # the loop stopped at a step boundary and said everything
        if (run_dir / "config.yaml").is_file():
            message = f"{e}; resume with:\n  {hint}"
        else:
            message = f"{e} before the run started; nothing was written: run the same command again"
        if not quiet:
            print(f"textdistill: {message}", file=sys.stderr)
        raise TrainingInterrupted(e.signum, message, e.checkpoint) from None
    except BaseException as e:
        cause = None if isinstance(e, TextDistillError) else os_error_in(e)
        if lock is not None and not isinstance(e, KeyboardInterrupt):
            _mark_stopped(run_dir, "failed", f"{type(e).__name__}: {str(e)[:500]}", hint, None, untouched)
        if cause is None or isinstance(e, KeyboardInterrupt):
            raise
        where = Path(cause.filename) if cause.filename else run_dir
        again = f" Fix it, then resume with: {hint}" if (run_dir / "run.json").is_file() else ""
        raise RunDirError(f"{write_problem(cause, 'running', where)}.{again}") from e
    finally:
        if lock is not None:
            lock.release()
