"""SST-2 compact students: BiLSTM and pretrained MiniLM-L3 with a trimmed vocabulary, cross-tokenizer logit KD.

Every student is distilled from one teacher on the same SST-2 training data (same seed, epochs, batch), the
teacher's outputs cached once (the students share the cache: it is keyed by the teacher's encoding, so an
extra student or epoch costs only the student), then all models are measured side by side in ONE
``run_benchmark`` invocation: parameters (total and non-embedding), CPU examples/s at batch 1 and 32 (fp32,
and bf16 autocast where the CPU has native bf16), onnxruntime int8 examples/s, dev accuracy, % of teacher.

Students (``--students`` picks a subset; ``NAME,key=value,...`` adds config overrides to one of them, e.g.
``bilstm-pca-trim,train.seed=1`` or ``bilstm-pca-trim,train.epochs=6``; the row is named by the whole spec):
    bilstm-pca-trim     the `compact` recipe's default: Tang et al. BiLSTM (50-d embeddings, 300 hidden per
                        direction, max pooling) over the teacher's vocabulary trimmed to the training text,
                        embeddings = the TEACHER's embedding matrix reduced to 50-d by PCA, logit MSE, lr 1e-3
    bilstm-pca-full     the same over the teacher's full vocabulary: trimming off; the student then reads the
                        teacher's token ids (same-vocab path instead of cross-tokenizer)
    bilstm-random-trim  the same with randomly initialised embeddings            (ablation: pretrained init off)
    bilstm-pca-aug      the same plus --n-aug Tang et al. augmented copies per example, teacher-relabelled
                                                                                 (ablation: augmentation on)
    bilstm-pca-kl       kd_kl (T=2) + hard labels instead of logit MSE
    bilstm-pca-2x300    two stacked LSTM layers
    bilstm-pca100 / bilstm-pca300   100-d / 300-d PCA embeddings
    bilstm-glove-trim   GloVe 6B 50-d embeddings instead of the teacher's, trimmed vocabulary
    bilstm-glove-full   the same over the full vocabulary
    bilstm-glove-aug    GloVe, trimmed, plus --n-aug augmented copies
    minilm-l3-trim      provisioned paraphrase-MiniLM-L3-v2, vocabulary trimmed to the training text (auto),
                        cross-tokenizer logit KD (kd_kl T=2 + hard labels, the `compact` recipe's student=)
    minilm-l3-full      the same with the full 30,522-token vocabulary       (ablation: trimming off)
    minilm-l3-cap4k     the same with the 4,000 most frequent tokens           (a stronger size cut)
    truncate-2l-trim    the teacher's layers 3 and 6, trimmed vocabulary
    truncate-2l-full    the teacher's layers 3 and 6, the teacher's vocabulary (same-vocab student)

Example (the command behind docs/results.md's compact section; 1 thread, as the VM was shared):
    textdistill provision --root models
    OMP_NUM_THREADS=1 python benchmarks/sst2_compact.py --teacher ../shared/models/teacher-sst2-minilm \
        --models models --data ../shared/data/sst2 --work runs/bench-compact \
        --train-examples 0 --epochs 3 --threads 1 --students bilstm-pca-trim bilstm-glove-trim

``--train-examples 0`` uses all 67,349 SST-2 training sentences. ``--train-only`` trains (or reuses) the
students and stops before the benchmark, so several invocations can fill the run directories and one final
invocation measures every model side by side. ``--models`` is the folder ``textdistill provision --root DIR``
wrote. A finished student run is reused when the script is run again (delete its run directory to retrain).
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
BILSTM = ["student.type=bilstm", "student.lstm_hidden=300", "train.lr=1e-3", "train.weight_decay=0.0"]
BILSTM += ["train.warmup_ratio=0.0"]


def variants(models: Path, n_aug: int) -> dict[str, list[str]]:
    """Student name -> config overrides (on top of the shared teacher/data/train settings)."""
    minilm = models / "paraphrase-MiniLM-L3-v2"
    glove = [f"student.glove={models / 'glove' / 'glove.6B.50d.txt'}", "student.embedding_dim=50"]
    aug = ["augment.method=tang", f"augment.n_aug={n_aug}"]
    pre = ["student.type=pretrained", f"student.path={minilm}", KD, "train.lr=1e-4"]
    trunc = ["student.type=truncate", "student.layers=[2,5]", KD, "train.lr=1e-4"]
    pca = [*BILSTM, "student.embedding_dim=50", MSE]
    return {
        "bilstm-pca-trim": [*pca, "student.vocab=auto"],
        "bilstm-pca-full": [*pca, "student.vocab=full"],
        "bilstm-random-trim": [*pca, "student.vocab=auto", "student.init_embeddings_from_teacher=false"],
        "bilstm-pca-aug": [*pca, "student.vocab=auto", *aug],
        "bilstm-pca-kl": [*BILSTM, "student.embedding_dim=50", KD, "student.vocab=auto"],
        "bilstm-pca-2x300": [*pca, "student.vocab=auto", "student.lstm_layers=2"],
        "bilstm-pca100": [*BILSTM, "student.embedding_dim=100", MSE, "student.vocab=auto"],
        "bilstm-pca300": [*BILSTM, "student.embedding_dim=300", MSE, "student.vocab=auto"],
        "bilstm-glove-trim": [*BILSTM, *glove, MSE, "student.vocab=auto"],
        "bilstm-glove-full": [*BILSTM, *glove, MSE, "student.vocab=full"],
        "bilstm-glove-aug": [*BILSTM, *glove, MSE, "student.vocab=auto", *aug],
        "minilm-l3-trim": [*pre, "student.vocab=auto"],
        "minilm-l3-full": [*pre, "student.vocab=full"],
        "minilm-l3-cap4k": [*pre, "student.vocab=4000"],
        "truncate-2l-trim": [*trunc, "student.vocab=auto"],
        "truncate-2l-full": [*trunc, "student.vocab=full"],
    }


def parse_spec(spec: str, known: dict[str, list[str]]) -> tuple[str, list[str]]:
    """``NAME[,key=value,...]`` -> (NAME, its overrides plus the extra ones); raises ValueError if bad."""
    name, *extra = spec.split(",")
    if name not in known:
        raise ValueError(f"unknown student {name!r}; choose from {', '.join(known)}")
    bad = [e for e in extra if "=" not in e]
    if bad:
        raise ValueError(f"student {spec!r}: extra settings must be key=value, got {bad}")
    return name, [*known[name], *extra]


def run_name(spec: str) -> str:
    """The run directory of a student spec (``,`` and ``=`` replaced so it is a plain folder name)."""
    return spec.replace(",", "__").replace("=", "-").replace("/", "_")


def _finished_run(out: Path) -> dict | None:
    """The run summary of a run directory that finished (None: absent, still running or interrupted)."""
    try:
        run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return run if run.get("status") == "finished" and (out / "model").is_dir() else None


def distill(spec: str, overrides: list[str], args: argparse.Namespace) -> dict:
    """Train one student (or reuse its finished run); returns its run summary."""
    out = Path(args.work) / run_name(spec)
    done = _finished_run(out)
    if done is not None:
        print(f"[{spec}] reusing {out}")
        return done
    data = Path(args.data)
    subset = [f"data.max_train_examples={args.train_examples}"] if args.train_examples else []
    every = [f"train.eval_every={args.eval_every}"] if args.eval_every else []
    cfg = load_config(
        None,
        [
            f"teacher.path={args.teacher}",
            f"teacher.cache_dir={Path(args.work) / 'cache'}",
            f"data.train={data / 'train.tsv'}",
            f"data.dev={data / 'dev.tsv'}",
            *subset,
            f"output_dir={out}",
            f"train.epochs={args.epochs}",
            "train.batch_size=32",
            "train.seed=0",
            "train.progress=false",
            "train.keep_checkpoints=0",
            f"train.precision={args.precision}",
            *every,
            "report=false",
            "overwrite=true",
            *overrides,
        ],
    )
    start = time.time()
    result = run_training(cfg, "distill", quiet=False)
    print(f"[{spec}] dev {result.dev_metrics} in {time.time() - start:.0f} s", flush=True)
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


def _speeds(entry: dict | None) -> tuple[float | None, float | None]:
    """(examples/s at batch 1, examples/s at batch 32) of a report entry (None: not measured)."""
    if not entry or not entry.get("speed"):
        return None, None
    return 1000.0 / entry["speed"]["latency_ms_mean"], entry["speed"]["throughput_eps"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table(report: dict, names: dict[str, str]) -> tuple[list[dict], str]:
    """One row per model from the benchmark report (``names``: model dir -> display name), plus Markdown."""
    rows = []
    teacher = next(m for m in report["models"] if m["role"] == "teacher")
    t_b1, t_b32 = _speeds(_entry(report, teacher["name"], "pytorch", "fp32"))
    t_acc = _entry(report, teacher["name"], "pytorch", "fp32")["metrics"]["accuracy"]
    _, t_bf16_b32 = _speeds(_entry(report, teacher["name"], "pytorch", "bf16"))
    for m in report["models"]:
        cpu = _entry(report, m["name"], "pytorch", "fp32")
        bf16 = _entry(report, m["name"], "pytorch", "bf16")
        int8 = _entry(report, m["name"], "onnxruntime", "int8")
        b1, b32 = _speeds(cpu)
        bf16_b1, bf16_b32 = _speeds(bf16)
        rows.append(
            {
                "model": names.get(str(m["dir"]), "teacher" if m["role"] == "teacher" else m["name"]),
                "params_total": m["params"]["total"],
                "params_non_embedding": m["params"]["non_embedding"],
                "compression": teacher["params"]["total"] / m["params"]["total"],
                "cpu_ex_s_batch1": b1,
                "cpu_ex_s_batch32": b32,
                "speedup_batch1": _ratio(b1, t_b1),
                "speedup_batch32": _ratio(b32, t_b32),
                "bf16_ex_s_batch1": bf16_b1,
                "bf16_ex_s_batch32": bf16_b32,
                "bf16_speedup_batch32_vs_teacher_bf16": _ratio(bf16_b32, t_bf16_b32),
                "bf16_dev_accuracy": bf16["metrics"]["accuracy"] if bf16 else None,
                "onnx_int8_ex_s_batch32": _speeds(int8)[1],
                "onnx_int8_dev_accuracy": int8["metrics"]["accuracy"] if int8 else None,
                "dev_accuracy": cpu["metrics"]["accuracy"],
                "pct_of_teacher": 100 * cpu["metrics"]["accuracy"] / t_acc,
            }
        )
    return rows, markdown(rows)


def _num(value: float | None, fmt: str, suffix: str = "") -> str:
    return "n/a" if value is None else format(value, fmt) + suffix


def markdown(rows: list[dict]) -> str:
    """The results table (fp32 PyTorch speeds) and, when bf16 was timed, the bf16-autocast probe."""
    head = (
        "| model | params (total) | non-embedding | compression | CPU ex/s b=1 | CPU ex/s b=32 | speed-up b=1 "
        "| speed-up b=32 | ONNX int8 ex/s b=32 | dev acc | % of teacher |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['model']} | {r['params_total'] / 1e6:.2f}M | {r['params_non_embedding'] / 1e6:.2f}M | "
        f"{r['compression']:.1f}x | {_num(r['cpu_ex_s_batch1'], '.0f')} | {_num(r['cpu_ex_s_batch32'], '.0f')} | "
        f"{_num(r['speedup_batch1'], '.1f', 'x')} | {_num(r['speedup_batch32'], '.1f', 'x')} | "
        f"{_num(r['onnx_int8_ex_s_batch32'], '.0f')} | {r['dev_accuracy']:.4f} | {r['pct_of_teacher']:.1f}% |"
        for r in rows
    ]
    text = head + "\n".join(lines) + "\n"
    if all(r["bf16_ex_s_batch32"] is None for r in rows):
        return text
    probe = (
        "\n| model | fp32 ex/s b=1 | bf16 ex/s b=1 | fp32 ex/s b=32 | bf16 ex/s b=32 | bf16 / fp32 at b=32 "
        "| dev acc fp32 / bf16 |\n|---|---|---|---|---|---|---|\n"
    )
    probe += "\n".join(
        f"| {r['model']} | {_num(r['cpu_ex_s_batch1'], '.0f')} | {_num(r['bf16_ex_s_batch1'], '.0f')} | "
        f"{_num(r['cpu_ex_s_batch32'], '.0f')} | {_num(r['bf16_ex_s_batch32'], '.0f')} | "
        f"{_num(_ratio(r['bf16_ex_s_batch32'], r['cpu_ex_s_batch32']), '.2f', 'x')} | "
        f"{r['dev_accuracy']:.4f} / {_num(r['bf16_dev_accuracy'], '.4f')} |"
        for r in rows
    )
    return text + probe + "\n"


def _args(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="fine-tuned SST-2 teacher directory")
    p.add_argument("--models", required=True, help="the `textdistill provision --root` folder")
    p.add_argument("--data", required=True, help="folder with train.tsv and dev.tsv (GLUE SST-2)")
    p.add_argument("--work", default="runs/bench-compact", help="run directories, cache and report")
    p.add_argument("--train-examples", type=int, default=30000, help="seeded SST-2 train subset (0: all)")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--n-aug", type=int, default=2, help="augmented copies per example of the *-aug students")
    p.add_argument("--eval-every", type=int, default=None, help="dev evaluation every N steps (best kept)")
    p.add_argument("--precision", default="auto", help="training precision (auto: bf16 on native-bf16 CPUs)")
    p.add_argument("--students", nargs="*", default=None, help="NAME[,key=value...] (default: all)")
    p.add_argument("--train-only", action="store_true", help="train the students, skip the benchmark")
    p.add_argument("--no-speed", action="store_true", help="benchmark dev accuracy and size only (no timing)")
    p.add_argument("--section", default="main", help="key of this invocation's results in the JSON file")
    p.add_argument("--json", default="benchmarks/results/sst2_compact.json", help="results JSON")
    p.add_argument("--threads", type=int, default=None, help="threads of the speed measurements")
    args = p.parse_args(argv)
    if args.train_examples < 0 or args.n_aug < 1:
        p.error("--train-examples must be >= 0 (0: all) and --n-aug >= 1")
    return args, p


def write_section(path: Path, section: str, result: dict) -> None:
    """Store ``result`` under ``sections[section]`` of the JSON file, keeping the other sections."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    sections = data.get("sections") if isinstance(data.get("sections"), dict) else {}
    sections[section] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"sections": sections}, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args, p = _args(argv)
    from textdistill.evaluation.benchmark import run_benchmark

    known = variants(Path(args.models), args.n_aug)
    specs = args.students or list(known)
    try:
        parsed = {spec: parse_spec(spec, known)[1] for spec in specs}
    except ValueError as exc:
        p.error(str(exc))
    runs = {spec: distill(spec, overrides, args) for spec, overrides in parsed.items()}
    if args.train_only:
        print("--train-only: students trained; no benchmark")
        return 0
    report = run_benchmark(
        args.teacher,
        [Path(args.work) / run_name(s) / "model" for s in specs],
        Path(args.data) / "dev.tsv",
        out_dir=Path(args.work) / f"report-{args.section}",
        max_examples=None,
        threads=args.threads,
        onnx=not args.no_speed,
        speed=not args.no_speed,
        bf16=False if args.no_speed else None,
        cka=False,
        plots=False,
    )
    rows, md = table(report, {str(Path(args.work) / run_name(s) / "model"): s for s in specs})
    print(md)
    result = {
        "command": "python benchmarks/sst2_compact.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.processor() or platform.machine()}, {platform.platform()}",
        "environment": report.get("environment"),
        "train_examples": args.train_examples or "all",
        "epochs": args.epochs,
        "eval_every": args.eval_every,
        "training_precision": args.precision,
        "students": parsed,
        "rows": rows,
        "runs": {s: {"seconds": r.get("seconds"), "results": r.get("results")} for s, r in runs.items()},
        "markdown": md,
    }
    write_section(Path(args.json), args.section, result)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
