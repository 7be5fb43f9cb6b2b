"""Whole-config validation, before any weights load.

Checks values, files, the teacher's config (config.json only), the student options, and the objective's
terms and layer maps against the real layer counts — and reports every problem at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textdistill.config.schema import Config, LossTermConfig
from textdistill.errors import ConfigError, TextDistillError, shorten
from textdistill.models.outputs import ModelInfo

if TYPE_CHECKING:
    import torch

MODES = ("distill", "finetune")
RUN_LOCK_NAME = ".textdistill.lock"
"""File name of the run directory lock (training/run_lock.py); named here so validation can ignore it."""


@dataclass
class Validated:
    """What validation learned: the models' static info (None where it could not be read)."""

    teacher_info: ModelInfo | None
    student_info: ModelInfo | None


def _file_problem(key: str, path: str | None, fmt: str) -> str | None:
    if path is None or fmt == "hf":
        return None
    if not Path(path).exists():
        return f"{key}: file {shorten(path)} does not exist; pass the path of a TSV/CSV/JSONL file"
    if Path(path).is_dir():
        return f"{key}: {shorten(path)} is a directory; pass the path of a TSV/CSV/JSONL file"
    return None


def for_mode(cfg: Config, mode: str) -> Config:
    """``cfg`` as ``mode`` runs it: fine-tuning with the default objective (``kd_kl``, which is for
    distillation and needs a teacher) trains on the labels with ``hard_ce`` instead.

    ``run_training`` applies the same rule, so ``textdistill config validate --mode finetune`` judges the
    config the run would use.
    """
    if mode == "finetune" and [t.name for t in cfg.objective] == ["kd_kl"]:
        return replace(cfg, objective=[LossTermConfig(name="hard_ce")])
    return cfg


def run_device() -> torch.device:
    """The device a run trains on (as ``run_training`` chooses it: the GPU when there is one)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_dir_problem(output_dir: str, overwrite: bool) -> str | None:
    """A problem with the output directory (it holds a run and overwrite is off, or is not a run dir)."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        return f"output_dir: {output_dir!r} is a file; choose a directory path"
    try:
        # the run lock (training/run_lock.py) of a run starting in an empty directory does not count
        entries = [e for e in out.iterdir() if e.name != RUN_LOCK_NAME] if out.is_dir() else []
    except OSError as e:
        return (
            f"output_dir: {shorten(output_dir)} cannot be read ({e.strerror or e}); choose another directory"
        )
    if entries:
        if not (out / "run.json").exists():
            return (
                f"output_dir: {output_dir!r} is not empty and is not a textdistill run directory; "
                "choose a new or empty directory"
            )
        if not overwrite:
            return f"output_dir: {output_dir!r} already holds a run; pass --overwrite to replace it or choose another"
    return None


def non_finite_problems(value: object, key: str = "") -> list[str]:
    """One problem per NaN or infinite number anywhere in a config (dataclasses, lists, mappings).

    YAML reads ``.inf`` and ``.nan`` as floats; an infinite ``train.lr`` or ``max_grad_norm`` would apply an
    infinite update at step 1 and poison every later checkpoint, so no setting may be non-finite.
    """
    if isinstance(value, float):
        if math.isfinite(value):
            return []
        return [f"{key}: must be a finite number, got {value}; set a finite value"]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    elif isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list | tuple):
        items = list(enumerate(value))
    else:
        return []
    out: list[str] = []
    for k, v in items:
        out.extend(non_finite_problems(v, f"{key}.{k}" if key else str(k)))
    return out


def writable_problem(key: str, path: str | Path) -> str | None:
    """A problem when ``path`` (or, if it does not exist yet, the nearest existing parent that would hold
    it) cannot be written by this process: owned by another user, or on a read-only file system."""
    import os

    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        return None  # a file in the way is reported by the check of that key
    if os.access(p, os.W_OK | os.X_OK):
        return None
    what = "is on a read-only file system" if _read_only(p) else "is not writable by this user"
    return (
        f"{key}: {shorten(str(path))} cannot be written ({str(p)!r} {what}); choose a directory you can "
        "write, or fix its owner or permissions"
    )


def _read_only(p: Path) -> bool:
    import os

    try:
        return bool(os.statvfs(p).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def dir_problems(cfg: Config, mode: str) -> list[str]:
    """Output and teacher-cache directories that cannot be written (checked before anything is written)."""
    problems = []
    p = writable_problem("output_dir", cfg.output_dir)
    if p:
        problems.append(p)
    if mode == "distill" and cfg.teacher.cache is not False and cfg.teacher.cache_dir:
        p = writable_problem("teacher.cache_dir", cfg.teacher.cache_dir)
        if p:
            problems.append(p)
    return problems


def train_value_problems(cfg: Config) -> list[str]:
    """Problems with the training values and ``data.max_length``; shared by every mode, general included."""
    from textdistill.training.precision import resolve_precision

    problems: list[str] = non_finite_problems(cfg)
    t, d = cfg.train, cfg.data
    try:
        # Against the device the run will use: fp16 on a CPU must fail here, not after the run dir exists.
        resolve_precision(t.precision, run_device())
    except ConfigError as e:
        problems.extend(e.problems)
    for key, value in (("train.lr", t.lr), ("train.epochs", t.epochs)):
        if value is not None and not value > 0:  # lr None: by student kind (task_inference.default_lr)
            problems.append(f"{key}: must be > 0, got {value}")
    for key, value in (("train.batch_size", t.batch_size), ("train.eval_batch_size", t.eval_batch_size)):
        if value < 1:
            problems.append(f"{key}: must be >= 1, got {value}")
    if t.grad_accum < 1 or t.grad_accum > max(1, t.batch_size):
        problems.append(
            f"train.grad_accum: must be between 1 and train.batch_size ({t.batch_size}), got {t.grad_accum}"
        )
    if t.max_steps is not None and t.max_steps < 1:
        problems.append(f"train.max_steps: must be >= 1 or null, got {t.max_steps}")
    if t.lr_schedule not in ("linear", "cosine", "constant"):
        problems.append(f"train.lr_schedule: {shorten(t.lr_schedule)} is not one of linear, cosine, constant")
    if not 0 <= t.warmup_ratio < 1:
        problems.append(f"train.warmup_ratio: must be in [0, 1), got {t.warmup_ratio}")
    for key, value in (("train.eval_every", t.eval_every), ("train.save_every", t.save_every)):
        if value is not None and value < 1:
            problems.append(f"{key}: must be >= 1 or null, got {value}")
    if d.max_length < 8:
        problems.append(f"data.max_length: must be >= 8, got {d.max_length}")
    return problems


def _token(d: Any) -> bool:
    from textdistill.data.token_task import is_token_task

    return is_token_task(d)


def _metric_names(d: Any) -> tuple[str, ...]:
    """The metrics an evaluation of this data reports (any of them may select the best model); either
    sentence kind's while ``data.regression`` is not inferred yet."""
    from textdistill.evaluation.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

    if _token(d):
        from textdistill.evaluation.seq_metrics import TOKEN_METRICS

        return TOKEN_METRICS
    if d.regression is None:
        return (*CLASSIFICATION_METRICS, *REGRESSION_METRICS)
    return REGRESSION_METRICS if d.regression else CLASSIFICATION_METRICS


def _token_problems(d: Any) -> list[str]:
    from textdistill.data.token_task import token_config_problems

    return token_config_problems(d)


def _metric_problems(cfg: Config) -> list[str]:
    """``train.metric`` must be a metric evaluation reports for the task's kind, or ``last``."""
    problems: list[str] = []
    t, d = cfg.train, cfg.data
    if t.metric is not None:
        # Only what evaluation reports can select the best model: any other name would never "improve", no
        # model would be saved, and the run would fail at its very end.
        # "last": keep the model of the last evaluation (see TrainConfig.metric)
        valid = (*_metric_names(d), "last")
        if t.metric not in valid:
            close = difflib.get_close_matches(t.metric, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            if _token(d):
                task = "token-classification"
            else:
                task = "regression" if d.regression else "classification" if d.regression is False else "task"
            problems.append(
                f"train.metric: {shorten(t.metric)} is not a {task} metric{hint} (choose one of {', '.join(valid)}, "
                "or leave it unset)"
            )
    return problems


def validate_config(cfg: Config, mode: str = "distill", *, num_labels: int | None = None) -> Validated:
    """Check ``cfg`` for ``mode`` (distill | finetune) without loading weights.

    Args:
        cfg: the resolved config.
        mode: ``distill`` needs a teacher; ``finetune`` trains ``student`` on hard labels with no teacher.
        num_labels: the number of classes if already known (else the teacher's, or 2 for the check).

    Returns:
        The teacher's and student's static info.

    Raises:
        ConfigError: every problem found.
    """
    from textdistill.losses.objective import validate_objective
    from textdistill.models.students import student_info
    from textdistill.models.teacher import model_info

    problems: list[str] = []
    d = cfg.data
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    # -- values ---------------------------------------------------------------------------------------------
    problems.extend(train_value_problems(cfg))
    problems.extend(_metric_problems(cfg))
    if d.format not in ("auto", "tsv", "csv", "jsonl", "conll", "hf"):
        problems.append(f"data.format: {shorten(d.format)} is not one of auto, tsv, csv, jsonl, conll, hf")
    problems.extend(_token_problems(d))
    if cfg.teacher.cache_dtype not in ("fp16", "bf16", "fp32"):
        problems.append(
            f"teacher.cache_dtype: {shorten(cfg.teacher.cache_dtype)} is not one of fp16, bf16, fp32"
        )
    # -- files ------------------------------------------------------------------------------------------------
    if not d.train:
        problems.append("data.train: no training data given; set data.train=PATH (TSV/CSV/JSONL)")
    for key in ("train", "dev", "test"):
        p = _file_problem(f"data.{key}", getattr(d, key), d.format)
        if p:
            problems.append(p)
    p = run_dir_problem(cfg.output_dir, cfg.overwrite)
    if p:
        problems.append(p)
    problems.extend(dir_problems(cfg, mode))
    # -- models (configs only) ------------------------------------------------------------------------------
    teacher_info = None
    if mode == "distill":
        if not cfg.teacher.path:
            problems.append("teacher.path: no teacher given; set teacher.path=DIR (a fine-tuned classifier)")
        else:
            try:
                teacher_info = model_info(
                    cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code, require_classifier=True
                )
            except TextDistillError as e:
                problems.append(f"teacher.path: {e}")
    labels = (
        num_labels
        or (len(d.labels) if d.labels else None)
        or (teacher_info.num_labels if teacher_info else 2)
    )
    if d.regression:
        labels = 1
    s_info = None
    if mode == "finetune":
        if cfg.student.type != "pretrained" or not cfg.student.path:
            problems.append(
                "student: fine-tuning trains a pretrained model; set student.type=pretrained and student.path=DIR"
            )
        else:
            try:
                s_info = model_info(cfg.student.path, num_labels=labels)
            except TextDistillError as e:
                problems.append(f"student.path: {e}")
    elif teacher_info is not None:
        try:  # every problem with the student options at once
            s_info = student_info(cfg.student, teacher_info, labels)
        except TextDistillError as e:
            problems.extend(getattr(e, "problems", [str(e)]))
    if s_info is not None and (mode == "finetune" or teacher_info is not None):
        problems.extend(validate_objective(cfg.objective, teacher_info, s_info))
    if problems:
        raise ConfigError(problems)
    return Validated(teacher_info=teacher_info, student_info=s_info)
