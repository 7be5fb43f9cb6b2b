"""Attention terms: match the student's per-head attention to the teacher's, head by head.

Both terms compare ``(B, heads, L, L)`` maps of matched layers (the layer map's attention pairs, 1-based;
read from the 0-based ``ModelOutputs`` keys), so student and teacher need the same head count; widths may
differ (the maps are ``L x L``).
"""

from __future__ import annotations

from typing import Any

import torch

from textdistill.losses.base import (
    LossTerm,
    Param,
    as_float,
    attention_mask_of,
    kl_over_keys,
    layer_feature,
    reduce_layers,
    register_term,
)
from textdistill.models.layer_map import LayerMap
from textdistill.models.outputs import ATTENTION_SCORES, ATTENTIONS, ModelOutputs

_LAYER_REDUCTION = Param(
    "sum", "how matched layer pairs combine: sum (TinyBERT) or mean", "choice", ("sum", "mean")
)


def _no_pairs(name: str, layer_map: LayerMap | None, key: str) -> list[str]:
    if layer_map is not None and not layer_map.attention_pairs:
        return [
            f"{key}: {name} has no transformer-layer pairs with attention in layer map {layer_map.describe()}; "
            "the embeddings (0) have no attention, add pairs of layers >= 1"
        ]
    return []


class _PerAttentionPair(LossTerm):
    """Shared parts of the terms that compare one per-head feature over the layer map's attention pairs."""

    needs_equal_heads = True
    default_layer_strategy = "uniform"
    PARAMS = {"layer_reduction": _LAYER_REDUCTION}
    feature = ""  # the ModelOutputs feature compared, per layer

    @classmethod
    def extra_problems(
        cls, params: dict[str, Any], teacher_info, student_info, layer_map, key: str
    ) -> list[str]:
        return _no_pairs(cls.name, layer_map, key)

    def pairs(self, student: ModelOutputs, teacher: ModelOutputs):
        """``(student feature, teacher feature)`` of every attention pair, as float tensors."""
        for s, t in self.layer_map.attention_keys:
            yield (
                as_float(layer_feature(student, self.feature, s, "student", self.name), "student"),
                as_float(layer_feature(teacher, self.feature, t, "teacher", self.name), "teacher"),
            )


@register_term
class AttentionMSE(_PerAttentionPair):
    """TinyBERT's attention loss (Jiao et al. 2020, Eq. 7) on pre-softmax scores.

    For each attention pair, with ``A = QK^T / sqrt(d_head)`` (``attention_scores``, no mask added) and
    ``M[b, i, j] = m[b, i] * m[b, j]`` (both the query and the key are real tokens)::

        loss_pair = (1/B) sum_b [sum_{h, i, j} M[b, i, j] * (A_S - A_T)[b, h, i, j]^2 / (heads * n_b^2)]

    i.e. per example the mean over heads of the MSE over real (query, key) positions (``n_b`` real tokens in
    example b), averaged over the batch. Matching scores rather than probabilities follows TinyBERT (faster convergence). TinyBERT's release
    zeroes the masked positions (scores ``<= -100``) and then averages over all ``L^2`` positions including
    padding, so its value shrinks with padding; here only real positions count. Pairs add up (TinyBERT's
    sum) unless ``layer_reduction: mean``.
    """

    name = "attention_mse"
    needs = frozenset({ATTENTION_SCORES})
    feature = "attention_scores"

    def compute(
        self, student: ModelOutputs, teacher: ModelOutputs, batch: dict, progress: float
    ) -> torch.Tensor:
        losses = []
        for a_s, a_t in self.pairs(student, teacher):
            mask = attention_mask_of(batch, student, a_s[:, 0])
            pair_mask = mask[:, None, :, None] * mask[:, None, None, :]  # (B, 1, L, L)
            # where() rather than multiplying: a huge score at a padded position must not become inf * 0.
            sq = torch.where(pair_mask.bool(), (a_s - a_t).pow(2), 0.0)
            denom = (a_s.shape[1] * pair_mask.sum((1, 2, 3))).clamp_min(1.0)  # heads * n_b^2
            losses.append((sq.sum((1, 2, 3)) / denom).mean())
        return reduce_layers(losses, self.params["layer_reduction"])


@register_term
class AttentionKL(_PerAttentionPair):
    """KL divergence between attention distributions, per head and per real query token.

    ``loss_pair = (1/B) sum_b [sum_{h, i real} KL(P_T[b, h, i, :] || P_S[b, h, i, :]) / (heads * n_b)]``
    with the KL over real keys, ``n_b`` the real tokens of example b and ``P`` the post-softmax
    ``attentions`` (padded keys have probability 0). This is
    MiniLM's attention-transfer loss (Wang et al. 2020, Eq. 4) applied to any matched layers; ``minilm`` uses
    it on the last layer. Student probabilities are clamped at ``1e-12`` before the log: a probability that
    underflowed to 0 (possible in a fp16 teacher cache or for a near-saturated softmax) would otherwise give
    an infinite loss.
    """

    name = "attention_kl"
    needs = frozenset({ATTENTIONS})
    feature = "attentions"

    def compute(
        self, student: ModelOutputs, teacher: ModelOutputs, batch: dict, progress: float
    ) -> torch.Tensor:
        losses = []
        for p_s, p_t in self.pairs(student, teacher):
            mask = attention_mask_of(batch, student, p_s[:, 0])
            losses.append(kl_over_keys(probs_log(p_t), probs_log(p_s), mask))
        return reduce_layers(losses, self.params["layer_reduction"])


def probs_log(p: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``log(max(p, eps))``: log-probabilities from probabilities, finite where ``p`` underflowed to 0."""
    return p.clamp_min(eps).log()
