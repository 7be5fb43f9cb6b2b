"""Recipes: multi-stage pipelines written in YAML, resolved and validated as a whole before anything trains.

A recipe::

    description: one line shown by `textdistill recipes`
    paper: the method's reference
    params:                         # given on the command line as key=value
      teacher: {help: fine-tuned teacher directory}          # no default: required
      corpus: {default: null, help: plain-text corpus}       # optional
      student_layers: 4                                      # a bare value is the default
    defaults:                       # Config sections shared by every stage
      data: {train: "${params.task_train}", dev: "${params.task_dev}"}
      train: {lr: 5.0e-5}
    stages:                         # run in this order
      - name: general
        mode: general               # finetune | distill | general
        when: corpus                # run only when params.corpus is set (`unless:` is the opposite)
        teacher: {path: "${params.teacher}"}
        student: {type: shrink, num_layers: "${params.student_layers}"}
        data: {train: "${params.corpus}"}
        objective: [{name: hidden_mse}]
      - name: task
        mode: distill
        student: {from: general}    # warm start: a pretrained student at general's output
        objective: [{name: kd_kl}]

Each stage's config is ``defaults`` merged with the stage's own sections (mappings merge key by key, lists
such as ``objective`` are replaced). Strings may reference ``${params.NAME}`` and
``${stages.NAME.output}`` (the model directory of an earlier stage); a string that is exactly one reference
takes the referenced value with its type (``num_layers: "${params.student_layers}"`` stays an integer).

Warm starts: ``student: {from: A}`` (or ``from: [A, B]``: the first of them that is enabled) becomes
``{type: pretrained, path: ${stages.A.output}}``. When none of them runs, ``path:`` (an existing checkpoint,
e.g. a released general-distilled model) is used, else ``fallback:`` (a plain student section). Shape keys
(``num_layers``, ``hidden_size``, ``num_heads``, ``intermediate_size``) next to ``from`` state the shape the
stage wants: a ``path`` checkpoint of another shape cannot be loaded, so it is replaced by ``fallback`` (with
those keys filled in) and a warning says so; a stage of the same recipe must produce exactly that shape.

Resolution (:func:`resolve_pipeline`) checks everything at once and raises one
:class:`~textdistill.errors.ConfigError`: unknown or missing parameters, references to unknown, later or
disabled stages, every stage's Config (:func:`~textdistill.config.loader.from_dict`) and its full validation
(:func:`~textdistill.config.validate.validate_config`, or
:func:`~textdistill.pipeline.general.validate_general`). Outputs of earlier stages do not exist yet, so they
are validated through *stand-ins*: the config.json each earlier stage will write, predicted from its own
config (a truncated/shrunk teacher config, a fine-tuned classifier's config...), so a layer map of stage 3
is checked against the real layer count of the student stage 1 will produce.
"""

from __future__ import annotations

import copy
import difflib
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textdistill.config.loader import apply_overrides, from_dict, merge, parse_override, read_yaml, to_dict
from textdistill.config.schema import Config
from textdistill.errors import ConfigError, TextDistillError

if TYPE_CHECKING:
    from textdistill.data.augment.config import AugmentConfig

MODES = ("finetune", "distill", "general")
SECTIONS = ("teacher", "student", "data", "objective", "train")
STAGE_KEYS = ("name", "mode", "description", "when", "unless", *SECTIONS, "augment")
RECIPE_KEYS = ("description", "paper", "params", "defaults", "stages")
SHAPE_KEYS = ("num_layers", "hidden_size", "num_heads", "intermediate_size")
WARM_START_KEYS = ("from", "path", "fallback", *SHAPE_KEYS)
PARAM_KEYS = ("default", "help")
# Config fields that never change what a stage produces: left out of its fingerprint.
# Intermediate-layer MSE terms that, from random student weights, can drive the student's upper layers to
# one vector for every token (measured on SST-2, docs/results.md): a warm start falling back to a random
# shrink student with one of them gets a warning.
COLLAPSE_PRONE_TERMS = frozenset({"hidden_mse", "attention_mse"})
COSMETIC_KEYS = (("train", "progress"), ("train", "log_every"))
# Which shape keys each fallback student type accepts (see models.students).
_SHAPE_KEYS_BY_TYPE = {"shrink": SHAPE_KEYS, "truncate": ("num_layers",)}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")
_REF = re.compile(r"\$\{([^}]*)\}")
_UNSET = object()


# ------------------------------------------------------------------------------------------------ recipe
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
        mode: finetune | distill | general.
        sections: the stage's Config sections (teacher, student, data, objective, train) and ``augment``.
        description: one line for ``textdistill recipes``.
        when: name of a parameter; the stage runs only when it is set (not null, empty or false).
        unless: name of a parameter; the stage runs only when it is not set.
    """

    name: str
    mode: str
    sections: dict[str, Any]
    description: str = ""
    when: str | None = None
    unless: str | None = None


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
    for key in ("when", "unless"):
        value = raw.get(key)
        if value is not None and value not in params:
            problems.append(
                f"{where}.{key}: {value!r} is not a parameter of this recipe (parameters: "
                f"{', '.join(params) or 'none'}){_did_you_mean(value, list(params))}"
            )
            ok = False
    if not ok:
        return None
    sections = {k: copy.deepcopy(v) for k, v in raw.items() if k in SECTIONS or k == "augment"}
    return StageSpec(
        name=name,
        mode=mode,
        sections=sections,
        description=str(raw.get("description") or ""),
        when=raw.get("when"),
        unless=raw.get("unless"),
    )


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


# -------------------------------------------------------------------------------------------- resolution
@dataclass
class ResolvedStage:
    """A stage ready to run (or disabled), with everything its fingerprint needs.

    Attributes:
        name: the stage name.
        mode: finetune | distill | general.
        enabled: False when its ``when``/``unless`` parameter switches it off.
        reason: why it is disabled (empty when enabled).
        run_dir: ``<output_dir>/<name>``.
        model_dir: ``<run_dir>/model``, what ``${stages.<name>.output}`` refers to.
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


def _is_set(value: Any) -> bool:
    return value is not None and value != "" and value is not False


def _resolve_params(recipe: Recipe, given: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    names = list(recipe.params)
    for key in given:
        if key not in recipe.params:
            problems.append(
                f"params.{key}: recipe {recipe.name!r} has no parameter {key!r}{_did_you_mean(key, names)} "
                f"(parameters: {', '.join(names) or 'none'}; see `textdistill recipes {recipe.name}`)"
            )
    raw: dict[str, Any] = {}
    for name, spec in recipe.params.items():
        if name in given:
            raw[name] = given[name]
        elif spec.required:
            hint = f" ({spec.help})" if spec.help else ""
            problems.append(f"params.{name}: required parameter not given{hint}; pass {name}=VALUE")
            raw[name] = None
        else:
            raw[name] = spec.default
    resolved: dict[str, Any] = {}

    def value_of(name: str, chain: tuple[str, ...]) -> Any:
        if name in resolved:
            return resolved[name]
        if name in chain:
            problems.append(f"params.{name}: its default refers to itself ({' -> '.join((*chain, name))})")
            resolved[name] = None
            return None

        def lookup(body: str, whole: bool) -> Any:
            parts = body.split(".")
            if len(parts) == 2 and parts[0] == "params" and parts[1] in raw:
                v = value_of(parts[1], (*chain, name))
                if not whole and v is None:
                    problems.append(f"params.{name}: refers to ${{{body}}}, which is not set")
                    return ""
                return v
            problems.append(
                f"params.{name}: ${{{body}}} is not a parameter of this recipe; parameter defaults may refer "
                "to other parameters only (${params.NAME})"
            )
            return None

        resolved[name] = _substitute(raw[name], lookup)
        return resolved[name]

    for name in raw:
        value_of(name, ())
    return resolved


def _substitute(obj: Any, lookup: Any) -> Any:
    """Replace ``${...}`` references in every string of ``obj`` (a YAML tree) using ``lookup(body, whole)``.

    A string that is exactly one reference takes the looked-up value itself (any type); references inside
    longer strings are replaced by the value's text.
    """
    if isinstance(obj, dict):
        return {k: _substitute(v, lookup) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, lookup) for v in obj]
    if not isinstance(obj, str) or "${" not in obj:
        return obj
    m = _REF.fullmatch(obj.strip())
    if m:
        return lookup(m.group(1).strip(), True)
    return _REF.sub(lambda m: str(lookup(m.group(1).strip(), False)), obj)


def _references(obj: Any) -> list[str]:
    """Every ``${...}`` body in the strings of ``obj``."""
    if isinstance(obj, dict):
        return [r for v in obj.values() for r in _references(v)]
    if isinstance(obj, list):
        return [r for v in obj for r in _references(v)]
    return [m.group(1).strip() for m in _REF.finditer(obj)] if isinstance(obj, str) else []


def _stage_ref(body: str) -> str | None:
    parts = body.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "stages" and parts[2] == "output" else None


def _check_references(recipe: Recipe, problems: list[str]) -> None:
    """Static checks of every reference (enabled or not): syntax, unknown parameters and stages, order.

    References written in ``defaults`` are checked once for syntax and parameters, and in every stage for
    the stage outputs they name (``defaults`` apply to every stage, so the order check depends on the stage).
    """
    names = recipe.stage_names()

    def param_or_syntax_problem(where: str, body: str) -> str | None:
        parts = body.split(".")
        if len(parts) == 2 and parts[0] == "params":
            if parts[1] in recipe.params:
                return None
            return (
                f"{where}: ${{{body}}} refers to an unknown parameter{_did_you_mean(parts[1], list(recipe.params))} "
                f"(parameters: {', '.join(recipe.params) or 'none'})"
            )
        if _stage_ref(body) is None:
            return f"{where}: ${{{body}}} is not a valid reference; use ${{params.NAME}} or ${{stages.NAME.output}}"
        return None

    for body in dict.fromkeys(_references(recipe.defaults)):
        p = param_or_syntax_problem("defaults", body)
        if p:
            problems.append(p)
    for i, stage in enumerate(recipe.stages):
        where = f"stages.{stage.name}"
        for body in dict.fromkeys(_references(stage.sections)):
            p = param_or_syntax_problem(where, body)
            if p:
                problems.append(p)
        merged = _merge_stage(recipe.defaults, stage.sections)
        targets = [t for t in map(_stage_ref, _references(merged)) if t is not None]
        student = merged.get("student")
        if isinstance(student, dict) and "from" in student:
            targets += student["from"] if isinstance(student["from"], list) else [student["from"]]
        for target in dict.fromkeys(str(t) for t in targets):
            ref = f"${{stages.{target}.output}}"
            if target not in names:
                problems.append(
                    f"{where}: {ref} refers to an unknown stage {target!r}{_did_you_mean(target, names)} "
                    f"(stages: {', '.join(names)})"
                )
            elif names.index(target) >= i:
                what = "itself" if target == stage.name else f"stage {target!r}, which runs after it"
                problems.append(
                    f"{where}: {ref} refers to {what}; a stage can only use the outputs of earlier stages"
                )


def _disabled_reason(stage: StageSpec, values: dict[str, Any]) -> str:
    """Why ``stage`` does not run (its ``when``/``unless`` parameter), or "" when it runs."""
    if stage.when is not None and not _is_set(values.get(stage.when)):
        return f"when: {stage.when} (params.{stage.when} is not set)"
    if stage.unless is not None and _is_set(values.get(stage.unless)):
        return f"unless: {stage.unless} (params.{stage.unless} is set)"
    return ""


def _merge_stage(defaults: dict[str, Any], sections: dict[str, Any]) -> dict[str, Any]:
    merged = merge(copy.deepcopy(defaults), copy.deepcopy(sections))
    # A warm start is a whole student description: never mix its keys with a plain student section.
    s_default, s_stage = defaults.get("student"), sections.get("student")
    if (
        isinstance(s_default, dict)
        and isinstance(s_stage, dict)
        and ("from" in s_default or "from" in s_stage)
    ):
        merged["student"] = copy.deepcopy(s_stage)
    return merged


def resolve_pipeline(
    recipe: Recipe,
    params: dict[str, Any] | None,
    output_dir: str | Path,
    *,
    from_stage: str | None = None,
) -> ResolvedPipeline:
    """Resolve ``recipe`` for ``params`` and validate every stage, before anything trains.

    Args:
        recipe: the recipe (see :func:`load_recipe`).
        params: parameter values (see :func:`split_arguments`).
        output_dir: the pipeline directory; stage ``s`` writes ``<output_dir>/<s>``.
        from_stage: the stage a forced restart begins at (must exist and be enabled).

    Returns:
        The resolved pipeline (warnings included).

    Raises:
        ConfigError: every problem of every stage, at once.
    """
    problems: list[str] = []
    warnings: list[str] = []
    values = _resolve_params(recipe, dict(params or {}), problems)
    # Unknown parameters are reported but block nothing; a required one missing would make most stage
    # checks repeat it, so stages are then not resolved (nor after a broken reference).
    blocking = [p for p in problems if "has no parameter" not in p]
    n_before = len(problems)
    _check_references(recipe, problems)
    static_ok = not blocking and len(problems) == n_before
    out = Path(output_dir)
    names = recipe.stage_names()
    reasons = {stage.name: _disabled_reason(stage, values) for stage in recipe.stages}
    enabled = {name: not reason for name, reason in reasons.items()}
    if from_stage is not None:
        if from_stage not in names:
            problems.append(
                f"--from: the recipe has no stage {from_stage!r}{_did_you_mean(from_stage, names)} (stages: {', '.join(names)})"
            )
        elif not enabled[from_stage]:
            problems.append(
                f"--from: stage {from_stage!r} is disabled ({reasons[from_stage]}); start from an enabled stage"
            )

    resolved: list[ResolvedStage] = []
    with tempfile.TemporaryDirectory(prefix="textdistill-pipeline-") as tmp:
        validator = _Validator(Path(tmp))
        for stage in recipe.stages:
            run_dir = out / stage.name
            rs = ResolvedStage(
                name=stage.name,
                mode=stage.mode,
                enabled=enabled[stage.name],
                reason=reasons[stage.name],
                run_dir=run_dir,
                model_dir=run_dir / "model",
            )
            resolved.append(rs)
            if not rs.enabled or not static_ok:
                continue
            stage_problems: list[str] = []
            _resolve_stage(
                recipe, stage, rs, values, enabled, reasons, resolved, validator, stage_problems, warnings
            )
            problems.extend(stage_problems)
    if problems:
        raise ConfigError(problems)
    return ResolvedPipeline(recipe=recipe, params=values, output_dir=out, stages=resolved, warnings=warnings)


def _resolve_stage(
    recipe: Recipe,
    stage: StageSpec,
    rs: ResolvedStage,
    values: dict[str, Any],
    enabled: dict[str, bool],
    reasons: dict[str, str],
    resolved: list[ResolvedStage],
    validator: _Validator,
    problems: list[str],
    warnings: list[str],
) -> None:
    where = f"stages.{stage.name}"
    upstream: list[str] = []
    by_name = {r.name: r for r in resolved}

    def lookup(body: str, whole: bool) -> Any:
        parts = body.split(".")
        if parts[0] == "params":
            v = values.get(parts[1])
            if v is None and not whole:
                problems.append(
                    f"{where}: uses ${{{body}}} inside a longer string, but params.{parts[1]} is not set"
                )
                return ""
            return v
        target = parts[1]
        if not enabled[target]:
            problems.append(
                f"{where}: uses ${{{body}}}, but stage {target!r} is disabled ({reasons[target]}); set the "
                "parameter, or give this stage another input"
            )
        elif target not in upstream:
            upstream.append(target)
        return "${" + body + "}"  # kept symbolic: the canonical (fingerprinted) form

    merged = _merge_stage(recipe.defaults, stage.sections)
    if stage.mode == "finetune" and "objective" not in merged:
        # The schema's default objective (kd_kl) is for distillation; fine-tuning trains on the labels, as
        # run_training does for the same case.
        merged["objective"] = [{"name": "hard_ce"}]
    canonical = _substitute(merged, lookup)
    student = canonical.get("student")
    if isinstance(student, dict) and "from" in student:
        canonical["student"] = _warm_start(
            where, student, enabled, by_name, upstream, validator, problems, warnings
        )
        terms = {t.get("name") for t in canonical.get("objective") or [] if isinstance(t, dict)}
        if canonical["student"].get("type") == "shrink" and terms & COLLAPSE_PRONE_TERMS:
            warnings.append(
                f"{where}: {', '.join(sorted(terms & COLLAPSE_PRONE_TERMS))} on a randomly initialised "
                "(shrink) student, without general distillation: on SST-2 this collapsed to chance "
                "(the upper layers learn one vector for every token; docs/results.md). Give the recipe a "
                "corpus (its general stage) or a general-distilled general_student."
            )
    augment_raw = canonical.pop("augment", None)
    if problems:
        return

    def concrete(body: str, whole: bool) -> Any:
        return str(by_name[_stage_ref(body)].model_dir)

    data = _substitute(canonical, concrete)
    data.update(output_dir=str(rs.run_dir), overwrite=True)
    # The report (teacher vs student: speed, size, CKA) describes the pipeline's result: the last enabled
    # stage writes it; the earlier stages' students are intermediate products.
    last_enabled = [s.name for s in recipe.stages if enabled.get(s.name)][-1:]
    data.setdefault("report", [stage.name] == last_enabled)
    cfg = from_dict(Config, data, prefix=where, problems=problems)
    augment = _augment_config(where, stage.mode, augment_raw, problems)
    if problems:
        return
    outputs = {str(by_name[u].model_dir): u for u in upstream}
    rs.config = cfg
    rs.augment = augment
    rs.upstream = tuple(r.name for r in resolved if r.name in upstream)
    rs.canonical = canonical_config(cfg, outputs)
    rs.files, rs.models = _inputs(cfg, stage.mode, augment, set(outputs))
    validator.validate(rs, outputs, problems)


def canonical_config(cfg: Config, outputs: dict[str, str]) -> dict[str, Any]:
    """``cfg`` as a mapping for fingerprinting: upstream model dirs written as ``${stages.NAME.output}``,
    the pipeline-managed ``output_dir``/``overwrite``/``report`` and cosmetic keys (:data:`COSMETIC_KEYS`) removed."""
    data = to_dict(cfg)
    data.pop("output_dir", None)
    data.pop("overwrite", None)
    data.pop("report", None)  # set by the stage's position (see above); what it trains does not depend on it
    for section, key in COSMETIC_KEYS:
        data.get(section, {}).pop(key, None)

    def symbolic(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: symbolic(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [symbolic(v) for v in obj]
        if isinstance(obj, str):
            for path, name in outputs.items():
                obj = obj.replace(path, "${stages." + name + ".output}")
        return obj

    return symbolic(data)


def _augment_config(where: str, mode: str, raw: Any, problems: list[str]) -> AugmentConfig | None:
    if raw is None:
        return None
    from textdistill.data.augment.config import AugmentConfig

    if mode == "general":
        problems.append(
            f"{where}.augment: augmentation applies to labelled task data, not to a general stage"
        )
        return None
    if isinstance(raw, dict) and isinstance(raw.get("ngram_range"), list):
        raw = {**raw, "ngram_range": tuple(raw["ngram_range"])}
    sub: list[str] = []
    cfg = from_dict(AugmentConfig, raw, prefix=f"{where}.augment", problems=sub)
    if not sub:
        sub = [f"{where}: {p}" for p in cfg.problems()]
    if not sub and cfg.method != "none" and not augmented_rows_supported():
        sub.append(
            f"{where}.augment: method {cfg.method!r} writes augmented rows without labels (the teacher labels "
            "them), but this version's training-data loader requires a label on every training row, so the "
            "stage could not read them; set augment.method=none (recipe parameter augment=none) for now"
        )
    problems.extend(sub)
    if sub or cfg.method == "none":
        return None
    return cfg


_AUGMENTED_ROWS_SUPPORTED: bool | None = None


def augmented_rows_supported() -> bool:
    """Whether the task loader accepts augmented training rows (no label, ``is_original: false``).

    Augmentation (``textdistill.data.augment``) leaves new rows unlabelled for the teacher to label. This
    probes :func:`~textdistill.data.task.load_task_data` with a two-row JSONL file once per process, so a
    recipe that asks for augmentation fails at validation, before any stage trains, when it is not
    supported, and works as soon as it is.
    """
    global _AUGMENTED_ROWS_SUPPORTED
    if _AUGMENTED_ROWS_SUPPORTED is None:
        import json

        from textdistill.config.schema import DataConfig
        from textdistill.data.task import load_task_data

        rows = [
            {"sentence": "an original row", "label": "a", "is_original": True},
            {"sentence": "an augmented row", "label": None, "is_original": False},
        ]
        with tempfile.TemporaryDirectory(prefix="textdistill-probe-") as tmp:
            path = Path(tmp) / "probe.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            try:
                task = load_task_data(DataConfig(train=str(path), format="jsonl"))
                _AUGMENTED_ROWS_SUPPORTED = len(task.train) == 2 and task.train[1].label is None
            except TextDistillError:
                _AUGMENTED_ROWS_SUPPORTED = False
    return _AUGMENTED_ROWS_SUPPORTED


def _inputs(
    cfg: Config, mode: str, augment: AugmentConfig | None, outputs: set[str]
) -> tuple[list[str], list[str]]:
    """The data files and the outside model directories a stage reads (for its fingerprint)."""
    files: list[str] = []
    if mode == "general":
        from textdistill.data.corpus import corpus_files
        from textdistill.pipeline.general import corpus_paths

        try:
            files = [str(f) for f in corpus_files(corpus_paths(cfg.data.train))]
        except TextDistillError:
            files = []  # validate_general reports the bad path
    elif cfg.data.format != "hf":
        files = [p for p in (cfg.data.train, cfg.data.dev, cfg.data.test) if p]
    models = []
    if mode != "finetune" and cfg.teacher.path:
        models.append(cfg.teacher.path)
    if cfg.student.type == "pretrained" and cfg.student.path:
        models.append(cfg.student.path)
    if augment is not None:
        models.extend(p for p in (augment.mlm, augment.word_vectors) if p)
    return files, [m for m in models if m not in outputs]


def _shape_text(shape: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in shape.items())


def _warm_start(
    where: str,
    spec: dict[str, Any],
    enabled: dict[str, bool],
    by_name: dict[str, ResolvedStage],
    upstream: list[str],
    validator: _Validator,
    problems: list[str],
    warnings: list[str],
) -> dict[str, Any]:
    """Turn ``{from: ..., path: ..., fallback: ..., <shape keys>}`` into a plain student section."""
    key = f"{where}.student"
    for k in spec:
        if k not in WARM_START_KEYS:
            problems.append(
                f"{key}.{k}: not allowed next to 'from'{_did_you_mean(k, list(WARM_START_KEYS))} (a warm start "
                f"takes {', '.join(WARM_START_KEYS)}); put other student options in 'fallback'"
            )
    froms = spec["from"] if isinstance(spec["from"], list) else [spec["from"]]
    shape = {k: spec[k] for k in SHAPE_KEYS if spec.get(k) is not None}
    chosen = next((f for f in froms if isinstance(f, str) and enabled.get(f)), None)
    if chosen is not None:
        if chosen not in upstream:
            upstream.append(chosen)
        produced = validator.shape_of(by_name[chosen].model_dir)
        if shape and produced is not None:
            diff = {k: v for k, v in shape.items() if produced.get(k) != v}
            if diff:
                problems.append(
                    f"{key}: asks for {_shape_text(shape)}, but stage {chosen!r} produces a student with "
                    f"{_shape_text({k: produced.get(k) for k in shape})}; a checkpoint cannot be loaded into "
                    "another shape: give both stages the same shape (the same recipe parameters)"
                )
        return {"type": "pretrained", "path": "${stages." + chosen + ".output}"}
    fallback = spec.get("fallback")
    path = spec.get("path")
    off = ", ".join(f"{f!r} ({by_name[f].reason})" for f in froms if f in by_name) or repr(froms)
    if _is_set(path):
        existing = validator.shape_of(path)
        diff = {k: v for k, v in shape.items() if existing is not None and existing.get(k) != v}
        if not diff:
            return {"type": "pretrained", "path": path}
        message = (
            f"{key}: the general-distilled checkpoint {path!r} has {_shape_text({k: existing.get(k) for k in shape})}"
            f" but this stage asks for {_shape_text(shape)}; the GD init cannot be loaded into that shape"
        )
        if not isinstance(fallback, dict):
            problems.append(message + "; give a 'fallback' student, or drop the shape change")
            return {}
        warnings.append(
            message + f", so the student is built as fallback (type {fallback.get('type', 'pretrained')!r}) "
            "without general distillation. Enable the recipe's general stage (e.g. give a corpus) to "
            "produce a checkpoint of this shape."
        )
    if isinstance(fallback, dict):
        student = copy.deepcopy(fallback)
        for k in _SHAPE_KEYS_BY_TYPE.get(str(student.get("type")), ()):
            if k in shape and student.get(k) is None:
                student[k] = shape[k]
        return student
    if fallback is not None:
        problems.append(f"{key}.fallback: expected a student section mapping, got {fallback!r}")
        return {}
    problems.append(
        f"{key}: warm-starts from {off}, but none of them runs and neither 'path' nor 'fallback' "
        "is given; enable one of those stages or add a fallback student"
    )
    return {}


# -------------------------------------------------------------------------------------------- validation
class _Validator:
    """Validates stages in order, writing a stand-in config.json for each stage's future output."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.stand_ins: dict[str, Path] = {}  # real model dir -> stand-in dir

    def hf_config(self, path: str | Path | None, trust_remote_code: bool = False) -> Any | None:
        """The transformers config at ``path`` (a stand-in for future outputs), or None if unreadable."""
        if not path:
            return None
        p = self.stand_ins.get(str(path), path)
        try:
            from transformers import AutoConfig

            from textdistill.models.teacher import resolve_model_path

            return AutoConfig.from_pretrained(resolve_model_path(p), trust_remote_code=trust_remote_code)
        except (TextDistillError, OSError, ValueError, KeyError):
            return None

    def shape_of(self, path: str | Path) -> dict[str, Any] | None:
        """``{num_layers, hidden_size, num_heads, intermediate_size}`` of the model at ``path``."""
        c = self.hf_config(path)
        if c is None:
            return None
        return {
            "num_layers": getattr(c, "num_hidden_layers", None),
            "hidden_size": getattr(c, "hidden_size", None),
            "num_heads": getattr(c, "num_attention_heads", None),
            "intermediate_size": getattr(c, "intermediate_size", getattr(c, "hidden_dim", None)),
        }

    def validate(self, rs: ResolvedStage, outputs: dict[str, str], problems: list[str]) -> None:
        """Validate ``rs.config`` with upstream outputs replaced by their stand-ins; write its own stand-in."""
        cfg = rs.config
        if cfg is None:
            return
        missing = [p for p in outputs if p not in self.stand_ins and not Path(p).is_dir()]

        def swap(path: str | None) -> str | None:
            return str(self.stand_ins[path]) if path in self.stand_ins else path

        vcfg = replace(
            cfg,
            teacher=replace(cfg.teacher, path=swap(cfg.teacher.path)),
            student=replace(cfg.student, path=swap(cfg.student.path)),
            # A fresh directory: the pipeline itself owns and replaces the stage's run directory.
            output_dir=str(self.tmp / "runs" / rs.name),
        )
        found: list[str] = []
        try:
            if rs.mode == "general":
                from textdistill.pipeline.general import validate_general

                validate_general(vcfg)
            else:
                from textdistill.config.validate import validate_config

                validate_config(vcfg, rs.mode)
        except ConfigError as e:
            found = list(e.problems)
        except TextDistillError as e:
            found = [str(e)]
        back = {str(v): k for k, v in self.stand_ins.items()}
        for p in found:
            for stand_in, real in back.items():
                p = p.replace(stand_in, real)
            # An input that a skipped stage should have produced cannot be checked until it exists.
            if any(m in p for m in missing):
                continue
            problems.append(f"stages.{rs.name}: {p}")
        # Even a stage with problems usually has a predictable output: later stages are still checked
        # against it, so one run reports the problems of every stage.
        self._write_stand_in(rs, vcfg)

    def _write_stand_in(self, rs: ResolvedStage, vcfg: Config) -> None:
        try:
            predicted = predict_output_config(rs.mode, vcfg, self.hf_config)
        except (TextDistillError, TypeError, ValueError, AttributeError):
            predicted = None  # the stage's own problems are reported; later stages are checked partially
        if predicted is None:
            return
        d = self.tmp / "stand-ins" / rs.name
        d.mkdir(parents=True, exist_ok=True)
        predicted.save_pretrained(str(d))
        self.stand_ins[str(rs.model_dir)] = d


def predict_output_config(mode: str, cfg: Config, load: Callable[..., Any]) -> Any | None:
    """The transformers config of the model a stage will write, from configs only (None: not predictable).

    * finetune: the student checkpoint's config as a sequence classifier of the task's label count;
    * distill: the student's config (truncated or shrunk teacher config, or the pretrained student's) as a
      classifier with the teacher's labels;
    * general: the same student config as a headless encoder (e.g. ``BertModel``), as it is saved.

    The label count is ``data.labels`` when set (1 for regression), else the teacher's / checkpoint's:
    the real one is only known once the data is read, but every later check compares it with itself.

    Args:
        mode: the stage mode.
        cfg: the stage's config, its paths pointing at real or stand-in directories.
        load: ``path -> transformers config or None``.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_MAPPING_NAMES,
    )

    from textdistill.models.hf import info_from_config
    from textdistill.models.students import evenly_spread_layers, shrink_sizes

    s = cfg.student
    if mode == "finetune":
        out = load(s.path)
        base_labels = out.num_labels if out is not None else 2
    else:
        teacher = load(cfg.teacher.path, cfg.teacher.trust_remote_code)
        if teacher is None:
            return None
        base_labels = teacher.num_labels
        if s.type == "pretrained":
            out = load(s.path)
        elif s.type == "truncate":
            out = copy.deepcopy(teacher)
            layers = (
                s.layers
                if s.layers is not None
                else evenly_spread_layers(teacher.num_hidden_layers, int(s.num_layers))
            )
            out.num_hidden_layers = len(layers)
        elif s.type == "shrink":
            out = copy.deepcopy(teacher)
            layers, hidden, heads, intermediate = shrink_sizes(s, info_from_config(teacher))
            out.num_hidden_layers, out.hidden_size = layers, hidden
            out.num_attention_heads, out.intermediate_size = heads, intermediate
        else:
            return None  # a BiLSTM has no transformers config: nothing can warm-start from it
    if out is None:
        return None
    if mode == "general":
        arch = MODEL_MAPPING_NAMES.get(out.model_type)
    else:
        out.num_labels = (
            1 if cfg.data.regression else (len(cfg.data.labels) if cfg.data.labels else base_labels)
        )
        arch = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(out.model_type)
    if arch is None:
        return None
    out.architectures = [arch]
    return out
