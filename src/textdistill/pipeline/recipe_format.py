"""The recipe file format: its data types (as written and as resolved), reading and parsing a recipe.

See :mod:`textdistill.pipeline.recipe` for the format and for resolution.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textdistill.config.loader import apply_overrides, parse_override, read_yaml
from textdistill.config.schema import Config
from textdistill.errors import ConfigError

if TYPE_CHECKING:
    from textdistill.config.augment import AugmentConfig

MODES = ("finetune", "distill", "general", "generate")
SECTIONS = ("teacher", "student", "data", "objective", "train", "lm")
STAGE_KEYS = ("name", "mode", "description", "when", "unless", *SECTIONS, "augment")
RECIPE_KEYS = ("description", "paper", "params", "defaults", "stages")
SHAPE_KEYS = ("num_layers", "hidden_size", "num_heads", "intermediate_size")
WARM_START_KEYS = ("from", "path", "fallback", *SHAPE_KEYS)
PARAM_KEYS = ("default", "help")
# Config fields that never change what a stage produces: left out of its fingerprint.
COSMETIC_KEYS = (("train", "progress"), ("train", "log_every"))
# Intermediate-layer MSE terms that, from random student weights, can drive the student's upper layers to
# one vector for every token (measured on SST-2, docs/results.md): a warm start falling back to a random
# shrink student with one of them gets a warning.
COLLAPSE_PRONE_TERMS = frozenset({"hidden_mse", "attention_mse"})
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")


@dataclass
class ParamSpec:
    """A recipe parameter.

    Attributes:
        name: the key given on the command line (``name=value``).
        default: value when not given (may reference other parameters as ``${params.X}``).
        required: no default: the run fails (with every other problem) when it is not given.
        help: one line shown by ``textdistill recipes NAME``.
    """

    name: str
    default: Any = None
    required: bool = False
    help: str = ""


@dataclass
class StageSpec:
    """One stage as written in the recipe (before defaults and references are applied).

    Attributes:
        name: unique name; the stage's run directory is ``<output_dir>/<name>``.
        mode: finetune | distill | general | generate.
        sections: the stage's Config sections (teacher, student, data, objective, train, lm) and ``augment``.
        description: one line for ``textdistill recipes``.
        when: names of parameters; the stage runs only when every one is set (not null, empty or false).
            The recipe may write one name or a list.
        unless: names of parameters; the stage runs only when none of them is set.
    """

    name: str
    mode: str
    sections: dict[str, Any]
    description: str = ""
    when: list[str] = field(default_factory=list)
    unless: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    """A parsed recipe (see the module docstring for the format)."""

    name: str
    source: Path | None
    description: str
    paper: str
    params: dict[str, ParamSpec]
    defaults: dict[str, Any]
    stages: list[StageSpec]

    def stage_names(self) -> list[str]:
        """Stage names in run order."""
        return [s.name for s in self.stages]


@dataclass
class ResolvedStage:
    """A stage ready to run (or disabled), with everything its fingerprint needs.

    Attributes:
        name: the stage name.
        mode: finetune | distill | general | generate.
        enabled: False when its ``when``/``unless`` parameter switches it off.
        reason: why it is disabled (empty when enabled).
        run_dir: ``<output_dir>/<name>``.
        model_dir: ``<run_dir>/model``, what ``${stages.<name>.output}`` refers to (a ``generate`` stage:
            ``<run_dir>/responses.jsonl``, the teacher's responses, a later stage's ``data.train``).
        config: the stage's Config (None when disabled).
        canonical: the config as a mapping, upstream outputs symbolic and cosmetic keys removed (hashed).
        augment: the stage's augmentation settings (None: no augmentation).
        upstream: stages whose outputs it reads, in run order.
        files: data files it reads (fingerprinted).
        models: model directories from outside the pipeline that it loads (fingerprinted).
    """

    name: str
    mode: str
    enabled: bool
    reason: str
    run_dir: Path
    model_dir: Path
    config: Config | None = None
    canonical: dict[str, Any] | None = None
    augment: AugmentConfig | None = None
    upstream: tuple[str, ...] = ()
    files: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)


@dataclass
class ResolvedPipeline:
    """A recipe resolved against parameters and an output directory; every stage validated.

    Attributes:
        recipe: the recipe.
        params: final parameter values (defaults applied).
        output_dir: the pipeline's directory (``pipeline.json`` and one run directory per stage).
        stages: every stage in run order, disabled ones included.
        warnings: things that will run but probably not as intended (printed by the runner).
    """

    recipe: Recipe
    params: dict[str, Any]
    output_dir: Path
    stages: list[ResolvedStage]
    warnings: list[str] = field(default_factory=list)

    def stage(self, name: str) -> ResolvedStage:
        """The stage called ``name``."""
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)


def _did_you_mean(value: object, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(value), choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a shipped recipe (by name) or a recipe file, applying ``stages.NAME.…`` / ``defaults.…`` overrides.

    Args:
        name_or_path: a name from ``textdistill recipes`` or the path of a YAML file.
        overrides: ``stages.<stage>.<section>.<key>=value`` or ``defaults.<section>.<key>=value`` strings
            (stage names are translated to their list positions).

    Raises:
        ConfigError: unreadable YAML and every structural problem of the recipe.
    """
    from textdistill.recipes import recipe_path

    path = recipe_path(name_or_path)
    data = read_yaml(path)
    if overrides:
        data = apply_recipe_overrides(data, overrides)
    return recipe_from_dict(data, name=path.stem, source=path)


def apply_recipe_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted overrides to a raw recipe mapping; ``stages.<name>`` addresses a stage by its name."""
    problems: list[str] = []
    stages = data.get("stages") if isinstance(data.get("stages"), list) else []
    names = [s.get("name") for s in stages if isinstance(s, dict)]
    translated = []
    for text in overrides:
        key, sep, value = text.partition("=")
        parts = key.strip().split(".")
        if parts[0] == "stages" and len(parts) > 1 and not parts[1].lstrip("-").isdigit():
            if parts[1] not in names:
                problems.append(
                    f"override {text!r}: the recipe has no stage {parts[1]!r} (stages: {', '.join(map(str, names))})"
                    f"{_did_you_mean(parts[1], [str(n) for n in names])}"
                )
                continue
            parts[1] = str(names.index(parts[1]))
        elif parts[0] not in ("stages", "defaults"):
            problems.append(
                f"override {text!r}: recipe overrides start with stages.<stage>. or defaults. "
                "(e.g. stages.prediction.train.lr=1e-5); recipe parameters are written without dots"
            )
            continue
        translated.append(".".join(parts) + sep + value)
    if problems:
        raise ConfigError(problems)
    return apply_overrides(copy.deepcopy(data), translated)


def recipe_from_dict(data: dict[str, Any], *, name: str, source: Path | None = None) -> Recipe:
    """Parse a raw recipe mapping, checking its structure (keys, names, modes, parameters).

    Raises:
        ConfigError: every structural problem at once.
    """
    problems: list[str] = []
    for key in data:
        if key not in RECIPE_KEYS:
            problems.append(
                f"{key}: unknown recipe key{_did_you_mean(key, list(RECIPE_KEYS))} (valid keys: {', '.join(RECIPE_KEYS)})"
            )
    params = _parse_params(data.get("params"), problems)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.append(f"defaults: expected a mapping of Config sections, got {defaults!r}")
        defaults = {}
    for key in defaults:
        if key not in SECTIONS:
            problems.append(_section_problem("defaults", key))
    raw_stages = data.get("stages")
    stages: list[StageSpec] = []
    if not isinstance(raw_stages, list) or not raw_stages:
        problems.append("stages: expected a non-empty list of stages, each {name: ..., mode: ..., ...}")
        raw_stages = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_stages):
        stage = _parse_stage(i, raw, params, seen, problems)
        if stage is not None:
            stages.append(stage)
    if problems:
        raise ConfigError(problems)
    return Recipe(
        name=name,
        source=source,
        description=str(data.get("description") or ""),
        paper=str(data.get("paper") or ""),
        params=params,
        defaults=defaults,
        stages=stages,
    )


def _section_problem(where: str, key: object) -> str:
    if key in ("output_dir", "overwrite"):
        return (
            f"{where}.{key}: set by the pipeline (each stage writes <output_dir>/<stage>); pass --output-dir "
            "to `textdistill run` instead"
        )
    valid = ", ".join(SECTIONS + (("augment",) if where.startswith("stages") else ()))
    return f"{where}.{key}: unknown section{_did_you_mean(key, list(SECTIONS))} (valid: {valid})"


def _parse_params(raw: Any, problems: list[str]) -> dict[str, ParamSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"params: expected a mapping of parameter names, got {raw!r}")
        return {}
    out = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            problems.append(f"params.{name}: parameter names are identifiers (letters, digits, _)")
            continue
        if isinstance(spec, dict):
            for key in spec:
                if key not in PARAM_KEYS:
                    problems.append(
                        f"params.{name}.{key}: unknown key{_did_you_mean(key, list(PARAM_KEYS))}; a parameter "
                        "is {default: VALUE, help: TEXT} (no default: required) or a bare default value"
                    )
            out[name] = ParamSpec(
                name, spec.get("default"), required="default" not in spec, help=str(spec.get("help") or "")
            )
        else:
            out[name] = ParamSpec(name, spec)
    return out


def _parse_stage(
    i: int, raw: Any, params: dict[str, ParamSpec], seen: set[str], problems: list[str]
) -> StageSpec | None:
    if not isinstance(raw, dict):
        problems.append(f"stages.{i}: expected a mapping {{name: ..., mode: ..., ...}}, got {raw!r}")
        return None
    name = raw.get("name")
    where = f"stages.{name}" if isinstance(name, str) else f"stages.{i}"
    ok = True
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(
            f"{where}.name: expected a name of letters, digits, '-' and '_' starting with a letter, got {name!r}"
        )
        ok = False
    elif name in seen:
        problems.append(f"{where}.name: stage name {name!r} is used twice; stage names must be unique")
        ok = False
    else:
        seen.add(name)
    mode = raw.get("mode")
    if mode not in MODES:
        problems.append(
            f"{where}.mode: {mode!r} is not one of {', '.join(MODES)}{_did_you_mean(mode, list(MODES))}"
        )
        ok = False
    for key in raw:
        if key not in STAGE_KEYS:
            problems.append(_section_problem(where, key))
    conditions: dict[str, list[str]] = {}
    for key in ("when", "unless"):
        names, bad = _condition_names(raw.get(key), f"{where}.{key}", params)
        conditions[key] = names
        problems += bad
        ok = ok and not bad
    if not ok:
        return None
    sections = {k: copy.deepcopy(v) for k, v in raw.items() if k in SECTIONS or k == "augment"}
    return StageSpec(
        name=name,
        mode=mode,
        sections=sections,
        description=str(raw.get("description") or ""),
        when=conditions["when"],
        unless=conditions["unless"],
    )


def _condition_names(value: Any, where: str, params: dict[str, Any]) -> tuple[list[str], list[str]]:
    """A stage's ``when``/``unless``: one parameter name or a list of them -> (names, problems)."""
    if value is None:
        return [], []
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) for v in items):
        return [], [f"{where}: expected a parameter name or a list of parameter names, got {value!r}"]
    problems = [
        f"{where}: {v!r} is not a parameter of this recipe (parameters: "
        f"{', '.join(params) or 'none'}){_did_you_mean(v, list(params))}"
        for v in items
        if v not in params
    ]
    return list(items), problems


def split_arguments(items: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Split command-line ``key=value`` items into recipe parameters and recipe overrides.

    ``name=value`` (no dot) sets parameter ``name``; ``stages.…=value`` and ``defaults.…=value`` override
    the recipe itself. Values are parsed as YAML scalars (``6`` is an integer, ``null`` is None).

    Raises:
        ConfigError: malformed items, and dotted keys that are neither form.
    """
    params: dict[str, Any] = {}
    overrides: list[str] = []
    problems: list[str] = []
    for text in items:
        try:
            path, value = parse_override(text)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        if len(path) == 1:
            params[path[0]] = value
        elif path[0] in ("stages", "defaults"):
            overrides.append(text)
        else:
            problems.append(
                f"{text!r}: a recipe parameter has no dots (e.g. teacher=DIR); to change a stage's config "
                f"write stages.<stage>.{'.'.join(path)}=VALUE, or defaults.{'.'.join(path)}=VALUE for every stage"
            )
    if problems:
        raise ConfigError(problems)
    return params, overrides
