"""Off-policy KD vs on-policy KD (GKD, lambda = 0.5) vs sequence-level KD on a small causal LM, CPU-sized.

Setup (everything built here, offline):

* data: SST-2 sentences of at least ``--min-words`` words (``--data``: train.tsv / dev.tsv), lower-cased; a word-level tokenizer over the
  ``--vocab`` most frequent training words (others -> <unk>), saved with the teacher;
* teacher: a Llama (4 layers, hidden 96, 4 heads / 2 KV heads) trained ``--teacher-steps`` steps of
  next-token cross-entropy on the training sentences;
* student: ``shrink`` (2 layers, hidden 48, 2 heads / 1 KV head, PCA-initialised embeddings), under 1/3 of
  the teacher's parameters; every mode trains the same initial student for the same steps, batch and lr.

Modes (``textdistill distill`` runs, ``train.precision=fp32``):

* ``data_only``: lm_ce on the sentences (no teacher) -- the baseline;
* ``off_policy``: lm_kl (forward KL) to the live teacher on the sentences;
* ``on_policy``: the same with ``lm.on_policy_fraction=0.5``: half the batches are the student's own
  continuations (temperature 1) of the first half of each sentence, scored by the teacher;
* ``off_policy_jsd`` / ``on_policy_jsd``: the same two with GKD's generalized JSD (beta 0.5) instead of KL;
* ``seq_kd_greedy`` / ``seq_kd_sampled``: ``generate-responses`` writes the teacher's greedy / sampled
  (temperature 1) continuation of the first half of each training sentence, and the student trains with
  lm_ce on those responses (loss on the response).

Held-out metrics on the dev sentences: the student's perplexity (and the teacher's), token KL(teacher ||
student) and top-1 agreement on the data; and ``generated_kl``: the mean per-token KL(teacher || student)
on the student's own sampled continuations of the dev prompts (what on-policy training targets).

Example (the command behind docs/lm.md; a few minutes on one core):
    OMP_NUM_THREADS=1 python benchmarks/lm_modes.py --data ../shared/data/sst2 \
        --work /tmp/lm_modes --out benchmarks/results/lm_modes.json
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from textdistill.config.lm import LMConfig  # noqa: E402
from textdistill.config.loader import load_config  # noqa: E402
from textdistill.training.lm_generate import generate_responses  # noqa: E402
from textdistill.training.runner import run_training  # noqa: E402


def sentences(path: Path, n: int, min_words: int) -> list[str]:
    """The first ``n`` sentences of at least ``min_words`` words (SST-2's training set is mostly phrases)."""
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    texts = [" ".join(r["sentence"].lower().split()) for r in rows]
    return [t for t in texts if len(t.split()) >= min_words][:n]


def word_tokenizer(texts: list[str], size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    counts = collections.Counter(w for t in texts for w in t.split())
    words = [w for w, _ in counts.most_common(size - len(specials))]
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(specials + words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def train_teacher(texts: list[str], tok, out: Path, steps: int, seed: int) -> float:
    """Train and save the teacher; returns seconds (0 when a saved one is reused)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if (out / "config.json").is_file():
        return 0.0
    from textdistill.data.lm_data import LMCollator, LMExample, encode_lm_examples

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=96, intermediate_size=192, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    rows = encode_lm_examples([LMExample(text=t) for t in texts], tok, 32)
    collate = LMCollator(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        b = collate([rows[i] for i in torch.randint(0, len(rows), (32,), generator=g).tolist()])
        loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            print(f"teacher step {step}: ce {loss.item():.3f}", flush=True)
    model.eval().save_pretrained(out)
    tok.save_pretrained(out)
    return time.perf_counter() - t0


def prompt_of(text: str) -> str:
    words = text.split()
    return " ".join(words[: max(1, len(words) // 2)])


@torch.no_grad()
def generated_kl(
    student_dir: Path, teacher_dir: Path, prompts: list[str], seed: int, new_tokens: int
) -> float:
    """Mean per-token KL(teacher || student) on the student's sampled continuations of ``prompts``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from textdistill.models.lm_sampling import generate

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    student = AutoModelForCausalLM.from_pretrained(student_dir).eval()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    ids = [tok(p)["input_ids"] for p in prompts]
    conts = generate(
        student, ids, max_new_tokens=new_tokens, max_length=48, eos_token_id=2, pad_token_id=0, seed=seed
    )
    total, n = 0.0, 0
    for p, c in zip(ids, conts, strict=True):
        x = torch.tensor([p + c])
        lp = torch.log_softmax(teacher(x).logits[0, len(p) - 1 : -1], -1)
        lq = torch.log_softmax(student(x).logits[0, len(p) - 1 : -1], -1)
        total += float((lp.exp() * (lp - lq)).sum())
        n += len(c)
    return total / max(n, 1)


def distill(work: Path, name: str, train: Path, dev: Path, objective: str, steps: int, *extra: str) -> dict:
    cfg = load_config(
        None,
        [
            f"teacher.path={work / 'teacher'}", f"data.train={train}", f"data.dev={dev}", "data.task=causal_lm",
            "data.max_length=48", "student.type=shrink", "student.num_layers=2", "student.hidden_size=48",
            "student.num_heads=2", "student.num_kv_heads=1", f"objective.0.name={objective}",
            f"train.max_steps={steps}", "train.batch_size=16", "train.lr=3e-3", "train.warmup_ratio=0.05",
            "train.precision=fp32", "train.progress=false", "train.eval_batch_size=64", "train.seed=0",
            "lm.samples=3", f"output_dir={work / name}", "overwrite=true", *extra,
        ],
    )  # fmt: skip
    t0 = time.perf_counter()
    result = run_training(cfg, quiet=True)
    wall = time.perf_counter() - t0
    d = result.details
    return {"dev_before": d["dev_before"], "dev": d["dev"], "wall_s": round(wall, 1), "steps": d["steps"],
            "on_policy_batches": d.get("on_policy_batches", 0), "student_parameters": d["student_parameters"],
            "samples": d.get("samples"), "model_dir": str(result.model_dir)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="SST-2 folder with train.tsv and dev.tsv")
    ap.add_argument("--work", required=True, help="scratch folder (teacher, runs, responses)")
    ap.add_argument("--train-sentences", type=int, default=2000)
    ap.add_argument("--eval-sentences", type=int, default=200)
    ap.add_argument("--min-words", type=int, default=8, help="keep sentences of at least this many words")
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--teacher-steps", type=int, default=400)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--new-tokens", type=int, default=24, help="lm.max_new_tokens of every mode")
    ap.add_argument("--out", default="benchmarks/results/lm_modes.json")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train_texts = sentences(Path(args.data) / "train.tsv", args.train_sentences, args.min_words)
    dev_texts = sentences(Path(args.data) / "dev.tsv", args.eval_sentences, args.min_words)
    tok = word_tokenizer(train_texts, args.vocab)
    teacher_s = train_teacher(train_texts, tok, work / "teacher", args.teacher_steps, 0)
    (work / "train.txt").write_text("\n".join(train_texts) + "\n")
    (work / "dev.txt").write_text("\n".join(dev_texts) + "\n")
    (work / "prompts.txt").write_text("\n".join(prompt_of(t) for t in train_texts) + "\n")
    new = f"lm.max_new_tokens={args.new_tokens}"
    train, dev = work / "train.txt", work / "dev.txt"
    runs: dict[str, dict] = {}
    runs["data_only"] = distill(work, "data_only", train, dev, "lm_ce", args.steps, new)
    runs["off_policy"] = distill(work, "off_policy", train, dev, "lm_kl", args.steps, new)
    on = ("lm.on_policy_fraction=0.5", "lm.temperature=1.0")
    runs["on_policy"] = distill(work, "on_policy", train, dev, "lm_kl", args.steps, new, *on)
    # GKD's usual divergence: the generalized JSD (beta 0.5), off- and on-policy
    runs["off_policy_jsd"] = distill(work, "off_policy_jsd", train, dev, "lm_jsd", args.steps, new)
    runs["on_policy_jsd"] = distill(work, "on_policy_jsd", train, dev, "lm_jsd", args.steps, new, *on)
    for name, temperature in (("seq_kd_greedy", 0.0), ("seq_kd_sampled", 1.0)):
        t0 = time.perf_counter()
        lm = LMConfig(max_new_tokens=args.new_tokens, temperature=temperature)
        gen = generate_responses(
            work / "teacher",
            work / "prompts.txt",
            work / f"{name}.jsonl",
            lm=lm,
            batch_size=64,
            max_length=48,
        )
        gen_s = time.perf_counter() - t0
        runs[name] = distill(work, name, gen.path, dev, "lm_ce", args.steps, new)
        empty = sum(not json.loads(line)["response"] for line in gen.path.open())
        runs[name].update(generate_s=round(gen_s, 1), responses_reused=gen.reused, empty_responses=empty)
    dev_prompts = [prompt_of(t) for t in dev_texts]
    for name, r in runs.items():
        r["generated_kl"] = generated_kl(
            Path(r.pop("model_dir")), work / "teacher", dev_prompts, 1, args.new_tokens
        )
        print(name, json.dumps({k: r[k] for k in ("dev", "generated_kl", "wall_s")}), flush=True)
    from transformers import AutoModelForCausalLM

    teacher_params = sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(work / "teacher").parameters()
    )
    result = {
        "runs": runs,
        "setup": {
            "command": " ".join(sys.argv),
            "train_sentences": len(train_texts),
            "eval_sentences": len(dev_texts),
            "vocab": len(tok),
            "teacher_parameters": teacher_params,
            "teacher_train_s": round(teacher_s, 1),
            "steps": args.steps,
            "max_new_tokens": args.new_tokens,
            "precision": "fp32",
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
