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

import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from textdistill.config.loader import dump_yaml
from textdistill.config.schema import Config, LossTermConfig
from textdistill.config.validate import validate_config
from textdistill.errors import ConfigError, DataError, ModelError, RunDirError
from textdistill.training.callbacks import BestModelSaver, MetricsLogger, ProgressBar, write_json_atomic
from textdistill.training.checkpoint import (
    Checkpoint,
    CheckpointSaver,
    check_resume_config,
    latest_checkpoint,
    restore_checkpoint,
)
from textdistill.training.distiller import Callback, Distiller, all_gather_objects
from textdistill.training.precision import autocast_dtype, resolve_precision
from textdistill.training.signals import TrainingInterrupted, graceful_stop, signal_name
from textdistill.training.teacher_cache import teacher_dev_evaluation


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


def resume_command(run_dir: Path, mode: str) -> str:
    """The shell command that resumes the run in ``run_dir`` (relative data paths: run it from the cwd)."""
    config = shlex.quote(str((run_dir / "config.yaml").resolve()))
    return f"cd {shlex.quote(os.getcwd())} && textdistill {mode} --config {config} --resume"


def find_resume_point(cfg: Config, mode: str) -> Checkpoint | None:
    """The checkpoint a ``resume=True`` run continues from, or None to start (over) from step 0.

    Nothing to resume (no run yet, or no usable checkpoint: killed before the first one) means starting
    from step 0, so that the same command can simply be repeated after every interruption.

    Raises:
        RunDirError: the run already finished.
        ConfigError: the config differs from the checkpoint's in a key that changes training.
    """
    run_dir = Path(cfg.output_dir)
    if not (run_dir / "run.json").is_file():
        print(f"textdistill: no run to resume in {run_dir}: starting a new run")
        return None
    try:
        status = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status == "finished":
        raise RunDirError(
            f"the run in {str(run_dir)!r} already finished, there is nothing to resume (its student is in "
            f"{str(run_dir / 'model')!r}); to train again, pass --overwrite or choose another output_dir"
        )
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        print(
            f"textdistill: no usable checkpoint in {run_dir / 'checkpoints'}: starting the run over from step 0"
        )
        return None
    check_resume_config(ckpt, dump_yaml(cfg), mode)
    return ckpt


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def evaluate_sharded(
    model: nn.Module,
    dataset: Any,
    loader: Callable[[Any], Iterable[dict[str, Any]]],
    *,
    regression: bool,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    rank: int = 0,
    world: int = 1,
) -> tuple[dict[str, float], torch.Tensor]:
    """Evaluate ``model`` on ``dataset``, split over ``world`` processes (collective when ``world > 1``).

    Process ``rank`` predicts the items ``rank, rank + world, ...``; the logits, labels and example ids of
    all processes are gathered, rows are kept once per example id (so a sampler that pads shards with
    repeated items cannot count an example twice) and sorted by id, and the metrics are computed on exactly
    the dataset's examples, the same on every process. With ``world == 1`` this is
    :func:`~textdistill.evaluation.metrics.evaluate_model` over ``loader(dataset)``.

    Args:
        model: a model following the ModelOutputs forward contract (not DDP-wrapped: no collective runs in
            its forward).
        dataset: map-style dataset of encoded items with ``example_id`` (EncodedDataset).
        loader: ``dataset -> batches`` (the run's evaluation loader; it receives a subset here).
        regression: score as regression.
        device: where inputs are moved (default: the model's device).
        autocast_dtype: optional autocast dtype for the forward.
        rank: this process's index; ``world`` the number of processes.

    Returns:
        ``(metrics, logits)``: :func:`~textdistill.evaluation.metrics.compute_metrics` of the labelled rows
        (``{"n": 0}`` without labels) and the ``(N, C)`` float32 CPU logits in example-id order.

    Raises:
        DataError: a batch without ``example_ids``.
    """
    from torch.utils.data import Subset

    from textdistill.evaluation.metrics import compute_metrics, evaluate_model, torch_predictor

    if world <= 1:
        return evaluate_model(
            model, loader(dataset), regression=regression, device=device, autocast_dtype=autocast_dtype
        )
    shard = Subset(dataset, range(rank, len(dataset), world))
    logits, labels, ids = [], [], []
    have_labels = True
    was_training = model.training
    model.eval()
    try:
        predict = torch_predictor(model, device=device, autocast_dtype=autocast_dtype)
        for batch in loader(shard) if len(shard) else []:
            if batch.get("example_ids") is None:
                raise DataError(
                    "distributed evaluation needs batch['example_ids'] to gather each example once; collate "
                    "with textdistill.data.collate.Collator"
                )
            logits.append(np.asarray(predict(batch), dtype=np.float32))
            ids.append(np.asarray(batch["example_ids"].cpu(), dtype=np.int64))
            if batch.get("labels") is None:
                have_labels = False
            else:
                labels.append(np.asarray(batch["labels"].cpu()))
    finally:
        model.train(was_training)
    local = None
    if ids:
        local = (np.concatenate(logits), np.concatenate(labels) if have_labels else None, np.concatenate(ids))
    parts = [p for p in all_gather_objects(local) if p is not None]
    if not parts:
        raise DataError("no batches to evaluate: the evaluation data is empty.")
    all_ids = np.concatenate([p[2] for p in parts])
    _, first = np.unique(all_ids, return_index=True)  # sorted ids, first occurrence of each
    all_logits = torch.from_numpy(np.concatenate([p[0] for p in parts])[first])
    if any(p[1] is None for p in parts):
        return {"n": 0}, all_logits
    all_labels = np.concatenate([p[1] for p in parts])[first]
    return compute_metrics(all_logits, all_labels, regression=regression), all_logits


def free_port() -> int:
    """A TCP port that is free on this machine now (for the launcher's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(argv: list[str], num_processes: int, *, port: int | None = None) -> list[str]:
    """The command that runs ``textdistill <argv>`` as ``num_processes`` data-parallel processes on this
    machine, through accelerate's launcher (torchrun underneath: one process per GPU with NCCL, or CPU
    processes with gloo on a machine without GPUs).

    accelerate's ``--mixed_precision no`` keeps a default accelerate config from adding its own autocast:
    ``train.precision`` is the one precision setting. ``argv`` keeps its ``--num-processes``: each launched
    process sees ``WORLD_SIZE`` equal to it and trains (see :func:`launch_processes`).
    """
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",  # the torchrun launcher; without GPUs its processes run on CPU with gloo
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--machine_rank",
        "0",
        "--main_process_port",
        str(port if port is not None else free_port()),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "textdistill",
        *argv,
    ]


def launch_processes(argv: list[str], num_processes: int) -> int | None:
    """``--num-processes N``: re-run this command as N data-parallel processes and wait for them.

    Args:
        argv: the command's arguments (``sys.argv[1:]``).
        num_processes: N.

    Returns:
        The launcher's exit status, or None when this process should train itself: N is 1, or it already
        is one of N launched processes (``WORLD_SIZE`` is N).

    Raises:
        ConfigError: N < 1, N differs from the ``WORLD_SIZE`` this process was launched with, or N exceeds
            the visible GPUs on a GPU machine.
    """
    if num_processes < 1:
        raise ConfigError(f"--num-processes: must be at least 1, got {num_processes}")
    launched = os.environ.get("WORLD_SIZE")
    if launched is not None:
        if int(launched) == num_processes:
            return None
        raise ConfigError(
            f"--num-processes {num_processes}: this process was started as one of {launched} processes "
            "(accelerate launch / torchrun); drop --num-processes, or make it match the launcher's"
        )
    if num_processes == 1:
        return None
    gpus = torch.cuda.device_count()
    if 0 < gpus < num_processes:
        raise ConfigError(
            f"--num-processes {num_processes}: only {gpus} GPU(s) are visible and each process needs its own; "
            f"use --num-processes {gpus} or fewer (CUDA_VISIBLE_DEVICES selects the GPUs)"
        )
    proc = subprocess.Popen(launch_command(argv, num_processes))
    forwarded: list[int] = []  # signals this process received while waiting

    def forward(signum: int, frame: Any) -> None:
        forwarded.append(signum)
        proc.send_signal(signum)

    previous = None
    # Ctrl-C reaches every process of the terminal's group: the launched ones stop gracefully (a checkpoint,
    # then exit 130), so this one waits for them. SIGTERM is sent to this process alone (schedulers, kill):
    # pass it on (torchrun passes it to the training processes). Handlers can only be set from the main thread.
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                status = proc.wait()
                break
            except KeyboardInterrupt:
                forwarded.append(signal.SIGINT)  # torchrun passed it on, or the terminal sent it to all
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    # The launcher exits 1 after a signal; the shell convention (and a single-process run) says 128 + signum.
    return 128 + int(forwarded[0]) if forwarded and status != 0 else status


def default_metric(regression: bool) -> tuple[str, bool]:
    """The best-model metric and its direction."""
    return ("pearson", True) if regression else ("accuracy", True)


def run_training(
    cfg: Config, mode: str = "distill", *, quiet: bool = False, resume: bool = False
) -> RunResult:
    """Fine-tune (``mode='finetune'``) or distil (``mode='distill'``) as configured.

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
    from textdistill.data.collate import Collator
    from textdistill.data.encoding import EncodedDataset
    from textdistill.data.samplers import make_loader
    from textdistill.data.task import load_task_data
    from textdistill.losses.objective import Objective
    from textdistill.models.io import save_model
    from textdistill.models.students import build_student
    from textdistill.models.teacher import load_teacher, load_tokenizer

    started = time.time()
    if mode == "finetune" and [t.name for t in cfg.objective] == ["kd_kl"]:
        cfg = replace(cfg, objective=[LossTermConfig(name="hard_ce")])  # the default objective is for KD
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
    main = accelerator.is_main_process
    quiet = quiet or not main
    resume_from = find_resume_point(cfg, mode) if resume else None
    accelerator.wait_for_everyone()  # every process has read the run directory before the main one writes
    set_seed(cfg.train.seed)

    # -- data (before weights: a bad file fails fast) ------------------------------------------------------
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
        raise DataError(
            "no dev examples: set data.dev=PATH or data.dev_fraction=0.1 to select the best model"
        )
    id2label = task.label_map.to_id2label() if task.label_map else {0: "score"}
    # Re-validate with the real label count (the objective may depend on it, e.g. regression).
    validated = validate_config(vcfg, mode, num_labels=task.num_labels)

    train_examples = task.train
    if cfg.augment.method != "none":
        with accelerator.main_process_first():  # the first writes the augmentation file, the others read it
            train_examples = augmented_train(cfg, mode, task, tokenizer, quiet=quiet)
    train_ds = EncodedDataset(
        train_examples, tokenizer, cfg.data.max_length, task.label_map, regression=task.regression
    )
    dev_ds = EncodedDataset(
        task.dev, tokenizer, cfg.data.max_length, task.label_map, regression=task.regression
    )
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

    if resume_from is not None:
        run_dir = Path(cfg.output_dir)
        run_json: dict[str, Any] = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        for key in ("error", "ended", "signal", "checkpoint", "resume_command"):
            run_json.pop(key, None)
        run_json.update(status="running", environment=environment())
        run_json.setdefault("resumes", []).append(
            {"time": time.time(), "from_step": resume_from.step, "checkpoint": str(resume_from.path)}
        )
    else:
        # resume without a usable checkpoint starts over: empty the directory like overwrite does
        if main:
            run_dir = prepare_run_dir(replace(cfg, overwrite=True) if resume else cfg)
        else:
            run_dir = Path(cfg.output_dir)
        run_json = {
            "status": "running",
            "mode": mode,
            "started": started,
            "textdistill_version": _version(),
            "environment": environment(),
            "data": task.stats,
        }
    run_json["num_processes"] = accelerator.num_processes
    model_dir = run_dir / "model"
    config_yaml = dump_yaml(cfg)
    if main:
        write_json_atomic(run_dir / "run.json", run_json)
        _write_text_atomic(run_dir / "config.yaml", config_yaml)
    accelerator.wait_for_everyone()
    resume_hint = resume_command(run_dir, mode)
    if not quiet:
        print(f"textdistill {mode}: run directory {run_dir}")

    # -- training -----------------------------------------------------------------------------------------
    device = accelerator.device
    rank, world = accelerator.process_index, accelerator.num_processes
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
        # Its own generator: creating the iterator must not draw from the global torch RNG, or a resumed
        # run (which creates one iterator more than the uninterrupted one) would shift the dropout stream.
        loader.generator = torch.Generator().manual_seed((cfg.train.seed * 100_003 + epoch) % 2**63)
        return loader

    def eval_loader(ds):
        return make_loader(
            ds, cfg.train.eval_batch_size, shuffle=False, group_by_length=True, seed=0, collator=collator
        )

    def evaluate(model, ds) -> tuple[dict[str, float], torch.Tensor]:
        return evaluate_sharded(
            model,
            ds,
            eval_loader,
            regression=task.regression,
            device=device,
            autocast_dtype=ac_dtype,
            rank=rank,
            world=world,
        )

    # The dev logits of the latest evaluation, and the metrics and logits of the best one: the final
    # results reuse them instead of reloading and re-evaluating the saved best student (same weights, same
    # deterministic evaluation, same numbers; a test checks it).
    last_eval: dict[str, Any] = {}
    best_eval: dict[str, Any] = {}

    def evaluator(model) -> dict[str, float]:
        metrics, logits = evaluate(model, dev_ds)
        last_eval.update(metrics=dict(metrics), logits=logits)
        return metrics

    class RememberBest(Callback):
        def on_evaluate(self, distiller, metrics, improved) -> None:  # every process (save_best: main only)
            if improved:
                best_eval.update(last_eval)

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
        from textdistill.training.teacher_cache import build_teacher_source

        # Only the training data goes into the cache: it is keyed by example id, and dev ids overlap train's.
        # With several processes the build is collective: each runs the teacher on its share of the data.
        teacher_source = build_teacher_source(
            cfg, teacher, objective, [train_ds], collator, device, precision, quiet=quiet
        )
    steps_per_epoch = loader_fn(0, 0).batch_sampler.num_batches
    saver = None
    if cfg.train.keep_checkpoints > 0:
        saver = CheckpointSaver(
            run_dir,
            save_every=cfg.train.save_every,
            keep=cfg.train.keep_checkpoints,
            config_yaml=config_yaml,
            meta={"mode": mode, "precision": precision},
            append_only=["metrics.jsonl"],
            resume_hint=resume_hint,
        )
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
            # The other processes hold a no-op in its place: the callbacks' positions name their states in
            # the checkpoints.
            MetricsLogger(run_dir, cfg.train.log_every) if main else Callback(),
            ProgressBar(mode, enabled=cfg.train.progress and not quiet),
            BestModelSaver(save_best),
            *([saver] if saver is not None else []),
            RememberBest(),
        ],
        accelerator=accelerator,
    )
    if resume_from is not None:
        saved_precision = resume_from.trainer_state().get("meta", {}).get("precision")
        if saved_precision not in (None, precision) and not quiet:
            print(
                f"textdistill: warning: the checkpoint was trained in {saved_precision}, this run uses {precision}"
                " (train.precision=auto chose differently on this machine): the result will not be bit-exact"
            )
        restore_checkpoint(distiller, resume_from)  # last before fit: it restores the RNG states
        if saver is not None:
            saver.resumed_from(resume_from)
        if not quiet:
            print(f"textdistill: resuming from {resume_from.path} (step {resume_from.step})")
    try:
        with graceful_stop(distiller.request_stop, quiet=quiet):
            state = distiller.fit()
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        run_json.update(status=status, error=f"{type(e).__name__}: {e}", ended=time.time())
        if saver is not None and saver.last_path is not None:
            run_json.update(checkpoint=str(saver.last_path), resume_command=resume_hint)
        if main:
            write_json_atomic(run_dir / "run.json", run_json)
        raise
    if distiller.stop_signal is not None:
        raise _interrupted(distiller, saver, run_dir, run_json, resume_hint, quiet)

    # -- final evaluation of the best student (and the teacher, for retention) ---------------------------
    try:
        if main and not model_dir.is_dir():
            # No evaluation ever improved (e.g. every metric NaN): keep the final student rather than nothing.
            save_model(distiller.unwrapped_student(), model_dir, tokenizer, id2label)
        from textdistill.models.io import load_student

        accelerator.wait_for_everyone()  # the main process has written the best student
        best_model = None
        if best_eval and state.best_step is not None:
            dev_metrics, student_dev_logits = best_eval["metrics"], best_eval["logits"]
        else:  # resumed without a new best, or no evaluation ever improved: score the saved model
            best_model = load_student(model_dir).to(device)
            dev_metrics, student_dev_logits = evaluate(best_model, dev_ds)
        results: dict[str, Any] = {"dev": dev_metrics, "best_step": state.best_step}
        teacher_dev = None
        if teacher is not None:
            teacher_dev, teacher_dev_logits = teacher_dev_evaluation(
                cfg, teacher, dev_ds, precision, lambda: evaluate(teacher, dev_ds), world=world, quiet=quiet
            )
            results["teacher_dev"] = teacher_dev
            from textdistill.evaluation.metrics import agreement

            results["dev_agreement_with_teacher"] = agreement(student_dev_logits, teacher_dev_logits)
        test_metrics = None
        if test_ds is not None and any(e.label is not None for e in task.test):
            if best_model is None:
                best_model = load_student(model_dir).to(device)
            test_metrics, _ = evaluate(best_model, test_ds)
            results["test"] = test_metrics
        from textdistill.models.io import count_parameters

        # the best student has the final student's architecture (only the weights differ)
        results["parameters"] = count_parameters(best_model or distiller.unwrapped_student())
        if teacher is not None:
            results["teacher_parameters"] = count_parameters(teacher)
        run_json.update(
            status="finished",
            ended=time.time(),
            seconds=round(time.time() - started, 1),
            precision=precision,
            state=state.to_dict(),
            results=results,
        )
        if main:
            write_json_atomic(run_dir / "eval_results.json", results)
            write_json_atomic(run_dir / "run.json", run_json)
        if mode == "distill" and cfg.report and main:
            write_run_report(cfg, run_dir, quiet=quiet)
    except BaseException as e:
        if main:
            run_json.update(status="failed", error=f"{type(e).__name__}: {e}", ended=time.time())
            write_json_atomic(run_dir / "run.json", run_json)
        raise
    accelerator.wait_for_everyone()  # the run directory is complete when any process returns
    return RunResult(
        run_dir=run_dir,
        model_dir=model_dir,
        dev_metrics=dev_metrics,
        test_metrics=test_metrics,
        teacher_dev_metrics=teacher_dev,
        state=state.to_dict(),
    )


def _interrupted(
    distiller: Distiller,
    saver: CheckpointSaver | None,
    run_dir: Path,
    run_json: dict[str, Any],
    resume_hint: str,
    quiet: bool,
) -> TrainingInterrupted:
    """Record a signal stop in run.json and build the exception (with the resume command) to raise."""
    signum = distiller.stop_signal or 0
    st = distiller.state
    ckpt = saver.last_path if saver is not None else None
    if ckpt is not None:
        message = (
            f"stopped by {signal_name(signum)} after step {st.step} of {st.total_steps}; checkpoint: {ckpt}\n"
            f"resume with:\n  {resume_hint}"
        )
    else:
        message = (
            f"stopped by {signal_name(signum)} after step {st.step} of {st.total_steps}; no checkpoint was "
            "written (train.keep_checkpoints=0, or no step was done), so the run cannot be resumed"
        )
    run_json.update(
        status="interrupted",
        signal=signal_name(signum),
        ended=time.time(),
        state=st.to_dict(),
        checkpoint=str(ckpt) if ckpt else None,
        resume_command=resume_hint if ckpt else None,
    )
    if distiller.accelerator.is_main_process:
        write_json_atomic(run_dir / "run.json", run_json)
    if not quiet:
        print(f"textdistill: {message}", file=sys.stderr)
    return TrainingInterrupted(signum, message, str(ckpt) if ckpt else None)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("textdistill")
    except Exception:
        return "unknown"


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


def write_run_report(cfg: Config, run_dir: Path, *, quiet: bool = False) -> Path | None:
    """report.md / report.json / plots comparing the student with its teacher on the dev data."""
    from textdistill.evaluation.benchmark import run_benchmark

    d = cfg.data
    if d.format == "hf" or not d.dev:
        return None  # the report reads a local dev file
    out = run_dir / "report"
    run_benchmark(
        cfg.teacher.path,
        [run_dir / "model"],
        d.dev,
        out_dir=out,
        text_column=d.text_column,
        text_pair_column=d.text_pair_column,
        label_column=d.label_column,
        format=d.format,
        encoding=d.encoding,
        regression=d.regression,
        labels=d.labels,
        max_length=d.max_length,
        max_examples=d.max_eval_examples or 1000,
        threads=None,
        onnx=False,
        speed_examples=64,
        latency_examples=16,
        repeats=3,
        cka_rows=512,
    )
    if not quiet:
        print(f"textdistill: report {out / 'report.md'}")
    return out
