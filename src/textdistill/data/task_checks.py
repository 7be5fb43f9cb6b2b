"""Warnings with numbers about a task that would otherwise go quietly wrong.

- :func:`vocabulary_coverage`: the share of ``[UNK]`` tokens and of truncated examples, measured on a
  sample of the training data with the tokenizer the run uses (Chinese text through an English WordPiece
  vocabulary is mostly ``[UNK]``; long documents at ``max_length=64`` lose most of their text).
- :func:`baseline_warning`: a model that does not beat the constant prediction of the majority train class
  on the task metric (a teacher fine-tuned too briefly, before distillation starts; a fine-tune that
  stayed at the majority class).
- :func:`single_class_warning`: a model whose predictions are all one class (or one value) at evaluation.

Each returns the message (None when there is nothing to say); :func:`warn` prints it.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

UNK_WARN = 0.05
"""Warn when more than this share of the (non-special) tokens are the unknown token."""
TRUNCATION_WARN = 0.10
"""Warn when more than this share of the examples are longer than ``data.max_length``."""
COVERAGE_SAMPLE = 2000


def warn(message: str | None) -> None:
    """Print ``textdistill: warning: <message>`` on stderr (nothing for None)."""
    if message:
        print(f"textdistill: warning: {message}", file=sys.stderr, flush=True)


def vocabulary_coverage(
    examples: Sequence[Any], tokenizer: Any, max_length: int, *, sample: int = COVERAGE_SAMPLE, seed: int = 0
) -> dict[str, float | int]:
    """Measure how well the tokenizer covers the text, on a seeded sample of ``examples``.

    Args:
        examples: :class:`~textdistill.data.readers.Example` objects (``text``, ``text_pair``).
        tokenizer: a Hugging Face tokenizer.
        max_length: the run's ``data.max_length``.
        sample: examples measured (a seeded random subset beyond that).
        seed: seed of the subset.

    Returns:
        ``examples`` measured, ``tokens`` (without special tokens), ``unk_rate`` (share of those tokens that
        are the unknown token; 0 for tokenizers without one) and ``truncated_rate`` (share of examples whose
        full encoding, special tokens included, is longer than ``max_length``).
    """
    items = list(examples)
    if len(items) > sample:
        items = random.Random(seed).sample(items, sample)
    unk_id = getattr(tokenizer, "unk_token_id", None)
    # [CLS], [SEP], [PAD]... are not text; [UNK] is a special token too, but it stands for text
    special = set(getattr(tokenizer, "all_special_ids", [])) - {unk_id}
    tokens = unk = truncated = 0
    for e in items:
        if hasattr(
            e, "tokens"
        ):  # a tagged sentence (token classification): its words, as the run encodes them
            enc = tokenizer(
                list(e.tokens), is_split_into_words=True, truncation=False, add_special_tokens=True
            )
        elif e.text_pair is not None:
            enc = tokenizer(e.text, e.text_pair, truncation=False, add_special_tokens=True)
        else:
            enc = tokenizer(e.text, truncation=False, add_special_tokens=True)
        ids = enc["input_ids"]
        plain = [i for i in ids if i not in special]
        tokens += len(plain)
        if unk_id is not None:
            unk += sum(1 for i in plain if i == unk_id)
        truncated += len(ids) > max_length
    n = len(items)
    return {
        "examples": n,
        "tokens": tokens,
        "unk_rate": unk / tokens if tokens else 0.0,
        "truncated_rate": truncated / n if n else 0.0,
    }


def coverage_warning(coverage: dict[str, float | int], max_length: int) -> str | None:
    """The message for a poor :func:`vocabulary_coverage` (None when both rates are under the limits)."""
    parts = []
    if coverage["unk_rate"] > UNK_WARN:
        parts.append(
            f"{100 * coverage['unk_rate']:.1f}% of the tokens are [UNK] (the text is mostly outside the "
            f"tokenizer's vocabulary: use a teacher / base model whose tokenizer covers this language, e.g. "
            f"a multilingual or language-specific one)"
        )
    if coverage["truncated_rate"] > TRUNCATION_WARN:
        parts.append(
            f"{100 * coverage['truncated_rate']:.1f}% of the examples are longer than data.max_length="
            f"{max_length} tokens and are cut (raise data.max_length if the end of the text matters)"
        )
    if not parts:
        return None
    return f"vocabulary coverage on {coverage['examples']} training examples: " + "; ".join(parts) + "."


def majority_baseline(
    train_label_ids: Sequence[int], dev_label_ids: Sequence[int], metric: str
) -> tuple[int, float] | None:
    """The majority train class and the task metric of always predicting it on the dev labels.

    Returns:
        ``(class id, metric value)``, or None when there are no labels or the metric is not computed.
    """
    from textdistill.evaluation.metrics import compute_metrics

    train = [int(x) for x in train_label_ids if int(x) >= 0]
    dev = np.asarray([int(x) for x in dev_label_ids if int(x) >= 0], dtype=np.int64)
    if not train or dev.size == 0:
        return None
    majority = Counter(train).most_common(1)[0][0]
    value = compute_metrics(np.full(dev.shape, majority), dev, regression=False).get(metric)
    return (majority, float(value)) if value is not None else None


def baseline_warning(
    who: str,
    metrics: dict[str, float],
    metric: str,
    baseline: tuple[int, float] | None,
    class_names: Sequence[str] | None,
    advice: str,
) -> str | None:
    """The message for a model that does not beat the majority-class baseline on ``metric``.

    For regression (``pearson``/``spearman``) the baseline is a constant prediction, whose correlation is 0.
    """
    value = metrics.get(metric)
    if value is None:
        return None
    if metric in ("pearson", "spearman"):
        if value > 0.0:
            return None
        return f"{who} scores {metric} {value:.4f} on dev, no better than a constant prediction (0). {advice}"
    if baseline is None or value > baseline[1] + 1e-12:
        return None
    name = class_names[baseline[0]] if class_names and baseline[0] < len(class_names) else str(baseline[0])
    return (
        f"{who} scores {metric} {value:.4f} on dev, no better than always predicting the majority class "
        f"{name!r} ({metric} {baseline[1]:.4f}). {advice}"
    )


def single_class_warning(
    who: str,
    logits: Any,
    *,
    regression: bool,
    class_names: Sequence[str] | None = None,
    advice: str | None = None,
) -> str | None:
    """The message for predictions that are all one class (classification) or one value (regression);
    ``advice`` replaces the generic last sentence (what to change)."""
    generic = "It has not learnt the task: train longer, with more data or another train.lr."
    advice = advice or generic
    pred = np.asarray(logits.detach().cpu() if hasattr(logits, "detach") else logits, dtype=np.float64)
    if pred.ndim == 0 or pred.shape[0] < 2:
        return None
    if regression:
        values = pred.reshape(pred.shape[0], -1)[:, 0]
        if float(np.std(values)) > 1e-6 * max(1.0, float(np.abs(values).max())):
            return None
        return (
            f"{who} predicts the same value ({values[0]:.4f}) for all {len(values)} dev examples: its "
            f"correlations are 0. {advice}"
        )
    classes = pred.argmax(axis=1) if pred.ndim == 2 else pred.astype(np.int64)
    unique = np.unique(classes)
    if len(unique) != 1:
        return None
    k = int(unique[0])
    name = class_names[k] if class_names and k < len(class_names) else str(k)
    return (
        f"{who} predicts one class ({name!r}) for all {len(classes)} dev examples: MCC is 0 and accuracy is "
        f"just that class's share. {advice}"
    )
