"""Running a command as N data-parallel processes on this machine (``--num-processes N``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import torch

from textdistill.errors import ConfigError


def free_port() -> int:
    """A TCP port that is free on this machine now (for the launcher's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(argv: list[str], num_processes: int, *, port: int | None = None) -> list[str]:
    """The command that runs ``textdistill <argv>`` as ``num_processes`` data-parallel processes on this
    machine, through accelerate's launcher (torchrun underneath: one process per GPU with NCCL, or CPU
    processes with gloo on a machine without GPUs).

    accelerate's ``--mixed_precision no`` keeps a default accelerate config from adding its own autocast:
    ``train.precision`` is the one precision setting. ``argv`` keeps its ``--num-processes``: each launched
    process sees ``WORLD_SIZE`` equal to it and trains (see :func:`launch_processes`).
    """
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",  # the torchrun launcher; without GPUs its processes run on CPU with gloo
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--machine_rank",
        "0",
        "--main_process_port",
        str(port if port is not None else free_port()),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "textdistill",
        *argv,
    ]


def launch_processes(argv: list[str], num_processes: int) -> int | None:
    """``--num-processes N``: re-run this command as N data-parallel processes and wait for them.

    Args:
        argv: the command's arguments (``sys.argv[1:]``).
        num_processes: N.

    Returns:
        The launcher's exit status, or None when this process should train itself: N is 1, or it already
        is one of N launched processes (``WORLD_SIZE`` is N).

    Raises:
        ConfigError: N < 1, N differs from the ``WORLD_SIZE`` this process was launched with, or N exceeds
            the visible GPUs on a GPU machine.
    """
    if num_processes < 1:
        raise ConfigError(f"--num-processes: must be at least 1, got {num_processes}")
    launched = os.environ.get("WORLD_SIZE")
    if launched is not None:
        if int(launched) == num_processes:
            return None
        raise ConfigError(
            f"--num-processes {num_processes}: this process was started as one of {launched} processes "
            "(accelerate launch / torchrun); drop --num-processes, or make it match the launcher's"
        )
    if num_processes == 1:
        return None
    gpus = torch.cuda.device_count()
    if 0 < gpus < num_processes:
        raise ConfigError(
            f"--num-processes {num_processes}: only {gpus} GPU(s) are visible and each process needs its own; "
            f"use --num-processes {gpus} or fewer (CUDA_VISIBLE_DEVICES selects the GPUs)"
        )
    proc = subprocess.Popen(launch_command(argv, num_processes))
    forwarded: list[int] = []  # signals this process received while waiting

    def forward(signum: int, frame: Any) -> None:
        forwarded.append(signum)
        proc.send_signal(signum)

    previous = None
    # Ctrl-C reaches every process of the terminal's group: the launched ones stop gracefully (a checkpoint,
    # then exit 130), so this one waits for them. SIGTERM is sent to this process alone (schedulers, kill):
    # pass it on (torchrun passes it to the training processes). Handlers can only be set from the main thread.
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                status = proc.wait()
                break
            except KeyboardInterrupt:
                forwarded.append(signal.SIGINT)  # torchrun passed it on, or the terminal sent it to all
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    # The launcher exits 1 after a signal; the shell convention (and a single-process run) says 128 + signum.
    return 128 + int(forwarded[0]) if forwarded and status != 0 else status
