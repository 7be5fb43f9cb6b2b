"""Entity-level metrics of sequence labelling, with seqeval's conventions (own implementation, no dependency).

* An entity is a ``(sentence, type, start, end)`` span. Precision = correct predicted entities / predicted
  entities, recall = correct / gold entities, F1 = their harmonic mean; a prediction is correct only when
  type and both boundaries match (CoNLL's exact-match rule). A ratio with a zero denominator is 0, as
  seqeval's ``zero_division`` default reports it (with a warning there).
* ``mode="lenient"`` (seqeval's default, conlleval's reading) decodes spans with
  :func:`~textdistill.data.tags.entity_spans`: an ``I-`` after ``O`` starts an entity.
  ``mode="strict"`` (seqeval ``mode="strict"`` with ``IOB2`` / ``IOBES``) counts only well-formed chunks
  (:func:`~textdistill.data.tags.strict_entity_spans`).
* Micro averages over all entity types; per type ``precision/recall/f1/support``.
* ``token_accuracy``: fraction of words whose predicted tag equals the gold tag (seqeval's
  ``accuracy_score``).

Metric keys (what training logs and best-checkpoint selection use): ``entity_f1``, ``entity_precision``,
``entity_recall``, ``token_accuracy``, ``f1_<TYPE>`` per type, and ``n`` (sentences scored).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from textdistill.data.tags import entity_spans, strict_entity_spans
from textdistill.errors import DataError

TOKEN_METRICS = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")
"""Metrics a token-classification evaluation reports (each may select the best checkpoint)."""


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def entity_report(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    *,
    mode: str = "lenient",
    scheme: str | None = None,
) -> dict[str, Any]:
    """Entity-level scores of predicted tag sequences against gold ones.

    Args:
        gold: per sentence, the gold tags.
        pred: per sentence, the predicted tags (same lengths).
        mode: ``lenient`` (default) or ``strict``.
        scheme: ``iob2`` or ``bioes``; required by ``strict``.

    Returns:
        ``{"precision", "recall", "f1", "token_accuracy", "per_type": {type: {precision, recall, f1,
        support}}, "n_gold", "n_pred", "n_correct"}``.

    Raises:
        DataError: different sentence counts or lengths, an unknown mode, strict without a scheme.
    """
    if len(gold) != len(pred):
        raise DataError(f"{len(pred)} predicted sentences for {len(gold)} gold ones; pass one per sentence.")
    if mode not in ("lenient", "strict"):
        raise DataError(f"entity matching mode {mode!r} is not one of lenient, strict.")
    if mode == "strict" and scheme not in ("iob2", "bioes"):
        raise DataError(f"strict entity matching needs scheme iob2 or bioes, got {scheme!r}.")
    g_count: Counter[str] = Counter()
    p_count: Counter[str] = Counter()
    c_count: Counter[str] = Counter()
    right = total = 0
    for k, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise DataError(f"sentence {k}: {len(p)} predicted tags for {len(g)} gold tags.")
        decode = (lambda t: strict_entity_spans(t, scheme)) if mode == "strict" else entity_spans
        gs, ps = set(decode(g)), set(decode(p))
        g_count.update(s.type for s in gs)
        p_count.update(s.type for s in ps)
        c_count.update(s.type for s in gs & ps)
        right += sum(a == b for a, b in zip(g, p))
        total += len(g)
    per_type = {}
    for t in sorted(set(g_count) | set(p_count)):
        pt, rt = _ratio(c_count[t], p_count[t]), _ratio(c_count[t], g_count[t])
        per_type[t] = {"precision": pt, "recall": rt, "f1": _f1(pt, rt), "support": g_count[t]}
    n_gold, n_pred, n_correct = sum(g_count.values()), sum(p_count.values()), sum(c_count.values())
    precision, recall = _ratio(n_correct, n_pred), _ratio(n_correct, n_gold)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "token_accuracy": _ratio(right, total),
        "per_type": per_type,
        "n_gold": n_gold,
        "n_pred": n_pred,
        "n_correct": n_correct,
    }


def flat_metrics(report: Mapping[str, Any], sentences: int) -> dict[str, float]:
    """The flat metric dict training and reports use (see the module docstring)."""
    out = {
        "entity_f1": float(report["f1"]),
        "entity_precision": float(report["precision"]),
        "entity_recall": float(report["recall"]),
        "token_accuracy": float(report["token_accuracy"]),
    }
    for t, scores in report["per_type"].items():
        out[f"f1_{t}"] = float(scores["f1"])
    out["n"] = sentences
    return out


def word_tags(
    word_logits: torch.Tensor | np.ndarray, positions: Sequence[int], names: Sequence[str]
) -> list[str]:
    """Predicted tags of one sentence's words from the logits at its words' first sub-tokens.

    Args:
        word_logits: ``(K, C)`` logits of the K words that have a position (in word order).
        positions: per word its sub-token position, -1 for a word without one (truncated): predicted ``O``.
        names: tag names in id order.
    """
    ids = np.asarray(word_logits).argmax(-1).tolist() if len(word_logits) else []
    it = iter(ids)
    return [names[next(it)] if p >= 0 else "O" for p in positions]


def collect_word_logits(predict: Any, batches: Iterable[Mapping[str, Any]]) -> dict[int, torch.Tensor]:
    """Run ``predict`` (batch -> ``(B, L, C)`` logits) and keep each example's word-start logits by id."""
    out: dict[int, torch.Tensor] = {}
    for batch in batches:
        logits = torch.as_tensor(np.asarray(predict(batch), dtype=np.float32))
        if logits.dim() != 3:
            raise DataError(
                f"token-classification evaluation needs per-token logits (B, L, C), the model returned "
                f"{tuple(logits.shape)}: is it a sequence classifier? Fix: use a token-classification model."
            )
        mask = torch.as_tensor(batch["word_mask"]).bool()
        for row, ident in enumerate(batch["example_ids"].tolist()):
            out[int(ident)] = logits[row, : mask.shape[1]][mask[row]]
    return out


def score_word_logits(
    by_id: Mapping[int, torch.Tensor], dataset: Any, *, mode: str | None = None, scheme: str | None = None
) -> tuple[dict[str, float], torch.Tensor]:
    """Entity metrics of a :class:`~textdistill.data.token_encoding.TokenEncodedDataset` from word logits.

    ``mode`` and ``scheme`` default to the dataset's ``entity_mode`` (else lenient) and ``tag_scheme``.

    Returns:
        ``(metrics, logits)``: :func:`flat_metrics` over the labelled sentences (``{"n": 0}`` without
        any) and the word-start logits of every sentence concatenated in example-id order ``(W, C)``
        (what teacher agreement compares).
    """
    names = dataset.label_map.names
    gold, pred = [], []
    for example, positions in zip(dataset.examples, dataset.word_positions):
        if example.tags is None:
            continue
        gold.append(example.tags)
        pred.append(word_tags(by_id[example.id], positions, names))
    ordered = [by_id[i] for i in sorted(by_id)]
    logits = torch.cat(ordered) if ordered else torch.zeros(0, len(names))
    if not gold:
        return {"n": 0}, logits
    mode = mode or getattr(dataset, "entity_mode", None) or "lenient"
    scheme = scheme or getattr(dataset, "tag_scheme", None)
    return flat_metrics(entity_report(gold, pred, mode=mode, scheme=scheme), len(gold)), logits


def evaluate_token_model(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    dataset: Any,
    *,
    device: str | torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
    mode: str | None = None,
) -> tuple[dict[str, float], torch.Tensor]:
    """Evaluate a token-classification model on ``dataset`` (batches from ``loader``), in eval mode.

    Returns:
        As :func:`score_word_logits` (``mode`` None: the dataset's ``entity_mode``).
    """
    from textdistill.evaluation.metrics import torch_predictor

    was_training = model.training
    model.eval()
    try:
        predict = torch_predictor(model, device=device, autocast_dtype=autocast_dtype)
        by_id = collect_word_logits(predict, loader)
    finally:
        model.train(was_training)
    return score_word_logits(by_id, dataset, mode=mode)
