"""From a config to a finished run directory: ``finetune`` and ``distill``.

Order matters: validate everything (config, files, model configs, objective vs. layer counts) before any
weights load; then read data, load the teacher, build the student, train, and write the run directory:

    run_dir/
      run.json           status, versions, timings, final metrics (marks the directory as a run)
      config.yaml        the resolved config
      model/             the best student (HF format or BiLSTM), loadable by transformers / load_student
      metrics.jsonl      training and evaluation curves
      eval_results.json  dev (and test) metrics of the best student, and of the teacher
      checkpoints/       resumable checkpoints step-N/ (see training/checkpoint.py); ``resume=True`` continues
                         from the newest good one, SIGINT/SIGTERM stop after saving one (training/signals.py)

Data parallel (``accelerate launch -m textdistill distill ...`` or ``textdistill distill --num-processes N``,
see docs/distributed.md): every process runs this function; ``train.batch_size`` is the *global* batch, which
the distiller splits between the processes; the teacher-cache pass and evaluation are split too (evaluation
gathers every example exactly once); only the main process writes the run directory, and every process
returns the same metrics.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from textdistill.config.loader import dump_yaml
from textdistill.config.schema import Config, LossTermConfig
from textdistill.config.validate import Validated, validate_config
from textdistill.data.task_inference import TaskSpec, resolve_task
from textdistill.errors import ConfigError, DataError
from textdistill.training.callbacks import (
    BestModelSaver,
    MetricsLogger,
    ProgressBar,
    write_json_atomic,
    write_text_atomic,
)
from textdistill.training.checkpoint import Checkpoint, CheckpointSaver, preserved_rng, restore_checkpoint
from textdistill.training.distiller import Callback, Distiller, TeacherSource, TrainState
from textdistill.training.precision import autocast_dtype, resolve_precision
from textdistill.training.run_dir import (
    environment,
    find_resume_point,
    package_version,
    prepare_run_dir,
    record_interruption,
    reopened_run_json,
    resume_command,
    write_run_report,
)
from textdistill.training.run_guard import record_run_json, run_guard
from textdistill.training.sharded_eval import evaluate_sharded
from textdistill.training.signals import graceful_stop
from textdistill.training.task_hooks import (
    FINETUNE_ADVICE,
    TEACHER_ADVICE,
    check_coverage,
    check_model,
    update_labels,
)
from textdistill.training.teacher_cache.dev_eval import teacher_dev_evaluation


@dataclass
class RunResult:
    """What a run produced."""

    run_dir: Path
    model_dir: Path
    dev_metrics: dict[str, float]
    test_metrics: dict[str, float] | None = None
    teacher_dev_metrics: dict[str, float] | None = None
    state: dict[str, Any] = field(default_factory=dict)


def run_training(
    cfg: Config, mode: str = "distill", *, quiet: bool = False, resume: bool = False
) -> RunResult:
    """Fine-tune (``mode='finetune'``) or distil (``mode='distill'``) as configured.

    The run is six phases, each a function below: resolve (config, validation, processes, resume point)
    -> data -> models (teacher, student, objective) -> run directory -> loop (the teacher source, the
    Distiller and its callbacks, ``fit``) -> finish (final metrics, run.json, report).

    Args:
        cfg: the resolved config.
        mode: ``finetune`` or ``distill``.
        quiet: no progress bar and fewer messages.
        resume: continue the run in ``cfg.output_dir`` from its newest good checkpoint, ending with exactly
            the weights and metrics of an uninterrupted run (same device and precision). Without a usable
            checkpoint the run starts over; a finished run is refused. ``overwrite`` is ignored.

    Raises:
        ConfigError, DataError, ModelError: bad input, reported before any weights load where possible.
        RunDirError: nothing can be resumed (finished run), or a checkpoint cannot be written/used.
        TrainingInterrupted: SIGINT/SIGTERM stopped training after a checkpoint was saved (a
            KeyboardInterrupt with ``exit_code`` 130/143; the message holds the resume command).
    """
    # One process per run directory, and every way out recorded in run.json (training/run_guard.py).
    with run_guard(cfg.output_dir, mode, quiet=quiet):
        return _run_phases(cfg, mode, quiet=quiet, resume=resume)


def _run_phases(cfg: Config, mode: str, *, quiet: bool, resume: bool) -> RunResult:
    """The six phases of :func:`run_training`, inside its guard."""
    from textdistill.training.lm_runner import is_causal_lm_run, run_lm_training

    if is_causal_lm_run(cfg):  # generative LMs: their own phases (training/lm_runner.py), the same loop
        return run_lm_training(cfg, mode, quiet=quiet, resume=resume)
    run = _resolve(cfg, mode, quiet=quiet, resume=resume)
    data = _load_data(run)
    models = _build_models(run, data)
    out = _open_run_dir(run, data)
    loop = _Loop.create(run, data)
    distiller, saver = _make_distiller(run, data, models, out, loop)
    state = _fit(run, out, distiller, saver)
    return _finish(run, data, models, out, loop, distiller, state)


# ------------------------------------------------------------------------------------------ 1. resolve
@dataclass
class _Run:
    """What the resolve phase settles: the effective config, the processes, the resume point."""

    cfg: Config
    mode: str
    quiet: bool
    validation_cfg: Config  # cfg as validated (a resumed run directory is validated as if overwritten)
    validated: Validated  # before the label count is known
    accelerator: Any
    resume_from: Checkpoint | None
    resume: bool
    started: float
    spec: TaskSpec | None = None  # the task as inferred (data/task_inference.py), printed once at start

    @property
    def main(self) -> bool:
        """Only the main process writes the run directory (and prints)."""
        return bool(self.accelerator.is_main_process)


def _resolve(cfg: Config, mode: str, *, quiet: bool, resume: bool) -> _Run:
    """Check the config (before any weights load), start the processes, find the resume point, seed."""
    started = time.time()
    if mode == "finetune" and [t.name for t in cfg.objective] == ["kd_kl"]:
        cfg = replace(cfg, objective=[LossTermConfig(name="hard_ce")])  # the default objective is for KD
    cfg, spec = resolve_task(cfg, mode)  # columns, kind, metric, logit term, lr: inferred where unset
    if cfg.train.keep_checkpoints < 0:
        raise ConfigError(
            f"train.keep_checkpoints: must be >= 0 (0 writes no checkpoint), got {cfg.train.keep_checkpoints}"
        )
    # A resumed run dir holds a run by definition: validate as if overwriting, but never empty it.
    vcfg = replace(cfg, overwrite=True) if resume else cfg
    validated = validate_config(vcfg, mode)
    from accelerate import Accelerator

    # Created first: with several processes, only the main one writes the run directory (and prints).
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    quiet = quiet or not accelerator.is_main_process
    if not quiet:
        print(f"textdistill {mode}: {spec.describe()}")
    resume_from = find_resume_point(cfg, mode) if resume else None
    accelerator.wait_for_everyone()  # every process has read the run directory before the main one writes
    set_seed(cfg.train.seed)
    return _Run(cfg, mode, quiet, vcfg, validated, accelerator, resume_from, resume, started, spec)


# --------------------------------------------------------------------------------------------- 2. data
@dataclass
class _Data:
    """The task, its encoded datasets and the validation that knows the real label count."""

    tokenizer: Any
    task: Any
    train: Any
    dev: Any
    test: Any | None
    collator: Any
    id2label: dict[int, str]
    validated: Validated
    xtok: Any = None
    """The student's tokenization against the teacher's (training.cross_tokenizer.CrossTokenizerPlan)."""
    coverage: dict[str, Any] = field(default_factory=dict)  # vocabulary coverage of the training text


def _load_data(run: _Run) -> _Data:
    """Read, check and encode the data (before the weights load: a bad file fails fast)."""
    from textdistill.data.collate import Collator
    from textdistill.data.encoding import EncodedDataset
    from textdistill.data.task import load_task_data
    from textdistill.models.teacher import load_tokenizer

    cfg, mode = run.cfg, run.mode
    if mode == "distill":
        tokenizer = load_tokenizer(cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code)
        from transformers import AutoConfig

        t_config = AutoConfig.from_pretrained(
            cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code
        )
        teacher_id2label = {int(k): v for k, v in t_config.id2label.items()}
    else:
        tokenizer = load_tokenizer(cfg.student.path)
        teacher_id2label = None
    task = load_task_data(cfg.data, teacher_id2label=teacher_id2label, seed=cfg.train.seed)
    validated = run.validated
    if validated.teacher_info is not None and validated.teacher_info.num_labels != task.num_labels:
        raise DataError(
            f"the teacher {cfg.teacher.path!r} has {validated.teacher_info.num_labels} outputs but the data has "
            f"{task.num_labels} labels ({task.label_map.names if task.label_map else 'regression'}); "
            "distil from a teacher fine-tuned on this task"
        )
    if not task.dev:
        raise DataError(
            "no dev examples: set data.dev=PATH or data.dev_fraction=0.1 to select the best model"
        )
    # Re-validate with the real label count (the objective may depend on it, e.g. regression).
    validated = validate_config(run.validation_cfg, mode, num_labels=task.num_labels)

    train_examples = task.train
    if cfg.augment.method != "none":
        # the main process writes the augmentation file first, the others then read it
        with run.accelerator.main_process_first():
            train_examples = augmented_train(cfg, mode, task, tokenizer, quiet=run.quiet)
    # The student may read the text with its own (or a trimmed) tokenizer: cross-tokenizer logit KD.
    xtok = None
    if mode == "distill" and task.token_task:  # per-token KD reads the teacher's tokens position by position
        from textdistill.training.token_tokenization import token_tokenization_plan

        xtok = token_tokenization_plan(cfg, tokenizer, train_examples)
    elif mode == "distill":
        from textdistill.training.cross_tokenizer import prepare_cross_tokenizer

        xtok = prepare_cross_tokenizer(cfg, validated, tokenizer, train_examples, task, quiet=run.quiet)
        tokenizer = xtok.tokenizer

    def encode(examples: list) -> EncodedDataset:
        return EncodedDataset(
            examples, tokenizer, cfg.data.max_length, task.label_map, regression=task.regression
        )

    run.spec = update_labels(run.spec, task.label_map) if run.spec is not None else None

    if task.token_task:  # token classification: words aligned with sub-tokens (data/token_encoding.py)
        from textdistill.data.token_encoding import encode_token_task

        d = cfg.data
        train, dev, test = encode_token_task(
            task, train_examples, tokenizer, d.max_length, d.label_all_subtokens
        )
    else:
        train, dev, test = encode(train_examples), encode(task.dev), encode(task.test) if task.test else None
    return _Data(
        tokenizer=tokenizer,
        task=task,
        train=train,
        dev=dev,
        test=test,
        collator=Collator.for_tokenizer(tokenizer),
        id2label=task.label_map.to_id2label() if task.label_map else {0: "score"},
        validated=validated,
        xtok=xtok,
        coverage=check_coverage(task.train, tokenizer, cfg.data.max_length, quiet=run.quiet),
    )


# ------------------------------------------------------------------------------------------- 3. models
@dataclass
class _Models:
    """The teacher (None when fine-tuning), the student and the objective that compares them."""

    teacher: nn.Module | None
    student: nn.Module
    objective: nn.Module


def _build_models(run: _Run, data: _Data) -> _Models:
    """Load the teacher, build the student (from the teacher for truncate/shrink) and the objective."""
    from textdistill.losses.objective import Objective
    from textdistill.models.students import build_pretrained, build_student
    from textdistill.models.teacher import load_teacher

    cfg, num_labels = run.cfg, data.task.num_labels
    teacher = None
    if run.mode == "distill":
        teacher = load_teacher(cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code)
        student = data.xtok.apply(build_student(cfg.student, teacher, num_labels, data.id2label))
    else:
        student = build_pretrained(cfg.student, num_labels, data.id2label, token=data.task.token_task)
    s_info = getattr(student, "info", None) or data.validated.student_info
    return _Models(teacher, student, Objective(cfg.objective, data.validated.teacher_info, s_info))


# ------------------------------------------------------------------------------------ 4. run directory
@dataclass
class _Out:
    """The run directory and its run.json record (kept in memory, written at every change of status)."""

    run_dir: Path
    run_json: dict[str, Any]
    config_yaml: str
    resume_hint: str

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    def record(self, main: bool, *, protected: bool = False, **fields: Any) -> None:
        """Update run.json (written by the main process only); ``protected`` on failure paths: a write
        error becomes a note, so the error being handled is the one the user sees."""
        self.run_json.update(fields)
        if main and protected:
            record_run_json(self.run_dir, self.run_json)
        elif main:
            write_json_atomic(self.run_dir / "run.json", self.run_json)


def _open_run_dir(run: _Run, data: _Data) -> _Out:
    """Create (or reopen, when resuming) the run directory; write run.json and config.yaml."""
    cfg, resume_from = run.cfg, run.resume_from
    if resume_from is not None:
        run_dir = Path(cfg.output_dir)
        run_json = reopened_run_json(run_dir, resume_from)
    else:
        # resume without a usable checkpoint starts over: empty the directory like overwrite does
        if run.main:
            run_dir = prepare_run_dir(cfg, starting_over=run.resume)
        else:
            run_dir = Path(cfg.output_dir)
        run_json = {
            "status": "running",
            "mode": run.mode,
            "started": run.started,
            "textdistill_version": package_version(),
            "environment": environment(),
            "data": data.task.stats,
        }
    run_json["num_processes"] = run.accelerator.num_processes
    if run.spec is not None:
        run_json.update(task=run.spec.to_dict(), coverage=data.coverage)
    out = _Out(run_dir, run_json, dump_yaml(cfg), resume_command(run_dir, run.mode))
    out.record(run.main)
    if run.main:
        write_text_atomic(run_dir / "config.yaml", out.config_yaml)
    run.accelerator.wait_for_everyone()
    if not run.quiet:
        print(f"textdistill {run.mode}: run directory {run_dir}")
    return out


# --------------------------------------------------------------------------------------------- 5. loop
@dataclass
class _Loop:
    """Device, precision, the data loaders and the (sharded) evaluation of the loop and the final results.

    ``last_eval`` holds the dev metrics and logits of the latest evaluation, ``best_eval`` those of the best
    one: the final results reuse them instead of reloading and re-evaluating the saved best student (same
    weights, same deterministic evaluation, same numbers; a test checks it).
    """

    cfg: Config
    data: _Data
    device: torch.device
    precision: str
    rank: int
    world: int
    last_eval: dict[str, Any] = field(default_factory=dict)
    best_eval: dict[str, Any] = field(default_factory=dict)
    teacher_dev: tuple[dict[str, float], torch.Tensor] | None = None  # scored before training starts

    @classmethod
    def create(cls, run: _Run, data: _Data) -> _Loop:
        acc = run.accelerator
        device = acc.device
        precision = resolve_precision(run.cfg.train.precision, device)
        return cls(run.cfg, data, device, precision, acc.process_index, acc.num_processes)

    def train_loader(self, epoch: int, start_batch: int) -> Any:
        """Epoch ``epoch``'s training batches from batch ``start_batch`` on (the sampler is seeded per epoch)."""
        from textdistill.data.samplers import make_loader

        cfg = self.cfg
        loader = make_loader(
            self.data.train,
            cfg.train.batch_size,
            shuffle=True,
            group_by_length=cfg.data.group_by_length,
            seed=cfg.train.seed,
            collator=self.data.collator,
            start_batch=start_batch,
        )
        loader.batch_sampler.set_epoch(epoch)
        # Its own generator: creating the iterator must not draw from the global torch RNG, or a resumed
        # run (which creates one iterator more than the uninterrupted one) would shift the dropout stream.
        loader.generator = torch.Generator().manual_seed((cfg.train.seed * 100_003 + epoch) % 2**63)
        return loader

    def _eval_loader(self, ds: Any) -> Any:
        from textdistill.data.samplers import make_loader

        return make_loader(
            ds,
            self.cfg.train.eval_batch_size,
            shuffle=False,
            group_by_length=True,
            seed=0,
            collator=self.data.collator,
        )

    def evaluate(self, model: nn.Module, ds: Any) -> tuple[dict[str, float], torch.Tensor]:
        """Metrics and logits of ``model`` on ``ds``, split over the processes (collective)."""
        return evaluate_sharded(
            model,
            ds,
            self._eval_loader,
            regression=self.data.task.regression,
            device=self.device,
            autocast_dtype=autocast_dtype(self.precision),
            rank=self.rank,
            world=self.world,
        )

    def evaluate_dev(self, model: nn.Module) -> dict[str, float]:
        """The Distiller's evaluator: dev metrics, remembering the logits."""
        metrics, logits = self.evaluate(model, self.data.dev)
        self.last_eval.update(metrics=dict(metrics), logits=logits)
        return metrics


class _RememberBest(Callback):
    """Keeps the best evaluation's metrics and logits (every process; saving the model is the main one's)."""

    def __init__(self, loop: _Loop):
        self.loop = loop

    def on_evaluate(self, distiller: Distiller, metrics: dict[str, float], improved: bool) -> None:
        if improved:
            self.loop.best_eval.update(self.loop.last_eval)


def _teacher_source(run: _Run, data: _Data, models: _Models, loop: _Loop) -> TeacherSource | None:
    """The teacher outputs the loop trains against: live, or a teacher cache found or built now."""
    if models.teacher is None:
        return None
    models.teacher.to(loop.device)
    from textdistill.training.teacher_cache.source import build_teacher_source

    # Only the training data goes into the cache: it is keyed by example id, and dev ids overlap train's.
    # With several processes the build is collective: each runs the teacher on its share of the data.
    source = build_teacher_source(
        run.cfg,
        models.teacher,
        models.objective,
        [data.xtok.teacher_train(data.train)],  # the teacher's own encoding when the tokenizers differ
        data.xtok.teacher_collator(data.collator),
        loop.device,
        loop.precision,
        quiet=run.quiet,
    )
    return data.xtok.wrap_source(source, data.collator)


def _check_teacher(run: _Run, data: _Data, models: _Models, out: _Out, loop: _Loop) -> None:
    """Score the teacher on dev before training (cached; the final results reuse it) and warn when it does
    not beat the majority class: distilling it would teach the student nothing useful."""
    teacher = models.teacher
    if teacher is None or run.spec is None:
        return
    loop.teacher_dev = _teacher_dev(run, data, teacher, loop)
    metrics, logits = loop.teacher_dev
    warnings = check_model(
        "the teacher", metrics, logits, data.task, run.spec, TEACHER_ADVICE, quiet=run.quiet
    )
    out.record(run.main, warnings=warnings)


def _teacher_dev(
    run: _Run, data: _Data, teacher: nn.Module, loop: _Loop
) -> tuple[dict[str, float], torch.Tensor]:
    """The teacher's dev metrics and logits, on the teacher's own tokens (from its cache when it holds them)."""
    t_dev = data.xtok.teacher_dev(data.dev)
    # Only a cold cache runs the teacher here: the RNG must not move, or cold and warm runs would differ.
    with preserved_rng():
        return teacher_dev_evaluation(
            run.cfg,
            teacher,
            t_dev,
            loop.precision,
            lambda: loop.evaluate(teacher, t_dev),
            world=loop.world,
            quiet=run.quiet,
        )


def _make_distiller(
    run: _Run, data: _Data, models: _Models, out: _Out, loop: _Loop
) -> tuple[Distiller, CheckpointSaver | None]:
    """The Distiller with its teacher source and callbacks, restored from the checkpoint when resuming."""
    from textdistill.models.io import save_model

    cfg = run.cfg
    metric, greater = ("entity_f1", True) if data.task.token_task else default_metric(data.task.regression)
    metric = cfg.train.metric or metric
    greater = greater if metric not in ("mse", "loss") else False

    def save_best(model: nn.Module, metrics: dict[str, float]) -> None:
        save_model(model, out.model_dir, data.tokenizer, data.id2label)
        write_json_atomic(
            out.run_dir / "eval_results.json", {"dev": dict(metrics), "step": distiller.state.step}
        )

    teacher_source = _teacher_source(run, data, models, loop)
    _check_teacher(run, data, models, out, loop)
    saver = None
    if cfg.train.keep_checkpoints > 0:
        saver = CheckpointSaver(
            out.run_dir,
            save_every=cfg.train.save_every,
            keep=cfg.train.keep_checkpoints,
            config_yaml=out.config_yaml,
            meta={"mode": run.mode, "precision": loop.precision},
            append_only=["metrics.jsonl"],
            resume_hint=out.resume_hint,
        )
    distiller = Distiller(
        student=models.student,
        objective=models.objective,
        train_cfg=cfg.train,
        train_loader_fn=loop.train_loader,
        steps_per_epoch=loop.train_loader(0, 0).batch_sampler.num_batches,
        teacher=teacher_source,
        evaluator=loop.evaluate_dev,
        metric=metric,
        greater_is_better=greater,
        callbacks=[
            # The other processes hold a no-op in its place: the callbacks' positions name their states in
            # the checkpoints.
            MetricsLogger(out.run_dir, cfg.train.log_every) if run.main else Callback(),
            ProgressBar(run.mode, enabled=cfg.train.progress and not run.quiet),
            BestModelSaver(save_best),
            *([saver] if saver is not None else []),
            _RememberBest(loop),
        ],
        accelerator=run.accelerator,
    )
    if run.resume_from is not None:
        _restore(run, distiller, saver, loop.precision)
    return distiller, saver


def _restore(run: _Run, distiller: Distiller, saver: CheckpointSaver | None, precision: str) -> None:
    """Continue from the resume checkpoint (last before fit: it restores the RNG states)."""
    ckpt = run.resume_from
    assert ckpt is not None
    saved_precision = ckpt.trainer_state().get("meta", {}).get("precision")
    if saved_precision not in (None, precision) and not run.quiet:
        print(
            f"textdistill: warning: the checkpoint was trained in {saved_precision}, this run uses {precision}"
            " (train.precision=auto chose differently on this machine): the result will not be bit-exact"
        )
    restore_checkpoint(distiller, ckpt)
    if saver is not None:
        saver.resumed_from(ckpt)
    if not run.quiet:
        print(f"textdistill: resuming from {ckpt.path} (step {ckpt.step})")


def _fit(run: _Run, out: _Out, distiller: Distiller, saver: CheckpointSaver | None) -> TrainState:
    """The training loop (:meth:`Distiller.fit`); a failure or a signal stop is recorded in run.json."""
    try:
        with graceful_stop(distiller.request_stop, quiet=run.quiet, resume_hint=out.resume_hint):
            state = distiller.fit()
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        out.run_json.update(status=status, error=f"{type(e).__name__}: {e}", ended=time.time())
        if saver is not None and saver.last_path is not None:
            out.run_json.update(checkpoint=str(saver.last_path), resume_command=out.resume_hint)
        out.record(run.main, protected=True)  # the error above is the one to report
        raise
    if distiller.stop_signal is not None:
        raise record_interruption(distiller, saver, out.run_dir, out.run_json, out.resume_hint, run.quiet)
    return state


# ------------------------------------------------------------------------------------------- 6. finish
def _finish(
    run: _Run, data: _Data, models: _Models, out: _Out, loop: _Loop, distiller: Distiller, state: TrainState
) -> RunResult:
    """Final metrics of the best student (and the teacher, for retention); run.json finished; the report."""
    try:
        results = _final_results(run, data, models, out, loop, distiller, state)
        out.run_json.update(
            status="finished",
            ended=time.time(),
            seconds=round(time.time() - run.started, 1),
            precision=loop.precision,
            state=state.to_dict(),
            results=results,
        )
        if run.main:
            write_json_atomic(out.run_dir / "eval_results.json", results)
        if run.mode == "distill" and run.cfg.report and run.main:
            write_run_report(run.cfg, out.run_dir, quiet=run.quiet)  # on the run's metric: train.metric
        out.record(run.main)  # last: "finished" means the report is there too
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        out.record(
            run.main, protected=True, status=status, error=f"{type(e).__name__}: {e}", ended=time.time()
        )
        raise
    run.accelerator.wait_for_everyone()  # the run directory is complete when any process returns
    return RunResult(
        run_dir=out.run_dir,
        model_dir=out.model_dir,
        dev_metrics=results["dev"],
        test_metrics=results.get("test"),
        teacher_dev_metrics=results.get("teacher_dev"),
        state=state.to_dict(),
    )


def _final_results(
    run: _Run, data: _Data, models: _Models, out: _Out, loop: _Loop, distiller: Distiller, state: TrainState
) -> dict[str, Any]:
    """eval_results.json: dev (and test) metrics of the best student, the teacher's, their agreement."""
    from textdistill.models.io import count_parameters, load_student, save_model

    if run.main and not out.model_dir.is_dir():
        # No evaluation ever improved (e.g. every metric NaN): keep the final student rather than nothing.
        save_model(distiller.unwrapped_student(), out.model_dir, data.tokenizer, data.id2label)
    run.accelerator.wait_for_everyone()  # the main process has written the best student
    best_model = None
    if loop.best_eval and state.best_step is not None:
        dev_metrics, student_dev_logits = loop.best_eval["metrics"], loop.best_eval["logits"]
    else:  # resumed without a new best, or no evaluation ever improved: score the saved model
        best_model = load_student(out.model_dir).to(loop.device)
        dev_metrics, student_dev_logits = loop.evaluate(best_model, data.dev)
    results: dict[str, Any] = {"dev": dev_metrics, "best_step": state.best_step}
    if data.task.token_task:  # how the entity metrics below matched entities (data.entity_mode)
        results["entity_mode"] = getattr(data.task, "entity_mode", "lenient")
    if run.spec is not None:
        results.update(metric=run.spec.metric, task=run.spec.to_dict())
        who = "the student" if run.mode == "distill" else "the fine-tuned model"
        advice = FINETUNE_ADVICE if run.mode == "finetune" else "Train longer or with another train.lr."
        found = check_model(
            who, dev_metrics, student_dev_logits, data.task, run.spec, advice, quiet=run.quiet
        )
        out.run_json.setdefault("warnings", []).extend(found)
    teacher = models.teacher
    if teacher is not None:
        from textdistill.evaluation.metrics import agreement

        if loop.teacher_dev is None:  # not scored before training (no task spec)
            loop.teacher_dev = _teacher_dev(run, data, teacher, loop)
        results["teacher_dev"], teacher_dev_logits = loop.teacher_dev
        results["dev_agreement_with_teacher"] = agreement(student_dev_logits, teacher_dev_logits)
    if data.test is not None and any(_labelled(e) for e in data.task.test):
        if best_model is None:
            best_model = load_student(out.model_dir).to(loop.device)
        results["test"], _ = loop.evaluate(best_model, data.test)
    # the best student has the final student's architecture (only the weights differ)
    results["parameters"] = count_parameters(best_model or distiller.unwrapped_student())
    if teacher is not None:
        results["teacher_parameters"] = count_parameters(teacher)
    return results


# ----------------------------------------------------------------------------------------------- helpers
def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _labelled(example: Any) -> bool:
    """Whether an example (text or token) has a gold label / gold tags."""
    return getattr(example, "label", None) is not None or getattr(example, "tags", None) is not None


def default_metric(regression: bool) -> tuple[str, bool]:
    """The best-model metric and its direction."""
    return ("pearson", True) if regression else ("accuracy", True)


def augmented_train(cfg: Config, mode: str, task: Any, tokenizer: Any, *, quiet: bool = False) -> list:
    """The training examples plus their augmentations (cached on disk by fingerprint).

    Augmented rows carry ``is_original=False`` and no label: they are learnt from the teacher's soft labels
    only, and hard-label terms skip them (labels are never copied blindly to a changed sentence).
    """
    from textdistill.data.augment.files import augment_to_file
    from textdistill.data.readers import read_examples

    if mode != "distill":
        raise ConfigError(
            "augment.method: augmentation needs a teacher to relabel the new examples; use it with distill"
        )
    if getattr(task, "token_task", False):
        raise ConfigError(
            f"augment.method={cfg.augment.method}: augmentation is not available for token classification: "
            "its word replacements and n-gram sampling change words without changing their tags, so the "
            "tags of an augmented sentence would no longer fit it. Fix: set augment.method=none."
        )
    cfg.augment.validate(mlm_given=cfg.augment.mlm is not None)
    root = Path(cfg.teacher.cache_dir) if cfg.teacher.cache_dir else Path(cfg.output_dir).resolve().parent
    stem = Path(str(cfg.data.train)).stem or "train"
    out = root / ".textdistill-cache" / "augment" / f"{stem}-{cfg.augment.method}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = augment_to_file(
        task.train,
        out,
        cfg.augment,
        tokenizer=tokenizer,
        teacher_embeddings=cfg.teacher.path,
        text_column="text",
        text_pair_column="text_pair" if cfg.data.text_pair_column else None,
        label_column="label",
        format="jsonl",
    )
    examples = read_examples(
        result.path,
        format="jsonl",
        text_column="text",
        text_pair_column="text_pair" if cfg.data.text_pair_column else None,
        label_column="label",
        require_labels=False,
        regression=task.regression,
    ).examples
    if not quiet:
        state = "reused" if result.reused else "written"
        print(
            f"textdistill: augmentation ({cfg.augment.method}): {result.n_original} originals + "
            f"{result.n_augmented} new examples ({state}: {result.path})"
        )
    return examples
