"""Where the time of a distillation epoch goes: teacher, student forward, backward, optimizer, data.

Runs the same one-epoch distill job several ways in one invocation and times the phases by wrapping them
(class-level wrappers, no change to the loop):

    before          live teacher, random batches (no length grouping): the plain loop every toolkit has
    live, grouped   live teacher, length-grouped batches (less padding)
    cache, grouped  teacher-output cache (cold: built inside the run) + length-grouped batches: the default
    + compile       the same with train.compile=true (only with --compile; inductor needs a C++ compiler)

Phases:

    teacher         LiveTeacher.__call__ / CachedTeacher.__call__ inside the steps
    cache_pass      build_teacher_source: the one teacher inference pass that fills the cache
    student         the student's forward (HFClassifier / BiLSTM in train mode)
    backward        Accelerator.backward
    optimizer       AdamW.step
    loss            Objective.forward (the loss terms and their projections)
    step_other      the rest of Distiller.train_step (loss, clipping, scheduler, logging: the loop's overhead)
    data            Collator.__call__ (padding and tensor building)
    evaluation      the per-epoch dev evaluation of the student
    teacher_dev     the teacher's dev evaluation (for retention; cached beside the teacher cache)

Example:
    python benchmarks/profile_distill.py --data ../shared/data/sst2 --teacher runs/bench-sst2/teacher/model \
        --train-examples 2000
    python benchmarks/profile_distill.py ... --job intermediate --only cache \
        --out benchmarks/results/profile_intermediate.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

TIMES: dict[str, float] = defaultdict(float)
COUNTS: dict[str, int] = defaultdict(int)


def timed(name: str, fn, predicate=None):
    def wrapper(*args, **kwargs):
        if predicate is not None and not predicate(*args, **kwargs):
            return fn(*args, **kwargs)
        if name == "step_total":  # (distiller, batch): count real and padded tokens of training batches
            mask = args[1]["attention_mask"]
            COUNTS["real_tokens"] += int(mask.sum())
            COUNTS["batch_tokens"] += mask.numel()
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - t
            COUNTS[name] += 1

    return wrapper


@contextmanager
def instrumented():
    """Wrap the phases of the loop at class level; restore them afterwards."""
    import accelerate

    from textdistill.data.collate import Collator
    from textdistill.losses.objective import Objective
    from textdistill.models.bilstm import BiLSTMClassifier
    from textdistill.models.hf import HFClassifier
    from textdistill.training import runner
    from textdistill.training.distiller import Distiller, LiveTeacher
    from textdistill.training.teacher_cache import source as teacher_cache
    from textdistill.training.teacher_cache.cached import CachedTeacher

    patches = [
        (LiveTeacher, "__call__", "teacher", None),
        (CachedTeacher, "__call__", "teacher", None),
        (HFClassifier, "forward", "student", lambda self, *a, **k: self.training),
        (BiLSTMClassifier, "forward", "student", lambda self, *a, **k: self.training),
        (accelerate.Accelerator, "backward", "backward", None),
        (torch.optim.AdamW, "step", "optimizer", None),
        (Collator, "__call__", "data", None),
        (Objective, "forward", "loss", None),
        (Distiller, "train_step", "step_total", None),
        (Distiller, "evaluate", "evaluation", None),
    ]
    patches += [
        (teacher_cache, "build_teacher_source", "cache_pass", None),
        (runner, "teacher_dev_evaluation", "teacher_dev", None),
    ]
    saved = [(cls, attr, getattr(cls, attr)) for cls, attr, _, _ in patches]
    for cls, attr, name, pred in patches:
        setattr(cls, attr, timed(name, getattr(cls, attr), pred))
    try:
        yield
    finally:
        for cls, attr, fn in saved:
            setattr(cls, attr, fn)


def main(argv: list[str] | None = None) -> int:
    from textdistill.config.schema import (
        Config,
        DataConfig,
        LayerMapConfig,
        LossTermConfig,
        StudentConfig,
        TeacherConfig,
        TrainConfig,
    )
    from textdistill.training.runner import run_training

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--work", default="runs/profile")
    ap.add_argument("--train-examples", type=int, default=2000)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--out", default="benchmarks/results/profile_distill.json")
    ap.add_argument("--compile", action="store_true", help="also profile train.compile=true")
    ap.add_argument("--only", nargs="*", help="run only the variants whose label contains one of these")
    ap.add_argument(
        "--job",
        choices=["logit", "intermediate"],
        default="logit",
        help="logit: kd_kl (T=2). intermediate: the TinyBERT-style job of vs_textbrewer.py (hidden-state MSE "
        "+ attention-score MSE on the spread 6->4 layer map, + kd_kl T=1)",
    )
    args = ap.parse_args(argv)
    if args.job == "logit":
        objective = [LossTermConfig(name="kd_kl", params={"temperature": 2.0})]
    else:
        pairs = LayerMapConfig(strategy="explicit", pairs=[[0, 0], [1, 2], [2, 3], [3, 4], [4, 6]])
        objective = [
            LossTermConfig(name="hidden_mse", layer_map=pairs),
            LossTermConfig(name="attention_mse", layer_map=pairs),
            LossTermConfig(name="kd_kl", params={"temperature": 1.0}),
        ]

    data = DataConfig(
        train=str(Path(args.data) / "train.tsv"),
        dev=str(Path(args.data) / "dev.tsv"),
        max_train_examples=args.train_examples,
        max_eval_examples=200,
        max_length=args.max_length,
    )
    results = {}
    import shutil

    variants = [
        ("before", False, False, False),
        ("live, grouped", False, True, False),
        ("cache, grouped", True, True, False),
    ]
    if args.compile:
        variants.append(("+ compile", True, True, True))
    if args.only:
        variants = [v for v in variants if any(w in v[0] for w in args.only)]
    for label, cache, grouped, compiled in variants:
        TIMES.clear()
        COUNTS.clear()
        cache_dir = Path(args.work) / "cache"
        shutil.rmtree(cache_dir, ignore_errors=True)  # every run starts cold: nothing reused between them
        cfg = Config(
            teacher=TeacherConfig(path=args.teacher, cache=cache, cache_dir=str(cache_dir)),
            student=StudentConfig(
                type="shrink", num_layers=4, hidden_size=192, num_heads=12, intermediate_size=768
            ),
            data=replace(data, group_by_length=grouped),
            objective=objective,
            train=TrainConfig(
                epochs=1, batch_size=32, lr=5e-4, progress=False, keep_checkpoints=0, compile=compiled
            ),
            output_dir=str(Path(args.work) / "".join(c if c.isalnum() else "-" for c in label)),
            overwrite=True,
            report=False,
        )
        t0 = time.perf_counter()
        with instrumented():
            run_training(cfg, "distill", quiet=True)
        wall = time.perf_counter() - t0
        steps = COUNTS["step_total"]
        phases = {k: round(v, 2) for k, v in TIMES.items()}
        inside = sum(TIMES[k] for k in ("teacher", "student", "loss", "backward", "optimizer"))
        phases["step_other"] = round(TIMES["step_total"] - inside, 2)
        padding = 1 - COUNTS["real_tokens"] / max(COUNTS["batch_tokens"], 1)
        results[label] = {
            "wall_s": round(wall, 1),
            "steps": steps,
            "padding_share": round(padding, 4),
            "phases_s": phases,
        }
        print(label, json.dumps(results[label]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"args": vars(args), "threads": torch.get_num_threads(), **results}, indent=2)
    )
    print(table(results))
    return 0


def table(results: dict) -> str:
    keys = [
        "cache_pass",
        "teacher",
        "student",
        "loss",
        "backward",
        "optimizer",
        "step_other",
        "data",
        "evaluation",
        "teacher_dev",
        "step_total",
    ]
    lines = ["| phase | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for k in keys:
        lines.append(
            f"| {k} | " + " | ".join(f"{r['phases_s'].get(k, 0.0):.1f} s" for r in results.values()) + " |"
        )
    lines.append(
        "| padding share of training batches | "
        + " | ".join(f"{100 * r['padding_share']:.1f}%" for r in results.values())
        + " |"
    )
    lines.append(
        "| wall (run incl. load, cache pass, eval) | "
        + " | ".join(f"{r['wall_s']:.1f} s" for r in results.values())
        + " |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
