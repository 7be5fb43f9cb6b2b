"""The training objective: a weighted sum of registered loss terms.

``total = sum_i w_i(progress) * term_i(student_out, teacher_out, batch, progress)``, with each weight a
number or a schedule and ``progress`` the fraction of training done, as the Distiller computes it
(:func:`~textdistill.training.schedules.training_progress`: 0 at the first step, 1 at the last). The
objective owns the terms' learned projections, so passing ``objective.parameters()`` to the optimizer (next to the student's) trains them; they are never part of the
saved student.

Example:
    >>> decay = {"schedule": "linear", "start": 1, "end": 0}
    >>> objective = Objective([LossTermConfig("kd_kl", params={"temperature": 2.0}),
    ...                        LossTermConfig("hidden_mse", weight=decay)], teacher_info, student_info)
    >>> student_out = student(batch, request=objective.student_request())
    >>> progress = training_progress(step, total_steps)  # step / max(1, total_steps - 1)
    >>> total, parts = objective(student_out, teacher_out, batch, progress=progress)
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from textdistill.config.schema import LossTermConfig
from textdistill.errors import ConfigError
from textdistill.losses.base import LOSSES, LossTerm
from textdistill.models import layer_map as layer_maps
from textdistill.models.layer_map import LayerMap
from textdistill.models.outputs import FeatureRequest, ModelInfo, ModelOutputs
from textdistill.training.schedules import Schedule, parse_schedule, schedule_problems


def _term_key(index: int, name: object) -> str:
    return f"objective.{index} ({name})"


def _layer_map_for(
    cls: type[LossTerm], term: LossTermConfig, key: str, teacher_info: ModelInfo, student_info: ModelInfo
) -> tuple[LayerMap | None, list[str]]:
    """The term's resolved layer map (None when it takes none or it is invalid) and its problems."""
    if cls.default_layer_strategy is None:
        if term.layer_map is not None:
            return None, [f"{key}.layer_map: {cls.name} compares no intermediate layers; remove layer_map"]
        return None, []
    args = (term.layer_map, student_info.num_layers, teacher_info.num_layers)
    problems = layer_maps.validate(*args, default_strategy=cls.default_layer_strategy, key=f"{key}.layer_map")
    if problems:
        return None, problems
    return layer_maps.build_layer_map(*args, default_strategy=cls.default_layer_strategy), []


def validate_objective(
    terms: list[LossTermConfig], teacher_info: ModelInfo | None, student_info: ModelInfo
) -> list[str]:
    """Every problem with an objective for these models, all at once (empty when it can be built).

    Checks unknown term names (with a did-you-mean), weights, unknown / ill-typed parameters, terms that
    need a teacher when there is none, features a model cannot provide (naming the term and the model
    kind), layer maps against the real layer counts, head-count and label-count mismatches, and term-specific
    constraints (e.g. MiniLMv2 relation heads dividing both widths).

    Args:
        terms: the configured terms.
        teacher_info: the teacher, or None when fine-tuning without one.
        student_info: the student.
    """
    if not terms:
        return ["objective: no loss terms; add at least one, e.g. [{name: kd_kl}] or [{name: hard_ce}]"]
    problems: list[str] = []
    for i, term in enumerate(terms):
        if not isinstance(term, LossTermConfig):
            problems.append(
                f"objective.{i}: expected a loss term mapping {{name: ..., weight: ...}}, got {term!r}"
            )
            continue
        key = _term_key(i, term.name)
        if term.name not in LOSSES:
            problems.append(f"{key}: {LOSSES.unknown_message(term.name)}")
            continue
        cls = LOSSES.get(term.name)
        problems.extend(_weight_problems(term.weight, f"{key}.weight"))
        layer_map = None
        if (
            teacher_info is not None
            and not (cls.needs - student_info.capabilities)
            and not (cls.needs - teacher_info.capabilities)
        ):
            layer_map, map_problems = _layer_map_for(cls, term, key, teacher_info, student_info)
            problems.extend(map_problems)
        problems.extend(cls.check(term.params, teacher_info, student_info, layer_map, key=key))
    return problems


def _weight_problems(weight: object, key: str) -> list[str]:
    problems = schedule_problems(weight, key)
    if not problems and parse_schedule(weight, key).bounds()[0] < 0:
        problems.append(f"{key}: must be >= 0 throughout training, got {weight!r}")
    return problems


class Objective(nn.Module):
    """Weighted sum of loss terms; owns the terms (and their projections).

    Args:
        terms: the configured terms (``config.objective``).
        teacher_info: the teacher, or None when fine-tuning without one (only ``hard_ce`` is allowed).
        student_info: the student.

    Raises:
        ConfigError: every problem :func:`validate_objective` finds.

    Attributes:
        terms: the built :class:`LossTerm` modules, in config order.
        names: logging names, one per term (``name``, or ``name.<index>`` when a name repeats).
        weights: one :class:`Schedule` per term.
    """

    def __init__(self, terms: list[LossTermConfig], teacher_info: ModelInfo | None, student_info: ModelInfo):
        super().__init__()
        problems = validate_objective(terms, teacher_info, student_info)
        if problems:
            raise ConfigError(problems)
        built = []
        for i, term in enumerate(terms):
            cls = LOSSES.get(term.name)
            layer_map = None
            if teacher_info is not None:
                layer_map, _ = _layer_map_for(cls, term, _term_key(i, term.name), teacher_info, student_info)
            built.append(cls(term.params, teacher_info, student_info, layer_map))
        self.terms = nn.ModuleList(built)
        counts = Counter(t.name for t in terms)
        self.names = [t.name if counts[t.name] == 1 else f"{t.name}.{i}" for i, t in enumerate(terms)]
        self.weights: list[Schedule] = [parse_schedule(t.weight) for t in terms]
        self.teacher_info = teacher_info
        self.student_info = student_info

    @property
    def needs_teacher(self) -> bool:
        """True when any term reads teacher outputs (False: the teacher forward can be skipped)."""
        return any(t.needs_teacher for t in self.terms)

    def student_request(self) -> FeatureRequest:
        """Union of what every term needs from the student."""
        out = FeatureRequest()
        for term in self.terms:
            out = out.merge(term.feature_request("student"))
        return out

    def teacher_request(self) -> FeatureRequest:
        """Union of what every term needs from the teacher."""
        out = FeatureRequest()
        for term in self.terms:
            out = out.merge(term.feature_request("teacher"))
        return out

    def forward(
        self,
        student_out: ModelOutputs,
        teacher_out: ModelOutputs | None,
        batch: dict[str, torch.Tensor],
        progress: float = 0.0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted total and each term's unweighted value.

        Terms are computed with autocast disabled (in float32): the terms cast their inputs up, and a bf16
        matmul inside a relation term would undo that.

        Args:
            student_out: student outputs captured with :meth:`student_request`.
            teacher_out: teacher outputs captured with :meth:`teacher_request` (None without a teacher).
            batch: the collated batch (``attention_mask``, ``labels``, optional ``is_original``).
            progress: fraction of training done, ``0..1``.

        Returns:
            ``(total, parts)``: the 0-dim loss to backpropagate, and ``{name: detached 0-dim tensor}`` of the
            unweighted terms for logging (tensors, so logging needs no device sync per step).
        """
        device_type = student_out.logits.device.type
        parts: dict[str, torch.Tensor] = {}
        total = None
        with torch.autocast(device_type=device_type, enabled=False):
            for name, weight, term in zip(self.names, self.weights, self.terms):
                value = term(student_out, teacher_out, batch, progress)
                parts[name] = value.detach()
                contribution = value * weight.value_at(progress)
                total = contribution if total is None else total + contribution
        return total, parts
