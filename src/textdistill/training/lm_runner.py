"""Distillation of causal (generative) LMs from a config: ``data.task: causal_lm`` (or a causal-LM teacher).

The phases mirror :func:`textdistill.training.runner.run_training`: validate (before any weights load) ->
data (read, tokenize, pad or pack) -> teacher-logit store or live teacher -> student -> the one training
loop (:class:`~textdistill.training.distiller.Distiller`) -> held-out metrics -> a plain HF causal LM in
``<output_dir>/model`` and ``results.json``.

With ``teacher.store_topk`` set and stores for the train and dev rows already on disk, the teacher's weights
are never loaded for a ``pretrained`` student; ``truncate``/``shrink`` students need them once to initialise
and they are released before training starts (``teacher_in_memory_during_training`` in the results).
"""

from __future__ import annotations

import gc
import json
import math
import random
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from textdistill.config.schema import Config
from textdistill.losses import LOSSES
from textdistill.models.outputs import ModelInfo
from textdistill.training.teacher_cache.source import default_cache_root

LM_STUDENT_TYPES = ("pretrained", "truncate", "shrink")


@dataclass
class LMRunResult:
    """What an LM distillation run produced."""

    run_dir: Path
    model_dir: Path
    dev_metrics: dict[str, float]
    details: dict[str, Any]


def _architectures(path: str | None) -> list[str]:
    if not path:
        return []
    config = Path(path) / "config.json"
    if not config.is_file():
        return []
    try:
        return list(json.loads(config.read_text()).get("architectures") or [])
    except (OSError, ValueError):
        return []


def is_causal_lm_run(cfg: Config) -> bool:
    """``data.task == causal_lm``, or ``auto`` and a GGUF / causal-LM teacher."""
    task = getattr(cfg.data, "task", "auto")
    if task not in (None, "auto"):
        return task == "causal_lm"
    if cfg.teacher.gguf_file or str(cfg.teacher.path or "").lower().endswith(".gguf"):
        return True
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in _architectures(cfg.teacher.path))


def with_lm_objective(cfg: Config) -> Config:
    """``cfg`` with the schema's default objective (one ``kd_kl`` term, for classifiers) replaced by forward
    KL over next-token distributions (``lm_kl``), so a causal-LM run needs no objective setting."""
    from dataclasses import replace

    from textdistill.config.schema import LossTermConfig
    from textdistill.data.task_inference import is_default_objective

    if not is_default_objective(cfg.objective):
        return cfg
    return replace(cfg, objective=[LossTermConfig(name="lm_kl")])


def lm_config_problems(cfg: Config, mode: str) -> list[str]:
    """Every problem with an LM distillation config that can be found without loading weights."""
    problems = []
    if mode != "distill":
        problems.append(f"mode {mode!r} is not supported for data.task=causal_lm; use `textdistill distill`")
    if not cfg.teacher.path or not Path(cfg.teacher.path).is_dir():
        problems.append(f"teacher.path must be a local model folder for causal_lm, got {cfg.teacher.path!r}")
    for key in ("train", "dev"):
        value = getattr(cfg.data, key)
        if not value:
            problems.append(f"data.{key} is required for causal_lm (a .txt or .jsonl file)")
        elif not Path(value).is_file():
            problems.append(f"data.{key}: file {value!r} does not exist")
    if cfg.student.type not in LM_STUDENT_TYPES:
        problems.append(
            f"student.type {cfg.student.type!r} is not valid for causal_lm; use {LM_STUDENT_TYPES}"
        )
    if cfg.student.type == "pretrained" and not cfg.student.path:
        problems.append("student.path is required for student.type=pretrained")
    if cfg.student.type in ("truncate", "shrink") and not (cfg.student.num_layers or cfg.student.layers):
        problems.append(
            f"student.num_layers (or student.layers for truncate) is required for {cfg.student.type}"
        )
    for i, term in enumerate(cfg.objective):
        if not term.name.startswith("lm_"):
            lm_terms = ", ".join(n for n in LOSSES.names() if n.startswith("lm_"))
            problems.append(f"objective.{i}: {term.name!r} is not a causal-LM term; choose from {lm_terms}")
        elif cfg.teacher.store_topk is not None and term.params.get("temperature", 1.0) != 1.0:
            problems.append(
                f"objective.{i}.params.temperature: a top-k teacher-logit store keeps temperature-1 "
                "log-probabilities and cannot be re-tempered; use temperature 1 or teacher.store_topk=null"
            )
    return problems


def validate_lm_run(cfg: Config, mode: str = "distill", *, resume: bool = False) -> tuple[Config, Any]:
    """Raise ConfigError with every problem found without loading weights (``training/lm_checks.py``); return
    the run's config (a ``.gguf`` teacher.path split, default objective ``lm_kl``) and the teacher's config."""
    from textdistill.training.lm_checks import validate_lm_config, with_gguf_path

    cfg = with_lm_objective(with_gguf_path(cfg))
    return cfg, validate_lm_config(cfg, lm_config_problems(cfg, mode), resume=resume)


def _rows(cfg: Config, tokenizer: Any, path: str, limit: int | None) -> list[dict[str, Any]]:
    from textdistill.data.lm_data import encode_lm_examples, pack_examples, read_lm_examples

    examples = read_lm_examples(path)
    if limit is not None:
        examples = examples[:limit]
    rows = encode_lm_examples(examples, tokenizer, cfg.data.max_length, cfg.data.chat_template)
    return pack_examples(rows, cfg.data.max_length) if cfg.data.packing else rows


def _build_student(cfg: Config, teacher_model: Any, teacher_info: ModelInfo) -> torch.nn.Module:
    from textdistill.models.causal_lm import load_pretrained_student, shrink_causal_lm, truncate_causal_lm
    from textdistill.models.students import evenly_spread_layers

    s = cfg.student
    if s.type == "pretrained":
        return load_pretrained_student(s.path, teacher_info)
    if s.type == "truncate":
        layers = s.layers or evenly_spread_layers(teacher_info.num_layers, s.num_layers)
        return truncate_causal_lm(teacher_model, list(layers))
    return shrink_causal_lm(
        teacher_model,
        num_layers=s.num_layers,
        hidden_size=s.hidden_size,
        num_heads=s.num_heads,
        num_kv_heads=s.num_kv_heads,
        intermediate_size=s.intermediate_size,
        init_embeddings_from_teacher=s.init_embeddings_from_teacher,
    )


def _stores(cfg: Config, rows: dict[str, list], teacher_id: str) -> dict[str, Any]:
    from textdistill.training.teacher_cache.lm_topk import find_lm_topk_store

    root = default_cache_root(cfg)
    return {
        split: find_lm_topk_store(root / f"lm-topk-{split}", teacher_id, r, cfg.teacher.store_topk)
        for split, r in rows.items()
    }


def _loader(rows: list[dict], collate: Any, batch_size: int, seed: int):
    def batches(epoch: int, start: int):
        order = list(range(len(rows)))
        random.Random(f"{seed}-{epoch}").shuffle(order)
        for b, i in enumerate(range(0, len(order), batch_size)):
            if b >= start:
                yield collate([rows[j] for j in order[i : i + batch_size]])

    return batches


def run_lm_training(
    cfg: Config, mode: str = "distill", *, quiet: bool = False, resume: bool = False
) -> LMRunResult:
    """Distil a causal-LM teacher into a causal-LM student as configured (see the module docstring);
    ``resume`` continues the run in ``output_dir`` bit-identically (:mod:`textdistill.training.lm_run_dir`).

    Raises:
        ConfigError: every config problem, before any weights load.
        DataError, ModelError: unreadable data, prompts longer than max_length, models that do not load.
    """
    from textdistill.data.lm_data import LMCollator, pad_token_of
    from textdistill.evaluation.lm_metrics import evaluate_lm
    from textdistill.losses.objective import Objective
    from textdistill.models.causal_lm import HFCausalLM, causal_lm_info, load_causal_lm, save_causal_lm
    from textdistill.training.distiller import Distiller, LiveTeacher
    from textdistill.training.lm_checks import lm_tokenizer
    from textdistill.training.lm_run_dir import open_lm_run
    from textdistill.training.teacher_cache.lm_topk import (
        StoredLMTeacher,
        build_lm_topk_store,
        teacher_files_hash,
    )

    t_start = time.perf_counter()
    cfg, config = validate_lm_run(cfg, mode, resume=resume)
    lm_run = open_lm_run(cfg, mode, resume=resume, quiet=quiet)
    torch.manual_seed(cfg.train.seed)
    teacher_info = causal_lm_info(config)
    tokenizer = lm_tokenizer(cfg)
    collate = LMCollator(pad_token_of(tokenizer))
    rows = {
        "train": _rows(cfg, tokenizer, cfg.data.train, cfg.data.max_train_examples),
        "dev": _rows(cfg, tokenizer, cfg.data.dev, cfg.data.max_eval_examples),
    }
    use_store = cfg.teacher.store_topk is not None
    teacher_id = teacher_files_hash(cfg.teacher.path, cfg.teacher.gguf_file) if use_store else ""
    stores = _stores(cfg, rows, teacher_id) if use_store else {}
    warm = use_store and all(s is not None for s in stores.values())
    teacher = None
    if not warm or cfg.student.type != "pretrained":
        teacher = load_causal_lm(
            cfg.teacher.path, gguf_file=cfg.teacher.gguf_file, trust_remote_code=cfg.teacher.trust_remote_code
        )
    if use_store and not warm:
        root = default_cache_root(cfg)
        for split, r in rows.items():
            stores[split] = stores[split] or build_lm_topk_store(
                teacher, r, root / f"lm-topk-{split}", cfg.teacher.store_topk, collate=collate,
                batch_size=cfg.train.eval_batch_size, teacher_id=teacher_id,
            )  # fmt: skip
    student = HFCausalLM(_build_student(cfg, teacher.model if teacher else None, teacher_info))
    if use_store:
        teacher = None  # the stores cover the data: the teacher leaves memory before training
        gc.collect()
    objective = Objective(cfg.objective, teacher_info, causal_lm_info(student.config))
    source = (
        StoredLMTeacher(stores["train"])
        if use_store
        else LiveTeacher(teacher, objective.teacher_request(), "fp32", torch.device("cpu"))
    )
    dev_teacher = StoredLMTeacher(stores["dev"]) if use_store else teacher
    dev_batches = [
        collate(rows["dev"][i : i + cfg.train.eval_batch_size])
        for i in range(0, len(rows["dev"]), cfg.train.eval_batch_size)
    ]
    before = evaluate_lm(student, dev_teacher, dev_batches)
    distiller = Distiller(
        student=student,
        objective=objective,
        train_cfg=cfg.train,
        train_loader_fn=_loader(rows["train"], collate, cfg.train.batch_size, cfg.train.seed),
        steps_per_epoch=math.ceil(len(rows["train"]) / cfg.train.batch_size),
        teacher=source,
        evaluator=lambda m: evaluate_lm(m, dev_teacher, dev_batches),
        metric="token_kl",
        greater_is_better=False,
        callbacks=lm_run.callbacks(),
    )
    state, train_s = lm_run.fit(distiller)  # restores a resume's checkpoint (RNG states last), then fits
    final = distiller.unwrapped_student()
    dev = evaluate_lm(final, dev_teacher, dev_batches)
    model_dir = save_causal_lm(final, tokenizer, lm_run.run_dir / "model")
    details = {
        "dev_before": before,
        "dev": dev,
        "steps": state.step,
        "train_s": round(train_s, 2),
        "total_s": round(time.perf_counter() - t_start, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "teacher_store": {s: str(v.directory) for s, v in stores.items()} if use_store else None,
        "teacher_store_warm": warm,
        "teacher_in_memory_during_training": teacher is not None,
        "student_parameters": sum(p.numel() for p in final.parameters()),
        "config": asdict(cfg),
    }
    lm_run.finish(details)
    if not quiet:
        print(f"textdistill: causal-LM student saved to {model_dir}")
    return LMRunResult(lm_run.run_dir, model_dir, dev, details)
