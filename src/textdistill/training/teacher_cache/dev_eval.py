"""The teacher's dev-set evaluation, stored beside the teacher cache so runs and stages reuse it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from textdistill.config.schema import Config
from textdistill.training.teacher_cache.source import default_cache_root
from textdistill.training.teacher_cache.spec import cache_fingerprint, weights_hash

EVAL_DIR = "eval"


def _label_key(label: Any) -> Any:
    """A label as JSON: a float, a list of ints (token classification), or None."""
    if label is None:
        return None
    return [int(x) for x in label] if isinstance(label, list) else float(label)


def _logit_rows(dataset: Any) -> int:
    """Rows of an evaluation's logits: one per example, or per word for token classification."""
    if getattr(dataset, "token_task", False):
        return sum(sum(dataset[i]["word_mask"]) for i in range(len(dataset)))
    return len(dataset)


def dataset_inputs_hash(dataset: Any) -> str:
    """SHA-256 of what an evaluation of ``dataset`` depends on: every item's token ids, token types, label
    and example id, in order (so the file, its subset, the tokenizer and ``max_length`` are all covered)."""
    h = hashlib.sha256()
    for i in range(len(dataset)):
        item = dataset[i]
        types = item.get("token_type_ids")
        row = [
            [int(t) for t in item["input_ids"]],
            None if types is None else [int(t) for t in types],
            _label_key(item.get("label")),
            int(item["example_id"]),
        ]
        h.update(json.dumps(row).encode())
    return h.hexdigest()


def teacher_dev_evaluation(
    cfg: Config,
    teacher: nn.Module,
    dataset: Any,
    precision: str,
    compute: Callable[[], tuple[dict[str, float], torch.Tensor]],
    *,
    world: int = 1,
    quiet: bool = False,
) -> tuple[dict[str, float], torch.Tensor]:
    """The teacher's metrics and logits on an evaluation set, cached on disk next to the teacher cache.

    Every distillation run scores its teacher on the dev data (for retention and agreement), and every
    run and stage on the same teacher and dev data would repeat that pass; the result is stored in
    ``<cache root>/eval/<fingerprint>.npz``, fingerprinted by the teacher's weights and config, the dev
    inputs (:func:`dataset_inputs_hash`) and the precision. ``compute`` runs on a miss, with
    ``teacher.cache=false`` (nothing is stored then) and with several processes (it is collective there).

    Returns:
        ``(metrics, logits)`` as ``compute`` returns them.
    """
    if cfg.teacher.cache is False or world > 1:
        return compute()
    components = {
        "kind": "teacher-eval",
        "format": 1,
        "weights": weights_hash(teacher),
        "inputs": dataset_inputs_hash(dataset),
        "precision": precision,
    }
    if getattr(dataset, "token_task", False):  # entity metrics depend on the matching mode
        components["entity_mode"] = getattr(dataset, "entity_mode", "lenient")
    path = default_cache_root(cfg) / EVAL_DIR / f"{cache_fingerprint(components)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                logits = torch.from_numpy(np.array(z["logits"], dtype=np.float32))
                metrics = json.loads(str(z["metrics"]))
            if logits.shape[0] == _logit_rows(dataset):
                if not quiet:
                    print(f"teacher evaluation: reused {path}")
                return metrics, logits
        except (OSError, ValueError, KeyError):
            pass  # unreadable: computed again and rewritten below
    metrics, logits = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
        np.savez(tmp, logits=np.asarray(logits, dtype=np.float32), metrics=np.array(json.dumps(metrics)))
        os.replace(tmp, path)
    except OSError as e:  # a read-only or full disk costs the reuse, not the run
        if not quiet:
            print(f"teacher evaluation: not cached ({e})")
    return metrics, logits
