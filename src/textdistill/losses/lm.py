"""Token-level terms for causal language models: divergences between next-token distributions.

Notation: ``z_S, z_T`` are ``(B, L, V)`` student / teacher logits over the vocabulary, ``tau`` the
temperature, ``p = softmax(z_T / tau)`` (teacher) and ``q = softmax(z_S / tau)`` (student) at one position.

Which positions count. Position ``t`` predicts token ``t + 1``, so logits ``[:, :-1]`` are compared and
the mask comes from the *shifted* labels: ``labels[:, 1:] != -100`` (the HF convention: ``-100`` marks prompt
and padding tokens that carry no loss). Without labels, the shifted ``attention_mask`` is used. Logits at
masked positions are replaced by zeros before any softmax, so ``inf``/NaN or garbage there can reach
neither the value nor the gradient.

Reduction (param ``reduction``). ``sequence`` (default): each example's value is the mean over its loss
positions, the loss the mean over examples (the project-wide convention of :mod:`textdistill.losses.base`:
gradient accumulation reproduces the full-batch loss exactly); an example without loss positions contributes
0. ``token``: the sum over every loss position of the batch divided by their number (TRL's
``generalized_jsd_loss`` and HF's causal-LM loss; the weighting of the pooled held-out token KL, so long
sequences weigh more). Exact under gradient accumulation and across processes too: the distiller puts
:data:`GLOBAL_LOSS_TOKENS` (loss positions ``T`` and rows ``N`` of the whole global batch,
:func:`global_loss_tokens`) into every micro-batch, and a micro-batch of ``b`` rows divides its sum by
``T b / N``, so the row-share-weighted micro-batch losses add up to the global batch's sum over its ``T``
loss positions divided by ``T`` (as TRL's ``num_items_in_batch``). Without the key (evaluation, direct
calls) the batch's own count is used. A batch without loss positions gives 0.

Teacher-logit store. When the teacher's outputs come from the store, ``teacher.token_topk`` holds the
top-k log-probabilities and ids per position plus the log of the remaining mass. Both distributions are
then compared over ``k + 1`` buckets (the k teacher tokens and "everything else"): the student's bucket
probabilities are exact (its full softmax is at hand), the teacher's are exact too, only the split of the
tail mass is lost. By the data-processing inequality every f-divergence here (KL both ways, JSD, skew KL,
TVD) on the buckets is <= the full-vocabulary value: top-k biases each loss downward, never upward, and with
``k = V`` the rest bucket is empty and the value equals the full one. docs/lm.md gives measured biases.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from textdistill.errors import DataError
from textdistill.losses.base import LossTerm, Param, as_float, register_term
from textdistill.models.outputs import LOGITS, ModelOutputs, TokenTopK

IGNORE_INDEX = -100
# Log-probabilities are floored here instead of -inf: exp(floor) is 0, so a zero-probability entry adds
# exactly 0 to every sum below, and no -inf - (-inf) = NaN can appear in values or gradients.
_LOG_FLOOR = -1.0e30

_TEMPERATURE = Param(
    1.0, "softmax temperature tau (a number or a schedule)", kind="schedule", minimum=0.0, strict=True
)
_SCALE_T2 = Param(False, "multiply by tau^2 (off: the GKD/TRL convention for LMs)", kind="bool")
REDUCTIONS = ("sequence", "token")
# Batch key set by the distiller: (loss positions, rows) of the whole global batch, Python ints.
GLOBAL_LOSS_TOKENS = "lm_global_loss_tokens"
# Batch key set by the distiller: (B, L) bool, the rows whose logits the terms read (:func:`loss_rows`).
LOGIT_ROWS = "lm_logit_rows"
_REDUCTION = Param(
    "sequence",
    "sequence: mean over each example's tokens, then over examples; token: sum over all loss tokens of the "
    "batch / their number (TRL's normalisation)",
    kind="choice",
    choices=REDUCTIONS,
)


# --------------------------------------------------------------------------------------------- masks
def shifted_loss_mask(batch: dict[str, torch.Tensor], batch_size: int, length: int, device) -> torch.Tensor:
    """``(B, L - 1)`` bool: which next-token predictions count.

    ``labels[:, 1:] != -100`` when the batch has labels, else the shifted ``attention_mask`` (a real token
    predicted from a real token), else every position.

    Raises:
        DataError: labels or attention mask whose shape is not ``(B, L)``.
    """
    labels = batch.get("labels") if batch is not None else None
    if labels is not None:
        if tuple(labels.shape) != (batch_size, length):
            raise DataError(
                f"causal-LM losses need token labels of shape (B, L) = ({batch_size}, {length}) aligned with "
                f"input_ids (-100 where no loss), got labels of shape {tuple(labels.shape)}"
            )
        return (labels[:, 1:] != IGNORE_INDEX).to(device)
    mask = batch.get("attention_mask") if batch is not None else None
    if mask is not None:
        if tuple(mask.shape) != (batch_size, length):
            raise DataError(
                f"attention_mask has shape {tuple(mask.shape)}, expected ({batch_size}, {length})"
            )
        m = mask.to(device).bool()
        return m[:, 1:] & m[:, :-1]
    return torch.ones(batch_size, length - 1, dtype=torch.bool, device=device)


def loss_rows(batch: dict[str, Any]) -> torch.Tensor | None:
    """``(B, L)`` bool: the positions whose next-token logits some loss reads (:func:`shifted_loss_mask`
    with a False last column), for a model that can compute its head at those rows only; None when the
    batch is not a ``(B, L)`` token batch."""
    ids = batch.get("input_ids")
    if not torch.is_tensor(ids) or ids.dim() != 2 or ids.shape[1] < 2:
        return None
    try:
        mask = shifted_loss_mask(batch, ids.shape[0], ids.shape[1], ids.device)
    except DataError:  # not a causal-LM batch (e.g. one label per row)
        return None
    return torch.cat([mask, mask.new_zeros(ids.shape[0], 1)], dim=1)


def global_loss_tokens(batch: dict[str, Any]) -> tuple[int, int] | None:
    """``(loss positions, rows)`` of a ``(B, L)`` token batch (:func:`shifted_loss_mask`); None for others.

    The distiller computes it on the global batch and hands it to every micro-batch as
    :data:`GLOBAL_LOSS_TOKENS`, which makes ``reduction: token`` exact under gradient accumulation.
    """
    rows = loss_rows(batch)
    if rows is None or rows.shape[0] == 0:
        return None
    return int(rows.sum()), int(rows.shape[0])


def masked_token_mean(
    values: torch.Tensor,
    mask: torch.Tensor,
    reduction: str = "sequence",
    global_tokens: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Masked mean of per-position losses.

    Args:
        values: ``(B, T)`` per-position losses (anything at masked-out positions, NaN included).
        mask: ``(B, T)`` bool.
        reduction: ``sequence``: mean over examples of each example's mean over its masked-in positions;
            ``token``: sum over all masked-in positions / their number (0 when there are none).
        global_tokens: ``token`` only: ``(T, N)``, the loss positions and rows of the global batch this one
            is a micro-batch of; the sum is divided by ``T B / N`` instead of the batch's own count, so the
            micro-batches weighted by their share of rows ``B / N`` add up to the global token mean.

    Raises:
        ValueError: an unknown reduction.
    """
    kept = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    if reduction == "token":
        if global_tokens is None:
            return kept.sum() / mask.sum().clamp_min(1).to(values.dtype)
        tokens, rows = global_tokens
        return kept.sum() * 0.0 if tokens == 0 else kept.sum() / (tokens * mask.shape[0] / rows)
    if reduction != "sequence":
        raise ValueError(f"reduction {reduction!r} is not valid; choose one of {', '.join(REDUCTIONS)}")
    per_example = kept.sum(-1) / mask.sum(-1).clamp_min(1).to(values.dtype)
    return per_example.mean()


# ------------------------------------------------------------------------------------- divergences
def _floor(log_p: torch.Tensor) -> torch.Tensor:
    return log_p.clamp_min(_LOG_FLOOR)


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum_i p_i (log p_i - log q_i)`` over the last axis; entries with ``p_i = 0`` add 0."""
    log_p, log_q = _floor(log_p), _floor(log_q)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _log_mix(log_p: torch.Tensor, log_q: torch.Tensor, weight_p: float) -> torch.Tensor:
    """``log(w p + (1 - w) q)`` computed in log space (w in (0, 1))."""
    return torch.logaddexp(_floor(log_p) + math.log(weight_p), _floor(log_q) + math.log1p(-weight_p))


def generalized_jsd(log_p: torch.Tensor, log_q: torch.Tensor, beta: float) -> torch.Tensor:
    """GKD's generalized JSD (Agarwal et al. 2024, "On-Policy Distillation of Language Models").

    ``JSD(beta) = beta KL(p || m) + (1 - beta) KL(q || m)`` with ``m = beta p + (1 - beta) q``,
    ``p`` the teacher and ``q`` the student. ``JSD(beta) / beta -> KL(p || q)`` as ``beta -> 0`` and
    ``JSD(beta) / (1 - beta) -> KL(q || p)`` as ``beta -> 1`` (the value itself tends to 0 at both ends), so,
    as in TRL's ``generalized_jsd_loss``, ``beta = 0`` is defined as forward KL and ``beta = 1`` as reverse KL.
    """
    if beta == 0.0:
        return kl(log_p, log_q)
    if beta == 1.0:
        return kl(log_q, log_p)
    log_m = _log_mix(log_p, log_q, beta)
    return beta * kl(log_p, log_m) + (1.0 - beta) * kl(log_q, log_m)


def skew_kl(log_p: torch.Tensor, log_q: torch.Tensor, alpha: float) -> torch.Tensor:
    """DistiLLM's alpha-skew KL (Ko et al. 2024): ``KL(p || alpha p + (1 - alpha) q)``; alpha = 0 is KL(p||q)."""
    if alpha == 0.0:
        return kl(log_p, log_q)
    return kl(log_p, _log_mix(log_p, log_q, alpha))


def tvd(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Total variation distance ``0.5 * sum_i |p_i - q_i|`` (Wen et al. 2023, "f-Divergence Minimization")."""
    return 0.5 * (_floor(log_p).exp() - _floor(log_q).exp()).abs().sum(-1)


# ------------------------------------------------------------------------------ distribution pairs
def topk_buckets(log_q_full: torch.Tensor, topk: TokenTopK) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student log-probabilities over the ``k + 1`` buckets of a top-k teacher.

    Args:
        log_q_full: ``(..., V)`` student log-probabilities.
        topk: teacher top-k with ``logprobs``/``ids`` ``(..., k)`` and ``rest_logmass`` ``(...)``.

    Returns:
        ``(log_p, log_q)``, each ``(..., k + 1)``: the k teacher tokens, then the rest of the vocabulary.
    """
    ids = topk.ids.long()
    log_q_top = log_q_full.gather(-1, ids)
    # logsumexp over the tokens outside the top-k: exactly -inf (floored) when k = V. The top-k entries are
    # overwritten with -inf in one out-of-place scatter (no (..., V) boolean masks: this runs every step over
    # the whole vocabulary, and the masks cost as much as the logsumexp itself).
    log_q_rest = torch.logsumexp(log_q_full.scatter(-1, ids, -math.inf), dim=-1)
    log_p = torch.cat([topk.logprobs.float(), topk.rest_logmass.float().unsqueeze(-1)], dim=-1)
    log_q = torch.cat([log_q_top, log_q_rest.unsqueeze(-1)], dim=-1)
    return _floor(log_p), _floor(log_q)


def _at(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x[:, :-1]`` at the loss positions: ``(B, L, ...)`` to ``(N, ...)``, row-major."""
    return x[:, :-1][mask]


def _grid(out: ModelOutputs) -> tuple[int, int]:
    """``(B, L)`` of the batch behind ``out`` (its logits may hold only chosen rows)."""
    shape = out.logit_rows.shape if out.logit_rows is not None else out.logits.shape
    return int(shape[0]), int(shape[1])


def logits_at(out: ModelOutputs, mask: torch.Tensor, side: str) -> torch.Tensor:
    """``(N, V)`` fp32 next-token logits at the ``N`` loss positions ``mask`` (``(B, L - 1)``).

    Raises:
        DataError: logits that are not ``(B, L, V)`` (or ``(N', V)`` with ``logit_rows``), or rows computed
            that miss a loss position.
    """
    z = as_float(out.logits, side)
    if out.logit_rows is None:
        if z.dim() != 3:
            raise DataError(
                f"causal-LM losses need (B, L, V) {side} logits, got shape {tuple(z.shape)}; "
                "for sequence classification use kd_kl"
            )
        return _at(z, mask)
    rows = out.logit_rows.to(mask.device)
    if z.dim() != 2 or z.shape[0] != int(rows.sum()):
        raise DataError(
            f"{side} logits {tuple(z.shape)} do not match logit_rows (expected ({int(rows.sum())}, V))"
        )
    if torch.equal(rows[:, :-1], mask) and not bool(rows[:, -1].any()):
        return z  # the rows are exactly the loss positions (the distiller's case)
    index = torch.full(rows.shape, -1, dtype=torch.long, device=rows.device)
    index[rows] = torch.arange(z.shape[0], device=rows.device)
    wanted = _at(index, mask)
    if bool((wanted < 0).any()):
        raise DataError(f"the {side}'s logits were computed at rows that miss loss positions")
    return z.index_select(0, wanted)


def _tempered(z: torch.Tensor, tau: float) -> torch.Tensor:
    """``z / tau``; ``z`` itself at tau = 1 (a vocabulary-wide pass and its backward saved, same values)."""
    return z if tau == 1.0 else z / tau


def distribution_pair(
    student: ModelOutputs, teacher: ModelOutputs, mask: torch.Tensor, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p_teacher, log q_student)``, ``(N, V)`` or ``(N, k + 1)`` buckets at the ``N`` loss positions.

    Raises:
        DataError: logits that are not ``(B, L, V)``, vocabularies that differ, a temperature other than 1
            with a top-k store (the tail's split is unknown, so it cannot be re-tempered).
    """
    log_q = torch.log_softmax(_tempered(logits_at(student, mask, "student"), tau), dim=-1)
    if teacher.token_topk is not None:
        if tau != 1.0:
            raise DataError(
                f"temperature {tau} with a top-k teacher-logit store: the store keeps temperature-1 top-k "
                "log-probabilities and one number for the tail, which cannot be re-tempered; use "
                "temperature 1, or a live teacher"
            )
        t = teacher.token_topk
        topk = TokenTopK(
            _at(as_float(t.logprobs, "teacher"), mask),
            _at(t.ids, mask),
            _at(as_float(t.rest_logmass, "teacher"), mask),
        )
        return topk_buckets(log_q, topk)
    zt = logits_at(teacher, mask, "teacher")
    if zt.shape != log_q.shape:
        raise DataError(
            f"teacher logits over {zt.shape[-1]} tokens and student logits over {log_q.shape[-1]} differ; the "
            "vocabularies must be the same (see the cross-tokenizer options in docs/lm.md)"
        )
    return torch.log_softmax(_tempered(zt, tau), dim=-1), log_q


def _spread(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(N,)`` per-position values back on the ``(B, L - 1)`` grid (0 elsewhere)."""
    return torch.zeros(mask.shape, dtype=values.dtype, device=values.device).masked_scatter(mask, values)


# ------------------------------------------------------------------------------------------- terms
class _TokenDivergence(LossTerm):
    """Shared shape of the LM terms: pick positions, build distributions, apply :meth:`divergence`."""

    needs = frozenset({LOGITS})
    loss_positions_only = True
    PARAMS: dict[str, Param] = {"temperature": _TEMPERATURE, "scale_t2": _SCALE_T2, "reduction": _REDUCTION}

    @classmethod
    def extra_problems(
        cls, params: dict[str, Any], teacher_info, student_info, layer_map, key: str
    ) -> list[str]:
        problems = []
        for side, info in (("student", student_info), ("teacher", teacher_info)):
            if info is not None and info.kind != "causal_lm":
                problems.append(
                    f"{key}: {cls.name} compares next-token distributions of causal LMs, but the {side} is a "
                    f"{info.kind!r} model ({info.model_type}); use kd_kl for classifiers"
                )
        if teacher_info is not None and teacher_info.vocab_size != student_info.vocab_size:
            problems.append(
                f"{key}: the teacher's vocabulary has {teacher_info.vocab_size} tokens and the student's "
                f"{student_info.vocab_size}; token-level KD needs the same tokenizer. Build the student from "
                "the teacher (student.kind truncate or shrink) or one with the teacher's tokenizer, or use "
                "sequence-level KD (train on teacher-written responses), which needs no shared vocabulary"
            )
        return problems

    def divergence(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """Per-position value over the last axis (subclasses implement)."""
        raise NotImplementedError

    def compute(
        self, student: ModelOutputs, teacher: ModelOutputs, batch: dict, progress: float
    ) -> torch.Tensor:
        b, length = _grid(student)
        mask = shifted_loss_mask(batch, b, length, student.logits.device)
        tau = self.value("temperature", progress)
        log_p, log_q = distribution_pair(student, teacher, mask, tau)
        values = _spread(self.divergence(log_p, log_q), mask)
        loss = masked_token_mean(values, mask, self.params["reduction"], batch.get(GLOBAL_LOSS_TOKENS))
        return loss * tau**2 if self.params["scale_t2"] else loss


def _unit(default: float, doc: str) -> Param:
    return Param(default, doc, minimum=0.0)


def _unit_problem(params: dict[str, Any], name: str, key: str) -> list[str]:
    if params[name] > 1.0:
        return [f"{key}.params.{name}: must be between 0 and 1, got {params[name]}"]
    return []


def _alpha_problems(params: dict[str, Any], key: str) -> list[str]:
    problems = _unit_problem(params, "alpha", key)
    if params["alpha"] == 1.0:
        problems.append(f"{key}.params.alpha: 1 makes the loss identically 0; use a value below 1")
    return problems


@register_term
class LMForwardKL(_TokenDivergence):
    """Forward KL per token, ``KL(p || q) = sum_v p_v (log p_v - log q_v)`` (Hinton KD per position; mode
    covering). Shapes: logits ``(B, L, V)``, labels ``(B, L)``."""

    name = "lm_kl"

    def divergence(self, log_p, log_q):
        return kl(log_p, log_q)


@register_term
class LMReverseKL(_TokenDivergence):
    """Reverse KL per token, ``KL(q || p)`` (MiniLLM, Gu et al. 2024; mode seeking)."""

    name = "lm_reverse_kl"

    def divergence(self, log_p, log_q):
        return kl(log_q, log_p)


@register_term
class LMJSD(_TokenDivergence):
    """Generalized JSD(beta) per token (GKD); see :func:`generalized_jsd`. ``beta = 0`` forward KL,
    ``beta = 1`` reverse KL, ``0.5`` the symmetric JSD; TRL's default is 0.5."""

    name = "lm_jsd"
    PARAMS = {**_TokenDivergence.PARAMS, "beta": _unit(0.5, "weight of the teacher in the mixture, 0..1")}

    @classmethod
    def extra_problems(cls, params, teacher_info, student_info, layer_map, key):
        return _unit_problem(params, "beta", key) + super().extra_problems(
            params, teacher_info, student_info, layer_map, key
        )

    def divergence(self, log_p, log_q):
        return generalized_jsd(log_p, log_q, self.params["beta"])


@register_term
class LMSkewKL(_TokenDivergence):
    """DistiLLM's skew KL, ``KL(p || alpha p + (1 - alpha) q)`` (Ko et al. 2024; paper default alpha 0.1)."""

    name = "lm_skew_kl"
    PARAMS = {
        **_TokenDivergence.PARAMS,
        "alpha": _unit(0.1, "skew: weight of the teacher mixed into the student, 0..1 (0 = forward KL)"),
    }

    @classmethod
    def extra_problems(cls, params, teacher_info, student_info, layer_map, key):
        return _alpha_problems(params, key) + super().extra_problems(
            params, teacher_info, student_info, layer_map, key
        )

    def divergence(self, log_p, log_q):
        return skew_kl(log_p, log_q, self.params["alpha"])


@register_term
class LMSkewReverseKL(LMSkewKL):
    """DistiLLM's skew reverse KL, ``KL(q || alpha q + (1 - alpha) p)``; alpha = 0 is reverse KL. Same
    parameters and checks as :class:`LMSkewKL`, the roles of teacher and student swapped."""

    name = "lm_skew_reverse_kl"

    def divergence(self, log_p, log_q):
        return skew_kl(log_q, log_p, self.params["alpha"])


@register_term
class LMTVD(_TokenDivergence):
    """Total variation distance per token, ``0.5 sum_v |p_v - q_v|`` (bounded in [0, 1])."""

    name = "lm_tvd"

    def divergence(self, log_p, log_q):
        return tvd(log_p, log_q)


@register_term
class LMHardCE(LossTerm):
    """Next-token cross-entropy on the data (the supervised LM loss; needs no teacher).

    ``loss = mean_b mean_{t: labels[b, t+1] != -100} -log q(labels[b, t+1] | t)``, the same per-example
    reduction as the distillation terms; ``reduction: token`` gives HF's per-token mean instead.
    """

    name = "lm_ce"
    needs_teacher = False
    loss_positions_only = True
    PARAMS: dict[str, Param] = {"reduction": _REDUCTION}

    def compute(self, student: ModelOutputs, teacher, batch: dict, progress: float) -> torch.Tensor:
        labels = batch.get("labels")
        if labels is None:
            raise DataError(
                "lm_ce needs token labels (B, L) in the batch (input_ids with -100 where no loss)"
            )
        b, length = _grid(student)
        mask = shifted_loss_mask(batch, b, length, student.logits.device)
        log_q = torch.log_softmax(logits_at(student, mask, "student"), dim=-1)
        target = labels[:, 1:].to(mask.device)[mask].long()
        nll = _spread(-log_q.gather(-1, target.unsqueeze(-1)).squeeze(-1), mask)
        return masked_token_mean(nll, mask, self.params["reduction"], batch.get(GLOBAL_LOSS_TOKENS))
