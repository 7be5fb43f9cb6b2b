"""The run directory of a causal-LM run: run.json, config.yaml, checkpoints, ``--resume``.

The classifier path's machinery, reused as is: :func:`~textdistill.training.run_dir.find_resume_point`
(refuses a finished run and a changed config), :class:`~textdistill.training.checkpoint.CheckpointSaver`
(student, optimizer, scheduler, TrainState, callback states and every RNG, written atomically),
:func:`~textdistill.training.checkpoint.restore_checkpoint`, ``metrics.jsonl`` cut back on resume, the
signal handling of :func:`~textdistill.training.signals.graceful_stop` and run.json's status. The run lock
is taken by :func:`~textdistill.training.runner.run_training` (``run_guard``) around the whole run.

A resumed LM run ends with exactly the weights of an uninterrupted one: the batches of an epoch come from a
seeded shuffle (``lm_runner._loader``) that skips the batches already done, the teacher's outputs come from
the same store (or the same live teacher), and the checkpoint restores the RNG states last.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textdistill.config.loader import dump_yaml
from textdistill.config.schema import Config
from textdistill.training.callbacks import Callback, MetricsLogger, write_json_atomic, write_text_atomic
from textdistill.training.checkpoint import Checkpoint, CheckpointSaver, restore_checkpoint
from textdistill.training.distiller import Distiller, TrainState
from textdistill.training.run_dir import (
    environment,
    find_resume_point,
    package_version,
    prepare_run_dir,
    record_interruption,
    reopened_run_json,
    resume_command,
)
from textdistill.training.signals import graceful_stop


@dataclass
class LMRunDir:
    """An open LM run directory (see the module docstring)."""

    cfg: Config
    mode: str
    quiet: bool
    run_dir: Path
    run_json: dict[str, Any]
    config_yaml: str
    resume_from: Checkpoint | None
    saver: CheckpointSaver | None = field(default=None, repr=False)

    @property
    def resume_hint(self) -> str:
        return resume_command(self.run_dir, self.mode)

    def record(self, **fields: Any) -> None:
        """Update run.json (written atomically)."""
        self.run_json.update(fields)
        write_json_atomic(self.run_dir / "run.json", self.run_json)

    def callbacks(self) -> list[Callback]:
        """``metrics.jsonl`` and, unless ``train.keep_checkpoints=0``, the checkpoint saver (in this order:
        the positions name the callbacks' states inside a checkpoint)."""
        t = self.cfg.train
        cbs: list[Callback] = [MetricsLogger(self.run_dir, t.log_every, tensorboard=False)]
        if t.keep_checkpoints > 0:
            self.saver = CheckpointSaver(
                self.run_dir,
                save_every=t.save_every,
                keep=t.keep_checkpoints,
                config_yaml=self.config_yaml,
                meta={"mode": self.mode, "task": "causal_lm"},  # + precision in attach()
                append_only=["metrics.jsonl"],
                resume_hint=self.resume_hint,
            )
            cbs.append(self.saver)
        return cbs

    def attach(self, distiller: Distiller) -> None:
        """Record the loop's precision in the checkpoints and continue from the resume checkpoint, if any
        (call last before ``fit``: it restores the RNG states)."""
        if self.saver is not None:
            self.saver.meta["precision"] = distiller.precision
        ckpt = self.resume_from
        if ckpt is None:
            return
        saved = ckpt.trainer_state().get("meta", {}).get("precision")
        if saved not in (None, distiller.precision) and not self.quiet:
            print(
                f"textdistill: warning: the checkpoint was trained in {saved}, this run uses "
                f"{distiller.precision}: the result will not be bit-exact"
            )
        restore_checkpoint(distiller, ckpt)
        if self.saver is not None:
            self.saver.resumed_from(ckpt)
        if not self.quiet:
            print(f"textdistill: resuming from {ckpt.path} (step {ckpt.step})")

    def fit(self, distiller: Distiller) -> tuple[TrainState, float]:
        """:meth:`attach`, then ``distiller.fit()`` and its seconds; a failure or a signal stop is recorded in
        run.json with the resume command."""
        self.attach(distiller)
        t0 = time.perf_counter()
        try:
            with graceful_stop(distiller.request_stop, quiet=self.quiet, resume_hint=self.resume_hint):
                state = distiller.fit()
        except BaseException as e:
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            fields: dict[str, Any] = {
                "status": status,
                "error": f"{type(e).__name__}: {e}",
                "ended": time.time(),
            }
            if self.saver is not None and self.saver.last_path is not None:
                fields.update(checkpoint=str(self.saver.last_path), resume_command=self.resume_hint)
            self.record(**fields)
            raise
        if distiller.stop_signal is not None:
            raise record_interruption(
                distiller, self.saver, self.run_dir, self.run_json, self.resume_hint, self.quiet
            )
        return state, time.perf_counter() - t0

    def finish(self, details: dict[str, Any]) -> None:
        """results.json and run.json ``finished`` (a later ``--resume`` is refused)."""
        write_json_atomic(self.run_dir / "results.json", json.loads(json.dumps(details, default=str)))
        self.record(status="finished", ended=time.time(), steps=details.get("steps"))


def open_lm_run(cfg: Config, mode: str, *, resume: bool = False, quiet: bool = False) -> LMRunDir:
    """Create the run directory, or reopen it to continue from its newest good checkpoint (``resume``).

    A resume that finds no run or no usable checkpoint starts from step 0 (an earlier student is moved
    aside, never deleted). Writes run.json (``status: running``) and config.yaml.

    Raises:
        RunDirError: the run in ``cfg.output_dir`` already finished.
        ConfigError: ``resume`` with a config that differs from the checkpoint's in a key that changes training.
    """
    resume_from = find_resume_point(cfg, mode) if resume else None
    run_dir = Path(cfg.output_dir)
    if resume_from is not None:
        run_json = reopened_run_json(run_dir, resume_from)
    else:
        run_dir = prepare_run_dir(cfg, starting_over=resume)
        run_json = {
            "status": "running",
            "mode": mode,
            "task": "causal_lm",
            "started": time.time(),
            "textdistill_version": package_version(),
            "environment": environment(),
        }
    run = LMRunDir(cfg, mode, quiet, run_dir, run_json, dump_yaml(cfg), resume_from)
    run.record()
    write_text_atomic(run_dir / "config.yaml", run.config_yaml)
    return run
