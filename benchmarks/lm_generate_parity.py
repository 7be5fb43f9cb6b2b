"""generate-responses vs HF ``generate`` on a real causal LM: greedy continuations must be identical.

Writes three chat prompts, runs :func:`textdistill.training.lm_generate.generate_responses` (one batch, KV
cache, left padding) and compares each response with ``model.generate(do_sample=False)`` on that prompt alone.

Example (the command behind docs/lm.md):
    OMP_NUM_THREADS=1 python benchmarks/lm_generate_parity.py --model /work/models/SmolLM2-135M-Instruct \
        --work /work/bench/issue-18a/smol
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from textdistill.config.lm import LMConfig  # noqa: E402
from textdistill.training.lm_generate import generate_responses  # noqa: E402

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "Name three primary colours."]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a causal-LM folder with a chat template")
    ap.add_argument("--work", required=True, help="scratch folder")
    ap.add_argument("--new-tokens", type=int, default=24)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    t0 = time.perf_counter()
    lm = LMConfig(max_new_tokens=args.new_tokens, temperature=0.0)
    result = generate_responses(args.model, work / "prompts.txt", work / "responses.jsonl", lm=lm, batch_size=3,
                                max_length=256)  # fmt: skip
    seconds = time.perf_counter() - t0
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    ours = [json.loads(line)["response"] for line in result.path.open()]
    same = 0
    for prompt, response in zip(PROMPTS, ours, strict=True):
        enc = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)  # fmt: skip
        out = model.generate(**enc, max_new_tokens=args.new_tokens, do_sample=False)
        hf = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        print(json.dumps({"prompt": prompt, "textdistill": response, "hf_generate": hf}))
        same += response == hf
    print(
        f"identical: {same} of {len(PROMPTS)}; generate-responses took {seconds:.1f} s (reused: {result.reused})"
    )


if __name__ == "__main__":
    main()
