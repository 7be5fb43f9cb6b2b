"""Subcommand ``trim-vocab``: a saved model with only the tokens its task uses.

textdistill trim-vocab runs/student/model --data train.tsv --data aug.jsonl -o runs/student/model-trimmed
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``trim-vocab`` to the main CLI's subparsers."""
    p = subparsers.add_parser(
        "trim-vocab",
        help="keep only the tokens seen in the given data (smaller embeddings, same logits on kept text)",
        description="Tokenize the --data files with the model's tokenizer, keep the tokens seen (plus the "
        "special tokens), copy their embedding rows and write the model with a tokenizer over the kept "
        "vocabulary (unseen tokens become [UNK]). WordPiece tokenizers only.",
    )
    p.add_argument("model", help="model directory (HF or BiLSTM student) with its tokenizer")
    p.add_argument("--data", action="append", required=True, help="text file (TSV/CSV/JSONL); repeatable")
    p.add_argument("--output-dir", "-o", required=True, help="where the trimmed model goes")
    p.add_argument("--vocab", default="auto", help="auto (every token seen) | N (most frequent) | token file")
    p.add_argument("--text-column", default="sentence", help="column of the text (default: sentence)")
    p.add_argument("--text-pair-column", default=None, help="column of the second text of a pair")
    p.set_defaults(func=cmd_trim_vocab)


def cmd_trim_vocab(args: argparse.Namespace) -> int:
    """``textdistill trim-vocab``: trim, print the sizes before/after as JSON."""
    from textdistill.models.vocab import trim_model_dir

    result = trim_model_dir(
        args.model,
        args.data,
        args.output_dir,
        vocab=args.vocab,
        text_column=args.text_column,
        text_pair_column=args.text_pair_column,
    )
    print(json.dumps(result, indent=2))
    return 0
