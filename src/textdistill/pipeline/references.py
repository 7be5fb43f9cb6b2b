"""``${params.NAME}`` / ``${stages.NAME.output}`` references of a recipe: parameters, checks, substitution."""

from __future__ import annotations

import copy
import re
from typing import Any

from textdistill.config.loader import merge
from textdistill.pipeline.recipe_format import Recipe, StageSpec, _did_you_mean

_REF = re.compile(r"\$\{([^}]*)\}")


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
    """Why ``stage`` does not run (its ``when``/``unless`` parameters), or "" when it runs."""
    for name in stage.when:
        if not _is_set(values.get(name)):
            return f"when: {name} (params.{name} is not set)"
    for name in stage.unless:
        if _is_set(values.get(name)):
            return f"unless: {name} (params.{name} is set)"
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
