"""What the compact-student benchmark costs on this CPU: teacher caching, MPNet fine-tuning, BiLSTM training,
each in fp32 and bf16 autocast, timed interleaved (fp32, bf16, fp32, bf16, ...) on real SST-2 sentences.

Measures, per 1,000 SST-2 training sentences (batches sorted by length, as the teacher cache and the length-
grouped trainer see them):

* teacher forward (the teacher-cache pass, batch 64): all-MiniLM-L6 (teacher A) and MPNet-base (teacher B);
* MPNet-base fine-tuning step (forward + backward + AdamW, batch 32): the cost of teacher B itself;
* BiLSTM student training step (50-d embeddings over a trimmed 11.6k vocabulary, 300 hidden, batch 32).

Every number is the median over ``--repeats`` interleaved repeats, with min and max; the bf16/fp32 ratio is
taken per repeat pair. Run it with the thread count the benchmark uses (1 on the shared VM):

    OMP_NUM_THREADS=1 python benchmarks/compact_costs.py --teacher ../shared/models/teacher-sst2-minilm \\
        --mpnet models/all-mpnet-base-v2 --data ../shared/data/sst2/train.tsv --json results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from textdistill.evaluation.environment import environment
from textdistill.models.bilstm import BiLSTMClassifier, BiLSTMConfig


def sentences(path: Path, n: int, seed: int = 0) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    g = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(lines), generator=g)[:n].tolist()
    return [lines[i].split("\t")[0] for i in picks]


def batches(tokenizer, texts: list[str], size: int) -> list[dict[str, torch.Tensor]]:
    ordered = sorted(texts, key=lambda t: len(tokenizer.tokenize(t)))
    return [
        dict(
            tokenizer(
                ordered[i : i + size], padding=True, truncation=True, max_length=128, return_tensors="pt"
            )
        )
        for i in range(0, len(ordered), size)
    ]


def timed(fn: Callable[[], None], precision: str) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        fn()
    return time.perf_counter() - start


def interleaved(fn: Callable[[], None], n_examples: int, repeats: int) -> dict:
    """Seconds per 1,000 examples for fp32 and bf16 (median, min, max) and the per-pair bf16/fp32 ratio."""
    for p in ("fp32", "bf16"):
        timed(fn, p)  # warm-up: kernel selection, allocator
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(repeats):
        for p in ("fp32", "bf16"):
            times[p].append(1000.0 * timed(fn, p) / n_examples)
    ratios = [b / f for f, b in zip(times["fp32"], times["bf16"], strict=True)]
    out = {p: {"median": statistics.median(t), "min": min(t), "max": max(t)} for p, t in times.items()}
    out["bf16_time_over_fp32"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    return out


def forward_cost(model_dir: str, texts: list[str], repeats: int) -> dict:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2).eval()
    data = batches(tok, texts, 64)

    def run() -> None:
        with torch.inference_mode():
            for b in data:
                model(**b)

    return interleaved(run, len(texts), repeats)


def finetune_cost(model_dir: str, texts: list[str], repeats: int) -> dict:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    data = batches(tok, texts, 32)

    def run() -> None:
        for b in data:
            loss = model(**b, labels=torch.zeros(b["input_ids"].shape[0], dtype=torch.long)).loss
            loss.backward()
            opt.step()
            opt.zero_grad()

    return interleaved(run, len(texts), repeats)


def bilstm_cost(teacher_dir: str, texts: list[str], repeats: int, vocab: int) -> dict:
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    model = BiLSTMClassifier(BiLSTMConfig(vocab_size=vocab, num_labels=2, embedding_dim=50, lstm_hidden=300))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    data = batches(tok, texts, 32)
    for b in data:  # a trimmed vocabulary's ids: fold the teacher's ids into the trimmed table's size
        b["input_ids"] = b["input_ids"] % vocab

    def run() -> None:
        for b in data:
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            out.logits.float().pow(2).mean().backward()
            opt.step()
            opt.zero_grad()

    return interleaved(run, len(texts), repeats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="teacher A (all-MiniLM-L6 SST-2 classifier)")
    p.add_argument("--mpnet", required=True, help="the provisioned all-mpnet-base-v2 folder")
    p.add_argument("--data", required=True, help="SST-2 train.tsv")
    p.add_argument("--n", type=int, default=256, help="sentences per timed repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--parts", nargs="*", default=["teacher", "mpnet", "mpnet-finetune", "bilstm"])
    p.add_argument("--json", default="benchmarks/results/compact_costs.json")
    args = p.parse_args(argv)
    texts = sentences(Path(args.data), args.n)
    jobs = {
        "teacher": lambda: forward_cost(args.teacher, texts, args.repeats),
        "mpnet": lambda: forward_cost(args.mpnet, texts, args.repeats),
        "mpnet-finetune": lambda: finetune_cost(args.mpnet, texts[: max(32, args.n // 4)], args.repeats),
        "bilstm": lambda: bilstm_cost(args.teacher, texts, args.repeats, vocab=11575),
    }
    results = {}
    for part in args.parts:
        results[part] = jobs[part]()
        print(part, json.dumps(results[part]), flush=True)
    out = {
        "command": "python benchmarks/compact_costs.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "unit": "seconds per 1,000 SST-2 training sentences",
        "environment": environment(),
        "n": args.n,
        "results": results,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
