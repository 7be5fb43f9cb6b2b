"""Per-token versions of the prediction-layer terms (``kd_kl``, ``kd_soft_ce``, ``kd_mse``, ``hard_ce``).

Token classification gives logits ``(B, L, C)``: one class distribution per sub-token. The terms of
:mod:`textdistill.losses.logits` call these functions when they see such logits, so a token task needs no
other term names and keeps temperatures and schedules as configured.

Positions: only *labelled positions* count, i.e. ``batch["token_mask"]`` (each word's first sub-token, or
all its sub-tokens with ``data.label_all_subtokens``); special tokens, continuation sub-tokens and
padding never do. Without a ``token_mask`` the positions with a label ``>= 0`` are used.

Normalisation (the package's convention, see :mod:`textdistill.losses.base`): each example's loss is the
mean over its labelled positions, and the batch loss the mean over examples:
``loss = (1/B) sum_b (1/n_b) sum_{i in P_b} l(b, i)``. Splitting a batch into micro-batches weighted by
their share of rows (gradient accumulation) therefore reproduces the full-batch loss exactly, and a long
sentence does not outweigh a short one. ``hard_ce`` averages over the examples that have a gold tag.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from textdistill.errors import DataError


def positions(batch: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` bool mask of the labelled positions the soft terms read."""
    mask = batch.get("token_mask")
    if mask is None:
        labels = batch.get("labels")
        if labels is None or labels.dim() != 2:
            raise DataError(
                "per-token distillation needs batch['token_mask'] (or per-token labels) to know which "
                "positions are words; collate a TokenEncodedDataset with textdistill.data.collate.Collator"
            )
        mask = labels >= 0
    return mask.to(device=like.device, dtype=torch.bool)[:, : like.shape[1]]


def per_example_mean(
    values: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """``(1/|R|) sum_{b in R} mean_{i: mask[b, i]} values[b, i]``; ``R`` = ``rows`` (default all rows).

    Args:
        values: ``(B, L)`` per-position losses (any value at unmasked positions; they are zeroed).
        mask: ``(B, L)`` bool.
        rows: ``(B,)`` bool rows to average over (rows without a masked position contribute 0).
    """
    m = mask.float()
    per_row = (torch.where(mask, values, 0.0)).sum(1) / m.sum(1).clamp_min(1.0)
    if rows is None:
        return per_row.mean()
    n = rows.float().sum()
    return (per_row * rows.float()).sum() / n.clamp_min(1.0)


def token_kd_kl(s: torch.Tensor, t: torch.Tensor, batch: dict, tau: float, scale_t2: bool) -> torch.Tensor:
    """``tau^2 * KL(p_T^tau || p_S^tau)`` per labelled position, averaged as in the module docstring.

    Shapes: ``s``, ``t`` ``(B, L, C)`` float32 logits.
    """
    mask = positions(batch, s)
    log_ps = F.log_softmax(s / tau, dim=-1)
    log_pt = F.log_softmax(t / tau, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)
    loss = per_example_mean(kl, mask)
    return loss * tau**2 if scale_t2 else loss


def token_kd_soft_ce(
    s: torch.Tensor, t: torch.Tensor, batch: dict, tau: float, scale_t2: bool
) -> torch.Tensor:
    """``-sum_c p_T^tau log p_S^tau`` per labelled position, averaged as in the module docstring."""
    mask = positions(batch, s)
    ce = -(F.softmax(t / tau, dim=-1) * F.log_softmax(s / tau, dim=-1)).sum(-1)
    loss = per_example_mean(ce, mask)
    return loss * tau**2 if scale_t2 else loss


def token_kd_mse(s: torch.Tensor, t: torch.Tensor, batch: dict) -> torch.Tensor:
    """``(1/C) sum_c (z_S - z_T)^2`` per labelled position, averaged as in the module docstring."""
    mask = positions(batch, s)
    return per_example_mean((s - t).pow(2).mean(-1), mask)


def token_hard_ce(s: torch.Tensor, batch: dict, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy on gold tags (``labels (B, L)``, ``-100`` = none), per example over its tagged positions,
    then over the examples that have any (rows with ``is_original`` False are dropped too)."""
    labels = batch["labels"].to(s.device)[:, : s.shape[1]]
    mask = labels >= 0
    if batch.get("is_original") is not None:
        mask = mask & batch["is_original"].to(device=s.device, dtype=torch.bool)[:, None]
    rows = mask.any(1)
    if not bool(rows.any()):
        return s.sum() * 0.0
    ce = F.cross_entropy(
        s.transpose(1, 2), labels.clamp_min(0), reduction="none", label_smoothing=label_smoothing
    )
    return per_example_mean(ce, mask, rows)
