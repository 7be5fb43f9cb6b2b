"""Task metrics (accuracy, macro-F1, MCC, positive-class F1; Pearson, Spearman, MSE), model evaluation and
teacher agreement.

Everything is plain numpy/torch (no scikit-learn dependency). Metric names are the keys the trainer and
the report use: ``accuracy``, ``macro_f1``, ``mcc`` (and ``f1``, the F1 of class id 1, for binary tasks)
for classification and ``pearson``, ``spearman``, ``mse`` for regression; every result also carries ``n``,
the number of labelled examples scored.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from textdistill.data.encoding import IGNORE_INDEX
from textdistill.errors import DataError
from textdistill.models.outputs import extra_inputs

CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "mcc", "f1")
"""Classification metrics; ``f1`` (positive-class F1) is reported only when every id is 0 or 1."""
REGRESSION_METRICS = ("pearson", "spearman", "mse")


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def compute_metrics(
    preds_or_logits: Any, labels: Any, *, regression: bool, ignore_index: int = IGNORE_INDEX
) -> dict[str, float]:
    """Score predictions against labels.

    Classification (``regression=False``):

    - ``accuracy``: fraction of exact matches.
    - ``macro_f1``: unweighted mean over classes of ``F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k)``; the classes
      are those present in the labels or the predictions (scikit-learn's default), so a class never seen
      and never predicted does not drag the mean down.
    - ``mcc``: Matthews correlation in its multi-class form (Gorodkin 2004). With confusion matrix ``C``
      (rows = true, columns = predicted), ``t_k`` row sums, ``p_k`` column sums, ``c = trace(C)``,
      ``s = N``: ``MCC = (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2))``; 0 when a
      factor of the denominator is 0 (all predictions or all labels in one class). For two classes it
      equals the usual ``(TP TN - FP FN) / sqrt(...)``.
    - ``f1`` (binary tasks only: every label and prediction is id 0 or 1): F1 of the positive class, id 1,
      ``2 TP / (2 TP + FP + FN)`` (0 when id 1 never occurs in labels or predictions); the metric MRPC /
      QQP-style paraphrase tasks report.

    Regression (``regression=True``):

    - ``pearson``: linear correlation; ``spearman``: Pearson correlation of the ranks, tied values sharing
      their average rank; both 0 when either side is constant (no correlation can be measured, and a
      number keeps best-checkpoint comparisons well defined).
    - ``mse``: mean squared error.

    Args:
        preds_or_logits: ``(N, C)`` logits / probabilities (argmax is taken), or ``(N,)`` class ids;
            for regression ``(N,)`` or ``(N, 1)`` predicted values.
        labels: ``(N,)`` class ids (``ignore_index`` marks unlabelled rows) or real values (NaN marks
            unlabelled rows).
        regression: score as regression instead of classification.
        ignore_index: class id of unlabelled rows, skipped.

    Returns:
        The metrics above plus ``n`` (labelled rows scored). With no labelled rows: ``{"n": 0}``.

    Raises:
        DataError: predictions and labels of different lengths, or a regression prediction with more than
            one output per example.
    """
    pred = _to_numpy(preds_or_logits)
    gold = _to_numpy(labels).reshape(-1)
    if pred.ndim == 0 or pred.shape[0] != gold.shape[0]:
        raise DataError(
            f"cannot score {pred.shape[0] if pred.ndim else 0} predictions (shape {tuple(pred.shape)}) against "
            f"{gold.shape[0]} labels; pass one prediction row per label."
        )
    if regression:
        if pred.ndim == 2 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if pred.ndim != 1:
            raise DataError(
                f"regression predictions must be (N,) or (N, 1), got shape {tuple(pred.shape)}; a regression "
                "model has exactly one output."
            )
        pred = pred.astype(np.float64)
        gold = gold.astype(np.float64)
        keep = ~np.isnan(gold)
        pred, gold = pred[keep], gold[keep]
        if gold.size == 0:
            return {"n": 0}
        return {
            "pearson": pearson(pred, gold),
            "spearman": spearman(pred, gold),
            "mse": float(np.mean((pred - gold) ** 2)),
            "n": int(gold.size),
        }
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    pred = pred.astype(np.int64).reshape(-1)
    gold = gold.astype(np.int64)
    keep = gold != ignore_index
    pred, gold = pred[keep], gold[keep]
    if gold.size == 0:
        return {"n": 0}
    out = {
        "accuracy": float(np.mean(pred == gold)),
        "macro_f1": macro_f1(pred, gold),
        "mcc": matthews_corrcoef(pred, gold),
    }
    if int(max(pred.max(), gold.max())) <= 1 and int(min(pred.min(), gold.min())) >= 0:
        out["f1"] = positive_f1(pred, gold)
    out["n"] = int(gold.size)
    return out


def _confusion(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Confusion matrix over the classes present in either array: rows = true, columns = predicted."""
    classes, inverse = np.unique(np.concatenate([gold, pred]), return_inverse=True)
    k = len(classes)
    g, p = inverse[: len(gold)], inverse[len(gold) :]
    return np.bincount(g * k + p, minlength=k * k).reshape(k, k).astype(np.float64)


def macro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """Unweighted mean F1 over the classes present in ``gold`` or ``pred`` (see :func:`compute_metrics`)."""
    cm = _confusion(np.asarray(pred), np.asarray(gold))
    tp = np.diag(cm)
    denom = 2 * tp + (cm.sum(axis=0) - tp) + (cm.sum(axis=1) - tp)  # 2TP + FP + FN
    # denom > 0 for every class present in either array
    return float(np.mean(2 * tp / denom))


def positive_f1(pred: np.ndarray, gold: np.ndarray, positive: int = 1) -> float:
    """F1 of class ``positive``: ``2 TP / (2 TP + FP + FN)``; 0 when it is neither predicted nor present."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    tp = float(np.sum((pred == positive) & (gold == positive)))
    fp = float(np.sum((pred == positive) & (gold != positive)))
    fn = float(np.sum((pred != positive) & (gold == positive)))
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom > 0 else 0.0


def matthews_corrcoef(pred: np.ndarray, gold: np.ndarray) -> float:
    """Multi-class Matthews correlation coefficient (Gorodkin 2004; see :func:`compute_metrics`)."""
    cm = _confusion(np.asarray(pred), np.asarray(gold))
    t = cm.sum(axis=1)
    p = cm.sum(axis=0)
    c = np.trace(cm)
    s = cm.sum()
    cov_pt = c * s - float(p @ t)
    cov_pp = s * s - float(p @ p)
    cov_tt = s * s - float(t @ t)
    if cov_pp == 0 or cov_tt == 0:
        return 0.0
    return float(cov_pt / math.sqrt(cov_pp * cov_tt))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two 1-D arrays; 0 when either is constant."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y / denom) if denom > 0 else 0.0


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``; tied values share the mean of the ranks they span (e.g. ``[1, 2.5, 2.5, 4]``)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts_group = np.concatenate([[True], xs[1:] != xs[:-1]])
    group = np.cumsum(starts_group) - 1
    first = np.flatnonzero(starts_group)  # 0-based first position of each tie group
    last = np.concatenate([first[1:], [len(x)]]) - 1  # 0-based last position
    mean_rank = (first + last) / 2.0 + 1.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation: Pearson correlation of the average ranks (ties handled)."""
    return pearson(average_ranks(x), average_ranks(y))


def agreement(student_logits: Any, teacher_logits: Any) -> float:
    """How often the student decides like the teacher.

    Args:
        student_logits: ``(N, C)`` student logits (rows aligned with the teacher's).
        teacher_logits: ``(N, C)`` teacher logits.

    Returns:
        For ``C > 1``: the fraction of rows whose argmax class is the same. For single-output (regression)
        models: the Pearson correlation of the two outputs.

    Raises:
        DataError: the two have different shapes.
    """
    s = _to_numpy(student_logits)
    t = _to_numpy(teacher_logits)
    if s.shape != t.shape:
        raise DataError(
            f"student logits {tuple(s.shape)} and teacher logits {tuple(t.shape)} differ in shape; compute "
            "both on the same examples with the same label map."
        )
    if s.ndim == 1 or s.shape[1] == 1:
        return pearson(s.reshape(-1), t.reshape(-1))
    return float(np.mean(s.argmax(axis=1) == t.argmax(axis=1)))


def agreement_measure(regression: bool) -> str:
    """What :func:`agreement` measures, in words (reports and JSON say it next to the number)."""
    if regression:
        return "Pearson correlation of the student's and the teacher's outputs"
    return "share of examples where the student's predicted class equals the teacher's"


def collect_logits(
    predict: Callable[[Mapping[str, torch.Tensor]], Any], batches: Iterable[Mapping[str, Any]]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``predict`` over batches and gather logits and labels in example order.

    Rows are returned sorted by ``example_ids`` when every batch carries them (a stable sort), so logits of
    two models computed over differently ordered loaders still line up row by row.

    Args:
        predict: maps a batch to ``(B, C)`` logits (a torch tensor or numpy array).
        batches: dicts with ``input_ids``, ``attention_mask``, optional ``token_type_ids``, ``labels``,
            ``example_ids``.

    Returns:
        ``(logits, labels)``: ``(N, C)`` float32 logits on CPU, and ``(N,)`` labels (None when the batches
        have none).
    """
    logits, labels, ids = [], [], []
    have_labels = have_ids = True
    for batch in batches:
        logits.append(torch.as_tensor(np.asarray(_to_numpy(predict(batch)), dtype=np.float32)))
        if "labels" in batch and batch["labels"] is not None:
            labels.append(torch.as_tensor(batch["labels"]).cpu())
        else:
            have_labels = False
        if "example_ids" in batch and batch["example_ids"] is not None:
            ids.append(torch.as_tensor(batch["example_ids"]).cpu())
        else:
            have_ids = False
    if not logits:
        raise DataError("no batches to evaluate: the evaluation data is empty.")
    all_logits = torch.cat(logits)
    all_labels = torch.cat(labels) if have_labels else None
    if have_ids:
        order = torch.argsort(torch.cat(ids), stable=True)
        all_logits = all_logits[order]
        all_labels = all_labels[order] if all_labels is not None else None
    return all_logits, all_labels


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def torch_predictor(
    model: nn.Module, *, device: str | torch.device | None = None, autocast_dtype: torch.dtype | None = None
) -> Callable[[Mapping[str, Any]], torch.Tensor]:
    """A function mapping a batch to float32 logits through the ModelOutputs forward contract.

    Args:
        model: a model with ``forward(input_ids, attention_mask, token_type_ids=None) -> ModelOutputs``.
        device: where inputs are moved (default: the device of the model's parameters).
        autocast_dtype: run the forward under ``torch.autocast`` with this dtype (e.g. ``torch.bfloat16``).
    """
    dev = torch.device(device) if device is not None else _model_device(model)

    def predict(batch: Mapping[str, Any]) -> torch.Tensor:
        tt = batch.get("token_type_ids")
        ctx = (
            torch.autocast(dev.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), ctx:
            out = model(
                input_ids=batch["input_ids"].to(dev),
                attention_mask=batch["attention_mask"].to(dev),
                token_type_ids=tt.to(dev) if tt is not None else None,
                **extra_inputs(model, batch, dev),
            )
        return out.logits.float().cpu()

    return predict


def evaluate_model(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    *,
    regression: bool,
    device: str | torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[dict[str, float], torch.Tensor]:
    """Evaluate a model on a loader, in eval mode (restored afterwards).

    Args:
        model: a model following the ModelOutputs forward contract.
        loader: batches (dicts) with ``input_ids``, ``attention_mask``, optional ``token_type_ids``,
            ``labels`` and ``example_ids``.
        regression: score as regression.
        device: where inputs are moved (default: the model's device).
        autocast_dtype: optional autocast dtype for the forward (e.g. ``torch.bfloat16``).

    Returns:
        ``(metrics, logits)``: :func:`compute_metrics` of the labelled rows (``{"n": 0}`` when the loader
        has no labels) and the ``(N, C)`` float32 CPU logits in example-id order.
    """
    was_training = model.training
    model.eval()
    try:
        logits, labels = collect_logits(
            torch_predictor(model, device=device, autocast_dtype=autocast_dtype), loader
        )
    finally:
        model.train(was_training)
    metrics = compute_metrics(logits, labels, regression=regression) if labels is not None else {"n": 0}
    return metrics, logits


def command_line_evaluation(
    model: nn.Module,
    encoded: Any,
    tokenizer: Any,
    *,
    batch_size: int,
    precision: str,
    score: Callable[..., tuple[dict[str, float], torch.Tensor]] = evaluate_model,
    **kwargs: Any,
) -> tuple[dict[str, float], torch.Tensor]:
    """``score(model, loader, device=..., autocast_dtype=..., **kwargs)`` as ``textdistill evaluate`` runs it.

    The loader batches the encoded dataset by length in a fixed order; the model moves to CUDA when there is
    one, and ``precision`` (auto | fp32 | bf16) is resolved for that device.
    """
    from textdistill.data.collate import Collator
    from textdistill.data.samplers import make_loader
    from textdistill.training.precision import autocast_dtype, resolve_precision

    collator = Collator.for_tokenizer(tokenizer)
    loader = make_loader(encoded, batch_size, shuffle=False, group_by_length=True, seed=0, collator=collator)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    dtype = autocast_dtype(resolve_precision(precision, device))
    return score(model, loader, device=device, autocast_dtype=dtype, **kwargs)
