"""Subcommand ``generate-responses``: a causal-LM teacher writes a response to every prompt (sequence-level KD).

textdistill generate-responses --teacher runs/my-llama --prompts prompts.txt -o responses.jsonl
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``generate-responses`` to the main CLI's subparsers."""
    p = subparsers.add_parser(
        "generate-responses",
        help="a causal-LM teacher writes a response per prompt into a JSONL (sequence-level KD data)",
        description="Generate the teacher's response to every prompt (greedy by default) into a JSONL of "
        "{prompt, response} lines, which `textdistill distill` trains on (loss on the response). The file "
        "appears complete (atomic rename); an interrupted run resumes; a finished one with the same "
        "teacher, prompts and settings is reused.",
    )
    p.add_argument("--teacher", required=True, help="causal-LM folder with its tokenizer")
    p.add_argument("--prompts", required=True, help=".txt (one prompt per line) or .jsonl (prompt / text)")
    p.add_argument("--output", "-o", required=True, help="the JSONL to write")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens per response at most (64)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default), else sampled")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass when sampling (1.0)")
    p.add_argument("--seed", type=int, default=42, help="seed of sampled responses (42)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts generated together (8)")
    p.add_argument("--max-length", type=int, default=512, help="prompt + response tokens at most (512)")
    p.add_argument("--gguf-file", default=None, help="GGUF file inside --teacher")
    p.add_argument(
        "--chat-template", choices=("auto", "on", "off"), default="auto",
        help="render prompts as a chat user turn (auto: when the tokenizer has a template)",
    )  # fmt: skip
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code to run")
    p.set_defaults(func=cmd_generate_responses)


def cmd_generate_responses(args: argparse.Namespace) -> int:
    """``textdistill generate-responses``: generate, print what was done as JSON."""
    from textdistill.config.lm import LMConfig
    from textdistill.training.lm_generate import generate_responses

    result = generate_responses(
        args.teacher,
        args.prompts,
        args.output,
        gguf_file=args.gguf_file,
        trust_remote_code=args.trust_remote_code,
        lm=LMConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p),
        seed=args.seed,
        batch_size=args.batch_size,
        max_length=args.max_length,
        chat_template={"auto": None, "on": True, "off": False}[args.chat_template],
        quiet=False,
    )
    summary = {"output": str(result.path), "responses": result.n, "reused": result.reused}
    summary.update(resumed_from=result.resumed_from, fingerprint=result.fingerprint)
    print(json.dumps(summary, indent=2))
    return 0
