"""Subcommand ``benchmark``: measure a teacher and its students, write the report.

    textdistill benchmark --teacher runs/teacher/model runs/student/model runs/bilstm/model \\
        --data dev.tsv -o runs/bench --onnx --threads 2
"""

from __future__ import annotations

import argparse
from typing import Any


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say how to read a labelled data file (shared with ``export``)."""
    g = parser.add_argument_group("data")
    g.add_argument("--data", "-d", required=True, help="labelled dev file (TSV/CSV/JSONL)")
    g.add_argument("--format", default="auto", help="auto (by extension) | tsv | csv | jsonl")
    g.add_argument(
        "--text-column",
        default=None,
        help="column of the text (default: inferred from the header: sentence1/sentence2, question/sentence, "
        "premise/hypothesis... make a pair; else sentence, text...)",
    )
    g.add_argument("--text-pair-column", default=None, help="column of the second text of a pair")
    g.add_argument(
        "--label-column", default=None, help="column of the label (default: label, labels, score... found)"
    )
    g.add_argument("--encoding", default="utf-8", help="file encoding (default: utf-8)")
    g.add_argument(
        "--regression",
        action="store_true",
        default=None,
        help="real-valued labels (default: inferred: a model with one output is a regression model)",
    )
    g.add_argument("--max-length", type=int, default=128, help="tokens per example (default: 128)")
    g.add_argument("--max-examples", type=int, default=None, help="use a seeded random subset of N examples")


def data_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments :func:`add_data_arguments` collected."""
    return {
        "text_column": args.text_column,
        "text_pair_column": args.text_pair_column,
        "label_column": args.label_column,
        "format": args.format,
        "encoding": args.encoding,
        "regression": args.regression,
        "max_examples": args.max_examples,
    }


def register(subparsers: Any) -> None:
    """Add ``benchmark`` to the main CLI's subparsers."""
    p = subparsers.add_parser(
        "benchmark",
        help="size, FLOPs, accuracy, latency and throughput of a teacher and its students (report + plots)",
        description="Measure the teacher and each student on real dev data: parameters, size, compression, "
        "FLOPs, metric, retention and agreement, CPU latency (batch 1) and throughput, optional ONNX fp32/int8 "
        "variants, layer CKA. Writes report.json, report.md and PNG plots to the output directory.",
    )
    p.add_argument("students", nargs="*", help="student model directories")
    p.add_argument("--teacher", "-t", required=True, help="teacher model directory")
    p.add_argument("--output-dir", "-o", required=True, help="report directory")
    add_data_arguments(p)
    s = p.add_argument_group("measurement")
    s.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's current count)")
    s.add_argument("--onnx", action="store_true", help="also export and time onnxruntime fp32 and int8")
    s.add_argument("--batch-size", type=int, default=32, help="throughput / evaluation batch (default: 32)")
    s.add_argument("--speed-examples", type=int, default=128, help="examples timed (default: 128)")
    s.add_argument("--repeats", type=int, default=5, help="timed repeats (default: 5)")
    s.add_argument("--warmup", type=int, default=3, help="untimed warm-up calls (default: 3)")
    s.add_argument(
        "--bf16",
        choices=["auto", "on", "off"],
        default="auto",
        help="bf16 autocast rows on CPU: auto = only with native bf16 (default)",
    )
    s.add_argument("--no-cka", action="store_true", help="skip teacher/student layer CKA")
    s.add_argument(
        "--no-speed", action="store_true", help="skip latency/throughput timing (quality and size only)"
    )
    s.add_argument(
        "--metric",
        default=None,
        help="task metric of the report and retention (default: inferred, as train.metric is)",
    )
    s.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    s.add_argument(
        "--entity-mode",
        choices=["lenient", "strict"],
        default="lenient",
        help="token classification: entity matching, lenient (seqeval default) or strict (IOB2/BIOES models)",
    )
    p.set_defaults(func=cmd_benchmark)


def cmd_benchmark(args: argparse.Namespace) -> int:
    """``textdistill benchmark``: run and print the Markdown report."""
    from textdistill.evaluation.benchmark import run_benchmark

    results = run_benchmark(
        args.teacher,
        args.students,
        args.data,
        out_dir=args.output_dir,
        max_length=args.max_length,
        threads=args.threads,
        onnx=args.onnx,
        batch_size=args.batch_size,
        speed_examples=args.speed_examples,
        repeats=args.repeats,
        warmup=args.warmup,
        bf16={"auto": None, "on": True, "off": False}[args.bf16],
        cka=not args.no_cka,
        plots=not args.no_plots,
        speed=not args.no_speed,
        metric=args.metric,
        announce=True,
        entity_mode=args.entity_mode,
        **data_kwargs(args),
    )
    with open(results["files"]["markdown"], encoding="utf-8") as f:
        print(f.read())
    print(f"report: {results['files']['markdown']}")
    return 0
