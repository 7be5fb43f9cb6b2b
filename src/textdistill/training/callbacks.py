"""Callbacks that observe the loop: metrics file, progress bar, best-model saving."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from textdistill.training.distiller import Callback, Distiller


def json_safe(value: Any) -> Any:
    """``value`` with every NaN/Inf float replaced by None: ``json.dumps`` would write ``NaN``/``Infinity``,
    which is not JSON (strict parsers, ``jq`` and browsers reject the line)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk (a crash loses at most the line being written).

    Non-finite numbers (a NaN loss of a skipped step) are written as ``null``.
    """
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(json_safe(record), sort_keys=False, allow_nan=False) + "\n")
        f.flush()


class MetricsLogger(Callback):
    """Writes ``metrics.jsonl`` (a line every ``log_every`` steps and one per evaluation) and, when
    ``tensorboard`` is installed and ``tensorboard=True``, the same scalars to TensorBoard."""

    def __init__(self, run_dir: Path, log_every: int, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.log_every = max(1, log_every)
        self.writer = None
        self.tensorboard_dir = Path(run_dir) / "tensorboard"
        self.tensorboard = tensorboard
        self._sums: dict[str, float] = {}
        self._count = 0

    def on_train_begin(self, distiller: Distiller) -> None:
        # Opened here, after a resume restored the state: TensorBoard's ``purge_step`` writes a marker that
        # makes TensorBoard drop every event at or after that step from the earlier event files, so the
        # steps a resumed run replays are shown once, as in metrics.jsonl.
        if not self.tensorboard or self.writer is not None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed: metrics.jsonl is the record
            return
        step = distiller.state.step
        self.writer = SummaryWriter(str(self.tensorboard_dir), purge_step=step + 1 if step else None)

    def on_step_end(self, distiller: Distiller, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            if k.startswith("loss") or k == "grad_norm":
                self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._count += 1
        if logs["step"] % self.log_every == 0 or logs["step"] == distiller.state.total_steps:
            record = {"step": int(logs["step"]), "epoch": int(logs["epoch"])}
            record.update({k: v / self._count for k, v in self._sums.items()})
            record["lr"] = logs["lr"]
            record["examples_per_s"] = round(logs.get("examples_per_s", 0.0), 2)
            record["time"] = round(time.time(), 3)
            append_jsonl(self.path, record)
            if self.writer is not None:
                for k, v in record.items():
                    if k not in ("step", "time") and isinstance(v, int | float) and math.isfinite(v):
                        self.writer.add_scalar(f"train/{k}", v, record["step"])
            self._sums, self._count = {}, 0

    def state_dict(self) -> dict[str, Any]:
        """The partial logging window, so a resumed run writes the same averaged lines."""
        return {"sums": dict(self._sums), "count": self._count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sums = {k: float(v) for k, v in state.get("sums", {}).items()}
        self._count = int(state.get("count", 0))

    def on_evaluate(self, distiller: Distiller, metrics: dict[str, float], improved: bool) -> None:
        record = {"step": distiller.state.step, "epoch": distiller.state.epoch}
        record.update({f"eval/{k}": v for k, v in metrics.items()})
        record["eval/best"] = improved
        append_jsonl(self.path, record)
        if self.writer is not None:
            for k, v in metrics.items():
                if isinstance(v, int | float) and math.isfinite(v):
                    self.writer.add_scalar(f"eval/{k}", v, distiller.state.step)

    def on_train_end(self, distiller: Distiller) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressBar(Callback):
    """A tqdm bar over optimizer steps showing loss, examples/s and ETA."""

    def __init__(self, desc: str = "train", enabled: bool = True):
        self.desc = desc
        self.enabled = enabled
        self.bar = None

    def on_train_begin(self, distiller: Distiller) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        st = distiller.state
        self.bar = tqdm(
            total=st.total_steps, initial=st.step, desc=self.desc, unit="step", dynamic_ncols=True
        )

    def on_step_end(self, distiller: Distiller, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", ex_s=f"{logs.get('examples_per_s', 0):.0f}")

    def on_evaluate(self, distiller: Distiller, metrics: dict[str, float], improved: bool) -> None:
        if self.bar is not None:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            self.bar.write(f"step {distiller.state.step}: {shown}{'  (best)' if improved else ''}")

    def on_train_end(self, distiller: Distiller) -> None:
        if self.bar is not None:
            self.bar.close()


class BestModelSaver(Callback):
    """Saves the student whenever the selection metric improves (atomically, see ``models.io.save_model``).

    Args:
        save_fn: ``(student, metrics) -> None`` writing the model (and its eval results) to the run dir.
    """

    def __init__(self, save_fn: Callable[[nn.Module, dict[str, float]], None]):
        self.save_fn = save_fn

    def on_evaluate(self, distiller: Distiller, metrics: dict[str, float], improved: bool) -> None:
        if improved and distiller.accelerator.is_main_process:
            self.save_fn(distiller.unwrapped_student(), metrics)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temporary file, fsync and rename (never a half-written file)."""
    write_text_atomic(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file, fsync and rename (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()  # never leave the temporary file behind (a full disk, a signal)
        raise
