"""User-facing exception types.

Every error a user can trigger with bad input is one of these: the CLI prints the message (no traceback)
and exits non-zero. Messages say what is wrong, the value received, the valid choices and the fix.
"""

from __future__ import annotations

import re
from pathlib import Path


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


ECHO_LIMIT = 200
"""Most characters of a user-given value that a message echoes (a 5 MB header line stays a short message)."""


def shorten(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters, saying how much was left out.

    Every message that echoes a value the user gave (a header line, a column list, an override) goes
    through this, so that a huge input produces a short error message instead of megabytes of output.
    """
    return clip(repr(value), limit)


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` itself when it has at most ``limit`` characters, else its start and how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def shorten_list(values: list[object], limit: int = ECHO_LIMIT, most: int = 20) -> str:
    """``'a', 'b', ...`` for a list of user-given names: each shortened, at most ``most`` shown."""
    shown = ", ".join(shorten(v, limit // 4) for v in values[:most])
    rest = len(values) - most
    return clip(shown + (f", ... ({rest:,} more)" if rest > 0 else ""), 2 * limit + 200)


MESSAGE_LINE_LIMIT = 2000
"""Longest line the CLI prints for an error: the last guard against a value echoed in full."""


def clip_message(message: str, limit: int = MESSAGE_LINE_LIMIT) -> str:
    """Every line of ``message`` cut to ``limit`` characters (the CLI's error output passes through this)."""
    return "\n".join(clip(line, limit) for line in message.split("\n"))


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def pickle_refusal(path: str | Path, e: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, without the advice to turn the check off.

    torch's own message suggests ``weights_only=False``, which would run whatever the pickle names: a
    file that needs it is not one textdistill wrote, so it is refused, and the message says what it named.
    """
    m = _GLOBAL.search(str(e))
    named = f" (it names {m.group(1)!r})" if m else ""
    return (
        f"refused to load {path}: it is a pickle holding objects other than tensors, numbers, strings and "
        f"containers{named}, and loading those could run code. textdistill never writes such files, so it "
        "was modified or comes from elsewhere; nothing from it was loaded"
    )
