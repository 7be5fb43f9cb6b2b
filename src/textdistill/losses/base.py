"""The loss-term contract, its parameter checking, and the math shared by several terms.

A loss term is an ``nn.Module`` chosen by registry name. It is built from
``(params, teacher_info, student_info, layer_map)``, declares what it needs at class level (``needs``,
``needs_teacher``, ``needs_equal_heads``, ``PARAMS``), tells the models what to capture
(:meth:`LossTerm.feature_request`) and computes a scalar from two :class:`ModelOutputs`::

    loss = term(student_out, teacher_out, batch, progress)

Conventions shared by every term (each term's docstring gives its formula):

* Losses are computed in float32 whatever the model dtype (bf16 autocast, fp16 teacher cache): squared
  differences and log-probabilities lose too much precision in 16 bits.
* Teacher tensors are detached: the teacher is a fixed target, and a cached or ``inference_mode`` teacher
  has no graph anyway.
* Teacher-target terms use every row of the batch, augmented rows included (that is what augmentation is
  for); only ``hard_ce`` restricts itself to rows with ``is_original`` True.
* Padding never counts: token-level terms average over the real tokens (``attention_mask == 1``) of each
  example, so a value does not depend on how much padding a batch happens to have.
* Every term is a mean over the batch rows of a per-example value (MiniLM's per-example normalisation,
  ``batchmean`` for KD). Splitting a batch into micro-batches and weighting each by its share of rows
  (gradient accumulation) therefore reproduces the full-batch loss exactly, whatever the lengths; pooling
  all tokens of a batch into one mean would not (the causal-LM terms' ``reduction: token`` pools, and stays
  exact through the global token count the distiller passes, see :mod:`textdistill.losses.lm`). (``hard_ce`` with ``is_original`` averages over the kept
  rows, which is exact only when micro-batches keep the same fraction of rows.)
* Intermediate-layer terms add up their matched layer pairs (TinyBERT's sum) unless
  ``layer_reduction: mean`` is set (pkd's default, as in its release).
"""

from __future__ import annotations

import difflib
import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from textdistill.errors import ConfigError, DataError, ModelError
from textdistill.models.layer_map import LayerMap, build_layer_map
from textdistill.models.outputs import (
    ATTENTION_SCORES,
    ATTENTIONS,
    HIDDEN_STATES,
    LOGITS,
    QKV,
    FeatureRequest,
    ModelInfo,
    ModelOutputs,
)
from textdistill.registry import Registry
from textdistill.training.schedules import Schedule, parse_schedule, schedule_problems

SIDES = ("student", "teacher")


@dataclass(frozen=True)
class Param:
    """Declaration of one loss-term parameter.

    Attributes:
        default: value when the config does not set it.
        doc: one-line description shown in error messages and ``textdistill losses``.
        kind: ``schedule`` (a number or a schedule mapping), ``number``, ``bool``, ``int`` (None allowed when
            the default is None), ``choice`` (one of ``choices``) or ``list`` (a list of ``choices``).
        choices: valid values of ``choice`` / ``list`` parameters.
        minimum: smallest valid value of numeric parameters (every point of a schedule).
        strict: when True the value must be strictly greater than ``minimum``.
    """

    default: Any
    doc: str
    kind: str = "number"
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    strict: bool = False


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _below_minimum(value: float, spec: Param) -> bool:
    if spec.minimum is None:
        return False
    return value <= spec.minimum if spec.strict else value < spec.minimum


def _minimum_text(spec: Param) -> str:
    return f"> {spec.minimum}" if spec.strict else f">= {spec.minimum}"


def param_problems(term: str, specs: dict[str, Param], params: Any, key: str) -> list[str]:
    """Every problem with a term's ``params`` mapping (unknown names, wrong types, out-of-range values).

    Args:
        term: registry name of the term (for messages).
        specs: the term's ``PARAMS``.
        params: the configured mapping.
        key: config key prefix, e.g. ``objective.0``.
    """
    if params is None:
        return []
    if not isinstance(params, dict):
        return [f"{key}.params: expected a mapping of parameter names to values, got {params!r}"]
    valid = ", ".join(sorted(specs)) or "none"
    problems = []
    for name, value in params.items():
        k = f"{key}.params.{name}"
        spec = specs.get(name)
        if spec is None:
            close = difflib.get_close_matches(str(name), list(specs), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            problems.append(f"{k}: {term} has no parameter {name!r}; valid parameters: {valid}.{hint}")
            continue
        if spec.kind == "schedule":
            sub = schedule_problems(value, k)
            if sub:
                problems.extend(sub)
            else:
                low, _ = parse_schedule(value, k).bounds()
                if _below_minimum(low, spec):
                    problems.append(f"{k}: must be {_minimum_text(spec)} throughout training, got {value!r}")
        elif spec.kind == "number":
            if not _is_number(value):
                problems.append(f"{k}: expected a number, got {value!r}")
            elif _below_minimum(float(value), spec):
                problems.append(f"{k}: must be {_minimum_text(spec)}, got {value!r}")
        elif spec.kind == "int":
            if value is None and spec.default is None:
                continue
            if not (isinstance(value, int) and not isinstance(value, bool)):
                problems.append(f"{k}: expected an integer, got {value!r}")
            elif _below_minimum(float(value), spec):
                problems.append(f"{k}: must be {_minimum_text(spec)}, got {value!r}")
        elif spec.kind == "bool":
            if not isinstance(value, bool):
                problems.append(f"{k}: expected true or false, got {value!r}")
        elif spec.kind == "choice":
            if value not in spec.choices:
                problems.append(f"{k}: {value!r} is not valid; choose one of {', '.join(spec.choices)}")
        elif spec.kind == "list":
            if not isinstance(value, list | tuple) or not value:
                problems.append(f"{k}: expected a non-empty list of {', '.join(spec.choices)}, got {value!r}")
            else:
                bad = [v for v in value if v not in spec.choices]
                if bad:
                    problems.append(f"{k}: {bad} not valid; items must be among {', '.join(spec.choices)}")
                elif len(set(value)) != len(value):
                    problems.append(f"{k}: {list(value)} lists an item twice; list each once")
    return problems


def resolve_params(specs: dict[str, Param], params: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``params``; schedule parameters become :class:`Schedule` objects.

    Call only after :func:`param_problems` returned nothing.
    """
    out: dict[str, Any] = {}
    for name, spec in specs.items():
        value = (params or {}).get(name, spec.default)
        if spec.kind == "schedule":
            value = parse_schedule(value, name)
        elif spec.kind == "number":
            value = float(value)
        elif spec.kind == "list":
            value = tuple(value)
        out[name] = value
    return out


class LossTerm(nn.Module):
    """Base class of every loss term.

    Subclasses set the class attributes below, implement :meth:`compute`, and may add checks in
    :meth:`extra_problems`.

    Attributes:
        name: registry name.
        needs: feature names (``textdistill.models.outputs``) read from both student and teacher.
        needs_teacher: False only for terms computed from labels alone (allowed without a teacher).
        needs_equal_heads: the term compares per-head tensors, so head counts must match.
        needs_classification: the term is undefined for one regression output (``num_labels == 1``).
        compares_logits: the term compares student and teacher logits, so their label counts must match.
        loss_positions_only: a causal-LM term that reads next-token logits only at the loss positions
            (:func:`textdistill.losses.lm.loss_rows`); when every logit term says so, the distiller lets the
            models compute their LM head at those rows only.
        default_layer_strategy: layer-map strategy used when none is configured; None for terms that take
            no layer map.
        PARAMS: the accepted parameters.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset({LOGITS})
    needs_teacher: ClassVar[bool] = True
    needs_equal_heads: ClassVar[bool] = False
    needs_classification: ClassVar[bool] = False
    compares_logits: ClassVar[bool] = False
    loss_positions_only: ClassVar[bool] = False
    default_layer_strategy: ClassVar[str | None] = None
    PARAMS: ClassVar[dict[str, Param]] = {}

    def __init__(
        self,
        params: dict[str, Any] | None,
        teacher_info: ModelInfo | None,
        student_info: ModelInfo,
        layer_map: LayerMap | None = None,
    ):
        """Build the term.

        Args:
            params: term parameters (see ``PARAMS``); schedule parameters may be schedule mappings.
            teacher_info: the teacher, or None when training without one (only ``needs_teacher = False``).
            student_info: the student.
            layer_map: the resolved layer map; None builds the term's default for the two models.

        Raises:
            ConfigError: every problem with the parameters and the model combination.
        """
        super().__init__()
        # Build the default map only when it can exist: a missing teacher or a model without the needed
        # features (a BiLSTM has no layers) is reported by check() with a clearer message.
        if (
            layer_map is None
            and self.default_layer_strategy is not None
            and teacher_info is not None
            and self.needs <= student_info.capabilities
            and self.needs <= teacher_info.capabilities
        ):
            layer_map = build_layer_map(
                None,
                student_info.num_layers,
                teacher_info.num_layers,
                default_strategy=self.default_layer_strategy,
                key=self.name + ".layer_map",
            )
        problems = self.check(params, teacher_info, student_info, layer_map)
        if problems:
            raise ConfigError(problems)
        self.params = resolve_params(self.PARAMS, params)
        self.teacher_info = teacher_info
        self.student_info = student_info
        self.layer_map = layer_map

    # ----------------------------------------------------------------------------------------- checks
    @classmethod
    def check(
        cls,
        params: dict[str, Any] | None,
        teacher_info: ModelInfo | None,
        student_info: ModelInfo,
        layer_map: LayerMap | None,
        key: str | None = None,
    ) -> list[str]:
        """Every problem with this term for these models (the layer map itself is validated separately).

        Args:
            params: the configured parameters.
            teacher_info: the teacher, or None.
            student_info: the student.
            layer_map: the resolved layer map, or None when it could not be built (map checks are skipped).
            key: config key prefix for messages (default: the term name).
        """
        key = key or cls.name
        param_issues = param_problems(cls.name, cls.PARAMS, params, key)
        problems = list(param_issues)
        if teacher_info is None:
            if cls.needs_teacher:
                problems.append(
                    f"{key}: {cls.name} needs a teacher, but none is configured; set teacher.path or use "
                    "only terms that need no teacher (hard_ce)"
                )
            elif not param_issues:
                values = resolve_params(cls.PARAMS, params)
                problems.extend(cls.extra_problems(values, None, student_info, layer_map, key))
            return problems
        feature_problems = []
        for side, info in (("student", student_info), ("teacher", teacher_info)):
            missing = sorted(cls.needs - info.capabilities)
            if missing:
                fix = (
                    f"use a transformer {side}"
                    if info.num_layers == 0 or info.kind == "bilstm"
                    else "use a model family that supports it"
                )
                feature_problems.append(
                    f"{key}: {cls.name} needs {', '.join(missing)} from the {side}, but the {side} "
                    f"(kind {info.kind!r}, model_type {info.model_type!r}) provides only "
                    f"{', '.join(sorted(info.capabilities)) or 'nothing'}; remove {cls.name} or {fix}"
                )
        problems.extend(feature_problems)
        if feature_problems:
            return problems
        if cls.needs_equal_heads and student_info.num_heads != teacher_info.num_heads:
            problems.append(
                f"{key}: {cls.name} compares attention heads one to one, but the student has "
                f"{student_info.num_heads} heads and the teacher {teacher_info.num_heads}; set "
                f"student.num_heads={teacher_info.num_heads}, or use minilmv2, which relates heads of any count"
            )
        if cls.compares_logits and student_info.num_labels != teacher_info.num_labels:
            problems.append(
                f"{key}: {cls.name} compares logits, but the student has {student_info.num_labels} outputs and "
                f"the teacher {teacher_info.num_labels}; build the student with the teacher's label set"
            )
        if cls.needs_classification and min(student_info.num_labels, teacher_info.num_labels) == 1:
            problems.append(
                f"{key}: {cls.name} needs class probabilities, but the task is regression (1 output); "
                "use kd_mse for regression"
            )
        if not param_issues:  # term-specific checks read the resolved values
            values = resolve_params(cls.PARAMS, params)
            problems.extend(cls.extra_problems(values, teacher_info, student_info, layer_map, key))
        return problems

    @classmethod
    def extra_problems(
        cls,
        params: dict[str, Any],
        teacher_info: ModelInfo | None,
        student_info: ModelInfo,
        layer_map: LayerMap | None,
        key: str,
    ) -> list[str]:
        """Term-specific problems, given valid resolved ``params`` (override in subclasses).

        ``teacher_info`` is None only for terms with ``needs_teacher = False``; ``layer_map`` is None when
        the term takes none or the configured one is invalid (already reported).
        """
        return []

    # ----------------------------------------------------------------------------------------- features
    def layer_pairs_for_attention(self) -> tuple[tuple[int, int], ...]:
        """0-based ``(student, teacher)`` layer keys this term reads attention / Q/K/V features from."""
        return self.layer_map.attention_keys if self.layer_map is not None else ()

    def feature_request(self, side: str) -> FeatureRequest:
        """What the ``side`` (``"student"`` or ``"teacher"``) model must capture for this term.

        Layer sets are 0-based layer keys (see :mod:`textdistill.models.layer_map`).
        """
        if side not in SIDES:
            raise ValueError(f"side must be 'student' or 'teacher', got {side!r}")
        if side == "teacher" and not self.needs_teacher:
            return FeatureRequest()
        idx = 0 if side == "student" else 1
        layers = {pair[idx] for pair in self.layer_pairs_for_attention()}
        return FeatureRequest(
            hidden_states=HIDDEN_STATES in self.needs,
            attentions=set(layers) if ATTENTIONS in self.needs else set(),
            attention_scores=set(layers) if ATTENTION_SCORES in self.needs else set(),
            qkv=set(layers) if QKV in self.needs else set(),
        )

    # ----------------------------------------------------------------------------------------- runtime
    def value(self, name: str, progress: float) -> float:
        """A parameter's value at training ``progress`` (schedules evaluated, constants returned)."""
        v = self.params[name]
        return v.value_at(progress) if isinstance(v, Schedule) else v

    def forward(
        self,
        student: ModelOutputs,
        teacher: ModelOutputs | None,
        batch: dict[str, torch.Tensor],
        progress: float = 0.0,
    ) -> torch.Tensor:
        """The term's scalar loss (unweighted).

        Args:
            student: student outputs with the features of ``feature_request("student")``.
            teacher: teacher outputs (None only for terms with ``needs_teacher = False``).
            batch: ``input_ids (B, L)``, ``attention_mask (B, L)``, ``labels (B,)``, optional
                ``is_original (B,)``.
            progress: fraction of training done, ``0..1`` (for scheduled parameters).

        Returns:
            A 0-dim float32 tensor.
        """
        if teacher is None and self.needs_teacher:
            raise ModelError(f"{self.name} needs teacher outputs, but teacher is None")
        return self.compute(student, teacher, batch, progress)

    def compute(
        self,
        student: ModelOutputs,
        teacher: ModelOutputs | None,
        batch: dict[str, torch.Tensor],
        progress: float,
    ) -> torch.Tensor:
        """The loss itself (arguments as :meth:`forward`); subclasses implement it."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        shown = ", ".join(
            f"{k}={v.to_config() if isinstance(v, Schedule) else v}" for k, v in self.params.items()
        )
        if self.layer_map is not None:
            shown += (", " if shown else "") + f"layer_map={self.layer_map.describe()}"
        return shown


LOSSES: Registry[type[LossTerm]] = Registry("loss term")


def register_term(cls: type[LossTerm]) -> type[LossTerm]:
    """Class decorator registering a :class:`LossTerm` under its ``name``."""
    return LOSSES.register(cls.name)(cls)


def layer_reduction(default: str = "sum") -> Param:
    """The ``layer_reduction`` parameter of intermediate-layer terms (see the module docstring)."""
    return Param(
        default, "how matched layer pairs combine: sum (TinyBERT) or mean", "choice", ("sum", "mean")
    )


class AttentionPairTerm(LossTerm):
    """A term over the layer map's attention pairs: ``reduce_pairs(pair_loss(student, teacher, mask))``.

    Subclasses name the per-layer ``features`` they compare (``attentions``, ``attention_scores``, ``qkv``)
    and implement :meth:`pair_loss`; fetching each pair's features as float32 (teacher detached), the mask,
    the check that the map has attention pairs and the reduction over pairs are done here once.
    """

    default_layer_strategy = "uniform"
    features: ClassVar[tuple[str, ...]] = ()
    PARAMS: ClassVar[dict[str, Param]] = {"layer_reduction": layer_reduction()}

    @classmethod
    def extra_problems(
        cls,
        params: dict[str, Any],
        teacher_info: ModelInfo | None,
        student_info: ModelInfo,
        layer_map: LayerMap | None,
        key: str,
    ) -> list[str]:
        if layer_map is not None and not layer_map.attention_pairs:
            return [
                f"{key}: {cls.name} has no transformer-layer pairs with attention in layer map "
                f"{layer_map.describe()}; the embeddings (0) have no attention, add pairs of layers >= 1"
            ]
        return []

    def compute(
        self,
        student: ModelOutputs,
        teacher: ModelOutputs | None,
        batch: dict[str, torch.Tensor],
        progress: float,
    ) -> torch.Tensor:
        losses = []
        for s, t in self.layer_map.attention_keys:
            fs = [self._feature(student, f, s, "student") for f in self.features]
            ft = [self._feature(teacher, f, t, "teacher") for f in self.features]
            first = fs[0][0] if isinstance(fs[0], tuple) else fs[0]
            mask = attention_mask_of(batch, student, first[:, 0] if first.dim() == 4 else first)
            fs = [self._zero_padding(x, mask) for x in fs]  # before any arithmetic: see zero_padding
            ft = [self._zero_padding(x, mask) for x in ft]
            losses.append(self.pair_loss(fs, ft, mask))
        return reduce_layers(losses, self.params["layer_reduction"])

    def _feature(self, outputs: ModelOutputs, feature: str, layer: int, side: str) -> Any:
        value = layer_feature(outputs, feature, layer, side, self.name)
        return tuple(as_float(x, side) for x in value) if isinstance(value, tuple) else as_float(value, side)

    @staticmethod
    def _zero_padding(feature: Any, mask: torch.Tensor) -> Any:
        if isinstance(feature, tuple):
            return tuple(zero_padding(x, mask) for x in feature)
        return zero_padding(feature, mask)

    def pair_loss(self, student: list[Any], teacher: list[Any], mask: torch.Tensor) -> torch.Tensor:
        """The loss of one pair from its ``features`` (a tensor, or a Q/K/V triple) of each side.

        Args:
            student: the student's features, in ``features`` order.
            teacher: the teacher's.
            mask: ``(B, L)`` float mask of real tokens.
        """
        raise NotImplementedError


# --------------------------------------------------------------------------------------------- helpers
def attention_mask_of(
    batch: dict[str, torch.Tensor], outputs: ModelOutputs, like: torch.Tensor
) -> torch.Tensor:
    """The ``(B, L)`` float mask of real tokens: the batch's, else the outputs', else all ones."""
    mask = batch.get("attention_mask") if batch is not None else None
    if mask is None:
        mask = outputs.attention_mask
    if mask is None:
        return torch.ones(like.shape[0], like.shape[1], device=like.device)
    return mask.to(device=like.device, dtype=torch.float32)


def require(outputs: ModelOutputs, feature: str, side: str, term: str) -> Any:
    """``getattr(outputs, feature)`` or a ModelError explaining that it was not captured."""
    value = getattr(outputs, feature)
    if value is None:
        raise ModelError(
            f"{term} needs {feature} from the {side}, but its ModelOutputs has none; run the {side} forward "
            f"with objective.{side}_request() so the feature is captured"
        )
    return value


def layer_feature(outputs: ModelOutputs, feature: str, layer: int, side: str, term: str) -> Any:
    """The ``feature`` dict entry of 0-based ``layer``, or a ModelError naming what is missing."""
    table = require(outputs, feature, side, term)
    if layer not in table:
        raise ModelError(
            f"{term} needs {feature} of {side} layer {layer} (0-based), but only layers {sorted(table)} were "
            f"captured; run the {side} forward with objective.{side}_request()"
        )
    return table[layer]


def hidden_state(outputs: ModelOutputs, index: int, side: str, term: str) -> torch.Tensor:
    """``hidden_states[index]`` (0 = embeddings) as float32, detached for the teacher."""
    states = require(outputs, "hidden_states", side, term)
    if not 0 <= index < len(states):
        raise ModelError(
            f"{term} needs {side} hidden_states[{index}], but the {side} returned {len(states)} hidden states"
        )
    return as_float(states[index], side)


def as_float(x: torch.Tensor, side: str) -> torch.Tensor:
    """``x`` in float32; teacher tensors are detached (fixed targets).

    A teacher run under ``torch.inference_mode`` yields inference tensors, which autograd refuses to save for
    the student's backward ("Inference tensors cannot be saved for backward"); those are cloned into normal
    tensors, so a term works whichever way the teacher was run.
    """
    x = x.float()
    if side != "teacher":
        return x
    if x.is_inference():
        x = x.clone()
    return x.detach()


def reduce_layers(losses: list[torch.Tensor], how: str) -> torch.Tensor:
    """Sum (TinyBERT) or mean of per-layer-pair losses."""
    total = torch.stack(losses).sum()
    return total / len(losses) if how == "mean" else total


def labels_of(batch: dict[str, torch.Tensor], term: str) -> torch.Tensor:
    """``batch["labels"]`` or a DataError."""
    labels = batch.get("labels")
    if labels is None:
        raise DataError(f"{term} needs labels, but the batch has none (keys: {', '.join(sorted(batch))})")
    return labels


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, L, W)`` -> ``(B, heads, L, W // heads)``."""
    b, length, width = x.shape
    return x.view(b, length, heads, width // heads).transpose(1, 2)


def kl_over_keys(
    log_p_teacher: torch.Tensor, log_p_student: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``KL(p_T || p_S)`` over real keys, averaged over heads and real query rows per example, then over rows.

    ``KL = sum_j p_T[j] (log p_T[j] - log p_S[j])`` for each ``(b, head, query i)``. Padded keys and padded
    query rows are dropped with ``where()`` (not multiplied by the mask), so neither ``0 * (-inf)`` nor a
    non-finite value at a padded position can turn the loss into NaN.

    Args:
        log_p_teacher: ``(B, H, L, L)`` teacher log-probabilities over the last axis (keys).
        log_p_student: ``(B, H, L, L)`` student log-probabilities.
        mask: ``(B, L)`` float mask of real tokens.

    Returns:
        ``(1/B) sum_b [sum_{h, i real} KL / (H * n_b)]`` with ``n_b`` the real tokens of example ``b``.
    """
    heads = log_p_teacher.shape[1]
    real = pair_mask(mask)
    log_t, log_s = zero_padding(log_p_teacher, mask), zero_padding(log_p_student, mask)
    per_key = torch.where(real, log_t.exp() * (log_t - log_s), 0.0)
    per_example = per_key.sum((1, 2, 3)) / (heads * mask.sum(-1)).clamp_min(1.0)
    return per_example.mean()


def pair_mask(mask: torch.Tensor) -> torch.Tensor:
    """``(B, 1, L, L)`` bool: both the query ``i`` and the key ``j`` are real tokens."""
    real = mask.bool()
    return real[:, None, :, None] & real[:, None, None, :]


def zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` with every padded position set to 0 by ``where()``: ``(B, L, W)`` per-token features at padded
    tokens, ``(B, H, L, L)`` maps at padded queries or keys.

    Terms exclude padded positions from their sums, but multiplying by the mask turns an ``inf`` (or NaN)
    there into NaN (``inf * 0``), in the loss and in the gradient of every operation it passes through;
    selecting zeros before any arithmetic keeps both finite, and leaves every real position unchanged.
    """
    if x.dim() == 4:
        return torch.where(pair_mask(mask), x, 0.0)
    return torch.where(mask.bool()[:, :, None], x, 0.0)


def masked_log_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log_softmax`` over keys with padded keys excluded (their log-prob is a large negative number).

    The dtype's minimum instead of ``-inf`` keeps an all-padding row finite (uniform) instead of NaN.
    """
    key_pad = ~mask[:, None, None, :].bool()
    return scores.masked_fill(key_pad, torch.finfo(scores.dtype).min).log_softmax(-1)


class PairProjections(nn.Module):
    """Learned maps from student width to teacher width, one per matched layer pair or one shared.

    TinyBERT (Jiao et al. 2020, Eq. 8) multiplies the student hidden states by a learnable
    ``W_h in R^{d' x d}`` when the student is narrower than the teacher; its release shares one ``W_h``
    across layers (``shared=True``); a separate map per pair (default) is the usual generalisation. When the
    widths are equal no projection is created and the identity is used. These modules belong to the
    objective (they are trained with the student) and are never saved with it.

    Args:
        pairs: number of matched pairs.
        student_width: ``d'``.
        teacher_width: ``d``.
        shared: one map for every pair.
        init: ``normal``: weights N(0, 0.02), zero bias — TinyBERT's release (its ``fit_dense`` gets BERT's
            initializer) and TextBrewer; ``torch``: ``nn.Linear``'s default (uniform, bound 1/sqrt(d')).
            On SST-2, a TinyBERT-style single stage from a random student went from 0.509 (torch init,
            collapsed) to 0.581 dev accuracy with ``normal`` (docs/results.md).
    """

    def __init__(
        self, pairs: int, student_width: int, teacher_width: int, shared: bool = False, init: str = "normal"
    ):
        super().__init__()
        self.shared = shared
        if student_width == teacher_width:
            self.maps = nn.ModuleList()
        else:
            n = 1 if shared else pairs
            self.maps = nn.ModuleList(nn.Linear(student_width, teacher_width) for _ in range(n))
            if init == "normal":
                for m in self.maps:
                    nn.init.normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)

    def forward(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Project ``x`` ``(..., student_width)`` of pair ``index`` to ``(..., teacher_width)``."""
        if len(self.maps) == 0:
            return x
        return self.maps[0 if self.shared else index](x)


def relation_names() -> tuple[str, ...]:
    """All two-letter Q/K/V relation names: ``qq, qk, qv, kq, ..., vv``."""
    return tuple(a + b for a, b in itertools.product("qkv", repeat=2))
