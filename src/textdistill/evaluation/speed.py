"""Latency and throughput on real tokenized inputs, with the environment that produced them.

Protocol (see shared/design/MEASURING.md): inputs are real dev examples, not zeros or a fixed length;
the thread count is fixed and reported; every measurement warms up first (allocator, oneDNN/MKL kernel
selection, lazy initialisation) and then repeats; GPU timings synchronise before reading the clock.

- **Latency** (batch 1): each sample example is run alone, at its own length, once per repeat; the
  p50/p90 are over all timed calls, so they describe the distribution over real input lengths.
- **Throughput** (batch 32 by default): the sample, already collated into right-padded batches, is run
  end to end once per repeat; examples/s is reported as the median over repeats (with min and max).

Times are wall-clock (``time.perf_counter``) and only comparable within one run on one machine.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from textdistill.errors import ConfigError
from textdistill.evaluation.environment import bf16_support, cpu_model, environment  # noqa: F401 (re-exported)
from textdistill.models.outputs import extra_inputs
from textdistill.training.precision import autocast, resolve_precision


@dataclass
class SpeedResult:
    """One speed measurement.

    Attributes:
        runtime: ``pytorch`` or ``onnxruntime``.
        device: ``cpu`` or ``cuda:<i>``.
        precision: ``fp32``, ``bf16`` (autocast) or the ONNX variant (``fp32`` / ``int8``).
        threads: intra-op threads used.
        latency_batch_size: always 1.
        latency_ms_p50: median per-example latency in milliseconds.
        latency_ms_p90: 90th percentile latency in milliseconds.
        latency_ms_mean: mean latency in milliseconds.
        latency_calls: timed batch-1 calls.
        throughput_batch_size: examples per batch of the throughput run.
        throughput_eps: median examples per second over repeats.
        throughput_eps_min: slowest repeat.
        throughput_eps_max: fastest repeat.
        examples: examples in one throughput pass.
        seq_len_mean: mean real length (tokens) of the examples.
        seq_len_max: longest example.
        warmup: warm-up calls before timing.
        repeats: timed repeats.
    """

    runtime: str
    device: str
    precision: str
    threads: int
    latency_batch_size: int
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_mean: float
    latency_calls: int
    throughput_batch_size: int
    throughput_eps: float
    throughput_eps_min: float
    throughput_eps_max: float
    examples: int
    seq_len_mean: float
    seq_len_max: int
    warmup: int
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Fix ``torch.set_num_threads`` for a block and restore it afterwards; yields the count in use."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be at least 1, got {threads}.")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def split_examples(batches: Sequence[Mapping[str, Any]]) -> list[dict[str, torch.Tensor]]:
    """Single-example batches ``(1, L_i)`` cut out of right-padded batches, padding removed.

    Args:
        batches: collated batches with ``input_ids``, ``attention_mask`` and optional ``token_type_ids``.

    Returns:
        One dict per example with ``input_ids``, ``attention_mask`` (and ``token_type_ids``, ``case_ids``), each
        ``(1, L_i)`` where ``L_i`` is the example's real length.
    """
    out = []
    for batch in batches:
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        for row, n in enumerate(lengths):
            n = max(int(n), 1)
            ex = {k: batch[k][row : row + 1, :n] for k in ("input_ids", "attention_mask")}
            for key in ("token_type_ids", "case_ids"):  # case_ids: token tasks (data/word_shape.py)
                if batch.get(key) is not None:
                    ex[key] = batch[key][row : row + 1, :n]
            out.append(ex)
    return out


def time_predictor(
    predict: Callable[[Mapping[str, Any]], Any],
    batches: Sequence[Mapping[str, Any]],
    *,
    warmup: int = 3,
    repeats: int = 5,
    latency_examples: int | None = 64,
    synchronize: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Time batch-1 latency and batched throughput of ``predict`` (protocol in the module docstring).

    Args:
        predict: runs one batch (dict of ``(B, L)`` inputs) to completion or launches it (GPU).
        batches: the real, collated throughput batches; batch-1 inputs are cut from them.
        warmup: untimed calls before each of the two measurements (at least 1 is sensible).
        repeats: timed repeats of each measurement.
        latency_examples: batch-1 examples timed per repeat (None: all examples).
        synchronize: called after each timed call before the clock is read (``torch.cuda.synchronize``).

    Returns:
        The timing fields of :class:`SpeedResult` (without runtime/device/precision/threads).

    Raises:
        ConfigError: no batches, or ``repeats < 1``.
    """
    if not batches:
        raise ConfigError("speed measurement needs at least one batch of real examples; got none.")
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}.")
    sync = synchronize or (lambda: None)
    singles = split_examples(batches)
    lengths = [int(ex["input_ids"].shape[1]) for ex in singles]
    timed = singles if latency_examples is None else singles[:latency_examples]

    for i in range(warmup):
        predict(timed[i % len(timed)])
    sync()
    latencies = []
    for _ in range(repeats):
        for ex in timed:
            t0 = time.perf_counter()
            predict(ex)
            sync()
            latencies.append((time.perf_counter() - t0) * 1000.0)

    for i in range(warmup):
        predict(batches[i % len(batches)])
    sync()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for batch in batches:
            predict(batch)
        sync()
        rates.append(len(singles) / (time.perf_counter() - t0))

    lat = np.asarray(latencies)
    return {
        "latency_batch_size": 1,
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p90": float(np.percentile(lat, 90)),
        "latency_ms_mean": float(lat.mean()),
        "latency_calls": len(latencies),
        "throughput_batch_size": int(batches[0]["input_ids"].shape[0]),
        "throughput_eps": float(np.median(rates)),
        "throughput_eps_min": float(min(rates)),
        "throughput_eps_max": float(max(rates)),
        "examples": len(singles),
        "seq_len_mean": float(np.mean(lengths)),
        "seq_len_max": int(max(lengths)),
        "warmup": warmup,
        "repeats": repeats,
    }


def measure_torch(
    model: nn.Module,
    batches: Sequence[Mapping[str, Any]],
    *,
    threads: int | None = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    warmup: int = 3,
    repeats: int = 5,
    latency_examples: int | None = 64,
) -> SpeedResult:
    """Latency and throughput of a PyTorch model (ModelOutputs forward contract), in eval mode.

    The model is moved to ``device`` for the measurement and back afterwards; inputs are moved to the
    device before timing (host-to-device copies are not timed).

    Args:
        model: the model.
        batches: real collated batches (e.g. 32 examples each) sampled from the dev data.
        threads: ``torch.set_num_threads`` during the measurement (default: unchanged); reported.
        precision: ``fp32``, ``bf16`` / ``fp16`` (autocast; fp16 on CUDA only) or ``auto`` (bf16 where the
            CPU has it natively; bf16 or fp16 on CUDA), see
            :func:`~textdistill.training.precision.resolve_precision`.
        device: ``cpu`` or ``cuda`` / ``cuda:i``.
        warmup: untimed warm-up calls.
        repeats: timed repeats.
        latency_examples: batch-1 examples per repeat.

    Returns:
        The measurement.
    """
    dev = torch.device(device)
    precision = resolve_precision(precision, dev)
    p = next(model.parameters(), None)
    home = p.device if p is not None else torch.device("cpu")
    was_training = model.training
    model.eval().to(dev)
    moved = [{k: v.to(dev) for k, v in b.items() if isinstance(v, torch.Tensor)} for b in batches]

    def predict(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode(), autocast(dev, precision):
            return model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=batch.get("token_type_ids"),
                **extra_inputs(model, batch),
            ).logits

    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    try:
        with torch_threads(threads) as n_threads:
            timing = time_predictor(
                predict,
                moved,
                warmup=warmup,
                repeats=repeats,
                latency_examples=latency_examples,
                synchronize=sync,
            )
    finally:
        model.to(home).train(was_training)
    return SpeedResult(runtime="pytorch", device=str(dev), precision=precision, threads=n_threads, **timing)


def measure_onnx(
    path: str | os.PathLike[str],
    batches: Sequence[Mapping[str, Any]],
    *,
    threads: int | None = None,
    precision: str = "fp32",
    warmup: int = 3,
    repeats: int = 5,
    latency_examples: int | None = 64,
) -> SpeedResult:
    """Latency and throughput of an exported ONNX model under onnxruntime on CPU.

    Args:
        path: the ``.onnx`` file.
        batches: real collated batches.
        threads: onnxruntime intra-op threads (default: ``torch.get_num_threads()``, so both runtimes use
            the same count); reported.
        precision: label of the variant (``fp32`` or ``int8``), reported as given.
        warmup: untimed warm-up calls.
        repeats: timed repeats.
        latency_examples: batch-1 examples per repeat.
    """
    from textdistill.export.onnx import create_session, onnx_predictor

    n_threads = int(threads if threads is not None else torch.get_num_threads())
    session = create_session(path, threads=n_threads)
    feeds = [{k: v for k, v in b.items() if isinstance(v, torch.Tensor)} for b in batches]
    timing = time_predictor(
        onnx_predictor(session), feeds, warmup=warmup, repeats=repeats, latency_examples=latency_examples
    )
    return SpeedResult(runtime="onnxruntime", device="cpu", precision=precision, threads=n_threads, **timing)
