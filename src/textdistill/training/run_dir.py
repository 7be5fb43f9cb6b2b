"""The run directory of ``finetune`` / ``distill``: creating it, its run.json facts, resuming it, its report.

``--overwrite`` empties the directory (the run lock file stays: the lock is held while this runs). A
``--resume`` that finds no usable checkpoint starts the run over; if the directory holds a student
(``model/``) it is never deleted without ``--overwrite``: everything the earlier run wrote is moved to a
sibling directory ``<output_dir>.previous-<UTC time>`` and the message says where.

See :mod:`textdistill.training.runner` for the directory's layout.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from textdistill.config.loader import dump_yaml
from textdistill.config.schema import Config
from textdistill.config.validate import RUN_LOCK_NAME
from textdistill.errors import RunDirError
from textdistill.training.callbacks import write_json_atomic
from textdistill.training.checkpoint import (
    Checkpoint,
    CheckpointSaver,
    check_resume_config,
    latest_checkpoint,
)
from textdistill.training.distiller import Distiller
from textdistill.training.signals import TrainingInterrupted, signal_name


def environment() -> dict[str, Any]:
    """Versions and hardware facts written into run.json."""
    import transformers

    from textdistill.training.precision import cpu_bf16_flags

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_bf16_flags": sorted(cpu_bf16_flags()),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("textdistill")
    except Exception:
        return "unknown"


def prepare_run_dir(cfg: Config, *, starting_over: bool = False) -> Path:
    """Create (or, with overwrite, empty) the run directory; validation already refused unsafe cases.

    ``starting_over``: a resume found no usable checkpoint; an earlier student is moved aside, not deleted.
    """
    out = Path(cfg.output_dir)
    if out.is_dir() and starting_over:
        set_aside_previous_run(out)
    elif out.exists() and cfg.overwrite and (out / "run.json").exists():
        empty_run_dir(out)  # not rmtree: the run lock file inside stays
    out.mkdir(parents=True, exist_ok=True)
    return out


def empty_run_dir(run_dir: Path) -> None:
    """Remove everything in ``run_dir`` except the run lock file."""
    for p in run_dir.iterdir():
        if p.name == RUN_LOCK_NAME:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def set_aside_previous_run(run_dir: Path, *, log: Callable[[str], None] | None = print) -> Path | None:
    """Before a resume starts over: move an earlier run's outputs out of ``run_dir``.

    When ``run_dir/model`` exists, every entry but the lock file moves into a new sibling
    ``<run_dir>.previous-<UTC time>`` (a rename on the same file system: nothing is copied or lost) and
    that directory is returned; without a student the directory is simply emptied (checkpoints that all
    failed verification, logs) and None is returned.
    """
    if not (run_dir / "model").exists():
        empty_run_dir(run_dir)
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    dest = run_dir.with_name(f"{run_dir.name}.previous-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = run_dir.with_name(f"{run_dir.name}.previous-{stamp}-{n}")
    dest.mkdir()
    for p in sorted(run_dir.iterdir()):
        if p.name != RUN_LOCK_NAME:
            os.replace(p, dest / p.name)
    if log is not None:
        log(
            f"textdistill: no usable checkpoint to resume from, so the run starts over; the earlier run's "
            f"student (model/), metrics and report were moved to {dest}"
        )
    return dest


def resume_command(run_dir: Path, mode: str) -> str:
    """The shell command that resumes the run in ``run_dir`` (relative data paths: run it from the cwd)."""
    config = shlex.quote(str((run_dir / "config.yaml").resolve()))
    return f"cd {shlex.quote(os.getcwd())} && textdistill {mode} --config {config} --resume"


def find_resume_point(cfg: Config, mode: str) -> Checkpoint | None:
    """The checkpoint a ``resume=True`` run continues from, or None to start (over) from step 0.

    Nothing to resume (no run yet, or no usable checkpoint: killed before the first one) means starting
    from step 0, so that the same command can simply be repeated after every interruption.

    Raises:
        RunDirError: the run already finished.
        ConfigError: the config differs from the checkpoint's in a key that changes training.
    """
    run_dir = Path(cfg.output_dir)
    if not (run_dir / "run.json").is_file():
        print(f"textdistill: no run to resume in {run_dir}: starting a new run")
        return None
    try:
        status = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status == "finished":
        raise RunDirError(
            f"the run in {str(run_dir)!r} already finished, there is nothing to resume (its student is in "
            f"{str(run_dir / 'model')!r}); to train again, pass --overwrite or choose another output_dir"
        )
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        print(
            f"textdistill: no usable checkpoint in {run_dir / 'checkpoints'}: starting the run over from step 0"
        )
        return None
    check_resume_config(ckpt, dump_yaml(cfg), mode)
    return ckpt


def reopened_run_json(run_dir: Path, resume_from: Checkpoint) -> dict[str, Any]:
    """run.json of an interrupted run, reopened for ``--resume``: last ending cleared, the resume recorded."""
    run_json: dict[str, Any] = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    for key in ("error", "ended", "signal", "checkpoint", "resume_command"):
        run_json.pop(key, None)
    run_json.update(status="running", environment=environment())
    run_json.setdefault("resumes", []).append(
        {"time": time.time(), "from_step": resume_from.step, "checkpoint": str(resume_from.path)}
    )
    return run_json


def record_interruption(
    distiller: Distiller,
    saver: CheckpointSaver | None,
    run_dir: Path,
    run_json: dict[str, Any],
    resume_hint: str,
    quiet: bool,
) -> TrainingInterrupted:
    """Record a signal stop in run.json and build the exception (with the resume command) to raise."""
    signum = distiller.stop_signal or 0
    st = distiller.state
    ckpt = saver.last_path if saver is not None else None
    if ckpt is not None:
        message = (
            f"stopped by {signal_name(signum)} after step {st.step} of {st.total_steps}; checkpoint: {ckpt}\n"
            f"resume with:\n  {resume_hint}"
        )
    else:
        message = (
            f"stopped by {signal_name(signum)} after step {st.step} of {st.total_steps}; no checkpoint was "
            "written (train.keep_checkpoints=0, or no step was done), so the run cannot be resumed"
        )
    run_json.update(
        status="interrupted",
        signal=signal_name(signum),
        ended=time.time(),
        state=st.to_dict(),
        checkpoint=str(ckpt) if ckpt else None,
        resume_command=resume_hint if ckpt else None,
    )
    if distiller.accelerator.is_main_process:
        write_json_atomic(run_dir / "run.json", run_json)
    if not quiet:
        print(f"textdistill: {message}", file=sys.stderr)
    return TrainingInterrupted(signum, message, str(ckpt) if ckpt else None)


def write_run_report(
    cfg: Config, run_dir: Path, *, quiet: bool = False, metric: str | None = None
) -> Path | None:
    """report.md / report.json / plots comparing the student with its teacher on the whole dev data, on the
    run's task metric; latency, throughput and layer CKA only with ``report_speed`` (they take most of a
    short run's time)."""
    from textdistill.evaluation.benchmark import run_benchmark

    d = cfg.data
    if d.format == "hf" or not d.dev:
        return None  # the report reads a local dev file
    out = run_dir / "report"
    run_benchmark(
        cfg.teacher.path,
        [run_dir / "model"],
        d.dev,
        out_dir=out,
        text_column=d.text_column,
        text_pair_column=d.text_pair_column,
        label_column=d.label_column,
        format=d.format,
        encoding=d.encoding,
        regression=d.regression,
        labels=d.labels,
        max_length=d.max_length,
        max_examples=d.max_eval_examples,
        threads=None,
        onnx=False,
        speed_examples=64,
        latency_examples=16,
        repeats=3,
        cka=cfg.report_speed,
        cka_rows=512,
        speed=cfg.report_speed,
        # the run's task metric (resolved into train.metric when the run started); "last" is no metric
        metric=metric or (cfg.train.metric if cfg.train.metric != "last" else None),
        seed=cfg.train.seed,
        entity_mode=d.entity_mode,
    )
    if not quiet:
        print(f"textdistill: report {out / 'report.md'}")
    return out
