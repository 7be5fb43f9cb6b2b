"""Values that change over training: loss weights and loss parameters such as the KD temperature.

A config value is either a plain number (constant) or a mapping::

    weight: {schedule: linear, start: 5, end: 2}     # 5 at the first step, 2 at the last
    temperature: {schedule: cosine, start: 8, end: 1}
    weight: {schedule: constant, start: 0.5}          # same as weight: 0.5

Progress is the fraction of training done, ``0.0`` at the first optimizer step and ``1.0`` at the last
(:func:`training_progress`, which the distiller uses); values outside ``[0, 1]`` are clamped so a
resumed or extended run never extrapolates past ``end``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from textdistill.errors import ConfigError

SCHEDULE_KINDS = ("constant", "linear", "cosine")
_KEYS = ("schedule", "start", "end")


def training_progress(step: int, total_steps: int) -> float:
    """Progress of optimizer step ``step`` (0-based) of ``total_steps``: ``step / max(1, total_steps - 1)``.

    0 at the first step and exactly 1 at the last, so a schedule's ``end`` value is the one the last step
    trains with (``step / total_steps`` would never reach it).
    """
    return step / max(1, total_steps - 1)


@dataclass(frozen=True)
class Schedule:
    """A scalar that moves from ``start`` to ``end`` over training progress ``p`` in ``[0, 1]``.

    * ``constant``: ``start`` for every ``p`` (``end`` equals ``start``).
    * ``linear``: ``start + (end - start) * p``.
    * ``cosine``: ``end + (start - end) * (1 + cos(pi * p)) / 2`` (half a cosine period: flat at both ends).

    Attributes:
        kind: ``constant`` | ``linear`` | ``cosine``.
        start: value at progress 0.
        end: value at progress 1.
    """

    kind: str
    start: float
    end: float

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ConfigError(
                f"schedule {self.kind!r} is unknown; valid schedules: {', '.join(SCHEDULE_KINDS)}"
            )

    @classmethod
    def constant(cls, value: float) -> Schedule:
        """A schedule that is ``value`` throughout."""
        return cls("constant", float(value), float(value))

    def value_at(self, progress: float) -> float:
        """The value at training progress ``progress`` (clamped to ``[0, 1]``)."""
        p = min(max(float(progress), 0.0), 1.0)
        if self.kind == "constant":
            return self.start
        if self.kind == "linear":
            return self.start + (self.end - self.start) * p
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * p))

    def bounds(self) -> tuple[float, float]:
        """``(min, max)`` over the whole schedule (both schedules are monotone between the endpoints)."""
        return min(self.start, self.end), max(self.start, self.end)

    def to_config(self) -> float | dict[str, Any]:
        """The config form: a number for constants, else the mapping ``parse_schedule`` reads."""
        if self.kind == "constant":
            return self.start
        return {"schedule": self.kind, "start": self.start, "end": self.end}


def _number(value: Any) -> float | None:
    """``value`` as a float, or None when it is not a number (booleans are not numbers here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        # YAML reads ``5e-5`` (no dot) as a string.
        try:
            out = float(value)
        except ValueError:
            return None
        return out if math.isfinite(out) else None
    return None


def schedule_problems(value: Any, key: str = "value") -> list[str]:
    """Every problem with a schedule config value (empty when ``parse_schedule`` would accept it).

    Args:
        value: a number or a mapping ``{schedule: ..., start: ..., end: ...}``.
        key: the config key, used in the messages (e.g. ``objective.0.weight``).
    """
    if isinstance(value, Schedule):
        return []
    if not isinstance(value, dict):
        if _number(value) is None:
            return [
                f"{key}: expected a finite number or a schedule mapping "
                f"{{schedule: linear, start: 1.0, end: 0.0}}, got {value!r}"
            ]
        return []
    problems = []
    for k in value:
        if k not in _KEYS:
            problems.append(f"{key}.{k}: unknown schedule key; valid keys: {', '.join(_KEYS)}")
    kind = value.get("schedule", "constant" if "end" not in value else None)
    if kind is None:
        problems.append(f"{key}.schedule: missing; choose one of {', '.join(SCHEDULE_KINDS)}")
    elif kind not in SCHEDULE_KINDS:
        problems.append(f"{key}.schedule: {kind!r} is unknown; valid schedules: {', '.join(SCHEDULE_KINDS)}")
    if "start" not in value:
        problems.append(f"{key}.start: missing; give the value at the start of training")
    elif _number(value["start"]) is None:
        problems.append(f"{key}.start: expected a finite number, got {value['start']!r}")
    if kind in ("linear", "cosine"):
        if "end" not in value:
            problems.append(f"{key}.end: missing; a {kind} schedule needs the value at the end of training")
        elif _number(value["end"]) is None:
            problems.append(f"{key}.end: expected a finite number, got {value['end']!r}")
    elif kind == "constant" and "end" in value:
        start, end = _number(value.get("start")), _number(value["end"])
        if end is None or (start is not None and end != start):
            problems.append(
                f"{key}.end: a constant schedule has no separate end (got start={value.get('start')!r}, "
                f"end={value['end']!r}); drop 'end' or use schedule: linear"
            )
    return problems


def parse_schedule(value: Any, key: str = "value") -> Schedule:
    """Read a number or a schedule mapping into a :class:`Schedule`.

    Args:
        value: ``3.0`` (constant), ``{schedule: linear, start: 5, end: 2}``, ``{schedule: cosine, ...}``,
            ``{schedule: constant, start: 1}`` or an existing :class:`Schedule` (returned as is).
        key: the config key, used in error messages.

    Raises:
        ConfigError: listing every problem (unknown schedule, unknown keys, missing or non-numeric values).
    """
    if isinstance(value, Schedule):
        return value
    problems = schedule_problems(value, key)
    if problems:
        raise ConfigError(problems)
    if not isinstance(value, dict):
        return Schedule.constant(_number(value))  # type: ignore[arg-type]
    start = _number(value["start"])
    kind = value.get("schedule", "constant")
    end = start if kind == "constant" else _number(value["end"])
    return Schedule(kind, start, end)  # type: ignore[arg-type]
