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

from textdistill.pipeline.runner import run_pipeline

__all__ = ["run_pipeline"]
