"""User-facing exception types.

Every error a user can trigger with bad input is one of these: the CLI prints the message (no traceback)
and exits non-zero. Messages say what is wrong, the value received, the valid choices and the fix.
"""

from __future__ import annotations


class TextDistillError(Exception):
    """Base class of every error caused by user input (config, data, models, files)."""


class ConfigError(TextDistillError):
    """One or more configuration problems, collected and reported together.

    Args:
        problems: one human-readable line per problem, each naming the key, the value and the fix.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        n = len(self.problems)
        head = "1 configuration problem" if n == 1 else f"{n} configuration problems"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class DataError(TextDistillError):
    """A data file or data set that cannot be used (missing, malformed, unknown label...)."""


class ModelError(TextDistillError):
    """A model directory or model combination that cannot be used."""


class RunDirError(TextDistillError):
    """An output directory problem (already holds a run, not writable...)."""
