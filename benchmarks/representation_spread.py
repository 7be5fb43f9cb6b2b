"""Representation-collapse diagnostic: how much a model's token vectors still differ, layer by layer.

For each model directory, on the first ``--n`` sentences of a GLUE-style TSV (eager attention, fp32):

    token std     per layer (embeddings first): the mean over hidden features of each feature's standard
                  deviation across all real tokens of the batch. Near 0: every token has the same vector.
    CLS spread    the final [CLS] vector's standard deviation across sentences, divided by its mean absolute
                  value (per feature, averaged). Near 0: the classifier sees the same input for every sentence.
    attn entropy  per layer, the mean entropy (nats) of the attention distributions of real query tokens
                  (low: saturated, one-hot attention).

Example (the table in docs/results.md, "Why TinyBERT-style task distillation collapsed"):
    python benchmarks/representation_spread.py --data ../shared/data/sst2/dev.tsv \
        runs/bench-sst2/teacher/model runs/bench-pipelines/tinybert/intermediate/model ...
"""

from __future__ import annotations

import argparse
import csv
import json

import torch


def spread(model_dir: str, texts: list[str]) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True, output_attentions=True)
    real = enc["attention_mask"].bool()
    entropy = []
    for a in out.attentions:  # (B, H, L, L)
        e = -(a * a.clamp_min(1e-12).log()).sum(-1)  # (B, H, L)
        entropy.append(round(e.permute(0, 2, 1)[real].mean().item(), 2))
    cls = out.hidden_states[-1][:, 0]
    return {
        "token_std": [round(h[real].std(0).mean().item(), 2) for h in out.hidden_states],
        "cls_spread": round(cls.std(0).mean().item() / cls.abs().mean().item(), 3),
        "attention_entropy": entropy,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model directories")
    ap.add_argument("--data", required=True, help="TSV with a 'sentence' column (GLUE format)")
    ap.add_argument("--n", type=int, default=64)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    with open(args.data, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    texts = [r["sentence"] for r in rows[: args.n]]
    print("| model | token std per layer (emb, 1, 2, …) | [CLS] spread | attention entropy per layer |")
    print("|---|---|---|---|")
    results = {}
    for m in args.models:
        r = results[m] = spread(m, texts)
        print(
            f"| {m} | {' '.join(f'{x:.2f}' for x in r['token_std'])} | {r['cls_spread']:.3f} | "
            f"{' '.join(f'{x:.2f}' for x in r['attention_entropy'])} |"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
