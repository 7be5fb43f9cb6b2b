"""SST-2 compact students: pretrained MiniLM-L3 with a trimmed vocabulary, cross-tokenizer logit KD, ablations.

Every student is distilled from one teacher on the same seeded SST-2 subset (same seed, epochs, batch), the
teacher's outputs cached once (the students share the cache: it is keyed by the teacher's encoding), then
all models are measured side by side in ONE ``run_benchmark`` invocation: parameters (total and
non-embedding), CPU examples/s at batch 1 and 32, onnxruntime int8 examples/s, dev accuracy, % of the teacher.

Students (``--students`` picks a subset):
    minilm-l3-trim      provisioned paraphrase-MiniLM-L3-v2, vocabulary trimmed to the training text (auto),
                        cross-tokenizer logit KD (kd_kl T=2 + hard labels, the `compact` recipe's defaults)
    minilm-l3-full      the same with the full 30,522-token vocabulary       (ablation: trimming off)
    minilm-l3-cap4k     the same with the 4,000 most frequent tokens           (a stronger size cut)
    truncate-2l-trim    the teacher's layers 3 and 6, trimmed vocabulary       (ablation: pretrained init
                        from MiniLM-L3 off; initialised from the teacher instead)
    truncate-2l-full    the teacher's layers 3 and 6, the teacher's vocabulary (same-vocab student: the
                        cross-tokenizer path off)
    bilstm-glove-trim   Tang et al. BiLSTM (GloVe 50-d init, 300 hidden), trimmed vocabulary, logit MSE

Example (the command behind docs/results.md's compact section; 1 thread, as the VM was shared):
    textdistill provision --root models
    OMP_NUM_THREADS=1 python benchmarks/sst2_compact.py --teacher ../shared/models/teacher-sst2-minilm \
        --models models --data ../shared/data/sst2 --work runs/bench-compact \
        --train-examples 12000 --epochs 1 --threads 1 \
        --students minilm-l3-trim bilstm-glove-trim minilm-l3-full

``--models`` is the folder ``textdistill provision --root DIR`` wrote. A finished student run is reused when
the script is run again (delete its run directory to retrain it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from textdistill.config.loader import load_config
from textdistill.training.runner import run_training

KD = "objective=[{name: kd_kl, weight: 0.5, params: {temperature: 2.0}}, {name: hard_ce, weight: 0.5}]"
MSE = "objective=[{name: kd_mse}]"


def variants(models: Path) -> dict[str, list[str]]:
    """Student name -> config overrides (on top of the shared teacher/data/train settings)."""
    minilm = models / "paraphrase-MiniLM-L3-v2"
    glove = models / "glove" / "glove.6B.50d.txt"
    pre = ["student.type=pretrained", f"student.path={minilm}", KD, "train.lr=1e-4"]
    trunc = ["student.type=truncate", "student.layers=[2,5]", KD, "train.lr=1e-4"]
    return {
        "minilm-l3-trim": [*pre, "student.vocab=auto"],
        "minilm-l3-full": [*pre, "student.vocab=full"],
        "minilm-l3-cap4k": [*pre, "student.vocab=4000"],
        "truncate-2l-trim": [*trunc, "student.vocab=auto"],
        "truncate-2l-full": [*trunc, "student.vocab=full"],
        "bilstm-glove-trim": [
            "student.type=bilstm",
            "student.vocab=auto",
            f"student.glove={glove}",
            "student.embedding_dim=50",
            "student.lstm_hidden=300",
            MSE,
            "train.lr=1e-3",
            "train.weight_decay=0.0",
            "train.warmup_ratio=0.0",
        ],
    }


def distill(name: str, overrides: list[str], args: argparse.Namespace) -> dict:
    """Train one student (or reuse its finished run); returns its run summary."""
    out = Path(args.work) / name
    if (out / "eval_results.json").is_file() and (out / "model").is_dir():
        print(f"[{name}] reusing {out}")
        return json.loads((out / "run.json").read_text(encoding="utf-8"))
    data = Path(args.data)
    cfg = load_config(
        None,
        [
            f"teacher.path={args.teacher}",
            f"teacher.cache_dir={Path(args.work) / 'cache'}",
            f"data.train={data / 'train.tsv'}",
            f"data.dev={data / 'dev.tsv'}",
            f"data.max_train_examples={args.train_examples}",
            f"output_dir={out}",
            f"train.epochs={args.epochs}",
            "train.batch_size=32",
            "train.seed=0",
            "train.progress=false",
            "train.keep_checkpoints=0",
            "report=false",
            "overwrite=true",
            *overrides,
        ],
    )
    start = time.time()
    result = run_training(cfg, "distill", quiet=False)
    print(f"[{name}] dev {result.dev_metrics} in {time.time() - start:.0f} s", flush=True)
    return json.loads((out / "run.json").read_text(encoding="utf-8"))


def _entry(report: dict, model: str, runtime: str, precision: str) -> dict | None:
    for e in report["entries"]:
        if (
            e["model"] == model
            and e["runtime"] == runtime
            and e["precision"] == precision
            and e["device"] == "cpu"
        ):
            return e
    return None


def table(report: dict, names: dict[str, str]) -> tuple[list[dict], str]:
    """One row per model from the benchmark report (``names``: model dir -> display name), plus Markdown."""
    rows = []
    teacher = next(m for m in report["models"] if m["role"] == "teacher")
    t_entry = _entry(report, teacher["name"], "pytorch", "fp32")
    for m in report["models"]:
        cpu = _entry(report, m["name"], "pytorch", "fp32")
        int8 = _entry(report, m["name"], "onnxruntime", "int8")
        rows.append(
            {
                "model": names.get(str(m["dir"]), "teacher" if m["role"] == "teacher" else m["name"]),
                "params_total": m["params"]["total"],
                "params_non_embedding": m["params"]["non_embedding"],
                "compression": teacher["params"]["total"] / m["params"]["total"],
                "cpu_ex_s_batch1": 1000.0 / cpu["speed"]["latency_ms_mean"],
                "cpu_ex_s_batch32": cpu["speed"]["throughput_eps"],
                "speedup_batch32": cpu["speed"]["throughput_eps"] / t_entry["speed"]["throughput_eps"],
                "onnx_int8_ex_s_batch32": int8["speed"]["throughput_eps"] if int8 else None,
                "onnx_int8_dev_accuracy": int8["metrics"]["accuracy"] if int8 else None,
                "dev_accuracy": cpu["metrics"]["accuracy"],
                "pct_of_teacher": 100 * cpu["metrics"]["accuracy"] / t_entry["metrics"]["accuracy"],
            }
        )
    head = (
        "| model | params (total) | non-embedding | compression | CPU ex/s b=1 | CPU ex/s b=32 | speed-up b=32 "
        "| ONNX int8 ex/s b=32 | dev acc | % of teacher |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['model']} | {r['params_total'] / 1e6:.2f}M | {r['params_non_embedding'] / 1e6:.2f}M | "
        f"{r['compression']:.1f}x | {r['cpu_ex_s_batch1']:.0f} | {r['cpu_ex_s_batch32']:.0f} | "
        f"{r['speedup_batch32']:.1f}x | {r['onnx_int8_ex_s_batch32'] or float('nan'):.0f} | "
        f"{r['dev_accuracy']:.4f} | {r['pct_of_teacher']:.1f}% |"
        for r in rows
    ]
    return rows, head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="fine-tuned SST-2 teacher directory")
    p.add_argument("--models", required=True, help="the `textdistill provision --root` folder")
    p.add_argument("--data", required=True, help="folder with train.tsv and dev.tsv (GLUE SST-2)")
    p.add_argument("--work", default="runs/bench-compact", help="run directories, cache and report")
    p.add_argument("--train-examples", type=int, default=30000, help="seeded SST-2 train subset")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--students", nargs="*", default=None, help="subset of the students (default: all)")
    p.add_argument("--json", default="benchmarks/results/sst2_compact.json", help="results JSON")
    p.add_argument("--threads", type=int, default=None, help="threads of the speed measurements")
    args = p.parse_args(argv)

    from textdistill.evaluation.benchmark import run_benchmark

    all_variants = variants(Path(args.models))
    names = args.students or list(all_variants)
    unknown = [n for n in names if n not in all_variants]
    if unknown:
        p.error(f"unknown students {unknown}; choose from {', '.join(all_variants)}")
    runs = {name: distill(name, all_variants[name], args) for name in names}
    report = run_benchmark(
        args.teacher,
        [Path(args.work) / n / "model" for n in names],
        Path(args.data) / "dev.tsv",
        out_dir=Path(args.work) / "report",
        max_examples=None,
        threads=args.threads,
        onnx=True,
        cka=False,
        plots=False,
    )
    dirs = {str(Path(args.work) / n / "model"): n for n in names}
    rows, md = table(report, dirs)
    print(md)
    result = {
        "command": "python benchmarks/sst2_compact.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.processor() or platform.machine()}, {platform.platform()}",
        "train_examples": args.train_examples,
        "epochs": args.epochs,
        "students": {n: all_variants[n] for n in names},
        "rows": rows,
        "runs": {n: {"seconds": r.get("seconds"), "results": r.get("results")} for n, r in runs.items()},
        "markdown": md,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
