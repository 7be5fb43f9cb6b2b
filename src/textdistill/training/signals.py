"""Graceful stop on SIGINT / SIGTERM: finish the step, save a checkpoint, exit with a resume hint.

The first signal only sets a flag (through ``on_signal``): the training loop notices it at the next step
boundary, writes a checkpoint and returns, and the runner raises :class:`TrainingInterrupted`. A second
signal exits at once with ``os._exit``: nothing is flushed or cleaned up, which is safe because every file a
resume reads is written atomically (temporary file or directory, fsync, rename), so the previous complete
checkpoint is always intact.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Signals that request a graceful stop (Ctrl-C, and what schedulers / ``kill`` / ``docker stop`` send)."""


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15, etc. (the number as text when the platform has no name for it)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving a checkpoint.

    A :class:`KeyboardInterrupt` subclass, so code that handles Ctrl-C handles it too. The CLI exits with
    :attr:`exit_code`, the shell convention ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM).

    Attributes:
        signum: the signal that stopped the run.
        exit_code: ``128 + signum``.
        checkpoint: the checkpoint written at the stop, or None when checkpointing is disabled.
    """

    def __init__(self, signum: int, message: str, checkpoint: str | None = None):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
        self.checkpoint = checkpoint


@contextmanager
def graceful_stop(
    on_signal: Callable[[int], None],
    signals: tuple[int, ...] = STOP_SIGNALS,
    *,
    quiet: bool = False,
    resume_hint: str = "",
) -> Iterator[None]:
    """Within the block, the first of ``signals`` calls ``on_signal(signum)``; a second exits at once.

    Handlers can only be installed from the main thread; elsewhere (e.g. a notebook worker thread) the
    block runs with the default handlers. The previous handlers are restored on exit.

    Args:
        on_signal: called once with the signal number (typically ``Distiller.request_stop``).
        signals: the signals to handle.
        quiet: do not print the notice on the first signal.
        resume_hint: the command that resumes the run, printed when a second signal exits at once.
    """

    def first(signum: int) -> None:
        name = signal_name(signum)
        if not quiet:
            _write(
                f"\ntextdistill: {name} received: finishing the current step and saving a checkpoint "
                f"(send {name} again to exit at once)\n"
            )
        on_signal(signum)

    with _on_signals(first, signals, resume_hint):
        yield


@contextmanager
def _on_signals(first: Callable[[int], None], signals: tuple[int, ...], resume_hint: str) -> Iterator[None]:
    """The first of ``signals`` calls ``first(signum)``, a second exits at once (as :func:`graceful_stop`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if received:
            # os._exit skips every cleanup on purpose: the user asked to stop now. Every file a resume
            # reads is written atomically, so the last complete checkpoint stays usable.
            _exit_now(signum, resume_hint)
        received.append(signum)
        first(signum)

    previous = {}
    try:
        for s in signals:
            previous[s] = signal.signal(s, handler)
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _exit_now(signum: int, resume_hint: str) -> None:
    """The second signal: exit at once (``os._exit``), saying how to resume."""
    how = f"; resume with:\n  {resume_hint}" if resume_hint else "; resume from the last complete checkpoint"
    _write(f"\ntextdistill: second {signal_name(signum)}: exiting now{how}\n")
    os._exit(128 + signum)


@contextmanager
def interrupt_outside_loop(resume_hint: str = "", signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, the first of ``signals`` raises :class:`TrainingInterrupted` where it lands.

    For the parts of a run around the training loop (startup, the teacher-cache build, the final
    evaluation), which have no step boundary to stop at: SIGTERM's default action would end the process
    silently and leave ``run.json`` saying "running". Raising lets the run record the stop and print the
    resume command; everything a resume reads is written atomically, so stopping anywhere is safe. The
    loop's :func:`graceful_stop` replaces these handlers while it runs. A second signal exits at once.
    """

    def first(signum: int) -> None:
        raise TrainingInterrupted(signum, f"stopped by {signal_name(signum)}")

    with _on_signals(first, signals, resume_hint):
        yield


def _write(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except Exception:  # a closed stderr must not turn a stop request into a crash
        pass
