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
from textdistill.training.lm_on_policy import on_policy_problems
from textdistill.training.teacher_cache.source import default_cache_root

LM_STUDENT_TYPES = ("pretrained", "truncate", "shrink")
# Hidden-state terms that work between decoders (hooks-free: HF's output_hidden_states; learned projections
# when the widths differ; layer maps between the teacher's and the student's decoder layers).
LM_HIDDEN_TERMS = ("hidden_mse", "hidden_cos", "embedding_mse")


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
    problems.extend(_term_problems(cfg))
    problems.extend(on_policy_problems(cfg))
    return problems


def _term_problems(cfg: Config) -> list[str]:
    """Objective terms a causal-LM run cannot train: classifier terms, tempered or hidden-state terms with a
    top-k store (which keeps temperature-1 log-probabilities and no hidden states)."""
    problems = []
    store = cfg.teacher.store_topk is not None
    for i, term in enumerate(cfg.objective):
        if term.name in LM_HIDDEN_TERMS:
            if store:
                problems.append(
                    f"objective.{i}: {term.name} compares hidden states, which the top-k teacher-logit store "
                    "does not keep (it would cost layers x width floats per token, more than the logits it "
                    "saves); run the teacher live with teacher.store_topk=null, or drop the term"
                )
        elif not term.name.startswith("lm_"):
            lm_terms = ", ".join([n for n in LOSSES.names() if n.startswith("lm_")] + list(LM_HIDDEN_TERMS))
            problems.append(f"objective.{i}: {term.name!r} is not a causal-LM term; choose from {lm_terms}")
        elif store and term.params.get("temperature", 1.0) != 1.0:
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


@dataclass
class _LMRun:
    """What the set-up phase of a run produces (before the loop)."""

    cfg: Config
    teacher_info: ModelInfo
    tokenizer: Any
    collate: Any
    rows: dict[str, list]
    stores: dict[str, Any]
    warm: bool
    teacher: Any  # HFCausalLM or None (released, or never loaded)
    student: Any  # HFCausalLM
    teacher_samples: list | None = None  # greedy teacher continuations of the report's prompts

    @property
    def use_store(self) -> bool:
        return self.cfg.teacher.store_topk is not None

    def load_teacher(self) -> Any:
        from textdistill.models.causal_lm import load_causal_lm

        t = self.cfg.teacher
        return load_causal_lm(t.path, gguf_file=t.gguf_file, trust_remote_code=t.trust_remote_code)


def _set_up(cfg: Config, config: Any) -> _LMRun:
    """Tokenizer, rows, stores (built or found), the student; the teacher only where it is needed."""
    from textdistill.data.lm_data import LMCollator, pad_token_of
    from textdistill.models.causal_lm import HFCausalLM, causal_lm_info
    from textdistill.training.lm_checks import lm_tokenizer
    from textdistill.training.teacher_cache.lm_topk import build_lm_topk_store, teacher_files_hash

    teacher_info = causal_lm_info(config)
    tokenizer = lm_tokenizer(cfg)
    collate = LMCollator(pad_token_of(tokenizer))
    rows = {
        "train": _rows(cfg, tokenizer, cfg.data.train, cfg.data.max_train_examples),
        "dev": _rows(cfg, tokenizer, cfg.data.dev, cfg.data.max_eval_examples),
    }
    run = _LMRun(cfg, teacher_info, tokenizer, collate, rows, {}, False, None, None)
    teacher_id = teacher_files_hash(cfg.teacher.path, cfg.teacher.gguf_file) if run.use_store else ""
    run.stores = _stores(cfg, rows, teacher_id) if run.use_store else {}
    run.warm = run.use_store and all(s is not None for s in run.stores.values())
    if not run.warm or cfg.student.type != "pretrained":
        run.teacher = run.load_teacher()
    if run.use_store and not run.warm:
        root = default_cache_root(cfg)
        for split, r in rows.items():
            run.stores[split] = run.stores[split] or build_lm_topk_store(
                run.teacher, r, root / f"lm-topk-{split}", cfg.teacher.store_topk, collate=collate,
                batch_size=cfg.train.eval_batch_size, teacher_id=teacher_id,
            )  # fmt: skip
    run.student = HFCausalLM(_build_student(cfg, run.teacher.model if run.teacher else None, teacher_info))
    if run.teacher is not None:  # the report's teacher samples now, while the teacher is in memory anyway
        run.teacher_samples = _samples_of(run, run.teacher)
    if run.use_store and cfg.lm.on_policy_fraction == 0:
        run.teacher = None  # the stores cover the data: the teacher leaves memory before training
        gc.collect()
    return run


def _teacher_sources(run: _LMRun, objective: Any) -> tuple[Any, Any]:
    """The training loop's teacher source (store or live; on-policy batches always live) and the dev
    teacher."""
    from textdistill.training.distiller import LiveTeacher
    from textdistill.training.lm_on_policy import OnPolicyTeacher
    from textdistill.training.teacher_cache.lm_topk import StoredLMTeacher

    def live(model: Any) -> LiveTeacher:
        # On the training device; in fp32 like the store's build, so a live teacher and a full store agree.
        from accelerate import PartialState

        device = PartialState().device
        return LiveTeacher(model.to(device), objective.teacher_request(), "fp32", device)

    dev_teacher = StoredLMTeacher(run.stores["dev"]) if run.use_store else run.teacher
    if not run.use_store:
        source = off_policy = live(run.teacher)

        def load_live() -> LiveTeacher:  # the teacher in memory scores both kinds of batch
            return off_policy
    else:
        source = off_policy = StoredLMTeacher(run.stores["train"])

        def load_live() -> LiveTeacher:  # the first on-policy batch: the store cannot score sampled text
            run.teacher = run.teacher or run.load_teacher()
            return live(run.teacher)

    if run.cfg.lm.on_policy_fraction > 0:
        # a teacher already in memory (it built the store or the student) stays for the on-policy batches;
        # otherwise it is loaded at the first of them
        source = OnPolicyTeacher(off_policy, load_live)
    return source, dev_teacher


def _train_batches(run: _LMRun) -> Any:
    """The loader function: seeded off-policy batches, a fraction of them replaced by student samples."""
    from textdistill.training.lm_on_policy import OnPolicyBatches

    cfg = run.cfg
    base = _loader(run.rows["train"], run.collate, cfg.train.batch_size, cfg.train.seed)
    if cfg.lm.on_policy_fraction == 0:
        return base
    return OnPolicyBatches(
        base, run.student, run.collate, cfg.lm, seed=cfg.train.seed, max_length=cfg.data.max_length,
        eos_token_id=run.tokenizer.eos_token_id, pad_token_id=run.collate.pad,
    )  # fmt: skip


def run_lm_training(
    cfg: Config, mode: str = "distill", *, quiet: bool = False, resume: bool = False
) -> LMRunResult:
    """Distil a causal-LM teacher into a causal-LM student as configured (see the module docstring);
    ``resume`` continues the run in ``output_dir`` bit-identically (:mod:`textdistill.training.lm_run_dir`).

    Raises:
        ConfigError: every config problem, before any weights load.
        DataError, ModelError: unreadable data, prompts longer than max_length, models that do not load.
    """
    from textdistill.evaluation.lm_metrics import evaluate_lm
    from textdistill.losses.objective import Objective
    from textdistill.models.causal_lm import causal_lm_info
    from textdistill.training.distiller import Distiller
    from textdistill.training.lm_run_dir import open_lm_run

    t_start = time.perf_counter()
    cfg, config = validate_lm_run(cfg, mode, resume=resume)
    lm_run = open_lm_run(cfg, mode, resume=resume, quiet=quiet)
    torch.manual_seed(cfg.train.seed)
    run = _set_up(cfg, config)
    objective = Objective(cfg.objective, run.teacher_info, causal_lm_info(run.student.config))
    source, dev_teacher = _teacher_sources(run, objective)
    bs = cfg.train.eval_batch_size
    dev_batches = [run.collate(run.rows["dev"][i : i + bs]) for i in range(0, len(run.rows["dev"]), bs)]
    before = evaluate_lm(run.student, dev_teacher, dev_batches)
    loader = _train_batches(run)
    distiller = Distiller(
        student=run.student,
        objective=objective,
        train_cfg=cfg.train,
        train_loader_fn=loader,
        steps_per_epoch=math.ceil(len(run.rows["train"]) / cfg.train.batch_size),
        teacher=source,
        evaluator=lambda m: evaluate_lm(m, dev_teacher, dev_batches),
        metric="token_kl",
        greater_is_better=False,
        callbacks=lm_run.callbacks(),
    )
    state, train_s = lm_run.fit(distiller)  # restores a resume's checkpoint (RNG states last), then fits
    final = distiller.unwrapped_student()
    details = {
        "dev_before": before,
        "dev": evaluate_lm(final, dev_teacher, dev_batches),
        "steps": state.step,
        "on_policy_batches": getattr(loader, "sampled_batches", 0),
        "train_s": round(train_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "teacher_store": {s: str(v.directory) for s, v in run.stores.items()} if run.use_store else None,
        "teacher_store_warm": run.warm,
        "teacher_in_memory_during_training": run.teacher is not None,
        "student_parameters": sum(p.numel() for p in final.parameters()),
    }
    return _finish(run, lm_run, final, details, t_start, quiet)


def _samples_of(run: _LMRun, model: Any) -> list[list[int]]:
    """Greedy continuations of the report's held-out prompts by ``model``."""
    from textdistill.evaluation.lm_report import greedy_continuations, sample_prompts

    prompts, _ = sample_prompts(run.rows["dev"], run.cfg.lm, run.cfg.train.seed)
    return greedy_continuations(model, run.tokenizer, prompts, run.cfg.lm, run.cfg.data.max_length)


def _finish(
    run: _LMRun, lm_run: Any, final: Any, details: dict[str, Any], t_start: float, quiet: bool
) -> LMRunResult:
    """Samples, the saved model, results.json (through the run directory: run.json ``finished``), report.md."""
    from textdistill.evaluation.lm_report import write_lm_report
    from textdistill.models.causal_lm import save_causal_lm

    cfg = run.cfg
    run_dir = lm_run.run_dir
    model_dir = save_causal_lm(final, run.tokenizer, run_dir / "model")
    if cfg.lm.samples > 0:
        from textdistill.evaluation.lm_report import format_samples, sample_prompts

        prompts, references = sample_prompts(run.rows["dev"], cfg.lm, cfg.train.seed)
        # A teacher that never had to be loaded (a warm store) is loaded now, after training and after
        # peak_rss_mb was taken: it is not part of training's memory.
        teacher = run.teacher_samples or _samples_of(run, run.teacher or run.load_teacher())
        details["samples"] = format_samples(
            run.tokenizer, prompts, references, teacher, _samples_of(run, final)
        )
    details["total_s"] = round(time.perf_counter() - t_start, 2)
    details["config"] = asdict(cfg)
    write_lm_report(run_dir / "report.md", details)
    lm_run.finish(details)
    if not quiet:
        print(f"textdistill: causal-LM student saved to {model_dir}")
    return LMRunResult(run_dir, model_dir, details["dev"], details)
