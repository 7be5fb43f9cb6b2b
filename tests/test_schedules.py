"""Schedules: values over training progress and config parsing errors."""

from __future__ import annotations

import math

import pytest

from textdistill.errors import ConfigError
from textdistill.training.schedules import Schedule, parse_schedule, schedule_problems, training_progress


def test_number_is_constant() -> None:
    s = parse_schedule(3)
    assert s == Schedule("constant", 3.0, 3.0)
    assert [s.value_at(p) for p in (0.0, 0.3, 1.0)] == [3.0, 3.0, 3.0]


def test_numeric_string_is_read_as_number() -> None:
    # YAML gives "5e-5" (no dot) as a string.
    assert parse_schedule("5e-5").value_at(0.5) == pytest.approx(5e-5)


def test_linear_values() -> None:
    s = parse_schedule({"schedule": "linear", "start": 5, "end": 2})
    assert s.value_at(0.0) == 5.0
    assert s.value_at(0.25) == pytest.approx(4.25)
    assert s.value_at(0.5) == pytest.approx(3.5)
    assert s.value_at(1.0) == 2.0


def test_cosine_values() -> None:
    s = parse_schedule({"schedule": "cosine", "start": 8, "end": 0})
    assert s.value_at(0.0) == pytest.approx(8.0)
    assert s.value_at(0.5) == pytest.approx(4.0)
    assert s.value_at(1.0) == pytest.approx(0.0, abs=1e-12)
    # Independent: half a cosine period, 8 * (1 + cos(pi/4)) / 2.
    assert s.value_at(0.25) == pytest.approx(4.0 * (1.0 + math.sqrt(0.5)))
    # Flat near both ends (derivative 0), unlike linear.
    assert 8.0 - s.value_at(0.01) < 8.0 * 0.01


def test_progress_is_clamped() -> None:
    s = parse_schedule({"schedule": "linear", "start": 1.0, "end": 0.0})
    assert s.value_at(-0.5) == 1.0
    assert s.value_at(1.7) == 0.0


def test_training_progress_spans_first_to_last_step() -> None:
    assert [training_progress(step, 5) for step in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert training_progress(0, 1) == 0.0  # a one-step run: no division by zero
    last = parse_schedule({"schedule": "linear", "start": 5.0, "end": 2.0})
    assert last.value_at(training_progress(9, 10)) == 2.0  # the last step trains with ``end``


def test_constant_mapping_and_roundtrip() -> None:
    assert parse_schedule({"schedule": "constant", "start": 0.5}).value_at(0.9) == 0.5
    assert parse_schedule({"start": 0.5}).value_at(0.9) == 0.5
    lin = parse_schedule({"schedule": "linear", "start": 1, "end": 3})
    assert parse_schedule(lin.to_config()) == lin
    assert parse_schedule(lin) is lin
    assert Schedule.constant(2).to_config() == 2.0
    assert lin.bounds() == (1.0, 3.0)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (
            {"schedule": "lin", "start": 1, "end": 0},
            "'lin' is unknown; valid schedules: constant, linear, cosine",
        ),
        ({"schedule": "linear", "start": 1}, "w.end: missing"),
        ({"schedule": "linear", "end": 1}, "w.start: missing"),
        ({"schedule": "cosine", "start": 1, "end": "x"}, "w.end: expected a finite number, got 'x'"),
        ({"schedule": "linear", "start": 1, "end": 0, "stop": 3}, "w.stop: unknown schedule key"),
        ({"schedule": "constant", "start": 1, "end": 2}, "a constant schedule has no separate end"),
        ({"start": 1, "end": 2}, "w.schedule: missing"),
        (True, "expected a finite number or a schedule mapping"),
        (float("nan"), "expected a finite number"),
        ([1, 2], "got [1, 2]"),
    ],
)
def test_bad_values_raise_config_error(value: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_schedule(value, key="w")
    assert fragment in str(err.value)


def test_all_problems_reported_at_once() -> None:
    problems = schedule_problems({"schedule": "wavy", "end": "high", "foo": 1}, "objective.0.weight")
    assert len(problems) == 3
    assert any("objective.0.weight.foo" in p for p in problems)
    assert any("objective.0.weight.schedule" in p and "'wavy'" in p for p in problems)
    assert any("objective.0.weight.start: missing" in p for p in problems)


def test_unknown_kind_in_constructor() -> None:
    with pytest.raises(ConfigError, match="valid schedules"):
        Schedule("step", 1.0, 0.0)
