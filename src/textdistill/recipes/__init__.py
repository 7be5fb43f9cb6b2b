"""Shipped multi-stage recipes (package data), addressable by name.

Each ``<name>.yaml`` next to this file is a pipeline recipe (see :mod:`textdistill.pipeline.recipe` and
``docs/recipes.md``): ``textdistill recipes`` lists them and ``textdistill run <name> key=value ...`` runs
one. A recipe argument that is not a shipped name is treated as the path of a YAML file.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from textdistill.errors import ConfigError

SUFFIX = ".yaml"


def recipe_names() -> list[str]:
    """Names of the shipped recipes, sorted."""
    root = resources.files(__name__)
    return sorted(p.name[: -len(SUFFIX)] for p in root.iterdir() if p.name.endswith(SUFFIX))


def recipe_path(name_or_path: str | Path) -> Path:
    """The YAML file of a shipped recipe name, or ``name_or_path`` itself when it is an existing file.

    Raises:
        ConfigError: neither a shipped recipe nor an existing file (with the valid names and a close match).
    """
    text = str(name_or_path)
    if text in recipe_names():
        # Shipped recipes are plain files inside the installed package (setuptools package-data).
        return Path(str(resources.files(__name__).joinpath(text + SUFFIX)))
    p = Path(text).expanduser()
    if p.is_file():
        return p
    names = recipe_names()
    close = difflib.get_close_matches(text, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"recipe {text!r} is neither a shipped recipe nor an existing YAML file; shipped recipes: "
        f"{', '.join(names)} (see `textdistill recipes`), or pass the path of a recipe file.{hint}"
    )


__all__ = ["recipe_names", "recipe_path"]
