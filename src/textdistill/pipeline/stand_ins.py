"""Validating a pipeline's stages before any trains: stand-in configs for the outputs of earlier stages.

Outputs of earlier stages do not exist yet, so each stage is validated against *stand-ins*: the config.json
each earlier stage will write, predicted from its own config (:func:`predict_output_config`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from textdistill.config.schema import Config
from textdistill.errors import ConfigError, TextDistillError
from textdistill.pipeline.recipe_format import ResolvedStage


class _Validator:
    """Validates stages in order, writing a stand-in config.json for each stage's future output."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.stand_ins: dict[str, Path] = {}  # real model dir -> stand-in dir

    def hf_config(self, path: str | Path | None, trust_remote_code: bool = False) -> Any | None:
        """The transformers config at ``path`` (a stand-in for future outputs), or None if unreadable."""
        if not path:
            return None
        p = self.stand_ins.get(str(path), path)
        try:
            from transformers import AutoConfig

            from textdistill.models.teacher import resolve_model_path

            return AutoConfig.from_pretrained(resolve_model_path(p), trust_remote_code=trust_remote_code)
        except (TextDistillError, OSError, ValueError, KeyError):
            return None

    def shape_of(self, path: str | Path) -> dict[str, Any] | None:
        """``{num_layers, hidden_size, num_heads, intermediate_size}`` of the model at ``path``."""
        c = self.hf_config(path)
        if c is None:
            return None
        return {
            "num_layers": getattr(c, "num_hidden_layers", None),
            "hidden_size": getattr(c, "hidden_size", None),
            "num_heads": getattr(c, "num_attention_heads", None),
            "intermediate_size": getattr(c, "intermediate_size", getattr(c, "hidden_dim", None)),
        }

    def validate(self, rs: ResolvedStage, outputs: dict[str, str], problems: list[str]) -> None:
        """Validate ``rs.config`` with upstream outputs replaced by their stand-ins; write its own stand-in."""
        cfg = rs.config
        if cfg is None:
            return
        missing = [p for p in outputs if p not in self.stand_ins and not Path(p).is_dir()]

        def swap(path: str | None) -> str | None:
            return str(self.stand_ins[path]) if path in self.stand_ins else path

        vcfg = replace(
            cfg,
            teacher=replace(cfg.teacher, path=swap(cfg.teacher.path)),
            student=replace(cfg.student, path=swap(cfg.student.path)),
            # a generate stage's responses file, read by a later stage as its data
            data=replace(
                cfg.data, train=swap(cfg.data.train), dev=swap(cfg.data.dev), test=swap(cfg.data.test)
            ),
            # A fresh directory: the pipeline itself owns and replaces the stage's run directory.
            output_dir=str(self.tmp / "runs" / rs.name),
        )
        found: list[str] = []
        try:
            if rs.mode == "general":
                from textdistill.pipeline.general import validate_general

                validate_general(vcfg)
            elif rs.mode == "generate":
                from textdistill.training.lm_generate import generate_stage_problems

                if generate_stage_problems(vcfg):
                    raise ConfigError(generate_stage_problems(vcfg))
            elif _is_causal_lm(vcfg):
                from textdistill.training.lm_runner import validate_lm_run

                validate_lm_run(vcfg, rs.mode)
            else:
                from textdistill.config.validate import validate_config

                validate_config(vcfg, rs.mode)
        except ConfigError as e:
            found = list(e.problems)
        except TextDistillError as e:
            found = [str(e)]
        back = {str(v): k for k, v in self.stand_ins.items()}
        for p in found:
            for stand_in, real in back.items():
                p = p.replace(stand_in, real)
            # An input that a skipped stage should have produced cannot be checked until it exists.
            if any(m in p for m in missing):
                continue
            problems.append(f"stages.{rs.name}: {p}")
        # Even a stage with problems usually has a predictable output: later stages are still checked
        # against it, so one run reports the problems of every stage.
        self._write_stand_in(rs, vcfg)

    def _write_stand_in(self, rs: ResolvedStage, vcfg: Config) -> None:
        if rs.mode == "generate":  # its output is a responses file: a one-line stand-in of that format
            d = self.tmp / "stand-ins" / rs.name
            d.mkdir(parents=True, exist_ok=True)
            (d / rs.model_dir.name).write_text('{"prompt": "a prompt", "response": "a response"}\n')
            self.stand_ins[str(rs.model_dir)] = d / rs.model_dir.name
            return
        try:
            predicted = predict_output_config(rs.mode, vcfg, self.hf_config)
        except (TextDistillError, TypeError, ValueError, AttributeError):
            predicted = None  # the stage's own problems are reported; later stages are checked partially
        if predicted is None:
            return
        d = self.tmp / "stand-ins" / rs.name
        d.mkdir(parents=True, exist_ok=True)
        predicted.save_pretrained(str(d))
        self.stand_ins[str(rs.model_dir)] = d


def predict_output_config(mode: str, cfg: Config, load: Callable[..., Any]) -> Any | None:
    """The transformers config of the model a stage will write, from configs only (None: not predictable).

    * finetune: the student checkpoint's config as a sequence classifier of the task's label count;
    * distill: the student's config (truncated or shrunk teacher config, or the pretrained student's) as a
      classifier with the teacher's labels;
    * general: the same student config as a headless encoder (e.g. ``BertModel``), as it is saved.

    The label count is ``data.labels`` when set (1 for regression), else the teacher's / checkpoint's:
    the real one is only known once the data is read, but every later check compares it with itself.

    Args:
        mode: the stage mode.
        cfg: the stage's config, its paths pointing at real or stand-in directories.
        load: ``path -> transformers config or None``.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_MAPPING_NAMES,
    )

    from textdistill.models.hf import info_from_config
    from textdistill.models.students import evenly_spread_layers, shrink_sizes

    s = cfg.student
    if mode == "finetune":
        out = load(s.path)
        base_labels = out.num_labels if out is not None else 2
    else:
        teacher = load(cfg.teacher.path, cfg.teacher.trust_remote_code)
        if teacher is None:
            return None
        base_labels = teacher.num_labels
        if s.type == "pretrained":
            out = load(s.path)
        elif s.type == "truncate":
            out = copy.deepcopy(teacher)
            layers = (
                s.layers
                if s.layers is not None
                else evenly_spread_layers(teacher.num_hidden_layers, int(s.num_layers))
            )
            out.num_hidden_layers = len(layers)
        elif s.type == "shrink":
            out = copy.deepcopy(teacher)
            layers, hidden, heads, intermediate = shrink_sizes(s, info_from_config(teacher))
            out.num_hidden_layers, out.hidden_size = layers, hidden
            out.num_attention_heads, out.intermediate_size = heads, intermediate
        else:
            return None  # a BiLSTM has no transformers config: nothing can warm-start from it
    if out is None:
        return None
    if mode == "general":
        arch = MODEL_MAPPING_NAMES.get(out.model_type)
    else:
        out.num_labels = (
            1 if cfg.data.regression else (len(cfg.data.labels) if cfg.data.labels else base_labels)
        )
        from transformers.models.auto.modeling_auto import MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES

        from textdistill.data.token_task import is_token_task
        from textdistill.models.token_heads import is_token_config

        # a token task (or a token teacher) writes a token classifier
        token = is_token_task(cfg.data) or (mode != "finetune" and is_token_config(teacher))
        mapping = (
            MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES
            if token
            else MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
        )
        arch = mapping.get(out.model_type)
    if arch is None:
        return None
    out.architectures = [arch]
    return out


def _is_causal_lm(cfg: Config) -> bool:
    from textdistill.training.lm_runner import is_causal_lm_run

    return is_causal_lm_run(cfg)
