"""MiniLM-family terms: transfer self-attention *relations*, which are ``L x L`` whatever the model width.

Notation: for a matched layer pair, ``Q, K, V`` are ``(B, L, W)`` projections (``ModelOutputs.qkv``), split
into ``R`` heads of width ``d_r = W / R``; ``m`` is the ``(B, L)`` mask of real tokens. A relation between
projections ``X, Y`` of one head is ``softmax_j(X_h Y_h^T / sqrt(d_r))`` over real keys ``j``. The KL of the
teacher's relation from the student's is summed over keys, averaged over heads and the real query tokens of
each example, then over the batch (see :func:`~textdistill.losses.base.kl_over_keys`). The default layer map
is ``last``: the student's last layer learns from the teacher's last layer, or from
``layer_map.teacher_layer`` (with ``strategy: last``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from textdistill.losses.attention import probs_log
from textdistill.losses.base import (
    AttentionPairTerm,
    Param,
    kl_over_keys,
    layer_reduction,
    masked_log_softmax,
    register_term,
    relation_names,
    split_heads,
)
from textdistill.models.outputs import ATTENTIONS, QKV

_QKV_INDEX = {"q": 0, "k": 1, "v": 2}


def relation_log_probs(x: torch.Tensor, y: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    """``log softmax_j(X_h Y_h^T / sqrt(d_r))`` per head, padded keys excluded.

    Args:
        x: ``(B, L, W)`` projection on the query side.
        y: ``(B, L, W)`` projection on the key side.
        heads: ``R``; ``W`` must be divisible by it.
        mask: ``(B, L)`` float mask of real tokens.

    Returns:
        ``(B, R, L, L)`` log-probabilities over the last axis.
    """
    xh, yh = split_heads(x, heads), split_heads(y, heads)
    scores = xh @ yh.transpose(-1, -2) / math.sqrt(xh.shape[-1])
    return masked_log_softmax(scores, mask)


@register_term
class MiniLM(AttentionPairTerm):
    """MiniLM v1 (Wang et al. 2020, "MiniLM: Deep Self-Attention Distillation", Eqs. 4-6).

    ``loss = L_AT + L_VR`` for each matched pair (default: last layers), where

    * ``L_AT = (1/B) sum_b sum_{a, i real} KL(A_T[b, a, i] || A_S[b, a, i]) / (A_h * n_b)``: attention
      distributions (``attentions``, post-softmax) per head ``a`` of ``A_h`` heads, ``n_b`` real tokens of
      example ``b`` (the paper's ``1 / (A_h |x|)`` per example);
    * ``L_VR`` the same KL between value relations ``softmax(V_a V_a^T / sqrt(d_k))``, ``V`` split into the
      model's ``A_h`` attention heads (``d_k`` = each model's head width).

    Heads are compared one to one, so the head counts must match; widths may differ. Student probabilities
    are clamped at ``1e-12`` before the log (see ``attention_kl``).
    """

    name = "minilm"
    needs = frozenset({ATTENTIONS, QKV})
    needs_equal_heads = True
    default_layer_strategy = "last"
    features = ("attentions", "qkv")

    def pair_loss(self, student: list, teacher: list, mask: torch.Tensor) -> torch.Tensor:
        (p_s, (_, _, v_s)), (p_t, (_, _, v_t)) = student, teacher
        heads_s, heads_t = self.student_info.num_heads, self.teacher_info.num_heads
        at = kl_over_keys(probs_log(p_t), probs_log(p_s), mask)
        vr = kl_over_keys(
            relation_log_probs(v_t, v_t, heads_t, mask), relation_log_probs(v_s, v_s, heads_s, mask), mask
        )
        return at + vr


@register_term
class MiniLMv2(AttentionPairTerm):
    """MiniLMv2 (Wang et al. 2021, "MiniLMv2: Multi-Head Self-Attention Relation Distillation", Eqs. 3-5).

    ``loss = sum_{xy in relations} (1/B) sum_b [sum_{r, i real} KL(R^xy_T || R^xy_S)[b, r, i] / (R n_b)]``
    with ``R^xy = softmax(X_r Y_r^T / sqrt(d_r))`` and ``X, Y`` in ``{Q, K, V}``. Both models' projections are
    split into the same number ``R = relation_heads`` of relation heads (each model with its own ``d_r``),
    so teacher and student may differ in head count and width. The paper uses ``[qq, kk, vv]`` (default) and
    48 relation heads for base-size teachers (64 for large); ``relation_heads`` defaults to the teacher's
    attention head count. ``qk`` is the attention distribution itself (when ``R`` equals the head count):
    ERNIE-Tiny's and MiniLM-style ``relations: [qk, vv]``. MiniLMv2 distils an upper-middle teacher layer of
    large teachers: ``layer_map: {strategy: last, teacher_layer: 21}``.
    """

    name = "minilmv2"
    needs = frozenset({QKV})
    default_layer_strategy = "last"
    features = ("qkv",)
    PARAMS = {
        "relation_heads": Param(
            None, "relation heads R (default: the teacher's head count)", "int", minimum=1
        ),
        "relations": Param(("qq", "kk", "vv"), "relations to transfer", "list", relation_names()),
        "layer_reduction": layer_reduction(),
    }

    @classmethod
    def heads(cls, params: dict[str, Any], teacher_heads: int) -> int:
        """The relation head count ``R``."""
        return params["relation_heads"] if params["relation_heads"] is not None else teacher_heads

    @classmethod
    def extra_problems(
        cls, params: dict[str, Any], teacher_info, student_info, layer_map, key: str
    ) -> list[str]:
        problems = super().extra_problems(params, teacher_info, student_info, layer_map, key)
        r = cls.heads(params, teacher_info.num_heads)
        bad = [
            f"the {side}'s width {info.hidden_size}"
            for side, info in (("student", student_info), ("teacher", teacher_info))
            if r < 1 or info.hidden_size % r
        ]
        if bad:
            fits = [
                d
                for d in range(1, min(student_info.hidden_size, teacher_info.hidden_size) + 1)
                if student_info.hidden_size % d == 0 and teacher_info.hidden_size % d == 0
            ]
            problems.append(
                f"{key}.params.relation_heads: {r} relation heads do not divide {' and '.join(bad)}; choose a "
                f"common divisor of both widths, e.g. one of {fits[-6:]}"
            )
        return problems

    def pair_loss(self, student: list, teacher: list, mask: torch.Tensor) -> torch.Tensor:
        (qkv_s,), (qkv_t,) = student, teacher
        r = self.heads(self.params, self.teacher_info.num_heads)
        total = qkv_s[0].new_zeros(())
        for rel in self.params["relations"]:
            i, j = _QKV_INDEX[rel[0]], _QKV_INDEX[rel[1]]
            log_t = relation_log_probs(qkv_t[i], qkv_t[j], r, mask)
            log_s = relation_log_probs(qkv_s[i], qkv_s[j], r, mask)
            total = total + kl_over_keys(log_t, log_s, mask)
        return total
