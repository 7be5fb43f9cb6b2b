"""Multi-stage pipelines: recipes (YAML), whole-pipeline validation, stage hand-off and resume.

Example:
    >>> from textdistill.pipeline import run_pipeline
    >>> result = run_pipeline("tinybert", {"teacher": "runs/teacher", "task_train": "train.tsv",
    ...                                    "task_dev": "dev.tsv", "corpus": "wiki.txt"},
    ...                       output_dir="runs/tinybert")  # doctest: +SKIP
    >>> result.model_dir  # the final student  # doctest: +SKIP

General distillation on a plain-text corpus lives in :mod:`textdistill.pipeline.general` (imported on use:
it needs torch).
"""

from textdistill.pipeline.fingerprint import dir_fingerprint, file_fingerprint, stage_fingerprint
from textdistill.pipeline.recipe import resolve_pipeline
from textdistill.pipeline.recipe_format import (
    Recipe,
    ResolvedPipeline,
    ResolvedStage,
    load_recipe,
    recipe_from_dict,
    split_arguments,
)
from textdistill.pipeline.runner import PipelineResult, StageResult, plan_pipeline, read_state, run_pipeline

__all__ = [
    "PipelineResult",
    "Recipe",
    "ResolvedPipeline",
    "ResolvedStage",
    "StageResult",
    "dir_fingerprint",
    "file_fingerprint",
    "load_recipe",
    "plan_pipeline",
    "read_state",
    "recipe_from_dict",
    "resolve_pipeline",
    "run_pipeline",
    "split_arguments",
    "stage_fingerprint",
]
