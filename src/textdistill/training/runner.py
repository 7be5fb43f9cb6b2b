"""From a config to a finished run directory: ``finetune`` and ``distill``.

Order matters: validate everything (config, files, model configs, objective vs. layer counts) before any
weights load; then read data, load the teacher, build the student, train, and write the run directory:

    run_dir/
      run.json           status, versions, timings, final metrics (marks the directory as a run)
      config.yaml        the resolved config
      model/             the best student (HF format or BiLSTM), loadable by transformers / load_student
      metrics.jsonl      training and evaluation curves
      eval_results.json  dev (and test) metrics of the best student, and of the teacher
"""

from __future__ import annotations

import platform
import random
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textdistill.config.loader import dump_yaml
from textdistill.config.schema import Config, LossTermConfig
from textdistill.config.validate import validate_config
from textdistill.errors import DataError, ModelError
from textdistill.training.callbacks import BestModelSaver, MetricsLogger, ProgressBar, write_json_atomic
from textdistill.training.distiller import Distiller, LiveTeacher
from textdistill.training.precision import autocast_dtype, resolve_precision


@dataclass
class RunResult:
    """What a run produced."""

    run_dir: Path
    model_dir: Path
    dev_metrics: dict[str, float]
    test_metrics: dict[str, float] | None = None
    teacher_dev_metrics: dict[str, float] | None = None
    state: dict[str, Any] = field(default_factory=dict)


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def environment() -> dict[str, Any]:
    """Versions and hardware facts written into run.json."""
    import transformers

    from textdistill.training.precision import cpu_bf16_flags

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_bf16_flags": sorted(cpu_bf16_flags()),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def check_same_vocab(student_tok: Any, teacher_tok: Any, student_path: str) -> None:
    """The student reads the teacher's token ids: their vocabularies must be identical."""
    s, t = student_tok.get_vocab(), teacher_tok.get_vocab()
    if s != t:
        only_s = len(set(s) - set(t))
        raise ModelError(
            f"student {student_path!r} uses a different vocabulary than the teacher ({len(s)} vs {len(t)} "
            f"tokens, {only_s} only in the student's): both read the same token ids, so they need the same "
            "tokenizer. Use a student of the teacher's family, or student.type=truncate/shrink/bilstm."
        )


def prepare_run_dir(cfg: Config) -> Path:
    """Create (or, with overwrite, empty) the run directory; validation already refused unsafe cases."""
    out = Path(cfg.output_dir)
    if out.exists() and cfg.overwrite and (out / "run.json").exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def default_metric(regression: bool) -> tuple[str, bool]:
    """The best-model metric and its direction."""
    return ("pearson", True) if regression else ("accuracy", True)


def run_training(cfg: Config, mode: str = "distill", *, quiet: bool = False) -> RunResult:
    """Fine-tune (``mode='finetune'``) or distil (``mode='distill'``) as configured.

    Raises:
        ConfigError, DataError, ModelError: bad input, reported before any weights load where possible.
    """
    from textdistill.data.collate import Collator
    from textdistill.data.encoding import EncodedDataset
    from textdistill.data.samplers import make_loader
    from textdistill.data.task import load_task_data
    from textdistill.evaluation.metrics import evaluate_model
    from textdistill.losses.objective import Objective
    from textdistill.models.io import save_model
    from textdistill.models.students import build_student
    from textdistill.models.teacher import load_teacher, load_tokenizer

    started = time.time()
    if mode == "finetune" and [t.name for t in cfg.objective] == ["kd_kl"]:
        cfg = replace(cfg, objective=[LossTermConfig(name="hard_ce")])  # the default objective is for KD
    validated = validate_config(cfg, mode)
    set_seed(cfg.train.seed)

    # -- data (before weights: a bad file fails fast) ------------------------------------------------------
    if mode == "distill":
        tokenizer = load_tokenizer(cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code)
        from transformers import AutoConfig

        t_config = AutoConfig.from_pretrained(cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code)
        teacher_id2label = {int(k): v for k, v in t_config.id2label.items()}
    else:
        tokenizer = load_tokenizer(cfg.student.path)
        teacher_id2label = None
    if mode == "distill" and cfg.student.type == "pretrained":
        check_same_vocab(load_tokenizer(cfg.student.path), tokenizer, cfg.student.path)
    task = load_task_data(cfg.data, teacher_id2label=teacher_id2label, seed=cfg.train.seed)
    if validated.teacher_info is not None and validated.teacher_info.num_labels != task.num_labels:
        raise DataError(
            f"the teacher {cfg.teacher.path!r} has {validated.teacher_info.num_labels} outputs but the data has "
            f"{task.num_labels} labels ({task.label_map.names if task.label_map else 'regression'}); "
            "distil from a teacher fine-tuned on this task"
        )
    if not task.dev:
        raise DataError("no dev examples: set data.dev=PATH or data.dev_fraction=0.1 to select the best model")
    id2label = task.label_map.to_id2label() if task.label_map else {0: "score"}
    # Re-validate with the real label count (the objective may depend on it, e.g. regression).
    validated = validate_config(cfg, mode, num_labels=task.num_labels)

    train_ds = EncodedDataset(task.train, tokenizer, cfg.data.max_length, task.label_map, regression=task.regression)
    dev_ds = EncodedDataset(task.dev, tokenizer, cfg.data.max_length, task.label_map, regression=task.regression)
    test_ds = (
        EncodedDataset(task.test, tokenizer, cfg.data.max_length, task.label_map, regression=task.regression)
        if task.test
        else None
    )
    collator = Collator.for_tokenizer(tokenizer)

    # -- models -------------------------------------------------------------------------------------------
    teacher = None
    if mode == "distill":
        teacher = load_teacher(cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code)
        student = build_student(cfg.student, teacher, task.num_labels, id2label)
    else:
        from textdistill.models.students import STUDENTS

        student = STUDENTS.get("pretrained").build(cfg.student, None, task.num_labels, id2label)
    s_info = getattr(student, "info", None) or validated.student_info
    objective = Objective(cfg.objective, validated.teacher_info, s_info)

    run_dir = prepare_run_dir(cfg)
    model_dir = run_dir / "model"
    run_json: dict[str, Any] = {
        "status": "running",
        "mode": mode,
        "started": started,
        "textdistill_version": _version(),
        "environment": environment(),
        "data": task.stats,
    }
    write_json_atomic(run_dir / "run.json", run_json)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg), encoding="utf-8")
    if not quiet:
        print(f"textdistill {mode}: run directory {run_dir}")

    # -- training -----------------------------------------------------------------------------------------
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    precision = resolve_precision(cfg.train.precision, device)
    ac_dtype = autocast_dtype(precision)

    def loader_fn(epoch: int, start_batch: int):
        loader = make_loader(
            train_ds,
            cfg.train.batch_size,
            shuffle=True,
            group_by_length=cfg.data.group_by_length,
            seed=cfg.train.seed,
            collator=collator,
            start_batch=start_batch,
        )
        loader.batch_sampler.set_epoch(epoch)
        return loader

    def eval_loader(ds):
        return make_loader(
            ds, cfg.train.eval_batch_size, shuffle=False, group_by_length=True, seed=0, collator=collator
        )

    def evaluator(model) -> dict[str, float]:
        metrics, _ = evaluate_model(
            model, eval_loader(dev_ds), regression=task.regression, device=device, autocast_dtype=ac_dtype
        )
        return metrics

    metric, greater = default_metric(task.regression)
    metric = cfg.train.metric or metric
    greater = greater if metric not in ("mse", "loss") else False
    best: dict[str, Any] = {}

    def save_best(model, metrics: dict[str, float]) -> None:
        save_model(model, model_dir, tokenizer, id2label)
        best.update(metrics)
        write_json_atomic(run_dir / "eval_results.json", {"dev": dict(metrics), "step": distiller.state.step})

    teacher_source = None
    if teacher is not None:
        teacher.to(device)
        teacher_source = LiveTeacher(teacher, objective.teacher_request(), precision, device)
    steps_per_epoch = loader_fn(0, 0).batch_sampler.num_batches
    distiller = Distiller(
        student=student,
        objective=objective,
        train_cfg=cfg.train,
        train_loader_fn=loader_fn,
        steps_per_epoch=steps_per_epoch,
        teacher=teacher_source,
        evaluator=evaluator,
        metric=metric,
        greater_is_better=greater,
        callbacks=[
            MetricsLogger(run_dir, cfg.train.log_every),
            ProgressBar(mode, enabled=cfg.train.progress and not quiet),
            BestModelSaver(save_best),
        ],
        accelerator=accelerator,
    )
    try:
        state = distiller.fit()
    except BaseException as e:
        run_json.update(status="failed", error=f"{type(e).__name__}: {e}", ended=time.time())
        write_json_atomic(run_dir / "run.json", run_json)
        raise

    # -- final evaluation of the best student (and the teacher, for retention) ---------------------------
    from textdistill.models.io import load_student

    best_model = load_student(model_dir).to(device)
    dev_metrics, student_dev_logits = evaluate_model(
        best_model, eval_loader(dev_ds), regression=task.regression, device=device, autocast_dtype=ac_dtype
    )
    results: dict[str, Any] = {"dev": dev_metrics, "best_step": state.best_step}
    teacher_dev = None
    if teacher is not None:
        teacher_dev, teacher_dev_logits = evaluate_model(
            teacher, eval_loader(dev_ds), regression=task.regression, device=device, autocast_dtype=ac_dtype
        )
        results["teacher_dev"] = teacher_dev
        from textdistill.evaluation.metrics import agreement

        results["dev_agreement_with_teacher"] = agreement(student_dev_logits, teacher_dev_logits)
    test_metrics = None
    if test_ds is not None and any(e.label is not None for e in task.test):
        test_metrics, _ = evaluate_model(
            best_model, eval_loader(test_ds), regression=task.regression, device=device, autocast_dtype=ac_dtype
        )
        results["test"] = test_metrics
    from textdistill.models.io import count_parameters

    results["parameters"] = count_parameters(best_model)
    if teacher is not None:
        results["teacher_parameters"] = count_parameters(teacher)
    write_json_atomic(run_dir / "eval_results.json", results)
    run_json.update(
        status="finished",
        ended=time.time(),
        seconds=round(time.time() - started, 1),
        precision=precision,
        state=state.to_dict(),
        results=results,
    )
    write_json_atomic(run_dir / "run.json", run_json)
    return RunResult(
        run_dir=run_dir,
        model_dir=model_dir,
        dev_metrics=dev_metrics,
        test_metrics=test_metrics,
        teacher_dev_metrics=teacher_dev,
        state=state.to_dict(),
    )


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("textdistill")
    except Exception:
        return "unknown"
