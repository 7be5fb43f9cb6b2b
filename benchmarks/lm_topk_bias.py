"""Bias of each causal-LM loss when the teacher is stored as top-k (+ rest mass) instead of the full softmax.

A tiny Llama teacher (4 layers, hidden 128; the MiniLM teacher's WordPiece tokenizer, its ids remapped to
the tokens that occur in the sentences used, to keep the CPU cost small) is first
trained by next-token cross-entropy on SST-2 training sentences so that its distributions are peaked like a
real LM's; then, on held-out SST-2 dev sentences, every LM loss between two students and the teacher is
computed live (full vocabulary) and from top-k stores of several k. The ratio stored / live is the bias (1 is
exact; the data-processing inequality makes every ratio <= 1).

Students: ``truncate`` (teacher layers 0 and 3, close to the teacher) and ``shrink`` (2 layers, hidden 64,
random init with PCA embeddings: far from the teacher).

Example (the command behind docs/lm.md):
    python benchmarks/lm_topk_bias.py --data ../shared/data/sst2 \
        --tokenizer ../shared/models/teacher-sst2-minilm --out benchmarks/results/lm_topk_bias.json
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from textdistill.data.lm_data import LMCollator, LMExample, encode_lm_examples, pad_token_of  # noqa: E402
from textdistill.losses import LOSSES  # noqa: E402
from textdistill.models.causal_lm import (  # noqa: E402
    HFCausalLM,
    causal_lm_info,
    shrink_causal_lm,
    truncate_causal_lm,
)
from textdistill.training.teacher_cache.lm_topk import StoredLMTeacher, build_lm_topk_store  # noqa: E402

TERMS = [
    ("lm_kl", {}),
    ("lm_reverse_kl", {}),
    ("lm_jsd", {"beta": 0.5}),
    ("lm_skew_kl", {"alpha": 0.1}),
    ("lm_skew_reverse_kl", {"alpha": 0.1}),
    ("lm_tvd", {}),
]


def sentences(path: Path, n: int) -> list[str]:
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"].strip() for r in rows[:n]]


def train_teacher(rows, collate, vocab: int, steps: int, batch: int, seed: int) -> HFCausalLM:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ce = LOSSES.get("lm_ce")({}, None, causal_lm_info(config), None)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, len(rows), (batch,), generator=g).tolist()
        b = collate([rows[i] for i in idx])
        out = HFCausalLM(model)(b["input_ids"], b["attention_mask"])
        loss = ce(out, None, b)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 50 == 0 or step == steps - 1:
            print(f"teacher step {step}: lm_ce {loss.item():.3f}", flush=True)
    model.eval().requires_grad_(False)
    return HFCausalLM(model)


def loss_values(student, teacher_source, batches, info) -> dict[str, float]:
    out = {}
    for name, params in TERMS:
        term = LOSSES.get(name)(params, info, info, None)
        vals = []
        with torch.no_grad():
            for b in batches:
                vals.append(term(student(b["input_ids"], b["attention_mask"]), teacher_source(b), b).item())
        out[name] = sum(vals) / len(vals)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="SST-2 folder with train.tsv and dev.tsv")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--train-sentences", type=int, default=3000)
    ap.add_argument("--eval-sentences", type=int, default=256)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--ks", default="1,2,5,10,20,50,100,1000")
    ap.add_argument("--out", default="benchmarks/results/lm_topk_bias.json")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    collate = LMCollator(pad_token_of(tok))
    data = Path(args.data)
    train = encode_lm_examples(
        [LMExample(text=s) for s in sentences(data / "train.tsv", args.train_sentences)], tok, 32
    )
    held = encode_lm_examples(
        [LMExample(text=s) for s in sentences(data / "dev.tsv", args.eval_sentences)], tok, 32
    )
    # Remap to the ids that occur (a smaller softmax: the 2-core machine is shared today).
    used = sorted({i for r in train + held for i in r["input_ids"]} | {pad_token_of(tok) or 0})
    remap = {old: new for new, old in enumerate(used)}
    for r in train + held:
        r["input_ids"] = [remap[i] for i in r["input_ids"]]
        r["labels"] = list(r["input_ids"])
    collate = LMCollator(remap[pad_token_of(tok) or 0])
    vocab = len(used)
    t0 = time.perf_counter()
    teacher = train_teacher(train, collate, vocab, args.steps, 32, 0)
    train_s = time.perf_counter() - t0
    students = {
        "truncate[0,3]": HFCausalLM(truncate_causal_lm(teacher.model, [0, 3]).eval()),
        "shrink-2L-64": HFCausalLM(
            shrink_causal_lm(teacher.model, num_layers=2, hidden_size=64, num_heads=2, num_kv_heads=1).eval()
        ),
    }
    batches = [collate(held[i : i + 32]) for i in range(0, len(held), 32)]
    info = causal_lm_info(teacher.config)
    results: dict = {"students": {}}
    with tempfile.TemporaryDirectory() as tmp:
        stores = {}
        for k in [int(x) for x in args.ks.split(",")] + [vocab]:
            store = build_lm_topk_store(teacher, held, Path(tmp) / f"k{k}", k, collate=collate, batch_size=32)
            stores[k] = (StoredLMTeacher(store), store.nbytes())
        for sname, student in students.items():
            live = loss_values(student, lambda b: teacher(b["input_ids"], b["attention_mask"]), batches, info)
            row = {"live": live, "ratio": {}}
            for k, (source, _) in stores.items():
                got = loss_values(student, source, batches, info)
                row["ratio"][str(k)] = {n: got[n] / live[n] for n in live}
            results["students"][sname] = row
            print(sname, json.dumps(row, indent=1), flush=True)
        results["store_bytes"] = {str(k): nb for k, (_, nb) in stores.items()}
    results["setup"] = {
        "command": " ".join(sys.argv),
        "vocab": vocab,
        "held_out_tokens": sum(len(r["input_ids"]) for r in held),
        "teacher_train_s": round(train_s, 1),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
