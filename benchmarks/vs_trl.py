"""textdistill vs TRL on the identical causal-LM distillation job, side by side in one invocation.

The job: SmolLM2-135M-Instruct (``textdistill provision smollm2``) distilled into a ``truncate`` student
(teacher layers 0, 10, 20, 29: 42.5M parameters, under 1/3 of the teacher's 134.5M) on SST-2 training
sentences as plain text; held-out perplexity and token KL on SST-2 dev sentences not used for training.

Identical for every side: the teacher folder, the student's initial weights (one saved folder), the token ids
of every training row (textdistill's ``encode_lm_examples``: text + EOS, cut at ``--max-length``), the order
of the rows (textdistill's seeded shuffle of epoch 0, fed to TRL in that order with a sequential sampler),
steps, batch size, AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0), learning rate with linear decay after
``--warmup`` steps, gradient clipping at 1.0, bf16 autocast (textdistill's ``precision: auto`` here; TRL's
``bf16=True``). Runs, one after another, each in its own process (so peak RSS is per tool):

* ``td_cold``: textdistill, teacher-logit store absent: the teacher runs once over the data (top-``--k`` store
  written), then training reads the store; the teacher is released before training;
* ``td_warm``: the same command again: the store is found, the teacher's weights are never loaded;
* ``trl``: TRL's ``GKDTrainer`` (``trl.experimental.gkd``) with ``lmbda=0`` (no on-policy batches),
  ``beta=0`` (its generalized JSD is then exactly the forward KL ``KL(p_teacher || q_student)`` over the full
  vocabulary), ``seq_kd=False``, temperature 1, the teacher live in memory;
* ``data_only``: the same student trained with ``lm_ce`` only (next-token cross-entropy of the data, no
  teacher), same steps;
* ``td_mix``: textdistill with the warm store and ``--mix-objective`` (default ``0.5 lm_kl + 0.5 lm_ce``: the
  teacher's distribution and the data), same steps;
* ``td_live`` (only when asked for with ``--sides``): textdistill with the teacher live in memory over the full
  vocabulary (``teacher.store_topk=null``), otherwise as ``td_warm``: separates the effect of the top-k store
  from the rest;
* ``trl_default`` (only when asked for): ``trl`` with TRL's own default ``gradient_checkpointing=True``
  (``trl`` turns it off, as textdistill does not recompute activations).

Loss normalisation: TRL averages over all loss tokens of a batch; so do this script's textdistill objectives
(``reduction: token`` on every term, the defaults of ``--objective`` and ``--mix-objective``). textdistill's own
default averages per example, then over examples: pass ``--objective '[{"name": "lm_kl"}]'`` for it
(docs/lm.md, "Per-token reduction"). Every student is then evaluated by the same code
(``textdistill.evaluation.lm_metrics.evaluate_lm``, fp32, live teacher, full vocabulary): held-out
perplexity, token-level KL to the teacher, top-1 agreement. Partial results are written after every run.

Example (the command behind docs/lm.md):
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/vs_trl.py --teacher /work/models/SmolLM2-135M-Instruct \
        --data ../shared/data/sst2 --work /work/bench/issue-18b/vs_trl --out benchmarks/results/vs_trl.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SIDES = ("td_cold", "td_warm", "trl", "data_only", "td_mix", "td_live", "trl_default")
DEFAULT_SIDES = SIDES[:5]


def sentences(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [r["sentence"].strip() for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Train / run-dev / held-out text files and the saved student init; returns their paths."""
    from transformers import AutoTokenizer

    from textdistill.models.causal_lm import load_causal_lm, truncate_causal_lm

    work = Path(args.work)
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    train = sentences(Path(args.data) / "train.tsv")
    random.Random(0).shuffle(train)
    heldout = sentences(Path(args.data) / "dev.tsv")[: args.n_heldout]
    files = {
        "train": train[: args.n_train],
        "run_dev": train[args.n_train : args.n_train + 16],  # the runs' own dev check (tiny; not reported)
        "heldout": heldout,
    }
    paths = {}
    for name, lines in files.items():
        paths[name] = data / f"{name}.txt"
        paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    init = work / "student_init"
    if not (init / "config.json").is_file():
        teacher = load_causal_lm(args.teacher)
        student = truncate_causal_lm(teacher.model, args.layers)
        student.save_pretrained(str(init))
        AutoTokenizer.from_pretrained(args.teacher).save_pretrained(str(init))
    return {k: str(v) for k, v in paths.items()} | {"student_init": str(init)}


def train_rows(args: argparse.Namespace, path: str) -> tuple[list[dict], Any]:
    """The training rows in textdistill's epoch-0 order (``lm_runner._loader``) and the tokenizer."""
    from transformers import AutoTokenizer

    from textdistill.data.lm_data import encode_lm_examples, read_lm_examples

    tok = AutoTokenizer.from_pretrained(args.teacher)
    rows = encode_lm_examples(read_lm_examples(path), tok, args.max_length, False)
    order = list(range(len(rows)))
    random.Random(f"{args.seed}-0").shuffle(order)
    return [rows[i] for i in order], tok


# ---------------------------------------------------------------------------------------------- workers
def td_worker(args: argparse.Namespace, paths: dict[str, str], side: str) -> dict[str, Any]:
    from textdistill.config.loader import from_dict
    from textdistill.config.schema import Config
    from textdistill.training.lm_runner import run_lm_training

    objective = {"data_only": [{"name": "lm_ce"}], "td_mix": json.loads(args.mix_objective)}.get(
        side, json.loads(args.objective)
    )
    cfg = from_dict(
        Config,
        {
            "teacher": {"path": args.teacher, "store_topk": None if side == "td_live" else args.k,
                        "cache_dir": str(Path(args.work) / "store")},
            "student": {"type": "pretrained", "path": paths["student_init"]},
            "data": {"task": "causal_lm", "train": paths["train"], "dev": paths["run_dev"],
                     "max_length": args.max_length, "chat_template": False},
            "objective": objective,
            "train": {"max_steps": args.steps, "batch_size": args.batch, "lr": args.lr, "weight_decay": 0.0,
                      "warmup_steps": args.warmup, "lr_schedule": "linear", "max_grad_norm": 1.0,
                      "precision": "auto", "seed": args.seed, "eval_batch_size": 16, "progress": False},
            "output_dir": str(Path(args.work) / side),
            "overwrite": True,
        },
    )  # fmt: skip
    result = run_lm_training(cfg, "distill", quiet=True)
    d = result.details
    return {
        "model_dir": str(result.model_dir),
        "train_s": d["train_s"],
        "steps": d["steps"],
        "teacher_store_warm": d["teacher_store_warm"],
        "teacher_in_memory_during_training": d["teacher_in_memory_during_training"],
    }


def trl_worker(
    args: argparse.Namespace, paths: dict[str, str], checkpointing: bool = False
) -> dict[str, Any]:
    import trl
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    from textdistill.data.lm_data import LMCollator, pad_token_of

    rows, tok = train_rows(args, paths["train"])
    collate = LMCollator(pad_token_of(tok))

    def collator(features: list[dict]) -> dict[str, torch.Tensor]:
        batch = collate(features)
        return {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}

    class InOrder(GKDTrainer):  # the rows are already in textdistill's order
        def _get_train_sampler(self, *a, **k):
            return SequentialSampler(self.train_dataset)

    out = Path(args.work) / ("trl_default" if checkpointing else "trl")
    config = GKDConfig(
        output_dir=str(out / "trainer"), max_steps=args.steps, per_device_train_batch_size=args.batch,
        learning_rate=args.lr, weight_decay=0.0, warmup_steps=args.warmup, lr_scheduler_type="linear",
        max_grad_norm=1.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, bf16=True, use_cpu=True,
        seed=args.seed, data_seed=args.seed, lmbda=0.0, beta=0.0, temperature=1.0, seq_kd=False,
        max_length=args.max_length, gradient_checkpointing=checkpointing, report_to="none", save_strategy="no",
        logging_steps=20, dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    student = AutoModelForCausalLM.from_pretrained(paths["student_init"], dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(args.teacher, dtype=torch.float32)
    data = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    trainer = InOrder(
        model=student, teacher_model=teacher, args=config, train_dataset=data,
        data_collator=collator, processing_class=tok,
    )  # fmt: skip
    t0 = time.perf_counter()
    state = trainer.train()
    train_s = time.perf_counter() - t0
    trainer.model.save_pretrained(str(out / "model"))
    tok.save_pretrained(str(out / "model"))
    return {
        "model_dir": str(out / "model"),
        "train_s": round(train_s, 2),
        "steps": int(state.global_step),
        "trl_version": trl.__version__,
        "teacher_in_memory_during_training": True,
    }


def worker(args: argparse.Namespace) -> None:
    """One side in this process; prints its result as the last line of stdout."""
    paths = json.loads(args.paths)
    side = args.worker
    if side.startswith("trl"):
        res = trl_worker(args, paths, checkpointing=side == "trl_default")
    else:
        res = td_worker(args, paths, side)
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    res["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(res), flush=True)


# ---------------------------------------------------------------------------------------------- parent
def run_side(args: argparse.Namespace, paths: dict[str, str], side: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", side, "--paths", json.dumps(paths)] + args.passthrough
    log = Path(args.work) / f"{side}.log"
    t0 = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True)
    wall = time.perf_counter() - t0
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}; see {log}", "wall_s": round(wall, 1)}
    return json.loads(lines[-1][7:]) | {"wall_s": round(wall, 1)}


class HeldOut:
    """Held-out metrics of a saved student against the live fp32 teacher (full vocabulary)."""

    def __init__(self, args: argparse.Namespace, paths: dict[str, str]):
        from transformers import AutoTokenizer

        from textdistill.data.lm_data import LMCollator, encode_lm_examples, pad_token_of, read_lm_examples
        from textdistill.models.causal_lm import load_causal_lm

        tok = AutoTokenizer.from_pretrained(args.teacher)
        rows = encode_lm_examples(read_lm_examples(paths["heldout"]), tok, args.max_length, False)
        collate = LMCollator(pad_token_of(tok))
        self.batches = [collate(rows[i : i + 16]) for i in range(0, len(rows), 16)]
        self.teacher = load_causal_lm(args.teacher)
        self.lengths = [len(r["input_ids"]) for r in rows]

    def __call__(self, model_dir: str) -> dict[str, float]:
        from textdistill.evaluation.lm_metrics import evaluate_lm
        from textdistill.models.causal_lm import load_causal_lm

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads()))
        student = load_causal_lm(model_dir)
        out = {k: round(v, 4) for k, v in evaluate_lm(student, self.teacher, self.batches).items()}
        return out | {"parameters": sum(p.numel() for p in student.parameters())}


def same_weights(a: str, b: str) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(str(Path(a) / "model.safetensors")), load_file(str(Path(b) / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def environment() -> dict[str, Any]:
    import transformers

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    flags = Path("/proc/cpuinfo").read_text()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_bf16" in flags,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def parent(args: argparse.Namespace) -> None:
    paths = prepare(args)
    result: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "job": job(args),
        "env": environment(),
        "runs": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    heldout = HeldOut(args, paths)
    result["heldout"] = {"student_init": heldout(paths["student_init"])}
    init = result["heldout"]["student_init"]
    result["heldout"]["teacher"] = {"ppl": init["teacher_ppl"], "tokens": init["tokens"], "parameters": sum(
        p.numel() for p in heldout.teacher.parameters())}  # fmt: skip
    result["data_lengths"] = {"heldout_mean_tokens": sum(heldout.lengths) / len(heldout.lengths)}
    for side in args.sides:
        print(f"[vs_trl] {side} ...", flush=True)
        result["runs"][side] = run_side(args, paths, side)
        if "model_dir" in result["runs"][side]:
            result["heldout"][side] = heldout(result["runs"][side]["model_dir"])
        result["summary"] = summary(result)
        print(f"[vs_trl] {side}: {json.dumps(result['summary'].get(side))}", flush=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(markdown(result))


def job(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "teacher": args.teacher,
        "student_layers": args.layers,
        "n_train": args.n_train,
        "n_heldout": args.n_heldout,
        "steps": args.steps,
        "batch_size": args.batch,
        "max_length": args.max_length,
        "lr": args.lr,
        "warmup_steps": args.warmup,
        "store_topk": args.k,
        "objective": json.loads(args.objective),
        "mix_objective": json.loads(args.mix_objective),
        "precision": "bf16 autocast for training (both); fp32 for the store and the evaluation",
        "seed": args.seed,
    }


def summary(result: dict[str, Any]) -> dict[str, Any]:
    runs, held = result["runs"], result["heldout"]
    s: dict[str, Any] = {"teacher_ppl": held["teacher"]["ppl"]}
    for side, r in runs.items():
        h = held.get(side, {})
        s[side] = {"wall_s": r.get("wall_s"), "train_s": r.get("train_s"), "peak_rss_mb": r.get("peak_rss_mb"),
                   "student_ppl": h.get("student_ppl"), "token_kl": h.get("token_kl"),
                   "top1_agreement": h.get("top1_agreement")}  # fmt: skip
    if "trl" in runs and "td_warm" in runs and runs["td_warm"].get("wall_s"):
        s["speedup_warm_vs_trl"] = round(runs["trl"]["wall_s"] / runs["td_warm"]["wall_s"], 2)
    if "trl" in runs and "td_cold" in runs and runs["td_cold"].get("wall_s"):
        s["speedup_cold_vs_trl"] = round(runs["trl"]["wall_s"] / runs["td_cold"]["wall_s"], 2)
    if "model_dir" in runs.get("td_cold", {}) and "model_dir" in runs.get("td_warm", {}):
        s["cold_and_warm_identical_weights"] = same_weights(
            runs["td_cold"]["model_dir"], runs["td_warm"]["model_dir"]
        )
    return s


LABELS = {
    "td_cold": "textdistill, store cold (teacher pass + training)",
    "td_warm": "textdistill, store warm (no teacher in memory)",
    "trl": "TRL GKDTrainer (lmbda=0, beta=0: forward KL, live teacher)",
    "data_only": "data only (lm_ce, no teacher)",
    "td_mix": "textdistill, store warm, 0.5 lm_kl + 0.5 lm_ce",
    "td_live": "textdistill, live teacher (full vocabulary)",
    "trl_default": "TRL GKDTrainer as above, TRL's default gradient checkpointing on",
}


def markdown(result: dict[str, Any]) -> str:
    """The side-by-side table of a result JSON."""
    s, held = result["summary"], result["heldout"]
    lines = [
        "| run | wall s | train loop s | peak RSS MB | held-out ppl | token KL to teacher | top-1 agreement |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| teacher (SmolLM2-135M-Instruct, {held['teacher']['parameters']:,} params) | | | | "
        f"{held['teacher']['ppl']:.1f} | 0 | 1 |",
        f"| student init (truncated, {held['student_init']['parameters']:,} params) | | | | "
        f"{held['student_init']['student_ppl']:.3g} | {held['student_init']['token_kl']:.3f} | "
        f"{held['student_init']['top1_agreement']:.3f} |",
    ]
    for side in SIDES:
        if side in s and s[side].get("student_ppl") is not None:
            r = s[side]
            lines.append(
                f"| {LABELS[side]} | {r['wall_s']:.1f} | {r['train_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                f"{r['student_ppl']:.1f} | {r['token_kl']:.3f} | {r['top1_agreement']:.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="/work/models/SmolLM2-135M-Instruct")
    p.add_argument("--data", default="/work/shared/data/sst2")
    p.add_argument("--work", default="/tmp/vs_trl")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vs_trl.json"))
    p.add_argument("--layers", type=lambda s: [int(x) for x in s.split(",")], default=[0, 10, 20, 29])
    p.add_argument("--n-train", type=int, default=960)
    p.add_argument("--n-heldout", type=int, default=200)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=12)
    p.add_argument("--k", type=int, default=1000)
    token = {"params": {"reduction": "token"}}  # TRL's per-token normalisation
    p.add_argument(
        "--objective", default=json.dumps([{"name": "lm_kl", **token}]), help="JSON list of textdistill terms"
    )
    p.add_argument(
        "--mix-objective",
        default=json.dumps(
            [{"name": "lm_kl", "weight": 0.5, **token}, {"name": "lm_ce", "weight": 0.5, **token}]
        ),
        help="JSON list of textdistill terms for td_mix",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--sides", nargs="+", default=list(DEFAULT_SIDES), choices=SIDES)
    p.add_argument("--table", default=None, help="print the Markdown table of a result JSON and exit")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--paths", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    keep = ("--teacher", "--data", "--work", "--steps", "--batch", "--max-length", "--lr", "--warmup", "--k",
            "--objective", "--mix-objective", "--seed", "--n-train", "--n-heldout")  # fmt: skip
    args.passthrough = []
    for key in keep:
        args.passthrough += [key, str(getattr(args, key[2:].replace("-", "_")))]
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
    elif args.worker:
        worker(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
