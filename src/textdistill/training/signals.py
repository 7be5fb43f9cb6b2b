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
    on_signal: Callable[[int], None], signals: tuple[int, ...] = STOP_SIGNALS, *, quiet: bool = False
) -> Iterator[None]:
    """Within the block, the first of ``signals`` calls ``on_signal(signum)``; a second exits at once.

    Handlers can only be installed from the main thread; elsewhere (e.g. a notebook worker thread) the
    block runs with the default handlers. The previous handlers are restored on exit.

    Args:
        on_signal: called once with the signal number (typically ``Distiller.request_stop``).
        signals: the signals to handle.
        quiet: do not print the notice on the first signal.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        name = signal_name(signum)
        if received:
            # os._exit skips every cleanup on purpose: the user asked to stop now. Every file a resume
            # reads is written atomically, so the last complete checkpoint stays usable.
            _write(f"\ntextdistill: second {name}: exiting now; resume from the last complete checkpoint\n")
            os._exit(128 + signum)
        received.append(signum)
        if not quiet:
            _write(
                f"\ntextdistill: {name} received: finishing the current step and saving a checkpoint "
                f"(send {name} again to exit at once)\n"
            )
        on_signal(signum)

    previous = {}
    try:
        for s in signals:
            previous[s] = signal.signal(s, handler)
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _write(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except Exception:  # a closed stderr must not turn a stop request into a crash
        pass
