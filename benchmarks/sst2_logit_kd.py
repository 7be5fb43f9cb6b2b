"""SST-2 benchmark: fine-tune (or reuse) the MiniLM teacher, distil several students, measure them.

Writes ``<work>/sst2_results.json`` and the table between the markers of ``docs/results.md``.

Example (the command behind docs/results.md):
    python benchmarks/sst2_logit_kd.py --data ../shared/data/sst2 --work runs/bench-sst2 \
        --train-examples 8000 --teacher-epochs 1 --student-epochs 3

Students (all distilled on the same examples, same seed, same number of optimizer steps):
    truncate-2L   teacher layers 3 and 6 copied (DistilBERT-style), logit KD
    shrink-4L-192 4 layers, hidden 192, 12 heads, random init (embeddings PCA-initialised), logit KD
    bilstm        Tang et al. 2019: 1-layer BiLSTM (300/300), logit MSE
    shrink-4L-192 + tinybert   intermediate stage (embedding/hidden/attention MSE, evenly spread map), then
                               prediction stage (soft CE); each stage half of the steps
    shrink-4L-192 + minilmv2   last-layer Q-Q/K-K/V-V relations, then logit KD; each stage half of the steps

With ``--augment N`` two more BiLSTM runs use Tang et al. augmentation (masking + n-gram sampling, N new
examples per sentence, relabelled by the teacher's soft labels): one with the same number of epochs as the
plain BiLSTM (N+1 times the steps) and one with the same number of optimizer steps.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch

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

LOGIT = [LossTermConfig(name="kd_kl", weight=1.0, params={"temperature": 2.0})]
SHRINK = StudentConfig(type="shrink", num_layers=4, hidden_size=192, num_heads=12, intermediate_size=768)


def students() -> dict[str, list[tuple[StudentConfig, list[LossTermConfig], float, float]]]:
    """name -> stages of (student, objective, lr, share of the step budget)."""
    # 6 teacher layers onto 4: TinyBERT's uniform map needs a multiple, so the evenly spread explicit map
    # (student layer i <- teacher layer 2, 3, 4, 6; embeddings matched by embedding_mse).
    spread = LayerMapConfig(strategy="explicit", pairs=[[1, 2], [2, 3], [3, 4], [4, 6]])
    tinybert_mid = [
        LossTermConfig(name="embedding_mse"),
        LossTermConfig(name="hidden_mse", layer_map=spread),
        LossTermConfig(name="attention_mse", layer_map=spread),
    ]
    minilm = [LossTermConfig(name="minilmv2", params={"relations": ["qq", "kk", "vv"]})]
    return {
        "truncate-2L (logit KD)": [(StudentConfig(type="truncate", layers=[2, 5]), LOGIT, 1e-4, 1.0)],
        "shrink-4L-192 (logit KD)": [(SHRINK, LOGIT, 5e-4, 1.0)],
        "bilstm (logit MSE)": [(StudentConfig(type="bilstm"), [LossTermConfig(name="kd_mse")], 1e-3, 1.0)],
        "shrink-4L-192 (TinyBERT: intermediate, then prediction)": [
            (SHRINK, tinybert_mid, 5e-4, 0.5),
            (None, [LossTermConfig(name="kd_soft_ce", params={"temperature": 1.0})], 5e-4, 0.5),
        ],
        "shrink-4L-192 (MiniLMv2 relations, then logit KD)": [
            (SHRINK, minilm, 5e-4, 0.5),
            (None, LOGIT, 5e-4, 0.5),
        ],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with SST-2 train.tsv and dev.tsv (GLUE format)")
    ap.add_argument("--work", default="runs/bench-sst2", help="where runs are written (teacher reused)")
    ap.add_argument("--teacher", help="an already fine-tuned SST-2 teacher dir (skips fine-tuning)")
    ap.add_argument("--train-examples", type=int, default=8000, help="seeded subset of SST-2 train")
    ap.add_argument("--teacher-epochs", type=float, default=1.0)
    ap.add_argument("--student-epochs", type=float, default=3.0)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--only", nargs="*", help="run only students whose name contains one of these words")
    ap.add_argument("--results-md", default="docs/results.md")
    ap.add_argument("--cache", action="store_true", help="use the teacher-output cache")
    ap.add_argument(
        "--reuse", action="store_true", help="reuse finished student runs of an earlier invocation"
    )
    ap.add_argument(
        "--augment", type=int, default=0, help="also run BiLSTM + Tang augmentation (N per input)"
    )
    args = ap.parse_args(argv)

    from textdistill.demo import speed_of, teacher_base_path

    work = Path(args.work)
    data = DataConfig(
        train=str(Path(args.data) / "train.tsv"),
        dev=str(Path(args.data) / "dev.tsv"),
        max_train_examples=args.train_examples,
        max_length=args.max_length,
    )
    results: dict = {"args": vars(args), "machine": machine(), "models": {}}
    previous = work / "sst2_results.json"
    if args.only and previous.exists():  # a partial re-run adds to (or replaces) models of the last run
        results["models"] = json.loads(previous.read_text())["models"]
    t0 = time.time()
    teacher_dir = Path(args.teacher) if args.teacher else work / "teacher" / "model"
    if not (teacher_dir / "config.json").exists():
        cfg = Config(
            student=StudentConfig(type="pretrained", path=str(teacher_base_path())),
            data=data,
            objective=[LossTermConfig(name="hard_ce")],
            train=TrainConfig(epochs=args.teacher_epochs, batch_size=32, lr=5e-5, progress=False),
            output_dir=str(work / "teacher"),
            overwrite=True,
        )
        run_training(cfg, "finetune")
    results["teacher_seconds"] = time.time() - t0
    teacher_eval = json.loads((teacher_dir.parent / "eval_results.json").read_text())
    results["models"]["teacher (MiniLM-L6-H384)"] = {
        "dev": teacher_eval["dev"],
        "parameters": teacher_eval["parameters"],
        "speed": speed_of(teacher_dir, data),
    }
    runs = students()
    if args.augment:
        steps_plain = -(-args.train_examples // 32) * args.student_epochs
        bil = (StudentConfig(type="bilstm"), [LossTermConfig(name="kd_mse")], 1e-3, 1.0)
        runs[f"bilstm (logit MSE) + Tang aug x{args.augment}, same epochs"] = [bil]
        runs[f"bilstm (logit MSE) + Tang aug x{args.augment}, same steps"] = [bil + (int(steps_plain),)]
    for name, stages in runs.items():
        if args.only and not any(w in name for w in args.only):
            continue
        augment = {"method": "tang", "n_aug": args.augment} if "Tang aug" in name else None
        started = time.time()
        prev = None
        for i, (student, objective, lr, share, *max_steps) in enumerate(stages):
            slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:60]
            out = work / f"{slug}-stage{i + 1}"
            scfg = student if student is not None else StudentConfig(type="pretrained", path=str(prev))
            cfg = Config(
                teacher=TeacherConfig(path=str(teacher_dir), cache=args.cache),
                student=scfg,
                data=data,
                objective=objective,
                train=TrainConfig(
                    epochs=args.student_epochs * share,
                    max_steps=max_steps[0] if max_steps else None,
                    batch_size=32,
                    lr=lr,
                    warmup_ratio=0.06,
                    progress=False,
                    keep_checkpoints=0,
                ),
                output_dir=str(out),
                overwrite=True,
                report=False,
            )
            if augment:
                from textdistill.config.augment import AugmentConfig

                cfg = replace(cfg, augment=AugmentConfig(**augment))
            if len(stages) > 1 and i == 0:
                cfg = replace(cfg, train=replace(cfg.train, metric="last"))
            done = out / "run.json"
            if args.reuse and done.exists() and json.loads(done.read_text()).get("status") == "finished":
                run = SimpleNamespace(run_dir=out, model_dir=out / "model")  # finished earlier: reuse
            else:
                run = run_training(cfg, "distill")
            prev = run.model_dir
        ev = json.loads((run.run_dir / "eval_results.json").read_text())
        results["models"][name] = {
            "dev": ev["dev"],
            "parameters": ev["parameters"],
            "agreement": ev.get("dev_agreement_with_teacher"),
            "speed": speed_of(run.model_dir, data),
            "seconds": time.time() - started,
            "run_dir": str(run.run_dir),
        }
        print(json.dumps({name: results["models"][name]["dev"]}), flush=True)
    results["total_seconds"] = time.time() - t0
    (work / "sst2_results.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    print(table)
    write_section(Path(args.results_md), "sst2-logit-kd", table, " ".join(sys.argv))
    return 0


def machine() -> dict:
    from textdistill.training.precision import cpu_bf16_flags, resolve_precision

    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "bf16_flags": sorted(cpu_bf16_flags()),
        "precision_auto": resolve_precision("auto", "cpu"),
        "torch": torch.__version__,
    }


def markdown(results: dict) -> str:
    teacher = results["models"]["teacher (MiniLM-L6-H384)"]
    t_acc, t_par = teacher["dev"]["accuracy"], teacher["parameters"]["total"]
    t_eps = teacher["speed"]["throughput_eps"]
    lines = [
        "| model | SST-2 dev acc | % of teacher | params | compression | CPU ex/s (b32) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in results["models"].items():
        acc, par, eps = m["dev"]["accuracy"], m["parameters"]["total"], m["speed"]["throughput_eps"]
        lines.append(
            f"| {name} | {acc:.4f} | {100 * acc / t_acc:.1f}% | {par / 1e6:.2f}M | {t_par / par:.1f}x | "
            f"{eps:.0f} | {eps / t_eps:.1f}x |"
        )
    return "\n".join(lines)


def write_section(path: Path, key: str, table: str, command: str) -> None:
    """Replace (or append) the section between <!-- key:start --> and <!-- key:end --> markers."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    body = f"{start}\nCommand: `{command}`\n\n{table}\n{end}"
    text = path.read_text() if path.exists() else "# Results\n"
    if start in text and end in text:
        text = text[: text.index(start)] + body + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    path.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
