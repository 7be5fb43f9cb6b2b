"""SST-2 multi-stage recipes: ``tinybert`` and ``ernie-tiny`` next to single-stage logit KD, stage by stage.

Runs the shipped recipes through :func:`textdistill.pipeline.run_pipeline` (exactly what
``textdistill run`` does) into the student shape of the logit-KD row of ``benchmarks/sst2_logit_kd.py``
(shrink: 4 layers, hidden 192, 12 heads, FFN 768), and records every stage's SST-2 dev accuracy in the
section between the ``sst2-pipelines`` markers of ``docs/results.md``.

General corpus: SST-2 *train sentences without their labels* (a seeded sample of ``--corpus-sentences``,
one per line, written to ``<work>/corpus.txt``). It is in-domain unlabelled text, the situation GD/GED
is meant for when a task has more raw text than labels; the paper-scale alternative (Wikipedia) is not
reachable offline.

    tinybert    general (GD: pre-trained all-MiniLM-L6-v2 teacher, corpus) -> intermediate (TD1: fine-tuned
                teacher, task data) -> prediction (TD2: soft CE, T = 1)
    ernie-tiny  ft (fine-tune the pre-trained MiniLM: ``--ft-examples`` 12,000 examples, 1 epoch, lr 5e-5,
                the settings behind ``--teacher``, so both recipes distil from equally trained teachers) -> ged (fine-tuned teacher, corpus,
                last-layer Q-K / V-V relations) -> td1 (same relations, task data) -> td2 (soft + hard labels)
    logit KD    the single-stage row of ``benchmarks/sst2_logit_kd.py`` (kd_kl T = 2, same shape, subset,
                epochs per stage and learning rate), read from ``--logit-results`` when it exists

The 6-layer teacher onto 4 student layers has no integer ``uniform`` map, so TinyBERT's hidden/attention
terms use the evenly spread explicit map 1<-2, 2<-3, 3<-4, 4<-6 (as the logit-KD benchmark does).
Learning rates and epochs are small-budget settings (every stage ``--stage-epochs`` over the subset; the
task-data stages at ``--lr``, the same as the logit-KD row): the papers' budgets (GD on Wikipedia, TD for
10-20 epochs on augmented data) are far beyond a 2-core CPU.

Example (the command behind docs/results.md):
    python benchmarks/sst2_pipelines.py --data ../shared/data/sst2 --work runs/bench-pipelines \
        --teacher runs/bench-sst2/teacher/model --train-examples 3000 --corpus-sentences 10000
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

SHAPE = {"student_layers": 4, "student_hidden": 192, "student_heads": 12, "student_intermediate": 768}
SPREAD = "[[1, 2], [2, 3], [3, 4], [4, 6]]"


def write_corpus(train_tsv: Path, out: Path, n: int, seed: int = 13) -> int:
    """A seeded sample of ``n`` SST-2 train sentences, labels dropped, one per line."""
    with train_tsv.open(encoding="utf-8", newline="") as f:
        sentences = [r["sentence"].strip() for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    sentences = [s for s in sentences if s]
    random.Random(seed).shuffle(sentences)
    picked = sentences[:n]
    text = "\n".join(picked) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or out.read_text(encoding="utf-8") != text:  # unchanged: keep its mtime (resume)
        out.write_text(text, encoding="utf-8")
    return len(picked)


def task_overrides(stages: list[str], args: argparse.Namespace) -> list[str]:
    """The same subset, length, epochs and learning rate for every task-data stage."""
    out = [
        f"defaults.data.max_train_examples={args.train_examples}",
        f"defaults.data.max_length={args.max_length}",
        "defaults.train.keep_checkpoints=0",
        "defaults.train.progress=false",
    ]
    for s in stages:
        out += [f"stages.{s}.train.epochs={args.stage_epochs}", f"stages.{s}.train.lr={args.lr}"]
    return out


def recipes(args: argparse.Namespace, corpus: Path, teacher: str, pretrained: str) -> dict[str, tuple]:
    common = {"task_train": str(Path(args.data) / "train.tsv"), "task_dev": str(Path(args.data) / "dev.tsv")}
    general = [
        f"stages.{{s}}.train.epochs={args.general_epochs}",
        f"stages.{{s}}.train.batch_size={args.general_batch}",
        f"stages.{{s}}.train.lr={args.general_lr}",
    ]
    tiny_maps = [
        f"stages.{s}.objective.{i}.layer_map={{strategy: explicit, pairs: {SPREAD}}}"
        for s in ("general", "intermediate")
        for i in (1, 2)
    ]
    return {
        "tinybert": (
            {**common, **SHAPE, "teacher": teacher, "general_teacher": pretrained, "corpus": str(corpus)},
            task_overrides(["intermediate", "prediction"], args)
            + [g.format(s="general") for g in general]
            + tiny_maps,
        ),
        "ernie-tiny": (
            {**common, **SHAPE, "teacher": pretrained, "corpus": str(corpus)},
            task_overrides(["td1", "td2"], args)
            + [g.format(s="ged") for g in general]
            + [
                f"stages.ft.train.epochs={args.ft_epochs}",
                "stages.ft.train.lr=5e-5",
                f"stages.ft.data.max_train_examples={args.ft_examples}",
            ],
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with SST-2 train.tsv and dev.tsv (GLUE format)")
    ap.add_argument("--work", default="runs/bench-pipelines")
    ap.add_argument("--teacher", required=True, help="the fine-tuned SST-2 teacher (sst2_logit_kd.py's)")
    ap.add_argument("--train-examples", type=int, default=3000)
    ap.add_argument("--corpus-sentences", type=int, default=10000)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--stage-epochs", type=float, default=2.0, help="epochs of each task-data stage")
    ap.add_argument("--lr", type=float, default=5e-4, help="lr of each task-data distillation stage")
    ap.add_argument("--ft-epochs", type=float, default=1.0, help="ernie-tiny's teacher fine-tuning epochs")
    ap.add_argument(
        "--ft-examples",
        type=int,
        default=12000,
        help="ernie-tiny's FT subset (12000, 1 epoch, lr 5e-5: the settings of the benchmark's teacher)",
    )
    ap.add_argument("--general-epochs", type=float, default=1.0)
    ap.add_argument("--general-batch", type=int, default=64)
    ap.add_argument("--general-lr", type=float, default=5e-4)
    ap.add_argument("--only", nargs="*", choices=["tinybert", "ernie-tiny"])
    ap.add_argument("--logit-results", default="runs/bench-sst2/sst2_results.json")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--results-md", default="docs/results.md")
    args = ap.parse_args(argv)

    from textdistill.demo import teacher_base_path
    from textdistill.pipeline.runner import run_pipeline

    work = Path(args.work)
    corpus = work / "corpus.txt"
    n_corpus = write_corpus(Path(args.data) / "train.tsv", corpus, args.corpus_sentences)
    pretrained = str(teacher_base_path())
    out_json = work / "pipelines.json"
    results = json.loads(out_json.read_text()) if out_json.exists() and args.only else {}
    results["args"] = vars(args)
    results["corpus_sentences"] = n_corpus
    for name, (params, overrides) in recipes(args, corpus, args.teacher, pretrained).items():
        if args.only and name not in args.only:
            continue
        recipe = name
        t0 = time.time()
        res = run_pipeline(
            recipe, params, output_dir=work / name, overrides=overrides, dry_run=args.dry_run, quiet=False
        )
        if args.dry_run:
            continue
        stages = {}
        for st in res.stages:
            rd = Path(st.run_dir) if getattr(st, "run_dir", None) else None
            run = json.loads((rd / "run.json").read_text()) if rd and (rd / "run.json").exists() else {}
            ev = run.get("results", {})
            stages[st.name] = {
                "mode": run.get("mode"),
                "dev": ev.get("dev"),
                "teacher_dev": ev.get("teacher_dev"),
                "seconds": run.get("seconds"),
                "steps": run.get("state", {}).get("step"),
            }
        results[name] = {"stages": stages, "seconds": time.time() - t0}
        out_json.write_text(json.dumps(results, indent=2))
        print(
            json.dumps({name: {k: (v["dev"] or {}).get("accuracy") for k, v in stages.items()}}), flush=True
        )
    if args.dry_run:
        return 0
    logit = Path(args.logit_results)
    if logit.exists():  # the single-stage row: same student shape, subset, epochs and lr (sst2_logit_kd.py)
        models = json.loads(logit.read_text())["models"]
        row = models.get("shrink-4L-192 (logit KD)")
        teacher_dev = models.get("teacher (MiniLM-L6-H384)", {}).get("dev")
        if row:
            steps = -(-args.train_examples // 32) * int(args.stage_epochs)
            results["logit-kd"] = {
                "stages": {
                    "kd": {
                        "mode": "distill",
                        "dev": row["dev"],
                        "teacher_dev": teacher_dev,
                        "seconds": row.get("seconds"),
                        "steps": steps,
                    }
                }
            }
    table = markdown(results)
    print(table)
    from sst2_logit_kd import write_section

    write_section(Path(args.results_md), "sst2-pipelines", table, " ".join(sys.argv))
    return 0


def markdown(results: dict) -> str:
    lines = [
        "| recipe | stage | mode | SST-2 dev acc | teacher dev acc | steps | stage wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("logit-kd", "tinybert", "ernie-tiny"):
        if name not in results:
            continue
        for stage, s in results[name]["stages"].items():
            acc = (s["dev"] or {}).get("accuracy")
            secs = s["seconds"]
            tacc = (s["teacher_dev"] or {}).get("accuracy")
            lines.append(
                f"| {name} | {stage} | {s['mode']} | {'–' if acc is None else f'{acc:.4f}'} | "
                f"{'–' if tacc is None else f'{tacc:.4f}'} | {s['steps']} | "
                f"{'–' if secs is None else f'{secs:.0f}'} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
