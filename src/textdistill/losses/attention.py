"""Attention terms: match the student's per-head attention to the teacher's, head by head.

Both terms compare ``(B, heads, L, L)`` maps of matched layers (the layer map's attention pairs, 1-based;
read from the 0-based ``ModelOutputs`` keys), so student and teacher need the same head count; widths may
differ (the maps are ``L x L``).
"""

from __future__ import annotations

import torch

from textdistill.losses.base import AttentionPairTerm, kl_over_keys, register_term
from textdistill.models.outputs import ATTENTION_SCORES, ATTENTIONS


@register_term
class AttentionMSE(AttentionPairTerm):
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
    needs_equal_heads = True
    features = ("attention_scores",)

    def pair_loss(self, student: list, teacher: list, mask: torch.Tensor) -> torch.Tensor:
        (a_s,), (a_t,) = student, teacher
        pair_mask = mask[:, None, :, None] * mask[:, None, None, :]  # (B, 1, L, L)
        # where() rather than multiplying: a huge score at a padded position must not become inf * 0.
        sq = torch.where(pair_mask.bool(), (a_s - a_t).pow(2), 0.0)
        denom = (a_s.shape[1] * pair_mask.sum((1, 2, 3))).clamp_min(1.0)  # heads * n_b^2
        return (sq.sum((1, 2, 3)) / denom).mean()


@register_term
class AttentionKL(AttentionPairTerm):
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
    needs_equal_heads = True
    features = ("attentions",)

    def pair_loss(self, student: list, teacher: list, mask: torch.Tensor) -> torch.Tensor:
        return kl_over_keys(probs_log(teacher[0]), probs_log(student[0]), mask)


def probs_log(p: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``log(max(p, eps))``: log-probabilities from probabilities, finite where ``p`` underflowed to 0."""
    return p.clamp_min(eps).log()
