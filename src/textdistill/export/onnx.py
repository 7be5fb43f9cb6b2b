"""Export a teacher or student to ONNX, check it against PyTorch, and optionally quantize it to int8.

The exported graph takes ``input_ids``, ``attention_mask`` (and ``token_type_ids`` for models with
segment embeddings), all ``(batch, sequence)`` int64 with both axes dynamic, and returns ``logits``
``(batch, num_labels)``. The export directory is self-contained for serving with onnxruntime:

    model.onnx         fp32 graph
    model.int8.onnx    dynamically quantized graph (with quantize_int8)
    tokenizer files    the tokenizer the model reads
    labels.json        {"id2label": {...}, "label2id": {...}}
    export.json        inputs, opset, parity, int8 agreement / dev metrics, sizes, versions

onnx and onnxruntime are optional dependencies: ``pip install 'textdistill[export]'``.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from textdistill.errors import ModelError
from textdistill.evaluation.metrics import agreement

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'textdistill[export]'"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "logits"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"


class ExportError(ModelError):
    """An export that cannot be trusted (ONNX logits differ from PyTorch beyond the tolerance) or cannot run."""


def _require(module: str) -> Any:
    """Import an optional export dependency, or fail with the install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"ONNX export needs the package {module.split('.')[0]!r}: {INSTALL_HINT}") from exc


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and measured.

    Attributes:
        out_dir: the export directory.
        onnx_path: the fp32 graph.
        int8_path: the int8 graph (None without quantization).
        input_names: graph inputs, in order.
        opset: ONNX opset version.
        tolerance: the parity tolerance that was enforced on the fp32 graph.
        max_abs_diff: max |logit(onnxruntime fp32) - logit(PyTorch)| over every checked input.
        checked_shapes: ``(batch, sequence)`` shapes of the parity inputs.
        int8_max_abs_diff: the same for the int8 graph (informational: quantization changes logits).
        dev_metrics: per variant (``pytorch``, ``onnx_fp32``, ``onnx_int8``) the dev metrics, when dev
            batches were given.
        agreement: argmax agreement (Pearson for regression) of ``onnx_fp32`` / ``onnx_int8`` with
            ``pytorch``, over the dev batches (or the parity inputs without dev batches).
        agreement_measure: what ``agreement`` measures, in words.
        sizes: bytes of ``onnx_fp32`` and ``onnx_int8``.
        dev_logits: per variant the ``(N, C)`` dev logits in example-id order (not serialised), so callers
            can compare them with other models without running the graphs again.
    """

    out_dir: Path
    onnx_path: Path
    int8_path: Path | None
    input_names: list[str]
    opset: int
    tolerance: float
    max_abs_diff: float
    checked_shapes: list[tuple[int, int]]
    int8_max_abs_diff: float | None = None
    dev_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    agreement_measure: str = ""
    sizes: dict[str, int] = field(default_factory=dict)
    dev_logits: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings, without ``dev_logits``)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "dev_logits"}
        for key in ("out_dir", "onnx_path", "int8_path"):
            d[key] = None if d[key] is None else str(d[key])
        d["checked_shapes"] = [list(s) for s in self.checked_shapes]
        return d


def _hf_model(model: nn.Module) -> nn.Module | None:
    """The transformers model inside ``model`` (``.model`` of an HFClassifier), or ``model`` if it is one."""
    for candidate in (getattr(model, "model", None), model):
        config = getattr(candidate, "config", None)
        if (
            isinstance(candidate, nn.Module)
            and hasattr(config, "model_type")
            and hasattr(candidate, "save_pretrained")
        ):
            return candidate
    return None


def onnx_input_names(model: nn.Module) -> list[str]:
    """Graph inputs for ``model``: token_type_ids only for HF models with segment embeddings.

    RoBERTa-style models (``type_vocab_size == 1``) and DistilBERT (no ``token_type_ids`` argument) get
    only ``input_ids`` and ``attention_mask``, as do non-HF students (e.g. the BiLSTM), which ignore them.
    """
    hf = _hf_model(model)
    names = ["input_ids", "attention_mask"]
    if hf is not None:
        takes = "token_type_ids" in inspect.signature(hf.forward).parameters
        if takes and int(getattr(hf.config, "type_vocab_size", 0) or 0) > 1:
            names.append("token_type_ids")
    names += list(getattr(model, "extra_input_names", ()))  # e.g. a casing BiLSTM student's case_ids
    return names


class _LogitsGraph(nn.Module):
    """The traced function: positional int64 inputs -> logits.

    HF models are traced directly (the plain transformers forward, no feature hooks); other models go
    through their ModelOutputs contract.
    """

    def __init__(self, model: nn.Module, input_names: Sequence[str]):
        super().__init__()
        self.hf = _hf_model(model)
        self.model = model
        self.input_names = list(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(self.input_names, inputs))
        if self.hf is not None:
            return self.hf(**kwargs, return_dict=True).logits
        return self.model(
            input_ids=kwargs["input_ids"],
            attention_mask=kwargs["attention_mask"],
            token_type_ids=kwargs.get("token_type_ids"),
            **{k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask", "token_type_ids")},
        ).logits


def _model_inputs(batch: Mapping[str, Any], names: Sequence[str], device: torch.device) -> list[torch.Tensor]:
    out = []
    for name in names:
        value = batch.get(name)
        if value is None and name == "token_type_ids":
            value = torch.zeros_like(torch.as_tensor(batch["input_ids"]))
        if value is None:
            raise ModelError(f"the export batch has no {name!r}; pass a collated batch of real examples.")
        out.append(torch.as_tensor(value, dtype=torch.long).to(device))
    return out


def create_session(
    path: str | os.PathLike[str], *, threads: int | None = None, providers: Sequence[str] | None = None
) -> Any:
    """An onnxruntime ``InferenceSession`` with a fixed thread count.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (None: onnxruntime's default); inter-op parallelism is 1.
        providers: execution providers (default: CPU).
    """
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(
        str(path), sess_options=opts, providers=list(providers or ["CPUExecutionProvider"])
    )


def onnx_feed(input_names: Sequence[str], batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The onnxruntime feed for a batch: int64 numpy arrays of the graph's inputs (zero segment ids
    when the batch has none)."""
    feed = {}
    for name in input_names:
        value = batch.get(name)
        if value is None and name == "token_type_ids":
            value = torch.zeros_like(torch.as_tensor(batch["input_ids"]))
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        feed[name] = np.asarray(value, dtype=np.int64)
    return feed


def onnx_predictor(session: Any) -> Callable[[Mapping[str, Any]], np.ndarray]:
    """A function mapping a batch (dict of tensors) to ``(B, C)`` logits through an onnxruntime session."""
    names = [i.name for i in session.get_inputs()]

    def predict(batch: Mapping[str, Any]) -> np.ndarray:
        return session.run([OUTPUT_NAME], onnx_feed(names, batch))[0]

    return predict


def _label_map(model: nn.Module, id2label: Mapping[int, str] | None) -> dict[int, str] | None:
    if id2label is not None:
        return {int(k): str(v) for k, v in id2label.items()}
    found = getattr(model, "id2label", None)
    if found is None:
        hf = _hf_model(model)
        found = getattr(hf.config, "id2label", None) if hf is not None else None
    return {int(k): str(v) for k, v in found.items()} if found else None


def _trimmed_single(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The batch's first example alone at its real length: a different batch size and sequence length
    from the export sample, to exercise both dynamic axes on real tokens."""
    n = max(int(torch.as_tensor(batch["attention_mask"])[0].sum()), 1)
    return {
        k: torch.as_tensor(v)[:1, :n]
        for k, v in batch.items()
        if k in (*INPUT_NAMES, "case_ids") and v is not None and torch.as_tensor(v).ndim == 2
    }


def export_onnx(
    model: nn.Module,
    tokenizer: Any | None,
    out_dir: str | os.PathLike[str],
    *,
    sample_batch: Mapping[str, Any],
    opset: int = 17,
    quantize_int8: bool = False,
    tolerance: float = 1e-4,
    check_batches: Iterable[Mapping[str, Any]] | None = None,
    dev_batches: Sequence[Mapping[str, Any]] | None = None,
    regression: bool = False,
    id2label: Mapping[int, str] | None = None,
    threads: int | None = None,
    dev_dataset: Any | None = None,
) -> ExportResult:
    """Export ``model`` to ONNX with dynamic batch and sequence axes, verify it, optionally quantize it.

    Steps:

    1. Trace ``model`` on ``sample_batch`` with the TorchScript-based exporter (``dynamo=False``: the
       dynamo exporter needs ``onnxscript``, and the TorchScript exporter maps packed LSTM sequences to
       ONNX's ``sequence_lens``). HF models export their plain transformers forward; other models their
       ModelOutputs forward. The model's train/eval mode is restored afterwards.
    2. Parity: run onnxruntime and PyTorch (the ModelOutputs forward) on the sample batch, on its first
       example alone at its own length (other batch and sequence sizes than the trace), on
       ``check_batches`` and on ``dev_batches``; ``max |logit_onnx - logit_torch|`` must stay within
       ``tolerance``.
    3. With ``quantize_int8``: ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations
       quantized on the fly), then its max logit difference, its agreement with PyTorch and, with
       ``dev_batches``, its dev metrics next to the fp32 graph's.
    4. Write the tokenizer, ``labels.json`` and ``export.json``.

    Args:
        model: an HFClassifier-like wrapper (transformers model at ``.model``), a bare transformers
            classifier, or any ModelOutputs model (BiLSTM student), in float32.
        tokenizer: saved next to the graph (None: not saved).
        out_dir: export directory (created; files of a previous export are replaced).
        sample_batch: a collated batch of real examples used for tracing (padding is fine).
        opset: ONNX opset version.
        quantize_int8: also write ``model.int8.onnx``.
        tolerance: largest accepted fp32 logit difference.
        check_batches: more real batches for the parity check.
        dev_batches: labelled dev batches: parity, agreement, and dev metrics per variant.
        regression: score dev metrics as regression.
        id2label: label names (default: the model's ``id2label`` / HF config).
        threads: onnxruntime intra-op threads of the check sessions (None: onnxruntime's default).
        dev_dataset: token classification: the TokenEncodedDataset of ``dev_batches``, for entity
            metrics per variant. Token models export ``logits (batch, sequence, C)``; parity covers every
            position, agreement the real tokens.

    Returns:
        The :class:`ExportResult` (also written to ``export.json``).

    Raises:
        ExportError: the fp32 graph's logits differ from PyTorch's by more than ``tolerance``, or the
            exporter fails.
        ImportError: onnx / onnxruntime are not installed (with the install hint).
    """
    _require("onnx")
    _require("onnxruntime")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / ONNX_FILE
    _trace(model, sample_batch, onnx_path, opset)
    session = create_session(onnx_path, threads=threads)
    dev_batches = list(dev_batches or [])
    parity = [dict(sample_batch), _trimmed_single(sample_batch), *(check_batches or []), *dev_batches]
    reference, fp32, max_diff, shapes = _parity(model, session, parity, onnx_path, tolerance)
    result = ExportResult(
        out_dir=out,
        onnx_path=onnx_path,
        int8_path=None,
        input_names=[i.name for i in session.get_inputs()],
        opset=opset,
        tolerance=tolerance,
        max_abs_diff=max_diff,
        checked_shapes=shapes,
        sizes={"onnx_fp32": onnx_path.stat().st_size},
    )
    result.agreement["onnx_fp32"] = agreement(_rows(fp32, parity), _rows(reference, parity))
    result.agreement_measure = _agreement_measure(_rows(reference, parity))
    outputs = {"pytorch": reference, "onnx_fp32": fp32}
    if quantize_int8:
        outputs["onnx_int8"] = _quantize(result, parity, reference, threads)
    if dev_batches:
        _dev_scores(result, outputs, len(parity) - len(dev_batches), dev_batches, regression, dev_dataset)
    _write_files(model, tokenizer, result, id2label)
    log.info("exported %s to %s (max |delta logit| %.2e)", type(model).__name__, onnx_path, max_diff)
    return result


def _agreement_measure(reference: np.ndarray) -> str:
    """What the export's agreement measures (argmax match, or Pearson r for a one-output model)."""
    from textdistill.evaluation.metrics import agreement_measure

    single_output = reference.reshape(len(reference), -1).shape[1] == 1
    measure = agreement_measure(single_output)
    return measure.replace("student", "exported graph").replace("teacher", "PyTorch model")


def _trace(model: nn.Module, sample_batch: Mapping[str, Any], onnx_path: Path, opset: int) -> None:
    """Step 1: trace ``model`` into ``onnx_path`` with dynamic batch and sequence axes, then check it."""
    onnx = _require("onnx")
    names = onnx_input_names(model)
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    graph = _LogitsGraph(model, names)
    args = tuple(_model_inputs(sample_batch, names, device))
    dynamic = {n: {0: "batch", 1: "sequence"} for n in names}
    from textdistill.models.token_heads import is_token_model

    # token classification: logits (batch, sequence, C)
    dynamic[OUTPUT_NAME] = {0: "batch", 1: "sequence"} if is_token_model(model) else {0: "batch"}
    was_training = model.training
    # The exporter restores the *wrapper's* mode on exit, recursively; a fresh wrapper is in train mode,
    # so without graph.eval() it would leave the model with dropout switched on.
    graph.eval()
    try:
        with warnings.catch_warnings():
            # TracerWarnings about shape-dependent Python branches (e.g. HF's mask padding check) and the
            # legacy-exporter deprecation notice: the parity check below is what decides correctness.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                args,
                str(onnx_path),
                dynamo=False,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic,
                opset_version=opset,
                do_constant_folding=True,
            )
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported as an ExportError
        raise ExportError(
            f"torch.onnx.export failed for {type(model).__name__} at opset {opset}: {exc}. Try another opset "
            "(e.g. opset=17 or 18) or check that the model follows the forward contract."
        ) from exc
    finally:
        model.train(was_training)
    onnx.checker.check_model(str(onnx_path))


def _parity(
    model: nn.Module, session: Any, parity: list[Mapping[str, Any]], onnx_path: Path, tolerance: float
) -> tuple[list[np.ndarray], list[np.ndarray], float, list[tuple[int, ...]]]:
    """Step 2: PyTorch and onnxruntime logits of the parity batches; ExportError beyond ``tolerance``.

    Returns:
        ``(pytorch logits, onnx logits, max |difference|, input shapes)``, per batch.
    """
    from textdistill.evaluation.metrics import torch_predictor

    ort_predict = onnx_predictor(session)
    torch_predict = torch_predictor(model)
    was_training = model.training
    model.eval()
    try:
        reference = [torch_predict(b).numpy() for b in parity]
    finally:
        model.train(was_training)
    fp32 = [ort_predict(b) for b in parity]
    max_diff = max(float(np.max(np.abs(o - r))) for o, r in zip(fp32, reference))
    shapes = [tuple(int(s) for s in torch.as_tensor(b["input_ids"]).shape) for b in parity]
    if not max_diff <= tolerance:  # also catches NaN
        raise ExportError(
            f"the exported ONNX graph disagrees with PyTorch: max |delta logit| = {max_diff:.3g} > tolerance "
            f"{tolerance:g} over inputs of shapes {shapes}. The trace probably baked in a shape- or "
            f"data-dependent branch; the graph is left at {str(onnx_path)!r} for inspection. Fix: export "
            "in float32, or raise the tolerance if the difference is numerical noise."
        )
    return reference, fp32, max_diff, shapes


def _quantize(
    result: ExportResult, parity: list[Mapping[str, Any]], reference: list[np.ndarray], threads: int | None
) -> list[np.ndarray]:
    """Step 3: dynamic int8 quantization; its size, max logit difference and agreement go into ``result``.

    Returns:
        The int8 graph's logits of the parity batches.
    """
    quantization = _require("onnxruntime.quantization")
    int8_path = result.out_dir / INT8_FILE
    quantization.quantize_dynamic(
        str(result.onnx_path), str(int8_path), weight_type=quantization.QuantType.QInt8
    )
    result.int8_path = int8_path
    result.sizes["onnx_int8"] = int8_path.stat().st_size
    int8_predict = onnx_predictor(create_session(int8_path, threads=threads))
    int8 = [int8_predict(b) for b in parity]
    result.int8_max_abs_diff = max(float(np.max(np.abs(o - r))) for o, r in zip(int8, reference))
    result.agreement["onnx_int8"] = agreement(_rows(int8, parity), _rows(reference, parity))
    return int8


def _dev_scores(
    result: ExportResult,
    outputs: dict[str, list[np.ndarray]],
    first_dev: int,
    dev_batches: list[Mapping[str, Any]],
    regression: bool,
    dev_dataset: Any | None = None,
) -> None:
    """Dev logits and metrics of every variant, from the parity outputs (the dev batches ended that list)."""
    from textdistill.evaluation.metrics import collect_logits, compute_metrics

    for name, outs in outputs.items():
        replay = iter(outs[first_dev:])
        if np.asarray(outs[0]).ndim == 3:  # token classification: word-level logits, entity metrics
            _token_dev(result, name, replay, dev_batches, dev_dataset)
            continue
        logits, labels = collect_logits(lambda _batch, it=replay: next(it), dev_batches)
        result.dev_logits[name] = logits
        if labels is not None:
            result.dev_metrics[name] = compute_metrics(logits, labels, regression=regression)
    # agreement on the dev set replaces the parity-input agreement
    for name in ("onnx_fp32", "onnx_int8"):
        if name in result.dev_logits:
            result.agreement[name] = agreement(result.dev_logits[name], result.dev_logits["pytorch"])


def _write_files(
    model: nn.Module, tokenizer: Any | None, result: ExportResult, id2label: Mapping[int, str] | None
) -> None:
    """Step 4: the tokenizer, ``labels.json`` and ``export.json`` next to the graphs."""
    from textdistill.evaluation.environment import environment

    out = result.out_dir
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    labels = _label_map(model, id2label)
    if labels is not None:
        payload = {
            "id2label": {str(k): v for k, v in sorted(labels.items())},
            "label2id": {v: k for k, v in labels.items()},
        }
        (out / "labels.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    meta = result.to_dict()
    meta["model_class"] = type(model).__name__
    meta["output_names"] = [OUTPUT_NAME]
    from textdistill.models.token_heads import is_token_model

    token = is_token_model(model)
    meta["dynamic_axes"] = {
        "inputs": {"0": "batch", "1": "sequence"},
        OUTPUT_NAME: {"0": "batch", "1": "sequence"} if token else {"0": "batch"},
    }
    meta["environment"] = environment()
    (out / "export.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _rows(outputs: list[np.ndarray], batches: list[Mapping[str, Any]]) -> np.ndarray:
    """Logits as rows for agreement: per example, or per real token for ``(B, L, C)`` token logits."""
    if np.asarray(outputs[0]).ndim == 3:
        from textdistill.evaluation.token_bench import real_token_rows

        return real_token_rows(outputs, batches)
    return np.concatenate(outputs)


def _token_dev(result: ExportResult, name: str, replay: Any, batches: Any, dataset: Any | None) -> None:
    """Word-level dev logits (and, with the dataset, entity metrics) of one variant of a token model."""
    from textdistill.evaluation.seq_metrics import collect_word_logits, score_word_logits

    by_id = collect_word_logits(lambda _batch: next(replay), batches)
    if dataset is not None:
        metrics, logits = score_word_logits(by_id, dataset, scheme=getattr(dataset, "tag_scheme", None))
        result.dev_metrics[name] = metrics
    else:
        logits = torch.cat([by_id[i] for i in sorted(by_id)])
    result.dev_logits[name] = logits


def export_dir(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    *,
    opset: int = 17,
    quantize_int8: bool = True,
    tolerance: float = 1e-4,
    max_length: int = 128,
    max_examples: int | None = 512,
    batch_size: int = 32,
    threads: int | None = None,
    announce: bool = False,
    **data_options: Any,
) -> ExportResult:
    """Export a saved model directory, tracing and checking it on real examples of a labelled file.

    Args:
        model_dir: a directory written by textdistill (HF or BiLSTM) or any HF sequence classifier.
        out_dir: export directory.
        data_path: labelled dev file: the trace sample, the parity inputs and the int8 dev metrics.
        opset: ONNX opset.
        quantize_int8: also write the dynamically quantized int8 graph.
        tolerance: largest accepted fp32 logit difference.
        max_length: tokens per example.
        max_examples: seeded subset of the file used (None: all).
        batch_size: examples per batch.
        threads: onnxruntime threads of the checks.
        announce: print the inferred task line on stderr.
        **data_options: ``text_column``, ``text_pair_column``, ``label_column``, ``format``, ``encoding``,
            ``regression`` (see :func:`textdistill.evaluation.benchmark.read_labelled`); unset columns and
            kind are inferred (:func:`textdistill.data.task_inference.eval_task`: a model with one output is
            a regression model).

    Returns:
        The :class:`ExportResult`.
    """
    from textdistill.evaluation.eval_data import EvalData, infer_eval_task, model_tokenizer, read_labelled
    from textdistill.evaluation.token_bench import TokenEvalData, read_token_labelled
    from textdistill.models.io import load_student
    from textdistill.models.token_heads import is_token_model

    model = load_student(model_dir)
    tokenizer = model_tokenizer(model_dir)
    id2label = _label_map(model, None)
    token = is_token_model(model)  # a tagged dev file and entity metrics (evaluation/token_bench.py)
    if token:
        regression = False
        examples, label_map = read_token_labelled(
            data_path, id2label=id2label, max_examples=max_examples, **data_options
        )
    else:  # sentence(-pair) data: the task inferred from the file and the model (printed when announce)
        read_kw = dict(data_options)
        command = "export" if announce else None
        spec = infer_eval_task(data_path, id2label or {}, model_dir, read_kw, announce=command)
        regression = spec.regression
        examples, label_map = read_labelled(
            data_path, id2label=id2label, max_examples=max_examples, **read_kw
        )
    data = (TokenEvalData if token else EvalData)(  # type: ignore[operator]
        examples,
        tokenizer,
        label_map=label_map,
        regression=regression,
        max_length=max_length,
        batch_size=batch_size,
        speed_examples=batch_size,
        seed=0,
    )
    return export_onnx(
        model,
        tokenizer,
        out_dir,
        sample_batch=data.speed_batches[0],
        opset=opset,
        quantize_int8=quantize_int8,
        tolerance=tolerance,
        dev_batches=data.eval_batches,
        regression=regression,
        threads=threads,
        dev_dataset=getattr(data, "dataset", None),
    )
