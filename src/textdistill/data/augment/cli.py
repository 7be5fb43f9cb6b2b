"""Command line of augmentation: ``textdistill augment --data train.tsv --out train_aug.tsv ...``.

:func:`register` adds the ``augment`` subcommand to the main CLI's subparsers (its handler is
:func:`augment_cli`); :func:`main` runs it standalone (``python -m textdistill.data.augment``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from textdistill.config.augment import AugmentConfig
from textdistill.errors import TextDistillError

_DEFAULTS = AugmentConfig()
_HELP = "augment a training file for distillation (TinyBERT / Tang et al.)"
_DESCRIPTION = (
    "Augment a training file (TinyBERT's masked-LM + word-vector replacement, or Tang et al.'s masking / POS "
    "/ n-gram rules). New rows have an empty label (the teacher labels them) and is_original=false. The "
    "output is reused while its fingerprint matches."
)


def _number(group: Any, flag: str, help: str) -> None:
    """``--flag`` for the numeric :class:`AugmentConfig` field of that name: its type and default (shown)."""
    default = getattr(_DEFAULTS, flag.lstrip("-").replace("-", "_"))
    group.add_argument(flag, type=type(default), default=default, help=f"{help} (default: {default})")


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = _DEFAULTS
    io = parser.add_argument_group("data")
    io.add_argument("--data", required=True, help="input TSV/CSV/JSONL file (GLUE layout for TSV)")
    io.add_argument(
        "--out",
        default=None,
        help="output .tsv or .jsonl (default: <cache-dir>/augment-<fingerprint>.jsonl); its fingerprint "
        "sidecar is <out>.meta.json and a matching one makes the command return at once",
    )
    io.add_argument("--format", default="auto", help="input format: auto (by extension) | tsv | csv | jsonl")
    io.add_argument("--text-column", default="sentence", help="column of the text (default: sentence)")
    io.add_argument("--text-pair-column", default=None, help="column of the second text of a pair")
    io.add_argument("--label-column", default="label", help="column of the label (default: label)")
    io.add_argument("--regression", action="store_true", help="labels are real numbers")
    io.add_argument("--force", action="store_true", help="recompute even when the fingerprint matches")

    m = parser.add_argument_group("method")
    m.add_argument("--method", default="tinybert", help="tinybert | tang | none (default: tinybert)")
    _number(m, "--n-aug", "new examples per input, N_a")
    _number(m, "--seed", "sampling seed")
    m.add_argument("--cache-dir", default=d.cache_dir, help="where outputs go when --out is not given")

    t = parser.add_argument_group("tinybert")
    t.add_argument(
        "--mlm", default=d.mlm, help="masked LM: checkpoint directory or hub id (with its MLM head)"
    )
    t.add_argument(
        "--word-vectors", default=d.word_vectors, help="GloVe-format text file for multi-piece words"
    )
    t.add_argument(
        "--teacher",
        default=None,
        help="teacher checkpoint: its tokenizer splits words, and without --word-vectors its input "
        "embeddings are the word-vector substitute",
    )
    t.add_argument("--tokenizer", default=None, help="tokenizer directory (default: --teacher, else --mlm)")
    _number(t, "--p-t", "replacement probability")
    _number(t, "--top-k", "candidates per word, K")
    _number(t, "--max-length", "masked-LM input length")
    _number(t, "--batch-size", "masked-LM batch size")

    g = parser.add_argument_group("tang")
    _number(g, "--p-mask", "masking probability")
    _number(g, "--p-pos", "POS-guided replacement probability")
    _number(g, "--p-ng", "n-gram sampling probability")
    g.add_argument(
        "--ngram-range",
        type=int,
        nargs=2,
        metavar=("LO", "HI"),
        default=list(d.ngram_range),
        help=f"n of n-gram sampling, inclusive (default: {d.ngram_range[0]} {d.ngram_range[1]})",
    )
    g.add_argument(
        "--pos-tagger", default="nltk", choices=["nltk", "none"], help="POS tagger (default: nltk)"
    )
    return parser


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``augment`` subcommand to the main CLI (the hook of ``textdistill.cli.EXTENSIONS``).

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        The subcommand's parser; its ``func`` default is :func:`augment_cli`.
    """
    parser = subparsers.add_parser("augment", help=_HELP, description=_DESCRIPTION)
    _configure(parser)
    parser.set_defaults(func=augment_cli)
    return parser


def config_from_args(args: argparse.Namespace) -> AugmentConfig:
    """The :class:`AugmentConfig` described by parsed arguments."""
    values = {f.name: getattr(args, f.name) for f in fields(AugmentConfig)}  # one flag per field
    return AugmentConfig(**{**values, "ngram_range": tuple(args.ngram_range)})


def augment_cli(args: argparse.Namespace) -> int:
    """Run the ``augment`` subcommand; user errors propagate as TextDistillError (the CLI prints them).

    Returns:
        0 on success.
    """
    from textdistill.data.augment.files import augment_to_file

    cfg = config_from_args(args)
    result = augment_to_file(
        args.data,
        args.out,
        cfg,
        tokenizer=args.tokenizer or args.teacher,
        teacher_embeddings=args.teacher if cfg.method == "tinybert" and not cfg.word_vectors else None,
        pos_tagger=args.pos_tagger,
        text_column=args.text_column,
        text_pair_column=args.text_pair_column,
        label_column=args.label_column,
        format=args.format,
        regression=args.regression,
        force=args.force,
    )
    state = "reused (fingerprint matches)" if result.reused else f"written in {result.seconds:.1f}s"
    print(
        f"{result.path}: {result.n_original} originals + {result.n_augmented} augmented examples, {state}\n"
        f"fingerprint {result.fingerprint} (sidecar {result.sidecar})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: parse ``argv``, run, print user errors without a traceback.

    Returns:
        The exit status: 0 on success, 2 on a user error.
    """
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = _configure(argparse.ArgumentParser(prog="textdistill augment", description=_DESCRIPTION))
    args = parser.parse_args(argv)
    try:
        return augment_cli(args)
    except TextDistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
