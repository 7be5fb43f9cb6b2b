"""Warm starts: ``student: {from: STAGE, path: CKPT, fallback: {...}, <shape keys>}`` to a student section."""

from __future__ import annotations

import copy
from typing import Any

from textdistill.pipeline.recipe_format import SHAPE_KEYS, WARM_START_KEYS, ResolvedStage, _did_you_mean
from textdistill.pipeline.references import _is_set
from textdistill.pipeline.stand_ins import _Validator

# Which shape keys each fallback student type accepts (see models.students).
_SHAPE_KEYS_BY_TYPE = {"shrink": SHAPE_KEYS, "truncate": ("num_layers",)}


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
