"""Prediction-layer terms: soft targets from the teacher's logits, and the hard-label loss.

Notation: ``z_S, z_T`` are ``(B, C)`` student / teacher logits, ``tau`` the temperature,
``p^tau = softmax(z / tau)``. Token-classification logits ``(B, L, C)`` go to the per-token forms of
:mod:`textdistill.losses.token` (labelled positions only, per-example means).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from textdistill.losses import token
from textdistill.losses.base import LossTerm, Param, as_float, labels_of, register_term
from textdistill.models.outputs import LOGITS, ModelOutputs

_TEMPERATURE = Param(
    1.0, "softmax temperature tau (a number or a schedule)", kind="schedule", minimum=0.0, strict=True
)


class _SoftTargets(LossTerm):
    """A term on the teacher's and student's class distributions at temperature ``tau``: ``soft_loss`` of
    ``log p_S^tau, log p_T^tau``, times ``tau^2`` with ``scale_t2``; token logits go to ``token_loss``."""

    needs = frozenset({LOGITS})
    needs_classification = True
    compares_logits = True
    token_loss: Callable[..., torch.Tensor]

    def soft_loss(self, log_ps: torch.Tensor, log_pt: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compute(
        self, student: ModelOutputs, teacher: ModelOutputs, batch: dict, progress: float
    ) -> torch.Tensor:
        s, t = as_float(student.logits, "student"), as_float(teacher.logits, "teacher")
        tau = self.value("temperature", progress)
        if s.dim() == 3:  # token classification: per labelled position (losses/token.py)
            return type(self).token_loss(s, t, batch, tau, self.params["scale_t2"])
        loss = self.soft_loss(F.log_softmax(s / tau, dim=-1), F.log_softmax(t / tau, dim=-1))
        return loss * tau**2 if self.params["scale_t2"] else loss


@register_term
class KDKL(_SoftTargets):
    """Hinton et al. 2015, "Distilling the Knowledge in a Neural Network".

    ``loss = tau^2 * (1/B) * sum_b sum_c p_T^tau[b, c] * (log p_T^tau[b, c] - log p_S^tau[b, c])``
    (``KL(p_T || p_S)``, ``batchmean`` reduction). The ``tau^2`` factor keeps the gradient magnitude
    independent of ``tau`` (the soft-target gradients scale as ``1 / tau^2``), so the weight against
    ``hard_ce`` need not be retuned when ``tau`` changes; ``scale_t2: false`` drops it. Every row is used
    (augmented rows included). Shapes: logits ``(B, C)`` with ``C >= 2``.
    """

    name = "kd_kl"
    PARAMS = {"temperature": _TEMPERATURE, "scale_t2": Param(True, "multiply by tau^2 (Hinton)", kind="bool")}
    token_loss = token.token_kd_kl

    def soft_loss(self, log_ps: torch.Tensor, log_pt: torch.Tensor) -> torch.Tensor:
        return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)


@register_term
class KDSoftCE(_SoftTargets):
    """Soft cross-entropy: TinyBERT's prediction-layer loss as the paper writes it (Jiao et al. 2020, Eq. 10).

    ``loss = (1/B) * sum_b sum_c -p_T^tau[b, c] * log p_S^tau[b, c]``: summed over the ``C`` classes,
    averaged over the examples. This is TextBrewer's ``ce`` (``kd_ce_loss``). TinyBERT's *released code*
    (``soft_cross_entropy``) averages over the classes too (``.mean()`` over ``B * C`` elements), so its value
    and gradients are this term's divided by ``C`` (half of it on a binary task): the same minimiser, and
    with one term under Adam nearly the same updates (Adam divides out a constant scale), but ``C`` times
    the weight against other terms and against ``train.max_grad_norm`` clipping. To match the release
    exactly, give the term ``weight: 1/C``.

    It equals ``KL(p_T || p_S)`` plus the teacher's entropy, which does not depend on the student: the same
    gradients as ``kd_kl`` without ``tau^2``, but it is not zero when the student matches the teacher.
    TinyBERT applies no ``tau^2`` (and uses ``tau = 1``), hence ``scale_t2`` defaults to false.
    Shapes: logits ``(B, C)`` with ``C >= 2``.
    """

    name = "kd_soft_ce"
    PARAMS = {
        "temperature": _TEMPERATURE,
        "scale_t2": Param(False, "multiply by tau^2 (TinyBERT does not)", kind="bool"),
    }
    token_loss = token.token_kd_soft_ce

    def soft_loss(self, log_ps: torch.Tensor, log_pt: torch.Tensor) -> torch.Tensor:
        return -(log_pt.exp() * log_ps).sum(-1).mean()


@register_term
class KDMSE(LossTerm):
    """Logit regression of Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into Simple Neural
    Networks" (also Ba & Caruana 2014).

    ``loss = (1 / (B * C)) * sum_{b, c} (z_S[b, c] - z_T[b, c])^2`` (mean over elements). The only soft
    term defined for regression (``C = 1``). Shapes: logits ``(B, C)``.
    """

    name = "kd_mse"
    needs = frozenset({LOGITS})
    compares_logits = True
    PARAMS: dict[str, Param] = {}

    def compute(
        self, student: ModelOutputs, teacher: ModelOutputs, batch: dict, progress: float
    ) -> torch.Tensor:
        s, t = as_float(student.logits, "student"), as_float(teacher.logits, "teacher")
        if s.dim() == 3:  # token classification: per labelled position (losses/token.py)
            return token.token_kd_mse(s, t, batch)
        return F.mse_loss(s, t)


@register_term
class HardCE(LossTerm):
    """The supervised loss on gold labels; needs no teacher (fine-tuning).

    Classification: ``loss = -(1/N) * sum_b log softmax(z_S[b])[y_b]`` (with optional label smoothing).
    Regression (``num_labels == 1``): ``loss = (1/N) * sum_b (z_S[b, 0] - y_b)^2``.
    Only rows with ``is_original`` True count when the batch has that key: augmented rows carry no
    trustworthy gold label. For classification, rows with a negative label (``-100``: unlabelled) are
    skipped too. ``N`` is the number of rows used; with none, the loss is 0 (still attached to the graph).
    Shapes: logits ``(B, C)``, labels ``(B,)`` long (float for regression), ``is_original (B,)`` bool.
    """

    name = "hard_ce"
    needs = frozenset({LOGITS})
    needs_teacher = False
    PARAMS = {
        "label_smoothing": Param(0.0, "label smoothing epsilon of the cross-entropy (0..1)", minimum=0.0)
    }

    @classmethod
    def extra_problems(
        cls, params: dict[str, Any], teacher_info, student_info, layer_map, key: str
    ) -> list[str]:
        if params["label_smoothing"] >= 1.0:
            return [f"{key}.params.label_smoothing: must be below 1, got {params['label_smoothing']}"]
        return []

    def compute(self, student: ModelOutputs, teacher, batch: dict, progress: float) -> torch.Tensor:
        logits = as_float(student.logits, "student")
        labels = labels_of(batch, self.name).to(logits.device)
        if logits.dim() == 3:  # token classification: per tagged position (losses/token.py)
            return token.token_hard_ce(logits, batch, self.params["label_smoothing"])
        keep = torch.ones(labels.shape[0], dtype=torch.bool, device=logits.device)
        if batch.get("is_original") is not None:
            keep = keep & batch["is_original"].to(device=logits.device, dtype=torch.bool)
        regression = logits.shape[-1] == 1
        if not regression:
            keep = keep & (labels >= 0)
        if not bool(keep.any()):
            return logits.sum() * 0.0
        if regression:
            return F.mse_loss(logits[keep, 0], labels[keep].float())
        return F.cross_entropy(
            logits[keep], labels[keep].long(), label_smoothing=self.params["label_smoothing"]
        )
