"""One call that measures a teacher and its students on real data and writes the report.

For every model directory: parameters, bytes on disk, compression against the teacher, analytic FLOPs,
the dev metric and agreement with the teacher, CPU latency/throughput (fp32, and bf16 autocast where the
CPU has native bf16), GPU figures when CUDA is available, and with ``onnx=True`` the onnxruntime fp32 and
int8 variants (exported, parity-checked, scored and timed). Teacher-student layer CKA is computed for
students that expose hidden states. Everything ends in ``report.json`` / ``report.md`` / plots.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from textdistill.data.task_inference import TaskSpec, model_id2label
from textdistill.errors import ConfigError
from textdistill.evaluation.cka import cka_matrix, collect_representations
from textdistill.evaluation.compression import compression_ratio, flops_per_example, size_on_disk
from textdistill.evaluation.eval_data import EvalData, infer_eval_task, model_tokenizer, read_labelled
from textdistill.evaluation.metrics import agreement, agreement_measure
from textdistill.evaluation.report import slug, write_report
from textdistill.evaluation.speed import environment, measure_onnx, measure_torch, torch_threads
from textdistill.evaluation.token_bench import evaluate_any
from textdistill.models.io import count_parameters
from textdistill.models.outputs import HIDDEN_STATES
from textdistill.training.precision import cpu_supports_fast_bf16

log = logging.getLogger(__name__)


def _unique_names(dirs: Sequence[Path]) -> list[str]:
    """A short unique name per model directory: its own name, or its run's name for a run's ``model/``
    (``runs/tinybert/prediction/model`` -> ``prediction``); ``-2``, ``-3`` ... where names repeat."""
    names: list[str] = []
    for d in dirs:
        d = Path(d).absolute()
        base = d.parent.name if d.name == "model" and (d.parent / "run.json").exists() else d.name
        base = base or "model"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def run_benchmark(
    teacher_dir: str | os.PathLike[str],
    student_dirs: Sequence[str | os.PathLike[str]],
    data_path: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str],
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    format: str = "auto",
    encoding: str = "utf-8",
    regression: bool | None = None,
    labels: list[str] | None = None,
    max_length: int = 128,
    max_examples: int | None = None,
    threads: int | None = None,
    onnx: bool = False,
    batch_size: int = 32,
    speed_examples: int = 128,
    latency_examples: int = 64,
    warmup: int = 3,
    repeats: int = 5,
    bf16: bool | None = None,
    gpu: bool | None = None,
    cka: bool = True,
    cka_rows: int = 2048,
    seed: int = 0,
    plots: bool = True,
    metric: str | None = None,
    speed: bool = True,
    announce: bool = False,
    entity_mode: str = "lenient",
) -> dict[str, Any]:
    """Benchmark a teacher and its students on a labelled data file, and write the report to ``out_dir``.

    Args:
        teacher_dir: the teacher's model directory (an HF sequence classifier).
        student_dirs: student directories written by textdistill (HF or BiLSTM); each is read with
            :func:`textdistill.models.io.load_student`. A student without its own tokenizer reads the
            teacher's token ids (the BiLSTM student does).
        data_path: the dev file (TSV/CSV/JSONL) with labels.
        out_dir: report directory (ONNX exports go to ``out_dir/onnx/<model>``).
        text_column, text_pair_column, label_column, format, encoding: how to read the file (the text,
            the optional second text and the label columns, inferred when unset; ``auto``/``tsv``/...).
        regression: real-valued labels (metric: Pearson); None: a teacher with one output is regression.
        labels: class order (default: the teacher's label map).
        max_length: tokens per example after truncation.
        max_examples: evaluate a seeded random subset of this many examples (None: all).
        threads: CPU threads for PyTorch and onnxruntime, in every step (None: the current
            ``torch.get_num_threads()``).
        onnx: also export each model and measure the onnxruntime fp32 and int8 variants.
        batch_size: examples per batch for evaluation and throughput.
        speed_examples: examples (a seeded sample of the evaluated ones) used for speed.
        latency_examples: batch-1 examples timed per repeat.
        warmup, repeats: untimed calls before each timing; timed repeats.
        bf16, gpu: also measure bf16 autocast on CPU (None: only with native bf16); on CUDA (None: if any).
        cka, cka_rows: teacher x student layer CKA for students with hidden states; its token rows (or
            examples, for students with another tokenizer).
        seed, plots: seed of the subsets; draw the PNG plots.
        metric, speed, announce: the report's task metric (None: inferred, as in training); time latency
            and throughput (False: quality and size only, much faster); print the task line on stderr.
        entity_mode: token classification: entity matching, lenient or strict (IOB2/BIOES models only).

    Returns:
        The results dict (schema in :mod:`textdistill.evaluation.report`), also written as
        ``report.json`` next to ``report.md`` and the plots; ``files`` maps each written file.

    Raises:
        ConfigError: bad benchmark settings.
        DataError / ModelError: unreadable data or models (messages name the file and the fix).
    """
    _check_settings(batch_size, speed_examples, repeats, max_examples, threads, gpu, entity_mode)
    (out := Path(out_dir)).mkdir(parents=True, exist_ok=True)
    n_threads = int(threads if threads is not None else torch.get_num_threads())
    use_gpu = torch.cuda.is_available() if gpu is None else bool(gpu)
    use_bf16 = cpu_supports_fast_bf16() if bf16 is None else bool(bf16)
    speed_kw = {"warmup": warmup, "repeats": repeats, "latency_examples": latency_examples}
    read_kw = dict(text_column=text_column, text_pair_column=text_pair_column, label_column=label_column)
    read_kw.update(format=format, encoding=encoding, regression=regression, labels=labels)
    read_kw.update(max_examples=max_examples, seed=seed)
    id2label = model_id2label(teacher_dir)
    command = "benchmark" if announce else None
    spec = infer_eval_task(data_path, id2label, teacher_dir, read_kw, metric=metric, announce=command)
    settings = _Settings(n_threads, use_bf16, use_gpu, onnx, spec.regression, 0, speed_kw, out / "onnx")
    settings.speed = speed
    encode_kw = dict(max_length=max_length, batch_size=batch_size, speed_examples=speed_examples, seed=seed)
    encode_kw.update(entity_mode=entity_mode)  # token tasks only (TokenEvalData)
    bench = _load(teacher_dir, student_dirs, data_path, read_kw, encode_kw)
    settings.flops_len = max(1, round(sum(bench.data[0].lengths) / bench.num_examples))
    task = _task_record(data_path, bench, settings, max_length, speed_examples, batch_size, spec)
    results = dict(environment=environment(n_threads), task=task, models=[], entries=[], cka={}, exports={})
    # evaluation, export checks and CKA use the same thread count as the timings
    with torch_threads(n_threads):
        _measure_models(bench, settings, results)
        if cka:  # layer CKA, teacher vs every student with hidden states
            results["cka"] = _layer_cka(bench.names, bench.models, bench.data, cka_rows)
    files = write_report(results, out, plots=plots)
    results["files"] = {k: str(v) for k, v in files.items()}
    return results


def _task_record(
    data_path: str | os.PathLike[str],
    bench: _Bench,
    settings: _Settings,
    max_length: int,
    speed_examples: int,
    batch_size: int,
    spec: TaskSpec,
) -> dict[str, Any]:
    """The ``task`` section of the results: the data, its task and metric (:mod:`~textdistill.data.task_inference`),
    what agreement measures, sequence lengths, the batch sizes."""
    lengths = bench.data[0].lengths
    regression = settings.regression
    return {
        "data": str(data_path),
        "examples": bench.num_examples,
        "regression": regression,
        "metric": "entity_f1" if _is_token(bench) else spec.metric,
        **({"entity_mode": bench.data[0].dataset.entity_mode} if _is_token(bench) else {}),
        "spec": spec.to_dict(),
        "agreement": agreement_measure(regression),
        "labels": None if bench.label_map is None else list(bench.label_map.names),
        "max_length": max_length,
        "seq_len_mean": sum(lengths) / len(lengths),
        "seq_len_max": max(lengths),
        "flops_seq_len": settings.flops_len,
        "speed_examples": min(speed_examples, bench.num_examples),
        "batch_size": batch_size,
    }


def _is_token(bench: _Bench) -> bool:
    from textdistill.evaluation.token_bench import TokenEvalData

    return isinstance(bench.data[0], TokenEvalData)


def _check_settings(
    batch_size: int,
    speed_examples: int,
    repeats: int,
    max_examples: int | None,
    threads: int | None,
    gpu: bool | None,
    entity_mode: str = "lenient",
) -> None:
    """Every bad benchmark setting at once (ConfigError)."""
    if gpu and not torch.cuda.is_available():
        raise ConfigError("gpu=True but CUDA is not available on this machine. Fix: gpu=None or False.")
    problems = []
    for key, value in (("batch_size", batch_size), ("speed_examples", speed_examples), ("repeats", repeats)):
        if value < 1:
            problems.append(f"{key} must be at least 1, got {value}.")
    if max_examples is not None and max_examples < 1:
        problems.append(f"max_examples must be at least 1 (or None for all), got {max_examples}.")
    if threads is not None and threads < 1:
        problems.append(f"threads must be at least 1 (or None), got {threads}.")
    if entity_mode not in ("lenient", "strict"):
        problems.append(f"entity_mode must be lenient or strict, got {entity_mode!r}.")
    if problems:
        raise ConfigError(problems)


@dataclass
class _Bench:
    """The loaded models (teacher first), their names and directories, and each one's view of the data."""

    names: list[str]
    dirs: list[Path]
    models: list[nn.Module]
    data: list[EvalData]
    num_examples: int
    label_map: Any


def _load(
    teacher_dir: str | os.PathLike[str],
    student_dirs: Sequence[str | os.PathLike[str]],
    data_path: str | os.PathLike[str],
    read_kw: dict[str, Any],
    encode_kw: dict[str, Any],
) -> _Bench:
    """Load the teacher and students and encode the data once per distinct tokenization."""
    from textdistill.models.io import load_student
    from textdistill.models.teacher import load_teacher, load_tokenizer

    teacher = load_teacher(teacher_dir)
    teacher_tok = load_tokenizer(teacher_dir)
    from textdistill.evaluation.token_bench import TokenEvalData, read_token_labelled
    from textdistill.models.token_heads import is_token_model

    token = is_token_model(teacher)  # NER-style teacher: tagged data, entity metrics (token_bench.py)
    reader = read_token_labelled if token else read_labelled
    examples, label_map = reader(data_path, id2label=teacher.id2label, **read_kw)  # type: ignore[operator]
    dirs = [Path(teacher_dir), *(Path(d) for d in student_dirs)]
    models: list[nn.Module] = [teacher] + [load_student(d) for d in dirs[1:]]

    def encode(tokenizer: Any) -> EvalData:
        regression = read_kw["regression"]
        kind = TokenEvalData if token else EvalData
        kw = encode_kw if token else {k: v for k, v in encode_kw.items() if k != "entity_mode"}
        return kind(examples, tokenizer, label_map=label_map, regression=regression, **kw)  # type: ignore[return-value]

    teacher_data = encode(teacher_tok)
    data: list[EvalData] = [teacher_data]
    for d in dirs[1:]:
        tok = model_tokenizer(d, fallback=teacher_tok)
        enc = teacher_data if tok is teacher_tok else encode(tok)
        # a student saved with the teacher's tokenizer (the usual case) shares the teacher's batches
        data.append(teacher_data if enc.input_ids == teacher_data.input_ids else enc)
    return _Bench(_unique_names(dirs), dirs, models, data, len(examples), label_map)


def _measure_models(bench: _Bench, settings: _Settings, results: dict[str, Any]) -> None:
    """Every model's record, entries and export into ``results`` (students compared with the teacher)."""
    teacher_logits: torch.Tensor | None = None
    teacher_record: dict[str, Any] | None = None
    for name, directory, model, enc in zip(bench.names, bench.dirs, bench.models, bench.data):
        log.info("benchmarking %s (%s)", name, directory)
        record, entries, logits, export = _benchmark_model(
            name, directory, model, enc, settings, teacher_record, teacher_logits
        )
        if teacher_record is None:
            teacher_record, teacher_logits = record, logits
        results["models"].append(record)
        results["entries"].extend(entries)
        if export is not None:
            results["exports"][name] = export


@dataclass
class _Settings:
    """What :func:`run_benchmark` measures, shared by every model."""

    threads: int
    bf16: bool
    gpu: bool
    onnx: bool
    regression: bool
    flops_len: int
    speed_kw: dict[str, Any]
    onnx_dir: Path
    speed: bool = True


def _benchmark_model(
    name: str,
    directory: Path,
    model: nn.Module,
    enc: EvalData,
    settings: _Settings,
    teacher: dict[str, Any] | None,
    teacher_logits: torch.Tensor | None,
) -> tuple[dict[str, Any], list[dict[str, Any]], torch.Tensor, dict[str, Any] | None]:
    """Measure one model: its size/cost record, its quality/speed entries, its CPU fp32 logits, its export."""
    record = _size_record(name, directory, model, settings.flops_len, teacher)
    size = record["size"]

    regression, speed_kw = settings.regression, settings.speed_kw
    nbytes = size["weights_bytes"]
    metrics, logits = evaluate_any(model, enc, regression=regression, device="cpu")
    # the teacher's own agreement is with itself (1.0); students compare with the teacher's fp32 logits
    ref_logits = teacher_logits if teacher_logits is not None else logits
    speed = (
        measure_torch(model, enc.speed_batches, threads=settings.threads, precision="fp32", **speed_kw)
        if settings.speed
        else None
    )
    entries = [_entry(name, "pytorch", "fp32", "cpu", logits, ref_logits, metrics, speed, nbytes)]

    if settings.bf16:
        m_bf16, l_bf16 = evaluate_any(
            model, enc, regression=regression, device="cpu", autocast_dtype=torch.bfloat16
        )
        s_bf16 = (
            measure_torch(model, enc.speed_batches, threads=settings.threads, precision="bf16", **speed_kw)
            if settings.speed
            else None
        )
        entries.append(_entry(name, "pytorch", "bf16", "cpu", l_bf16, ref_logits, m_bf16, s_bf16, nbytes))

    if settings.gpu:
        precisions = ["fp32"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
        model.to("cuda")
        try:
            for precision in precisions:
                dtype = torch.bfloat16 if precision == "bf16" else None
                m_gpu, l_gpu = evaluate_any(
                    model, enc, regression=regression, device="cuda", autocast_dtype=dtype
                )
                s_gpu = measure_torch(
                    model, enc.speed_batches, precision=precision, device="cuda", **speed_kw
                )
                entries.append(
                    _entry(name, "pytorch", precision, "cuda", l_gpu, ref_logits, m_gpu, s_gpu, nbytes)
                )
        finally:
            model.to("cpu")

    export_record = None
    if settings.onnx:
        export_record = _onnx_entries(name, model, enc, settings, ref_logits, entries)
    return record, entries, logits, export_record


def _size_record(
    name: str, directory: Path, model: nn.Module, flops_len: int, teacher: dict[str, Any] | None
) -> dict[str, Any]:
    """A model's parameters, bytes on disk, compression against the teacher and FLOPs per example."""
    info = getattr(model, "info", None)
    params = count_parameters(model)
    size = size_on_disk(directory)
    try:
        flops: int | None = flops_per_example(model, flops_len)
    except Exception as exc:  # noqa: BLE001 - an unknown architecture has no FLOP count, not a failure
        log.warning("no FLOP count for %s: %s", name, exc)
        flops = None
    ref_params = teacher["params"] if teacher is not None else params
    ref_bytes = teacher["size"]["weights_bytes"] if teacher is not None else size["weights_bytes"]
    record = {
        "name": name,
        "role": "student" if teacher is not None else "teacher",
        "dir": str(directory),
        "kind": getattr(info, "kind", None),
        "model_type": getattr(info, "model_type", None),
        "params": params,
        "size": size,
        "compression": {
            "params": compression_ratio(ref_params["total"], params["total"]),
            "non_embedding_params": compression_ratio(ref_params["non_embedding"], params["non_embedding"])
            if params["non_embedding"] > 0
            else None,
            "size": compression_ratio(ref_bytes, size["weights_bytes"])
            if size["weights_bytes"] > 0
            else None,
        },
        "flops_per_example": flops,
    }
    return record


def _onnx_entries(
    name: str,
    model: nn.Module,
    enc: EvalData,
    settings: _Settings,
    ref_logits: torch.Tensor,
    entries: list[dict[str, Any]],
) -> dict[str, Any]:
    """Export the model to ONNX (fp32 and int8), append both variants' entries, return the export record."""
    from textdistill.export.onnx import export_onnx

    export = export_onnx(
        model,
        enc.tokenizer,
        settings.onnx_dir / slug(name),
        sample_batch=enc.speed_batches[0],
        quantize_int8=True,
        dev_batches=enc.eval_batches,
        regression=settings.regression,
        threads=settings.threads,
        dev_dataset=getattr(enc, "dataset", None),
    )
    export_record = export.to_dict()
    for variant, path in (("fp32", export.onnx_path), ("int8", export.int8_path)):
        key = f"onnx_{variant}"
        v_speed = measure_onnx(
            path, enc.speed_batches, threads=settings.threads, precision=variant, **settings.speed_kw
        )
        entries.append(
            _entry(
                name,
                "onnxruntime",
                variant,
                "cpu",
                export.dev_logits[key],
                ref_logits,
                export.dev_metrics.get(key, {"n": 0}),
                v_speed,
                export.sizes[key],
            )
        )
    return export_record


def _entry(
    name: str,
    runtime: str,
    precision: str,
    device: str,
    logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    metrics: Mapping[str, float],
    speed: Any,
    size_bytes: int,
) -> dict[str, Any]:
    """One row of the quality/speed table; the PyTorch fp32 CPU row carries the bare model name."""
    default = (runtime, precision, device) == ("pytorch", "fp32", "cpu")
    return {
        "name": name if default else f"{name} [{runtime} {precision} {device}]",
        "model": name,
        "runtime": runtime,
        "precision": precision,
        "device": device,
        "size_bytes": size_bytes,
        "metrics": dict(metrics),
        "agreement": agreement(logits, teacher_logits),
        "speed": speed.to_dict() if speed is not None else None,
    }


def _layer_cka(
    names: list[str], models: list[nn.Module], data: list[EvalData], rows: int
) -> dict[str, dict[str, Any]]:
    """CKA matrices of every student against the teacher (index 0); a note for students without them."""

    def has_hidden(model: nn.Module) -> bool:
        info = getattr(model, "info", None)
        return info is None or HIDDEN_STATES in info.capabilities

    out: dict[str, dict[str, Any]] = {}
    if not has_hidden(models[0]):
        return out
    teacher_reps: dict[str, list[torch.Tensor]] = {}
    for name, model, enc in zip(names[1:], models[1:], data[1:]):
        if not has_hidden(model):
            out[name] = {"matrix": None, "note": "the student exposes no hidden states (e.g. BiLSTM)"}
            continue
        # token-level rows need identical tokenization (shared batches); otherwise per-example mean pooling
        pooling = "tokens" if enc is data[0] else "mean"
        if pooling not in teacher_reps:
            teacher_reps[pooling] = collect_representations(
                models[0], data[0].eval_batches, pooling=pooling, max_rows=rows
            )
        student = collect_representations(model, enc.eval_batches, pooling=pooling, max_rows=rows)
        matrix = cka_matrix(teacher_reps[pooling], student)
        out[name] = {"matrix": matrix.tolist(), "pooling": pooling, "rows": int(student[0].shape[0])}
    return out
