"""Turning disk, permission and pickle faults into clear messages, and tidying what a crash leaves behind.

Shared by the checkpoint writer, the run directory code and the teacher cache, so that each fault reads the
same wherever it happens:

* :func:`os_error_in` finds the ``OSError`` that ``torch.save`` hides inside its ``RuntimeError``
  (``[enforce fail at inline_container.cc:...] unexpected pos``), so a full disk is reported as one;
* :func:`write_problem` words an ``OSError`` (no space, read-only, permission) with the fix;
* :func:`new_dir_mode` / :func:`make_private_dir_public` give directories made by ``tempfile.mkdtemp``
  (always mode 0700) the mode the user's umask asks for;
* :func:`remove_stale_temporaries` removes ``.NAME.tmp-PID`` files and ``.NAME.partial-*`` / ``.tmp-*``
  directories left by processes that no longer run.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import threading
from pathlib import Path

NO_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG})
"""errnos that mean "the disk (or the quota, or the file-size limit) is full"."""

_STREAM_WRITE_FAILURE = re.compile(r"unexpected pos|file write failed|PytorchStreamWriter failed", re.I)
_umask_lock = threading.Lock()


def os_error_in(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc``: itself, or one in its ``__cause__`` / ``__context__`` chain.

    ``torch.save`` writes through a C++ stream writer: when the Python file's ``write`` raises ``OSError``
    (ENOSPC), the writer raises ``RuntimeError('[enforce fail at inline_container.cc:672] . unexpected
    pos ...')`` with the ``OSError`` as its context. When the chain holds none but the message is the
    writer's write failure, an ``OSError(EIO)`` carrying that message stands in for it.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    if isinstance(exc, RuntimeError) and _STREAM_WRITE_FAILURE.search(str(exc)):
        return OSError(errno.EIO, f"write failed ({str(exc).strip()[:200]})")
    return None


def free_space(path: Path) -> str:
    """Free space on the device holding ``path`` (or its nearest existing parent), e.g. ``112.0 KiB``."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = float(shutil.disk_usage(p).free)
    except OSError:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if free < 1024:
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1024
    return f"{free:.1f} TiB"


def write_problem(e: OSError, what: str, where: Path) -> str:
    """``what`` failed at ``where`` because of ``e``: the cause in words and the fix (no traceback text)."""
    if e.errno in NO_SPACE:
        return f"no space left on the device holding {where} while {what} ({free_space(where)} free now)"
    if e.errno == errno.EROFS:
        return f"cannot write {where} while {what}: the file system is read-only"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"cannot write {where} while {what}: permission denied (check the owner and mode of {where})"
    return f"cannot write {where} while {what}: {e.strerror or e}"


def current_umask() -> int:
    """The process umask (read by setting and restoring it, under a lock)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_dir_mode() -> int:
    """The mode ``mkdir`` gives a new directory under the current umask (0755 with the usual 022)."""
    return 0o777 & ~current_umask()


def make_private_dir_public(path: Path) -> None:
    """Give a ``tempfile.mkdtemp`` directory (mode 0700) the mode a plain ``mkdir`` would have.

    Models, checkpoints and caches are published by renaming such a directory; without this they would
    stay readable by their owner only, whatever the umask says.
    """
    os.chmod(path, new_dir_mode())


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this machine (signal 0 probes without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


_TMP_FILE = re.compile(r"^\..+\.tmp-(\d+)$")
_TMP_DIR = re.compile(r"^\..+\.(partial|tmp|old)-[A-Za-z0-9_]+$")


def remove_stale_temporaries(directory: Path, *, dirs: bool = True) -> list[Path]:
    """Remove leftovers of interrupted atomic writes in ``directory`` (not recursive); returns them.

    ``.NAME.tmp-PID`` files are removed when process PID no longer runs (a live one may be writing it).
    With ``dirs``, ``.NAME.partial-*``, ``.NAME.tmp-*`` and ``.NAME.old-*`` directories are removed too:
    call it only where the caller owns the directory (the run lock is held), so no live writer has one.
    """
    removed: list[Path] = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TMP_FILE.match(p.name)
        try:
            if m and p.is_file() and not pid_alive(int(m.group(1))):
                p.unlink()
                removed.append(p)
            elif dirs and _TMP_DIR.match(p.name) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
                removed.append(p)
        except OSError:
            continue  # best effort: a leftover that cannot be removed does no harm
    return removed


def _partial_pid(name: str, stem: str) -> int | None:
    m = re.match(rf"^\.{re.escape(stem)}\.partial-(\d+)-", name)
    return int(m.group(1)) if m else None


def new_partial_dir(directory: Path) -> Path:
    """A fresh ``.NAME.partial-PID-*`` sibling of ``directory`` to build it in, with the umask's mode.

    The process id in the name lets a later build remove the partial directories of processes that died
    mid-build (SIGKILL, power loss), which are otherwise never cleaned; a live builder's is left alone.
    """
    import tempfile

    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    for p in parent.iterdir():
        pid = _partial_pid(p.name, directory.name)
        if pid is not None and pid != os.getpid() and not pid_alive(pid) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-{os.getpid()}-", dir=parent))
    make_private_dir_public(tmp)
    return tmp
