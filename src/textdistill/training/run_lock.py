"""One process at a time per run directory: a lock file held for the whole run.

Two processes training into (or resuming) the same ``output_dir`` would interleave checkpoints, truncate
each other's ``metrics.jsonl`` and overwrite ``model/``. :class:`RunLock` takes an exclusive ``flock`` on
``output_dir/.textdistill.lock`` and writes the holder's pid, host and command into it; a second process
is refused with a message naming that pid. The kernel drops a ``flock`` when its process dies (SIGKILL,
power loss included), so a lock left by a dead process is taken over without any manual step. Where
``flock`` is not available (some network file systems), the pid in the file decides: a lock whose process
no longer runs on this host is taken over.

In a multi-process (data-parallel) run only process 0 takes the lock: the others belong to the same run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from textdistill.config.validate import RUN_LOCK_NAME
from textdistill.errors import RunDirError
from textdistill.training.faults import pid_alive, write_problem

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _holder_text(info: dict[str, Any]) -> str:
    pid = info.get("pid", "?")
    host = info.get("host", "?")
    started = info.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if started else ""
    return f"process {pid} on {host}{when}"


class RunLock:
    """Exclusive lock on a run directory (create it with :meth:`acquire`, drop it with :meth:`release`).

    Args:
        run_dir: the run directory; created (with its parents) if missing, and removed again on release
            when the lock file is all it holds (a run refused by validation leaves nothing behind).
        log: where notes go (taking over a stale lock).
    """

    def __init__(self, run_dir: str | Path, *, log: Any = print):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RUN_LOCK_NAME
        self.log = log
        self._fd: int | None = None
        self._created_dir = False

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunDirError` naming the process that holds it.

        Raises:
            RunDirError: another live process holds the lock, or the directory cannot be created/written.
        """
        try:
            if not self.run_dir.exists():
                self.run_dir.mkdir(parents=True)
                self._created_dir = True
            for _ in range(5):  # retried only when the file was replaced between open and flock
                if self._try_acquire():
                    return self
            raise RunDirError(f"output_dir: cannot lock {self.path}: it keeps being replaced")
        except OSError as e:
            self._cleanup_dir()
            raise RunDirError(
                f"output_dir: {write_problem(e, 'locking the run directory', self.run_dir)}; choose a "
                "directory you can write, or fix its owner or permissions"
            ) from None

    def _try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            previous = _read_info(fd)
            if fcntl is not None and not self._flock(fd, previous):
                return False
            if fcntl is None:
                self._check_pid_lock(previous)
            if previous.get("pid") not in (None, os.getpid()) and self.log is not None:
                self.log(
                    f"textdistill: taking over the lock of {_holder_text(previous)}, which no longer runs"
                )
            _write_info(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def _flock(self, fd: int, previous: dict[str, Any]) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._busy(previous) from None
        except OSError as e:
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                self._check_pid_lock(previous)  # no flock on this file system: the pid decides
                return True
            raise
        # Locked: but is it still the file at this path? (a releasing process may have unlinked it)
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
        return same

    def _check_pid_lock(self, previous: dict[str, Any]) -> None:
        pid = previous.get("pid")
        if (
            isinstance(pid, int)
            and pid != os.getpid()
            and previous.get("host") == socket.gethostname()
            and pid_alive(pid)
        ):
            raise self._busy(previous)

    def _busy(self, info: dict[str, Any]) -> RunDirError:
        pid = info.get("pid", "?")
        command = info.get("command")
        shown = f" ({command[:200]})" if isinstance(command, str) and command else ""
        return RunDirError(
            f"output_dir: {str(self.run_dir)!r} is in use by another textdistill run: {_holder_text(info)}"
            f"{shown}. Two processes must not write one run directory: wait for it to finish, or stop it "
            f"(kill -TERM {pid}: it saves a checkpoint) and then resume"
        )

    def release(self) -> None:
        """Drop the lock and remove the lock file (and the directory, if this lock created it empty)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # before unlocking: a waiter that opened it re-checks the inode
        with contextlib.suppress(OSError):
            os.close(self._fd)  # closing drops the flock
        self._fd = None
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._created_dir:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()  # only succeeds when empty
            self._created_dir = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_info(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode("utf-8")) if raw else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def _write_info(fd: int) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "command": " ".join(sys.argv)[:500],
    }
    data = (json.dumps(info) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
