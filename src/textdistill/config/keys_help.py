"""``textdistill config show --help-keys``: every config key with its type, default and documentation.

The documentation is the string literal under each field of :mod:`textdistill.config.schema` (the schema
is the single source of truth), read with :mod:`ast` so it cannot drift from the code.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from typing import Any

from textdistill.config import schema


def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a dataclass whose fields are followed by string literals."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
        return value if not dataclasses.is_dataclass(value) else None
    return None


def keys_help(cls: type = schema.Config, prefix: str = "") -> list[str]:
    """One entry per leaf key: ``key (type, default: value)`` and its documentation, indented."""
    lines: list[str] = []
    docs = field_docs(cls)
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        default = _default(f)
        nested = getattr(schema, str(hints[f.name]), None) if isinstance(hints[f.name], str) else None
        if nested is None and f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
            nested = type(value) if dataclasses.is_dataclass(value) else None
        if nested is not None and dataclasses.is_dataclass(nested):
            lines += keys_help(nested, f"{key}.")
            continue
        doc_text = docs.get(f.name, "")
        unset = default is None and ("nferred" in doc_text or "Unset:" in doc_text)
        shown = "unset: inferred" if unset else repr(default)
        lines.append(f"{key}  ({hints[f.name]}; default {shown})")
        doc = docs.get(f.name)
        if doc:
            lines += ["    " + line for line in textwrap.wrap(doc, 100)]
    return lines
