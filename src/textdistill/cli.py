"""The ``textdistill`` command: a thin front where every subcommand is a short call into the Python API.

Errors caused by input (config, data, models, files) print one clear message and exit with status 2; no
traceback. ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from textdistill.errors import TextDistillError, clip_message

EXIT_USER_ERROR = 2

# Subcommands contributed by other parts of the package, each module's register(subparsers).
EXTENSIONS = (
    "textdistill.pipeline.cli",  # run, recipes
    "textdistill.data.augment.cli",  # augment
    "textdistill.evaluation.cli",  # benchmark
    "textdistill.export.cli",  # export onnx
    "textdistill.provision",  # provision (real pretrained models from PyPI)
    "textdistill.models.vocab_cli",  # trim-vocab
    "textdistill.training.lm_generate_cli",  # generate-responses (sequence-level KD)
)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML config file (defaults < YAML < key=value overrides)")
    p.add_argument("--train", help="training data file (sets data.train)")
    p.add_argument("--dev", help="dev data file (sets data.dev)")
    p.add_argument("--output-dir", "-o", help="run directory (sets output_dir)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a run directory that already holds a run"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the output directory from its last good checkpoint (starts it if there is none)",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. train.lr=3e-5"
    )


def _load(args: argparse.Namespace, extra: dict[str, str | None]):
    """The run's Config: YAML (--config) < flags (--train, --teacher...) < key=value overrides."""
    from textdistill.config.loader import read_yaml, resolve_config

    data = read_yaml(args.config) if getattr(args, "config", None) else {}
    # Flag values are set as given (a path is never parsed as YAML); key=value overrides come last and win.
    values = {
        "data.train": getattr(args, "train", None),
        "data.dev": getattr(args, "dev", None),
        "output_dir": getattr(args, "output_dir", None),
        **extra,
    }
    if getattr(args, "overwrite", False):
        values["overwrite"] = True
    return resolve_config(data, list(getattr(args, "overrides", []) or []), values=values)


def _add_num_processes(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--num-processes",
        type=int,
        metavar="N",
        help="train data-parallel in N processes on this machine (one per GPU; gloo on CPU); "
        "train.batch_size stays the global batch. Same as `accelerate launch -m textdistill ...`",
    )


def _print_result(result) -> None:
    if os.environ.get("RANK", "0") != "0":
        return  # one launched process of several: the main one prints
    print(json.dumps({"run_dir": str(result.run_dir), "dev": result.dev_metrics}, indent=2))


def cmd_finetune(args: argparse.Namespace) -> int:
    from textdistill.training.runner import run_training

    cfg = _load(args, {"student.type": "pretrained" if args.model else None, "student.path": args.model})
    _print_result(run_training(cfg, "finetune", resume=args.resume))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from textdistill.training.runner import run_training

    cfg = _load(args, {"teacher.path": args.teacher})
    _print_result(run_training(cfg, "distill", resume=args.resume))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from textdistill.config.loader import dump_yaml
    from textdistill.config.validate import for_mode, validate_config

    if args.action == "show" and args.help_keys:
        from textdistill.config.keys_help import keys_help

        print("\n".join(keys_help()))
        return 0
    extra = {"teacher.path": args.teacher}
    if args.model:
        extra.update({"student.type": "pretrained", "student.path": args.model})
    cfg = for_mode(_load(args, extra), args.mode)
    if args.action == "show":
        print(dump_yaml(cfg), end="")
        return 0
    from textdistill.training.lm_runner import is_causal_lm_run, validate_lm_run

    if is_causal_lm_run(cfg):  # generative LMs: configs, tokenizers and data files, no weights
        validate_lm_run(cfg, args.mode)
        print(f"config and data are valid for {args.mode} (causal_lm)")
        return 0
    # The task as the run will infer it (columns, kind, metric, objective, lr), then the config, then the
    # data: labels checked against the teacher's config. No weights are loaded.
    from textdistill.data.task import load_task_data
    from textdistill.data.task_inference import resolve_task, teacher_id2label

    resolved, spec = resolve_task(cfg, args.mode)
    validate_config(resolved, args.mode)
    if resolved.data.format != "hf":
        load_task_data(
            resolved.data, teacher_id2label=teacher_id2label(resolved, args.mode), seed=resolved.train.seed
        )
    print(spec.describe())
    print(f"config and data are valid for {args.mode}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from textdistill.evaluation.evaluate import evaluate_dir

    metrics = evaluate_dir(
        args.model,
        args.data,
        overrides=args.overrides,
        batch_size=args.batch_size,
        precision=args.precision,
        announce=True,
    )
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from textdistill.demo import run_demo

    run_demo(quick=args.quick, output_dir=args.output_dir, overwrite=args.overwrite)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "losses":
        from textdistill.losses import LOSSES

        names = LOSSES.names()
    else:
        from textdistill.models.students import STUDENTS

        names = STUDENTS.names()
    print("\n".join(names))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="textdistill",
        description="Distil large NLP models into small, fast ones (logit KD, TinyBERT, MiniLM, DistilBERT, BiLSTM).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("finetune", help="fine-tune a teacher on labelled data (hard labels)")
    p.add_argument("--model", "-m", help="pretrained model dir or hub id (sets student.path)")
    _add_run_options(p)
    _add_num_processes(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("distill", help="distil a teacher into a student")
    p.add_argument("--teacher", "-t", help="fine-tuned teacher dir or hub id (sets teacher.path)")
    _add_run_options(p)
    _add_num_processes(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser(
        "config",
        help="show or validate a resolved config",
        description="show: print the resolved config (--help-keys: every key with its documentation). "
        "validate: check the config, the models' configs and the data files (columns, labels, task) "
        "without loading weights, and print the inferred task.",
    )
    p.add_argument("action", choices=["show", "validate"])
    p.add_argument(
        "--mode", choices=["distill", "finetune"], default="distill", help="what the config is for"
    )
    p.add_argument("--teacher", "-t", help="fine-tuned teacher dir (sets teacher.path)")
    p.add_argument("--model", "-m", help="finetune: pretrained model dir (sets student.path)")
    p.add_argument(
        "--help-keys",
        action="store_true",
        help="show: list every config key with its type, default and meaning",
    )
    _add_run_options(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("evaluate", help="evaluate a saved model on a labelled file")
    p.add_argument("--model", "-m", required=True, help="model directory")
    p.add_argument("--data", "-d", required=True, help="labelled TSV/CSV/JSONL file")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 autocast where the CPU/GPU runs it natively, else fp32 (fp32 gives the exact scores)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="data options, as in the config's data section without the prefix, e.g. text_column=text "
        "text_pair_column=hypothesis label_column=score regression=true labels=[neg,pos]; unset columns "
        "and the kind are inferred",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="offline demo: fine-tune MiniLM on tweets, distil a 5x smaller student")
    p.add_argument("--quick", action="store_true", help="same path on a small subset (about 3 minutes)")
    p.add_argument("--output-dir", "-o", default="runs/demo", help="where the demo's runs go")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo's runs")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("list", help="list registered components")
    p.add_argument("what", choices=["losses", "students"])
    p.set_defaults(func=cmd_list)

    for name in EXTENSIONS:
        importlib.import_module(name).register(sub)
    return parser


def _stop_on_sigterm() -> object:
    """SIGTERM raises (like Ctrl-C's KeyboardInterrupt) from the first moment, imports included: its
    default action would end the process silently with no message. Runs replace this handler with their
    own (training/run_guard.py, training/signals.py) while they run."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: object) -> None:
        from textdistill.training.signals import TrainingInterrupted

        raise TrainingInterrupted(signum, "stopped by SIGTERM")

    return signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``textdistill`` console script."""
    import signal

    previous = _stop_on_sigterm()
    try:
        return _main(argv)
    except KeyboardInterrupt as e:  # before the command's own handling (parsing, imports)
        print("textdistill: interrupted", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse takes a subcommand's positionals in one go: in `config show --config c.yaml train.lr=1`
        # the overrides after an option are left over. key=value leftovers are overrides, in their order.
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if getattr(args, "num_processes", None) is not None:
            from textdistill.training.launch import launch_processes

            status = launch_processes(list(sys.argv[1:] if argv is None else argv), args.num_processes)
            if status is not None:  # None: this process trains (N = 1, or it is one of the N launched)
                return status
        return int(args.func(args) or 0)
    except TextDistillError as e:
        if args.debug:
            raise
        print(f"textdistill: error: {clip_message(str(e))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as e:
        print("textdistill: interrupted", file=sys.stderr)
        return getattr(e, "exit_code", 130)  # 143 after SIGTERM (training.signals.TrainingInterrupted)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["build_parser", "main"]


def console() -> None:  # pragma: no cover - console script shim
    """Console-script entry: exit with main()'s status."""
    sys.exit(main())
