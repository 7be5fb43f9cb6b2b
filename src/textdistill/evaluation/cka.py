"""Linear centered kernel alignment (CKA) between teacher and student layers.

Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited" (arXiv:1905.00414). For
representations ``X (N, D1)`` and ``Y (N, D2)`` of the same ``N`` inputs, with linear kernels
``K = X X^T``, ``L = Y Y^T`` and the centering matrix ``H = I - 11^T / N``:

    HSIC(K, L) = tr(K H L H) / (N - 1)^2
    CKA(X, Y)  = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

For linear kernels this equals, with column-centered ``Xc``, ``Yc``,

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)

which is what is computed here: it costs ``O(N D^2)`` instead of ``O(N^2 D)`` and never forms an
``N x N`` matrix. CKA is invariant to orthogonal transforms and isotropic scaling of either side (so
layers of different widths compare), lies in ``[0, 1]``, and is 1 for identical representations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from textdistill.errors import ModelError
from textdistill.models.outputs import HIDDEN_STATES, FeatureRequest

POOLINGS = ("tokens", "cls", "mean")


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two representations of the same inputs (formula in the module docstring).

    Args:
        x: ``(N, D1)`` representation.
        y: ``(N, D2)`` representation of the same ``N`` inputs, row for row.

    Returns:
        CKA in ``[0, 1]``; NaN when either side is constant over the inputs (no variance to align).

    Raises:
        ModelError: the inputs are not 2-D or have different row counts.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ModelError(
            f"linear CKA needs (N, D1) and (N, D2) representations of the same N inputs, got "
            f"{tuple(x.shape)} and {tuple(y.shape)}."
        )
    # float64: the Frobenius norms of D x D cross products lose precision in float32 for wide layers
    xc = x.detach().double()
    yc = y.detach().double()
    xc = xc - xc.mean(dim=0, keepdim=True)
    yc = yc - yc.mean(dim=0, keepdim=True)
    cross = torch.linalg.matrix_norm(yc.T @ xc) ** 2
    norm = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    if norm == 0:
        return float("nan")
    return float(cross / norm)


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str = "tokens") -> torch.Tensor:
    """Rows of one layer's hidden states used as CKA inputs.

    Args:
        hidden: ``(B, L, H)`` hidden states.
        mask: ``(B, L)`` attention mask, 1 on real tokens.
        pooling: ``tokens``: every real token is a row (``(sum(mask), H)``); ``cls``: the first token of
            each example (``(B, H)``); ``mean``: the masked mean over real tokens (``(B, H)``).

    Raises:
        ModelError: an unknown pooling, or a mask whose shape does not match the hidden states.
    """
    if pooling not in POOLINGS:
        raise ModelError(f"unknown CKA pooling {pooling!r}; valid choices: {', '.join(POOLINGS)}.")
    if hidden.shape[:2] != mask.shape:
        raise ModelError(
            f"hidden states {tuple(hidden.shape)} and attention mask {tuple(mask.shape)} do not match; the "
            "teacher and the student must see the same tokenized batch for token-level CKA."
        )
    m = mask.to(hidden.device).bool()
    if pooling == "tokens":
        return hidden[m]
    if pooling == "cls":
        return hidden[:, 0]
    w = m.unsqueeze(-1).to(hidden.dtype)
    return (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)


def cka_matrix(teacher_reps: Sequence[torch.Tensor], student_reps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Linear CKA between every teacher layer and every student layer.

    Args:
        teacher_reps: per teacher layer, ``(N, Dt)`` rows.
        student_reps: per student layer, ``(N, Ds)`` rows of the same ``N`` inputs.

    Returns:
        ``(len(teacher_reps), len(student_reps))`` float64 matrix; entry ``[i, j]`` = CKA(teacher layer
        ``i``, student layer ``j``).
    """
    out = torch.empty(len(teacher_reps), len(student_reps), dtype=torch.float64)
    for i, t in enumerate(teacher_reps):
        for j, s in enumerate(student_reps):
            out[i, j] = linear_cka(t, s)
    return out


def collect_representations(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    pooling: str = "tokens",
    max_rows: int | None = 4096,
) -> list[torch.Tensor]:
    """Per-layer CKA rows of a model over batches (hidden states, embeddings first).

    Batches are consumed in order until ``max_rows`` rows are gathered, so a teacher and a student fed
    the same batches get the same rows (the last batch is cut at the same row).

    Args:
        model: a model of the ModelOutputs contract whose capabilities include hidden states.
        batches: dicts with ``input_ids``, ``attention_mask`` and optional ``token_type_ids``.
        pooling: see :func:`pool_hidden`.
        max_rows: stop once this many rows are gathered (None: all batches).

    Returns:
        One ``(N, H)`` float32 CPU tensor per layer.

    Raises:
        ModelError: the model cannot return hidden states.
    """
    info = getattr(model, "info", None)
    if info is not None and HIDDEN_STATES not in info.capabilities:
        raise ModelError(
            f"{type(model).__name__} ({info.model_type}) provides no hidden states, so layer CKA cannot be "
            "computed for it."
        )
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    per_layer: list[list[torch.Tensor]] | None = None
    rows = 0
    try:
        with torch.inference_mode():
            for batch in batches:
                tt = batch.get("token_type_ids")
                out = model(
                    input_ids=batch["input_ids"].to(dev),
                    attention_mask=batch["attention_mask"].to(dev),
                    token_type_ids=tt.to(dev) if tt is not None else None,
                    features=FeatureRequest(hidden_states=True),
                )
                if out.hidden_states is None:
                    raise ModelError(f"{type(model).__name__} returned no hidden states when asked for them.")
                pooled = [
                    pool_hidden(h, batch["attention_mask"], pooling).float().cpu() for h in out.hidden_states
                ]
                take = pooled[0].shape[0] if max_rows is None else min(pooled[0].shape[0], max_rows - rows)
                if per_layer is None:
                    per_layer = [[] for _ in pooled]
                for acc, rep in zip(per_layer, pooled):
                    acc.append(rep[:take])
                rows += take
                if max_rows is not None and rows >= max_rows:
                    break
    finally:
        model.train(was_training)
    if per_layer is None:
        raise ModelError("no batches were given to collect hidden states from.")
    return [torch.cat(acc) for acc in per_layer]
