"""The Python API in three calls: ``finetune``, ``distill``, ``evaluate``.

Example:
    >>> import textdistill as td
    >>> teacher = td.finetune("bert-dir", train="train.tsv", dev="dev.tsv", output_dir="runs/teacher")
    >>> student = td.distill(teacher.model_dir, train="train.tsv", dev="dev.tsv", output_dir="runs/student",
    ...                      overrides=["student.type=shrink", "student.num_layers=4", "student.hidden_size=192"])
    >>> td.evaluate(student.model_dir, "dev.tsv")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textdistill.config.loader import read_yaml, resolve_config
from textdistill.config.schema import Config
from textdistill.errors import ConfigError
from textdistill.training.runner import RunResult, run_training


def _config(config: str | Path | dict | None, overrides: list[str] | None, extra: dict[str, Any]) -> Config:
    """YAML file or mapping < keyword arguments < ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if isinstance(config, str | Path):
        data = read_yaml(config)
    elif isinstance(config, dict):
        data = config  # resolve_config copies it
    elif config is not None:
        raise ConfigError(f"config must be a YAML path or a mapping, got a {type(config).__name__}")
    # Keyword arguments are set as given (paths are never parsed as YAML; Path objects become strings).
    values = {k: str(v) if isinstance(v, Path) else v for k, v in extra.items()}
    return resolve_config(data, list(overrides or []), values=values)


def finetune(
    model: str | Path,
    *,
    train: str | Path | None = None,
    dev: str | Path | None = None,
    output_dir: str | Path = "runs/teacher",
    config: str | Path | dict | None = None,
    overrides: list[str] | None = None,
) -> RunResult:
    """Fine-tune ``model`` (a local dir or hub id) on labelled data with hard labels; returns the run."""
    cfg = _config(
        config,
        overrides,
        {
            "student.type": "pretrained",
            "student.path": model,
            "data.train": train,
            "data.dev": dev,
            "output_dir": output_dir,
        },
    )
    return run_training(cfg, "finetune")


def distill(
    teacher: str | Path,
    *,
    train: str | Path | None = None,
    dev: str | Path | None = None,
    output_dir: str | Path = "runs/student",
    config: str | Path | dict | None = None,
    overrides: list[str] | None = None,
) -> RunResult:
    """Distil ``teacher`` into the configured student (default objective: Hinton KD); returns the run."""
    cfg = _config(
        config,
        overrides,
        {"teacher.path": teacher, "data.train": train, "data.dev": dev, "output_dir": output_dir},
    )
    return run_training(cfg, "distill")


def evaluate(
    model_dir: str | Path, data: str | Path, *, overrides: list[str] | None = None
) -> dict[str, float]:
    """Evaluate a saved model on a labelled file; returns the task metrics."""
    from textdistill.evaluation.evaluate import evaluate_dir

    return evaluate_dir(model_dir, data, overrides=overrides)
