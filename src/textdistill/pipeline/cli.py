"""Subcommands ``run`` (a multi-stage recipe) and ``recipes`` (list / describe the shipped ones).

    textdistill recipes                       # the shipped recipes
    textdistill recipes tinybert              # parameters and stages of one
    textdistill recipes tinybert --yaml       # its YAML, to copy and edit
    textdistill run tinybert teacher=runs/teacher task_train=train.tsv task_dev=dev.tsv corpus=wiki/ \\
        stages.prediction.train.lr=1e-5 -o runs/tinybert
    textdistill run tinybert ... --from prediction   # redo the last stage (and nothing before it)
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``run`` and ``recipes`` to the main CLI's subparsers."""
    p = subparsers.add_parser(
        "run",
        help="run a multi-stage recipe (shipped name or YAML file), skipping stages that are up to date",
        description="Run a recipe stage by stage. key=value sets a recipe parameter (see `textdistill recipes "
        "NAME`); stages.<stage>.<section>.<key>=value or defaults.<section>.<key>=value changes the recipe. "
        "Finished stages whose config and inputs are unchanged are skipped.",
    )
    p.add_argument("recipe", help="a shipped recipe name (see `textdistill recipes`) or a recipe YAML file")
    p.add_argument(
        "arguments", nargs="*", metavar="key=value", help="recipe parameters and stages./defaults. overrides"
    )
    p.add_argument(
        "--from", dest="from_stage", metavar="STAGE", help="re-run from this stage on, reusing earlier ones"
    )
    p.add_argument("--output-dir", "-o", help="pipeline directory (default: runs/<recipe>)")
    p.add_argument("--dry-run", action="store_true", help="validate and show what would run, train nothing")
    p.add_argument("--quiet", "-q", action="store_true", help="no plan, progress bars or stage messages")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("recipes", help="list the shipped recipes, or describe one")
    p.add_argument("name", nargs="?", help="a recipe name or file to describe")
    p.add_argument("--yaml", action="store_true", help="print the recipe's YAML instead of a summary")
    p.set_defaults(func=cmd_recipes)


def cmd_run(args: argparse.Namespace) -> int:
    """``textdistill run``: resolve, validate everything, run; prints a JSON summary."""
    from textdistill.pipeline.recipe_format import split_arguments
    from textdistill.pipeline.runner import run_pipeline

    params, overrides = split_arguments(list(args.arguments or []))
    result = run_pipeline(
        args.recipe,
        params,
        output_dir=args.output_dir,
        from_stage=args.from_stage,
        overrides=overrides,
        dry_run=args.dry_run,
        quiet=args.quiet,
    )
    summary = {
        "output_dir": str(result.output_dir),
        "model_dir": str(result.model_dir) if result.model_dir else None,
        "stages": {s.name: {"status": s.status, "reason": s.reason, **s.metrics} for s in result.stages},
    }
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    """``textdistill recipes [NAME] [--yaml]``."""
    from textdistill.pipeline.recipe_format import load_recipe
    from textdistill.recipes import recipe_names, recipe_path

    if args.name is None:
        names = recipe_names()
        width = max(len(n) for n in names)
        for n in names:
            print(f"{n:<{width}}  {load_recipe(n).description}")
        print("\n`textdistill recipes NAME` shows a recipe's parameters and stages.")
        return 0
    if args.yaml:
        print(recipe_path(args.name).read_text(encoding="utf-8"), end="")
        return 0
    print(describe_recipe(load_recipe(args.name)))
    return 0


def describe_recipe(recipe: Any) -> str:
    """A readable summary of a :class:`~textdistill.pipeline.recipe.Recipe`: parameters and stages."""
    from textdistill.config.loader import merge

    lines = [f"{recipe.name}: {recipe.description}"]
    if recipe.paper:
        lines.append(f"paper: {recipe.paper}")
    lines.append(f"file: {recipe.source}")
    lines.append("")
    lines.append("parameters (name=value on the command line):")
    width = max([len(n) for n in recipe.params] + [4])
    for p in recipe.params.values():
        default = "required" if p.required else f"default {_show(p.default)}"
        lines.append(f"  {p.name:<{width}}  {default:<24}  {p.help}")
    lines.append("")
    lines.append("stages (in order):")
    width = max(len(s.name) for s in recipe.stages)
    for s in recipe.stages:
        merged = merge(recipe.defaults, s.sections)
        terms = merged.get("objective") or (
            [{"name": "hard_ce"}] if s.mode == "finetune" else [{"name": "kd_kl"}]
        )
        names = ", ".join(str(t.get("name")) if isinstance(t, dict) else str(t) for t in terms)
        student = s.sections.get("student") or recipe.defaults.get("student") or {}
        if "from" in student:
            init = f"from {student['from']}"
        else:
            init = str(student.get("type", "pretrained"))
        cond = " ".join(
            [f"when {', '.join(s.when)}"] * bool(s.when) + [f"unless {', '.join(s.unless)}"] * bool(s.unless)
        )
        lines.append(
            f"  {s.name:<{width}}  {s.mode:<8}  student: {init:<24}  objective: {names}  {cond}".rstrip()
        )
        if s.description:
            lines.append(f"  {'':<{width}}  {s.description}")
    return "\n".join(lines)


def _show(value: Any) -> str:
    """A parameter default as it would be typed on the command line (YAML spelling)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
