"""Hidden-state terms: match the student's embedding / layer outputs to the teacher's.

Notation: ``h_S = student.hidden_states[s]`` ``(B, L, d')``, ``h_T = teacher.hidden_states[t]`` ``(B, L, d)``
for each matched pair ``(s, t)`` of the layer map (index 0 = embeddings), ``m`` the ``(B, L)`` mask of real
tokens, ``W`` the learned projection ``d' -> d`` (identity when ``d' = d``, see
:class:`~textdistill.losses.base.PairProjections`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from textdistill.losses.base import (
    LossTerm,
    PairProjections,
    Param,
    attention_mask_of,
    hidden_state,
    layer_reduction,
    reduce_layers,
    register_term,
    zero_padding,
)
from textdistill.models.layer_map import LayerMap
from textdistill.models.outputs import HIDDEN_STATES, ModelInfo, ModelOutputs

_SHARED = Param(
    False, "one projection for all layer pairs (TinyBERT's single W_h) instead of one per pair", "bool"
)
_PROJECTION_INIT = Param(
    "normal",
    "projection init: normal (N(0, 0.02), zero bias: TinyBERT's and TextBrewer's) or torch (nn.Linear's)",
    "choice",
    ("normal", "torch"),
)


def token_mse(hs: torch.Tensor, ht: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(1/B) sum_b sum_i m[b, i] ||hs[b, i] - ht[b, i]||^2 / (n_b d)``: MSE over each example's real tokens.

    Args:
        hs: ``(B, L, d)`` projected student states.
        ht: ``(B, L, d)`` teacher states.
        mask: ``(B, L)`` float mask of real tokens (``n_b = sum_i m[b, i]``).
    """
    sq = (zero_padding(hs, mask) - zero_padding(ht, mask)).pow(2).sum(-1)  # (B, L), 0 at padding
    return (sq.sum(-1) / (mask.sum(-1).clamp_min(1.0) * ht.shape[-1])).mean()


class _HiddenTerm(LossTerm):
    """Shared machinery: which hidden pairs, their projections, and the per-pair loop."""

    needs = frozenset({HIDDEN_STATES})

    def __init__(
        self,
        params: dict[str, Any] | None,
        teacher_info: ModelInfo | None,
        student_info: ModelInfo,
        layer_map: LayerMap | None = None,
    ):
        super().__init__(params, teacher_info, student_info, layer_map)
        self.pairs = self.select_pairs(self.params, self.layer_map)
        self.projections = PairProjections(
            len(self.pairs),
            student_info.hidden_size,
            teacher_info.hidden_size,
            shared=bool(self.params.get("shared_projection", False)),
            init=str(self.params.get("projection_init", "normal")),
        )

    @classmethod
    def select_pairs(cls, params: dict[str, Any], layer_map: LayerMap | None) -> tuple[tuple[int, int], ...]:
        """The ``(student, teacher)`` hidden-state index pairs this term compares."""
        return layer_map.hidden_pairs if layer_map is not None else ()

    @classmethod
    def extra_problems(cls, params, teacher_info, student_info, layer_map, key: str) -> list[str]:
        if layer_map is not None and not cls.select_pairs(params, layer_map):
            return [
                f"{key}: {cls.name} has no layer pairs to compare with layer map {layer_map.describe()} and "
                f"params {params}; change the layer map or the parameters"
            ]
        return []

    def pair_loss(self, hs: torch.Tensor, ht: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The loss of one projected pair (default: :func:`token_mse`)."""
        return token_mse(hs, ht, mask)

    def compute(
        self, student: ModelOutputs, teacher: ModelOutputs, batch: dict, progress: float
    ) -> torch.Tensor:
        losses = []
        mask = None
        for i, (s, t) in enumerate(self.pairs):
            hs = hidden_state(student, s, "student", self.name)
            ht = hidden_state(teacher, t, "teacher", self.name)
            if mask is None:
                mask = attention_mask_of(batch, student, hs)
            # padding zeroed before the projection: a non-finite value there must reach neither the loss
            # nor (through the projection's weight gradient) the parameters
            hs, ht = self.projections(i, zero_padding(hs, mask)), zero_padding(ht, mask)
            losses.append(self.pair_loss(hs, ht, mask))
        return reduce_layers(losses, self.params.get("layer_reduction", "sum"))


@register_term
class EmbeddingMSE(_HiddenTerm):
    """TinyBERT's embedding-layer loss (Jiao et al. 2020, Eq. 9): ``MSE(E_S W_e, E_T)`` on real tokens.

    ``loss = (1/B) sum_b sum_i m[b, i] * ||W h_S[b, i] - h_T[b, i]||^2 / (n_b * d)`` with
    ``h = hidden_states[0]`` and ``n_b`` the real tokens of example ``b``.
    TinyBERT's release averages over padded positions too; here padding is excluded so the value does not
    depend on the amount of padding. ``hidden_mse`` with a ``uniform`` map already includes this pair
    (``0 <-> 0``); use this term to weight the embeddings separately (then set
    ``include_embeddings: false`` on ``hidden_mse``).
    """

    name = "embedding_mse"
    PARAMS: dict[str, Param] = {}

    @classmethod
    def select_pairs(cls, params: dict[str, Any], layer_map: LayerMap | None) -> tuple[tuple[int, int], ...]:
        return ((0, 0),)


@register_term
class HiddenMSE(_HiddenTerm):
    """TinyBERT's hidden-state loss (Jiao et al. 2020, Eq. 8), summed over the layer map's hidden pairs.

    ``loss = sum_{(s, t)} (1/B) sum_b sum_i m[b, i] * ||W_s h_S[b, i] - h_T[b, i]||^2 / (n_b * d)``.
    With the default ``uniform`` map this includes the embeddings pair ``0 <-> 0`` (TinyBERT's ``reps``
    start with the embedding output); ``include_embeddings: false`` drops pairs involving index 0.
    """

    name = "hidden_mse"
    default_layer_strategy = "uniform"
    PARAMS = {
        "include_embeddings": Param(True, "also match the embedding outputs (pairs with index 0)", "bool"),
        "shared_projection": _SHARED,
        "projection_init": _PROJECTION_INIT,
        "layer_reduction": layer_reduction("sum"),
    }

    @classmethod
    def select_pairs(cls, params: dict[str, Any], layer_map: LayerMap | None) -> tuple[tuple[int, int], ...]:
        if layer_map is None:
            return ()
        if params["include_embeddings"]:
            return layer_map.hidden_pairs
        return tuple((s, t) for s, t in layer_map.hidden_pairs if s > 0 and t > 0)


@register_term
class HiddenCosine(_HiddenTerm):
    """DistilBERT's cosine embedding loss (Sanh et al. 2019) between matched hidden states, real tokens only.

    ``loss = sum_{(s, t)} (1/B) sum_b sum_i m[b, i] * (1 - cos(W_s h_S[b, i], h_T[b, i])) / n_b``; DistilBERT
    aligns the last layers (default map ``last``).
    """

    name = "hidden_cos"
    default_layer_strategy = "last"
    PARAMS = {
        "shared_projection": _SHARED,
        "projection_init": _PROJECTION_INIT,
        "layer_reduction": layer_reduction("sum"),
    }

    def pair_loss(self, hs: torch.Tensor, ht: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        cos = F.cosine_similarity(zero_padding(hs, mask), zero_padding(ht, mask), dim=-1)  # (B, L)
        distance = torch.where(mask.bool(), 1.0 - cos, 0.0)
        return (distance.sum(-1) / mask.sum(-1).clamp_min(1.0)).mean()


@register_term
class PatientKD(_HiddenTerm):
    """Patient Knowledge Distillation (Sun et al. 2019), Eq. 5: normalised [CLS] states of matched layers.

    ``loss = reduce_{(s, t)} (1 / (B * d)) * sum_b ||c_S[b] / ||c_S[b]|| - c_T[b] / ||c_T[b]|| ||^2`` with
    ``c = h[:, 0]`` (the [CLS] / ``<s>`` position) and ``c_S`` projected by ``W_s`` first. The mean over the
    batch and features follows the authors' release (``F.mse_loss`` of the stacked vectors), which also
    averages the layers (``layer_reduction: mean``). Only transformer layers are matched (no embeddings);
    with ``exclude_last`` (default, as in the paper) the pair of the student's last layer is dropped, since
    the prediction-layer loss already covers it. The default ``uniform`` map gives PKD-Skip.
    """

    name = "pkd"
    default_layer_strategy = "uniform"
    PARAMS = {
        "exclude_last": Param(True, "drop the pair of the student's last layer (the paper's choice)", "bool"),
        "shared_projection": _SHARED,
        "projection_init": _PROJECTION_INIT,
        "layer_reduction": layer_reduction("mean"),
    }

    @classmethod
    def select_pairs(cls, params: dict[str, Any], layer_map: LayerMap | None) -> tuple[tuple[int, int], ...]:
        if layer_map is None:
            return ()
        pairs = layer_map.layer_pairs()
        if params["exclude_last"]:
            pairs = tuple((s, t) for s, t in pairs if s != layer_map.student_layers)
        return pairs

    def pair_loss(self, hs: torch.Tensor, ht: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        cs = F.normalize(hs[:, 0], dim=-1)
        ct = F.normalize(ht[:, 0], dim=-1)
        return F.mse_loss(cs, ct)
