"""What a report's numbers mean: the agreement measure and the sampling noise of the metric and retention.

A retention of 98% on 100 dev examples is not a measurement of 98%: the teacher's own accuracy there has a
standard error of several points. :func:`noise_note` says how large it is, so readers do not compare
numbers that differ by less than the noise.
"""

from __future__ import annotations

import math
from typing import Any

SMALL_EVAL = 500
"""Below this many examples the noise note is a warning."""


def metric_standard_error(metric: str, value: float, n: int) -> float | None:
    """Approximate standard error of a metric measured on ``n`` examples.

    Proportion-like metrics (accuracy, F1, macro-F1, MCC) use the binomial ``sqrt(v (1 - v) / n)`` of the
    value clipped to [0, 1] (an approximation for F1 and MCC); correlations use ``(1 - r^2) / sqrt(n - 1)``.
    None for other metrics or ``n < 2``.
    """
    if n < 2 or value is None or not math.isfinite(value):
        return None
    if metric in ("pearson", "spearman"):
        return (1.0 - min(1.0, value * value)) / math.sqrt(n - 1)
    if metric in ("accuracy", "f1", "macro_f1", "mcc"):
        p = min(1.0, max(0.0, abs(value)))
        return math.sqrt(max(p * (1.0 - p), 0.25 / n) / n)
    return None


def noise_note(results: dict[str, Any], metric: str) -> str | None:
    """One sentence on the sampling noise of the teacher's metric and of retention (None when unknown)."""
    teacher = next((m.get("name") for m in results.get("models") or [] if m.get("role") == "teacher"), None)
    entry = next((e for e in results.get("entries") or [] if e.get("model") == teacher), None)
    if entry is None:
        return None
    metrics = entry.get("metrics") or {}
    value, n = metrics.get(metric), int(metrics.get("n") or 0)
    se = metric_standard_error(metric, value, n) if value is not None else None
    if se is None:
        return None
    points = 100.0 * se / abs(value) if value else None
    text = (
        f"Noise: on {n} examples the teacher's {metric} ({value:.4f}) has a standard error of about "
        f"{se:.4f}"
        + (
            f", so retention is uncertain by about ±{points:.1f} points (1 s.e.)"
            if points is not None
            else ""
        )
        + "; differences smaller than twice that are not measured."
    )
    if n < SMALL_EVAL:
        text = f"**Warning: only {n} evaluation examples.** " + text
    return text


def agreement_header(results: dict[str, Any]) -> str:
    """The agreement column's header: what it measures (argmax match, or Pearson r for regression)."""
    task = results.get("task") or {}
    return "Pearson r w/ teacher" if task.get("regression") else "Same class as teacher"


def agreement_note(results: dict[str, Any]) -> str | None:
    """A sentence saying what the agreement column measures (from the results' task, when known)."""
    measure = (results.get("task") or {}).get("agreement")
    return f"Agreement: {measure}." if measure else None
