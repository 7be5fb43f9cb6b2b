"""Evaluation split over the processes of a data-parallel run, every example counted exactly once."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from textdistill.errors import DataError
from textdistill.training.distiller import all_gather_objects


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
    :func:`~textdistill.evaluation.metrics.evaluate_model` over ``loader(dataset)``. Token-classification
    datasets are split the same way, their per-sentence word logits gathered and the entity metrics
    computed once over all sentences (:func:`_evaluate_token_sharded`).

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

    if getattr(dataset, "token_task", False):  # entity-level metrics (evaluation/seq_metrics.py)
        return _evaluate_token_sharded(model, dataset, loader, device, autocast_dtype, rank, world)

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


def _evaluate_token_sharded(
    model: nn.Module,
    dataset: Any,
    loader: Callable[[Any], Iterable[dict[str, Any]]],
    device: torch.device | str | None,
    autocast_dtype: torch.dtype | None,
    rank: int,
    world: int,
) -> tuple[dict[str, float], torch.Tensor]:
    """Token classification: process ``rank`` predicts the sentences ``rank, rank + world, ...``; the word
    logits of every sentence (keyed by example id) are gathered from all processes, and the entity metrics
    are computed once on the whole dataset (:func:`~textdistill.evaluation.seq_metrics.score_word_logits`),
    the same on every process and equal to a single-process evaluation."""
    from torch.utils.data import Subset

    from textdistill.evaluation.metrics import torch_predictor
    from textdistill.evaluation.seq_metrics import (
        collect_word_logits,
        evaluate_token_model,
        score_word_logits,
    )

    if world <= 1:
        return evaluate_token_model(
            model, loader(dataset), dataset, device=device, autocast_dtype=autocast_dtype
        )
    shard = Subset(dataset, range(rank, len(dataset), world))
    was_training = model.training
    model.eval()
    try:
        predict = torch_predictor(model, device=device, autocast_dtype=autocast_dtype)
        local = collect_word_logits(predict, loader(shard) if len(shard) else [])
    finally:
        model.train(was_training)
    by_id: dict[int, torch.Tensor] = {}
    for part in all_gather_objects({k: v.numpy() for k, v in local.items()}):
        for ident, rows in part.items():
            by_id.setdefault(int(ident), torch.from_numpy(rows))  # an id seen twice is counted once
    missing = {int(dataset[i]["example_id"]) for i in range(len(dataset))} - set(by_id)
    if missing:
        raise DataError(
            f"distributed token evaluation lost {len(missing)} sentence(s) (e.g. id {min(missing)}); every "
            "sentence must reach one process. Fix: evaluate with the run's own loader."
        )
    return score_word_logits(by_id, dataset)
