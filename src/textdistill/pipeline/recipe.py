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
        mode: general               # finetune | distill | general | generate
        when: corpus                # run only when params.corpus is set (`unless:` is the opposite;
                                    # a list: when every one / unless any one is set)
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

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textdistill.config.loader import from_dict, to_dict
from textdistill.config.schema import Config
from textdistill.errors import ConfigError, TextDistillError
from textdistill.pipeline.recipe_format import (
    COLLAPSE_PRONE_TERMS,
    COSMETIC_KEYS,
    Recipe,
    ResolvedPipeline,
    ResolvedStage,
    StageSpec,
    _did_you_mean,
    apply_recipe_overrides,
)
from textdistill.pipeline.references import (
    _check_references,
    _disabled_reason,
    _merge_stage,
    _resolve_params,
    _stage_ref,
    _substitute,
)
from textdistill.pipeline.stand_ins import _Validator
from textdistill.pipeline.warm_start import _warm_start

if TYPE_CHECKING:
    from textdistill.config.augment import AugmentConfig

__all__ = ["apply_recipe_overrides", "augmented_rows_supported", "canonical_config", "resolve_pipeline"]


def resolve_pipeline(
    recipe: Recipe, params: dict[str, Any] | None, output_dir: str | Path, *, from_stage: str | None = None
) -> ResolvedPipeline:
    """Resolve ``recipe`` for ``params`` and validate every stage, before anything trains.

    Args:
        recipe: the recipe (see :func:`~textdistill.pipeline.recipe_format.load_recipe`).
        params: parameter values (see :func:`~textdistill.pipeline.recipe_format.split_arguments`).
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
                model_dir=run_dir / ("responses.jsonl" if stage.mode == "generate" else "model"),
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
    from textdistill.config.augment import AugmentConfig

    if mode in ("general", "generate"):
        problems.append(f"{where}.augment: augmentation applies to labelled task data, not to a {mode} stage")
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
        # an upstream stage's output (a generate stage's responses) is covered by that stage's fingerprint
        files = [p for p in (cfg.data.train, cfg.data.dev, cfg.data.test) if p and p not in outputs]
    models = []
    if mode != "finetune" and cfg.teacher.path:
        models.append(cfg.teacher.path)
    if cfg.student.type == "pretrained" and cfg.student.path:
        models.append(cfg.student.path)
    if augment is not None:
        models.extend(p for p in (augment.mlm, augment.word_vectors) if p)
    return files, [m for m in models if m not in outputs]
