"""Running a resolved pipeline: stage by stage, each stage's output the next one's input, with resume.

Layout of the pipeline directory::

    <output_dir>/
      pipeline.json        the recipe, its parameters and one record per stage (status, fingerprint, times,
                           metrics); rewritten atomically after every state change
      <stage>/             the stage's run directory (run.json, config.yaml, metrics.jsonl, model/)
      augment/<file>-<key>.jsonl   augmented training data of stages with an ``augment`` section

Resume rules (see :mod:`textdistill.pipeline.fingerprint` for what a fingerprint covers):

* a stage whose record is ``finished`` with the same fingerprint and whose model directory still exists is
  skipped;
* any other enabled stage runs, and so does every stage after the first one that runs (its inputs are new);
* a task stage (finetune/distill) that was interrupted or failed, with an unchanged fingerprint, continues
  from its newest checkpoint (``run_training(resume=True)``) instead of starting over;
* ``from_stage`` forces a restart there: the stages before it are reused as they are (they must have
  finished; a warning names any whose config changed since), it and every later stage run.

A stage is marked ``running`` before it starts and ``finished`` (or ``failed`` / ``interrupted``, with the
error) after, so an interrupted pipeline resumes at the interrupted stage.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from textdistill.config.loader import to_dict
from textdistill.config.schema import Config
from textdistill.errors import ConfigError
from textdistill.pipeline.fingerprint import sha256_json, stage_fingerprint
from textdistill.pipeline.recipe import resolve_pipeline
from textdistill.pipeline.recipe_format import Recipe, ResolvedPipeline, ResolvedStage, load_recipe

PIPELINE_FILE = "pipeline.json"
STATE_VERSION = 1


@dataclass
class StageResult:
    """What happened to one stage.

    Attributes:
        name: the stage.
        status: ``ran``, ``skipped`` (up to date), ``reused`` (before ``from_stage``), ``disabled``, or
            ``pending`` (a dry run: it would run).
        reason: why (e.g. ``not run yet``, ``config or inputs changed``, ``an earlier stage re-ran``).
        fingerprint: the stage's fingerprint (None when disabled).
        run_dir: its run directory.
        model_dir: its model directory (``${stages.<name>.output}``).
        metrics: dev metrics of the stage's best model (empty for general stages and when not run now).
    """

    name: str
    status: str
    reason: str
    fingerprint: str | None
    run_dir: Path
    model_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineResult:
    """What a pipeline run did, stage by stage."""

    output_dir: Path
    stages: list[StageResult]
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> StageResult:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def model_dir(self) -> Path | None:
        """The model of the last enabled stage: the pipeline's final student."""
        enabled = [s for s in self.stages if s.status != "disabled"]
        return enabled[-1].model_dir if enabled else None


def read_state(output_dir: str | Path) -> dict[str, Any]:
    """The ``pipeline.json`` of ``output_dir`` (an empty state when there is none or it is unreadable)."""
    import json

    path = Path(output_dir) / PIPELINE_FILE
    empty: dict[str, Any] = {"version": STATE_VERSION, "stages": {}}
    if not path.is_file():
        return empty
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # A damaged record only costs re-running stages; never a reason to refuse to run.
        print(f"warning: {path} is unreadable; every stage will run", file=sys.stderr)
        return empty
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict):
        return empty
    return state


def _write_state(output_dir: Path, state: dict[str, Any]) -> None:
    from textdistill.training.callbacks import write_json_atomic

    state["updated"] = time.time()
    write_json_atomic(output_dir / PIPELINE_FILE, state)


def _has_model(model_dir: Path) -> bool:
    from textdistill.models.io import BILSTM_CONFIG

    if model_dir.suffix == ".jsonl":  # a generate stage's output: the responses file
        return model_dir.is_file()
    return (model_dir / "config.json").is_file() or (model_dir / BILSTM_CONFIG).is_file()


@dataclass
class _Step:
    stage: ResolvedStage
    action: str  # run | resume | skip | reuse | disabled
    reason: str
    fingerprint: str | None


def plan_pipeline(
    resolved: ResolvedPipeline, state: dict[str, Any], from_stage: str | None = None
) -> tuple[list[_Step], list[str]]:
    """Decide, for every stage, whether it runs, and compute its fingerprint.

    Returns:
        The steps in order, and warnings (stages reused by ``from_stage`` although they changed).

    Raises:
        ConfigError: ``from_stage`` needs an earlier stage that has not finished.
    """
    records: dict[str, Any] = state.get("stages", {})
    fingerprints: dict[str, str] = {}
    steps: list[_Step] = []
    warnings: list[str] = []
    problems: list[str] = []
    names = [s.name for s in resolved.stages]
    start = names.index(from_stage) if from_stage is not None else None
    rerun_before = False
    for i, stage in enumerate(resolved.stages):
        if not stage.enabled:
            steps.append(_Step(stage, "disabled", stage.reason, None))
            continue
        if stage.canonical is None:
            raise RuntimeError(f"stage {stage.name!r} was not resolved; call resolve_pipeline() first")
        fp = stage_fingerprint(
            mode=stage.mode,
            config=stage.canonical,
            augment=to_dict(stage.augment) if stage.augment is not None else None,
            upstream={u: fingerprints[u] for u in stage.upstream},
            files=stage.files,
            models=stage.models,
        )
        rec = records.get(stage.name) or {}
        finished = rec.get("status") == "finished" and _has_model(stage.model_dir)
        if start is not None and i < start:
            if not finished:
                problems.append(
                    f"--from {from_stage}: stage {stage.name!r} before it has no finished output in "
                    f"{stage.run_dir}; run without --from (or start from {stage.name!r})"
                )
                fingerprints[stage.name] = fp
                continue
            if rec.get("fingerprint") != fp:
                warnings.append(
                    f"stage {stage.name!r} changed since it ran (config or inputs), but --from {from_stage} "
                    "reuses its output as it is; run without --from to redo it"
                )
            fingerprints[stage.name] = rec.get("fingerprint") or fp
            steps.append(_Step(stage, "reuse", f"before --from {from_stage}", fingerprints[stage.name]))
            continue
        fingerprints[stage.name] = fp
        if start is not None:
            action, reason = "run", "forced by --from" if i == start else f"after --from {from_stage}"
        elif not rec:
            action, reason = "run", "not run yet"
        elif rec.get("status") != "finished" and _resumable(stage, rec, fp):
            action, reason = "resume", f"continuing its {rec['status']} run from the last checkpoint"
        elif rec.get("status") != "finished":
            action, reason = "run", f"last run {rec.get('status', 'unknown')}"
        elif not _has_model(stage.model_dir):
            action, reason = "run", "its model directory is missing"
        elif rec.get("fingerprint") != fp:
            action, reason = "run", "config or inputs changed"
        elif rerun_before:
            action, reason = "run", "an earlier stage re-runs"
        else:
            action, reason = "skip", "up to date"
        rerun_before = rerun_before or action in ("run", "resume")
        steps.append(_Step(stage, action, reason, fp))
    if problems:
        raise ConfigError(problems)
    return steps, warnings


def _resumable(stage: ResolvedStage, rec: dict[str, Any], fingerprint: str) -> bool:
    """An interrupted or failed task stage with the same fingerprint continues from its checkpoint.

    ``run_training(resume=True)`` picks the newest good checkpoint (or starts over without one). General
    stages stream their corpus and restart instead.
    """
    return (
        stage.mode in ("finetune", "distill")
        and rec.get("status") in ("running", "failed", "interrupted")
        and rec.get("fingerprint") == fingerprint
        and (stage.run_dir / "run.json").is_file()
    )


def _check_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output-dir: {str(out)!r} is a file; choose a directory path")
    if out.is_dir() and any(out.iterdir()) and not (out / PIPELINE_FILE).exists():
        raise ConfigError(
            f"--output-dir: {str(out)!r} is not empty and holds no {PIPELINE_FILE}, so it is not a pipeline "
            "directory; choose a new or empty directory (stage directories inside it are replaced on re-runs)"
        )


def run_pipeline(
    recipe: str | Path | Recipe,
    params: dict[str, Any] | None = None,
    *,
    output_dir: str | Path | None = None,
    from_stage: str | None = None,
    overrides: list[str] | None = None,
    dry_run: bool = False,
    quiet: bool = False,
) -> PipelineResult:
    """Resolve, validate and run a recipe, skipping stages that are up to date.

    Args:
        recipe: a shipped recipe name, a recipe file, or a :class:`Recipe`.
        params: recipe parameters (``{"teacher": "runs/teacher", "task_train": "train.tsv", ...}``).
        output_dir: the pipeline directory (default ``runs/<recipe name>``).
        from_stage: force a restart at this stage (see the module docstring).
        overrides: ``stages.<stage>.<key>=value`` / ``defaults.<key>=value`` changes to the recipe.
        dry_run: validate and report what would run, without training or writing anything.
        quiet: no plan, progress bars or per-stage messages (warnings are still printed).

    Returns:
        What each stage did.

    Raises:
        ConfigError: every problem of the whole pipeline, before any stage trains.
        DataError, ModelError: raised by a stage at run time (its record says ``failed``).
    """
    if isinstance(recipe, Recipe):
        if overrides:
            raise ConfigError(
                "overrides apply to a recipe name or file; edit the Recipe object directly instead"
            )
    else:
        recipe = load_recipe(recipe, overrides)
    out = Path(output_dir) if output_dir is not None else Path("runs") / recipe.name
    _check_output_dir(out)
    resolved = resolve_pipeline(recipe, params, out, from_stage=from_stage)
    state = read_state(out)
    steps, plan_warnings = plan_pipeline(resolved, state, from_stage)
    warnings = resolved.warnings + plan_warnings
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not quiet:
        print(format_plan(recipe.name, out, steps))
    if dry_run:
        return PipelineResult(out, [_planned(s) for s in steps], warnings)

    out.mkdir(parents=True, exist_ok=True)
    state.update(
        version=STATE_VERSION,
        recipe=recipe.name,
        recipe_file=str(recipe.source) if recipe.source else None,
        params=resolved.params,
        order=[s.name for s in resolved.stages],
    )
    records = state.setdefault("stages", {})
    _write_state(out, state)
    results: list[StageResult] = []
    for step in steps:
        stage = step.stage
        if step.action not in ("run", "resume"):  # skipped, reused or disabled: its recorded metrics
            results.append(_planned(step))
            if step.action != "disabled":
                results[-1].metrics = dict(records.get(stage.name, {}).get("metrics") or {})
            continue
        metrics = _run_stage(out, stage, step, records, state, quiet)
        results.append(
            StageResult(
                stage.name, "ran", step.reason, step.fingerprint, stage.run_dir, stage.model_dir, metrics
            )
        )
    return PipelineResult(out, results, warnings)


_DRY_RUN_STATUS = {
    "run": "pending",
    "resume": "pending",
    "skip": "skipped",
    "reuse": "reused",
    "disabled": "disabled",
}


def _planned(step: _Step) -> StageResult:
    """What a dry run reports for a planned step (nothing runs); a real run, for a step that does not run."""
    status = _DRY_RUN_STATUS[step.action]
    return StageResult(
        step.stage.name, status, step.reason, step.fingerprint, step.stage.run_dir, step.stage.model_dir
    )


def _run_stage(
    out: Path, stage: ResolvedStage, step: _Step, records: dict[str, Any], state: dict[str, Any], quiet: bool
) -> dict[str, Any]:
    from textdistill.pipeline.general import run_general
    from textdistill.training.runner import run_training

    started = time.time()
    rec: dict[str, Any] = {
        "status": "running",
        "mode": stage.mode,
        "fingerprint": step.fingerprint,
        "upstream": list(stage.upstream),
        "run_dir": str(stage.run_dir),
        "model_dir": str(stage.model_dir),
        "started": started,
    }
    records[stage.name] = rec
    _write_state(out, state)
    if not quiet:
        print(f"== stage {stage.name} ({stage.mode}): {step.reason}")
    resume = step.action == "resume"
    try:
        # The pipeline owns its stage directories: a re-run replaces the previous one.
        # A generate stage keeps its directory: its partial responses file resumes by its own fingerprint.
        if stage.run_dir.exists() and not resume and stage.mode != "generate":
            shutil.rmtree(stage.run_dir)
        cfg = stage.config
        if cfg is None:
            raise RuntimeError(f"stage {stage.name!r} was not resolved; call resolve_pipeline() first")
        if stage.augment is not None:
            cfg = _augment(out, stage, cfg, quiet)
        if stage.mode == "general":
            result = run_general(cfg, quiet=quiet)
        elif stage.mode == "generate":
            from textdistill.training.lm_generate import run_generate_stage

            result = run_generate_stage(cfg, stage.model_dir, quiet=quiet)
        else:
            result = run_training(cfg, stage.mode, quiet=quiet, resume=resume)
    except BaseException as e:
        # Ctrl-C / SIGTERM (a KeyboardInterrupt, after the runner saved a checkpoint) is resumable too.
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        rec.update(status=status, error=f"{type(e).__name__}: {e}", ended=time.time())
        _write_state(out, state)
        raise
    metrics: dict[str, Any] = {"dev": result.dev_metrics or {}}
    if getattr(result, "test_metrics", None):  # causal-LM and generate results have none
        metrics["test"] = result.test_metrics
    rec.update(status="finished", ended=time.time(), seconds=round(time.time() - started, 1), metrics=metrics)
    _write_state(out, state)
    return metrics


def _augment(out: Path, stage: ResolvedStage, cfg: Config, quiet: bool) -> Config:
    """Augment the stage's training file (reused while its own fingerprint matches) and train on it."""
    from textdistill.data.augment.files import augment_to_file
    from textdistill.data.task_inference import infer_data, teacher_id2label

    aug = stage.augment
    model = cfg.teacher.path if stage.mode == "distill" else cfg.student.path
    # the augmenter reads the task file: its unset columns / kind are inferred as the stage's run infers them
    cfg = replace(cfg, data=infer_data(cfg.data, teacher_id2label(cfg, stage.mode))[0])
    # Named by input and settings, so stages augmenting the same file the same way (TinyBERT's two task
    # stages) share one file; augment_to_file reuses it while its own fingerprint matches.
    key = sha256_json({"train": cfg.data.train, "augment": to_dict(aug), "tokenizer": model})[:12]
    result = augment_to_file(
        cfg.data.train,
        out / "augment" / f"{Path(cfg.data.train).stem}-{key}.jsonl",
        aug,
        tokenizer=model,
        teacher_embeddings=model if aug.method == "tinybert" and not aug.word_vectors else None,
        text_column=cfg.data.text_column,
        text_pair_column=cfg.data.text_pair_column,
        label_column=cfg.data.label_column,
        format=cfg.data.format,
        regression=cfg.data.regression,
    )
    if not quiet:
        state = "reused" if result.reused else "written"
        print(
            f"   augmented training data {state}: {result.path} ({result.n_original} + {result.n_augmented})"
        )
    return replace(cfg, data=replace(cfg.data, train=str(result.path), format="jsonl"))


def format_plan(name: str, out: Path, steps: list[_Step]) -> str:
    """A small table: stage, mode, action and reason."""
    width = max([len(s.stage.name) for s in steps] + [5])
    lines = [f"pipeline {name} -> {out}"]
    for s in steps:
        lines.append(f"  {s.stage.name:<{width}}  {s.stage.mode:<8}  {s.action:<8}  {s.reason}")
    return "\n".join(lines)
