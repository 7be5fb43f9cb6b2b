"""Subcommand ``export``: a saved model to ONNX (fp32 + int8), checked against PyTorch on real inputs.

textdistill export runs/student/model --data dev.tsv -o runs/student/onnx
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``export`` to the main CLI's subparsers."""
    from textdistill.evaluation.cli import add_data_arguments

    p = subparsers.add_parser(
        "export",
        help="export a saved model to ONNX (+ int8), parity-checked on real dev inputs",
        description="Export a model directory to model.onnx with dynamic batch and sequence axes, check its "
        "logits against PyTorch on the dev examples, and (unless --no-int8) write a dynamically quantized "
        "model.int8.onnx with its dev metrics and agreement. Needs pip install 'textdistill[export]'.",
    )
    p.add_argument("model", help="model directory (HF or BiLSTM student)")
    p.add_argument("--output-dir", "-o", required=True, help="export directory")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 quantized graph")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |delta logit| accepted (default: 1e-4)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads of the checks")
    add_data_arguments(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """``textdistill export``: export, check, print the export summary as JSON."""
    from textdistill.evaluation.cli import data_kwargs
    from textdistill.export.onnx import export_dir

    options = data_kwargs(args)
    result = export_dir(
        args.model,
        args.output_dir,
        args.data,
        opset=args.opset,
        quantize_int8=not args.no_int8,
        tolerance=args.tolerance,
        max_length=args.max_length,
        threads=args.threads,
        max_examples=options.pop("max_examples") or 512,
        announce=True,
        **options,
    )
    print(json.dumps(result.to_dict(), indent=2))
    return 0
