"""The task-check steps of a run, as short hooks for ``run_training``.

Kept out of ``runner.py`` so the run's phases stay readable: each function is one step (the class names the
data resolved; measure vocabulary coverage; check the teacher against the majority baseline before training;
check the final model's predictions), and each prints its warning with numbers (see
:mod:`textdistill.data.task_checks`).
"""

from __future__ import annotations

from typing import Any

from textdistill.data.task_checks import (
    baseline_warning,
    coverage_warning,
    majority_baseline,
    single_class_warning,
    vocabulary_coverage,
    warn,
)
from textdistill.data.task_inference import TaskSpec

FINETUNE_ADVICE = (
    "Fine-tuning has not left the majority class: train longer (train.epochs), try train.lr=1e-4 or 2e-5, or "
    "give more training examples; distilling this model would teach the student the same constant answer."
)
TEACHER_ADVICE = (
    "A student distilled from it learns nothing useful: fine-tune the teacher longer or with another lr "
    "(textdistill finetune ... train.epochs=5), or check that it was trained on this task and label order."
)


def update_labels(spec: TaskSpec, label_map: Any) -> TaskSpec:
    """The task with the class names the data loader resolved (for messages and the report)."""
    from dataclasses import replace

    if label_map is None:
        return spec
    return replace(spec, labels=tuple(label_map.names), num_labels=len(label_map))


def check_coverage(examples: list[Any], tokenizer: Any, max_length: int, *, quiet: bool) -> dict[str, Any]:
    """Measure vocabulary coverage of the training text (stored in run.json), warn when it is poor."""
    coverage = vocabulary_coverage(examples, tokenizer, max_length)
    if not quiet:
        warn(coverage_warning(coverage, max_length))
    return coverage


def _ids(examples: list[Any], label_map: Any) -> list[int]:
    return [label_map.id(str(e.label)) for e in examples if e.label is not None and str(e.label) in label_map]


def check_model(
    who: str,
    metrics: dict[str, float],
    logits: Any,
    task: Any,
    spec: TaskSpec,
    advice: str,
    *,
    quiet: bool,
) -> list[str]:
    """Warn when a model predicts one class only, or does not beat the majority-class baseline.

    Args:
        who: how the model is named in the message (``the teacher``, ``the fine-tuned model``...).
        metrics: its dev metrics.
        logits: its ``(N, C)`` dev logits.
        task: the run's :class:`~textdistill.data.task.TaskData`.
        spec: the task.
        advice: what to do about a model at the baseline.
        quiet: collect the messages without printing them.

    Returns:
        The warnings (also stored in run.json).
    """
    names = list(task.label_map.names) if task.label_map is not None else None
    token = bool(getattr(task, "token_task", False))
    if token and getattr(logits, "ndim", 0) != 2:  # per-token logits not stacked as (tokens, C): no check
        return []
    messages = [
        single_class_warning(who, logits, regression=task.regression, class_names=names, advice=advice)
    ]
    # a one-class model is at the baseline by definition: one message is enough; entity F1 has no
    # majority-class baseline (always O scores 0)
    if messages[0] is None and not token:
        baseline = None
        if task.label_map is not None:
            train_ids, dev_ids = _ids(task.train, task.label_map), _ids(task.dev, task.label_map)
            baseline = majority_baseline(train_ids, dev_ids, spec.metric)
        messages.append(baseline_warning(who, metrics, spec.metric, baseline, names, advice))
    out = [m for m in messages if m]
    if not quiet:
        for m in out:
            warn(m)
    return out
