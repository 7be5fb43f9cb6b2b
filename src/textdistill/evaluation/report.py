"""Benchmark report: ``report.json`` (everything), ``report.md`` (tables) and PNG plots.

The results dict (as built by :func:`textdistill.evaluation.benchmark.run_benchmark`)::

    {
      "environment": {...},                     # speed.environment()
      "task": {"data": ..., "examples": N, "regression": bool, "metric": "accuracy",
               "seq_len_mean": float, "seq_len_max": int, "flops_seq_len": int},
      "models": [                               # one per model directory, teacher first
        {"name", "role": "teacher"|"student", "dir", "kind", "model_type",
         "params": {"total", "embedding", "non_embedding"}, "size": {"total_bytes", "weights_bytes"},
         "compression": {"params", "non_embedding_params", "size"}, "flops_per_example"}
      ],
      "entries": [                              # one per (model, runtime, precision, device)
        {"name", "model", "runtime", "precision", "device", "size_bytes",
         "metrics": {...}, "agreement": float|None, "speed": SpeedResult.to_dict()|None}
      ],
      "cka": {"<student>": {"matrix": [[...]], "pooling": "tokens", "rows": N}},
      "exports": {"<model>": ExportResult.to_dict()},
    }

Every key is optional except ``entries`` (or ``models``); missing values print as ``-``. matplotlib is an
optional dependency (``pip install 'textdistill[report]'``): without it the JSON and Markdown are still
written and the Markdown says how to get the plots.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from textdistill.evaluation.report_notes import agreement_header, agreement_note, noise_note

log = logging.getLogger(__name__)

PLOT_HINT = "pip install 'textdistill[report]'"
METRICS_FILE = "metrics.jsonl"


def _finite(x: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, tuples lists, paths and other objects strings."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if hasattr(x, "tolist"):
        return _finite(x.tolist())
    return str(x)


def slug(name: str) -> str:
    """A file-name-safe version of a model name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (both maximised).

    A point is dominated when another has ``x >= `` and ``y >=`` with at least one strictly greater.

    Args:
        points: ``(x, y)`` pairs, e.g. (throughput, accuracy).

    Returns:
        Indices of the non-dominated points, sorted by ``x``.
    """
    front = []
    for i, (xi, yi) in enumerate(points):
        dominated = any(
            (xj >= xi and yj >= yi) and (xj > xi or yj > yi) for j, (xj, yj) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def read_metrics_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Training log lines of ``metrics.jsonl``, tolerantly.

    Blank lines, lines that are not JSON objects and non-numeric values are skipped; a line without
    ``step`` gets its line number. Only numeric fields are kept.

    Returns:
        One dict per usable line with ``step`` and the numeric fields (e.g. ``loss``, ``lr``,
        ``eval/accuracy``).
    """
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            row = {
                k: float(v)
                for k, v in obj.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            }
            row.setdefault("step", float(lineno))
            rows.append(row)
    return rows


def find_metrics_jsonl(model_dir: str | os.PathLike[str] | None) -> Path | None:
    """``metrics.jsonl`` of a model directory, or of the run directory it sits in (``run/best``)."""
    if not model_dir:
        return None
    d = Path(model_dir)
    for candidate in (d / METRICS_FILE, d.parent / METRICS_FILE):
        if candidate.is_file():
            return candidate
    return None


def _fmt(x: Any, spec: str = ".3f", scale: float = 1.0) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, (int, float)):
        return format(x * scale if scale != 1.0 else x, spec)
    return str(x)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _primary_metric(results: dict[str, Any]) -> str:
    task = results.get("task") or {}
    if task.get("metric"):
        return str(task["metric"])
    return "pearson" if task.get("regression") else "accuracy"


def add_retention(results: dict[str, Any]) -> None:
    """Set ``retention`` (% of the teacher's metric) on every entry, in place.

    The reference is the teacher's PyTorch fp32 entry (the first teacher entry if there is none).
    """
    metric = _primary_metric(results)
    teacher = next((m["name"] for m in results.get("models", []) if m.get("role") == "teacher"), None)
    teacher_entries = [e for e in results.get("entries", []) if e.get("model") == teacher]
    ref_entry = next(
        (e for e in teacher_entries if e.get("runtime") == "pytorch" and e.get("precision") == "fp32"),
        teacher_entries[0] if teacher_entries else None,
    )
    ref = (ref_entry or {}).get("metrics", {}).get(metric)
    for e in results.get("entries", []):
        value = (e.get("metrics") or {}).get(metric)
        e["retention"] = 100.0 * value / ref if value is not None and ref else None


def _markdown(results: dict[str, Any], plots: dict[str, str], plot_note: str | None) -> str:
    """report.md: the run's data and machine, then one section per table, then the plots."""
    metric = _primary_metric(results)
    out = ["# textdistill benchmark", "", *_header(results, metric)]
    out += _size_section(results.get("models") or [])
    out += _quality_section(results.get("entries") or [], metric, agreement_header(results))
    out += _cka_section(results.get("cka") or {})
    out += ["## Plots", ""]
    if plots:
        out += [f"- {label}: ![]({file})" for label, file in plots.items()]
    if plot_note:
        out.append(plot_note)
    if not plots and not plot_note:
        out.append("(nothing to plot)")
    out.append("")
    return "\n".join(out)


def _header(results: dict[str, Any], metric: str) -> list[str]:
    """The data (examples, metric, sequence lengths) and the machine the numbers were measured on."""
    task = results.get("task") or {}
    env = results.get("environment") or {}
    out = []
    if task:
        mode = f" ({task['entity_mode']} entity matching)" if task.get("entity_mode") else ""
        out += [
            f"Data: `{task.get('data', '-')}`, {task.get('examples', '-')} examples, metric **{metric}**{mode}; "
            f"sequence length mean {_fmt(task.get('seq_len_mean'), '.1f')} / max {task.get('seq_len_max', '-')} "
            f"tokens; FLOPs at {task.get('flops_seq_len', '-')} tokens.",
            "",
        ]
        out += [f"{note}\n" for note in (noise_note(results, metric), agreement_note(results)) if note]
    if env:
        bf16 = env.get("bf16") or {}
        out += [
            f"Environment: {env.get('cpu', '-')} ({env.get('cpu_capability', '-')}), {env.get('threads', '-')} "
            f"threads, native bf16: {bf16.get('native', '-')}; torch {env.get('torch', '-')}, transformers "
            f"{env.get('transformers', '-')}, onnxruntime {env.get('onnxruntime', '-')}"
            + (f"; GPU {env['gpu']}" if env.get("gpu") else "")
            + ".",
            "",
        ]
    return out


def _columns_table(
    columns: list[tuple[str, Callable[[dict[str, Any]], str]]], rows: list[dict[str, Any]]
) -> str:
    """A Markdown table with one column per ``(header, cell function)`` and one row per item."""
    return _table([h for h, _ in columns], [[cell(r) for _, cell in columns] for r in rows])


def _size_section(models: list[dict[str, Any]]) -> list[str]:
    """Parameters, bytes, compression and FLOPs of every model."""
    if not models:
        return []

    def part(m: dict[str, Any], key: str) -> dict[str, Any]:
        return m.get(key) or {}

    columns = [
        ("Model", lambda m: str(m.get("name"))),
        ("Role", lambda m: str(m.get("role", "-"))),
        ("Type", lambda m: str(m.get("model_type") or m.get("kind") or "-")),
        ("Params", lambda m: _fmt(part(m, "params").get("total"), ",d")),
        ("Non-emb. params", lambda m: _fmt(part(m, "params").get("non_embedding"), ",d")),
        ("Weights (MB)", lambda m: _fmt(part(m, "size").get("weights_bytes"), ".1f", 1e-6)),
        ("Compression (params, x)", lambda m: _fmt(part(m, "compression").get("params"), ".2f")),
        (
            "Compression (non-emb., x)",
            lambda m: _fmt(part(m, "compression").get("non_embedding_params"), ".2f"),
        ),
        ("Compression (size, x)", lambda m: _fmt(part(m, "compression").get("size"), ".2f")),
        ("GFLOPs / example", lambda m: _fmt(m.get("flops_per_example"), ".3f", 1e-9)),
    ]
    return ["## Size and cost", "", _columns_table(columns, models), ""]


def _quality_section(
    entries: list[dict[str, Any]], metric: str, agreement_title: str = "Agreement w/ teacher"
) -> list[str]:
    """Metric, retention, agreement, latency and throughput of every model variant; then all metrics."""
    if not entries:
        return []

    def speed(e: dict[str, Any], key: str, spec: str) -> str:
        return _fmt((e.get("speed") or {}).get(key), spec)

    def metric_of(e: dict[str, Any], key: str) -> str:
        return _fmt((e.get("metrics") or {}).get(key), ".4f")

    batch = next((e["speed"].get("throughput_batch_size") for e in entries if e.get("speed")), 32)
    first = [
        ("Model", lambda e: str(e.get("name"))),
        ("Runtime", lambda e: str(e.get("runtime", "-"))),
        ("Precision", lambda e: str(e.get("precision", "-"))),
    ]
    columns = [
        *first,
        ("Device", lambda e: str(e.get("device", "-"))),
        ("Size (MB)", lambda e: _fmt(e.get("size_bytes"), ".1f", 1e-6)),
        (metric, lambda e: metric_of(e, metric)),
        ("Retention (%)", lambda e: _fmt(e.get("retention"), ".1f")),
        (agreement_title, lambda e: _fmt(e.get("agreement"), ".4f")),
        ("Latency p50 (ms, bs 1)", lambda e: speed(e, "latency_ms_p50", ".2f")),
        ("Latency p90 (ms, bs 1)", lambda e: speed(e, "latency_ms_p90", ".2f")),
        (f"Throughput (ex/s, bs {batch})", lambda e: speed(e, "throughput_eps", ".1f")),
    ]
    out = ["## Quality and speed", "", _columns_table(columns, entries), ""]
    other = sorted({k for e in entries for k in (e.get("metrics") or {}) if k not in (metric, "n")})
    if other:
        every = [*first, *((k, lambda e, k=k: metric_of(e, k)) for k in other)]
        out += ["All metrics:", "", _columns_table(every, entries), ""]
    return out


def _cka_section(cka: dict[str, Any]) -> list[str]:
    """One teacher-layers x student-layers CKA matrix per student (or why there is none)."""
    if not cka:
        return []
    out = ["## Layer CKA (linear, teacher layers x student layers)", ""]
    for name, c in cka.items():
        matrix = c.get("matrix") or []
        if not matrix:
            out += [f"- {name}: {c.get('note', 'not computed')}", ""]
            continue
        out += [f"**{name}** ({c.get('pooling', '-')}, {c.get('rows', '-')} rows; row 0 = embeddings):", ""]
        header = ["teacher \\ student"] + [str(j) for j in range(len(matrix[0]))]
        out += [
            _table(header, [[str(i)] + [_fmt(v, ".2f") for v in row] for i, row in enumerate(matrix)]),
            "",
        ]
    return out


def _new_figure(width: float = 6.0, height: float = 4.5) -> Any:
    # The object-oriented API with an Agg canvas: no pyplot global state, no GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _plot_tradeoff(results: dict[str, Any], path: Path) -> bool:
    metric = _primary_metric(results)
    pts, labels = [], []
    for e in results.get("entries") or []:
        speed = e.get("speed") or {}
        value = (e.get("metrics") or {}).get(metric)
        if speed.get("throughput_eps") is not None and value is not None:
            pts.append((float(speed["throughput_eps"]), float(value)))
            labels.append(f"{e.get('name')}")
    if not pts:
        return False
    front = pareto_front(pts)
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="tab:blue", label="model / runtime")
    ax.plot(
        [pts[i][0] for i in front],
        [pts[i][1] for i in front],
        color="tab:red",
        marker="o",
        markersize=9,
        markerfacecolor="none",
        label="Pareto front",
    )
    for (x, y), label in zip(pts, labels):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("throughput (examples/s, log scale)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs throughput")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return True


def _plot_cka(name: str, entry: dict[str, Any], path: Path) -> bool:
    matrix = entry.get("matrix")
    if not matrix:
        return False
    import numpy as np

    data = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    fig = _new_figure(max(4.5, 2.0 + 0.5 * data.shape[1]), max(3.5, 1.5 + 0.4 * data.shape[0]))
    ax = fig.add_subplot()
    im = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="viridis", origin="lower", aspect="auto")
    ax.set_xlabel("student layer (0 = embeddings)")
    ax.set_ylabel("teacher layer (0 = embeddings)")
    ax.set_xticks(range(data.shape[1]))
    ax.set_yticks(range(data.shape[0]))
    ax.set_title(f"linear CKA: {name}")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path)
    return True


def _plot_curves(name: str, rows: list[dict[str, float]], path: Path) -> bool:
    train_keys = [k for k in ("loss", "lr") if any(k in r for r in rows)]
    # eval/n is the example count, not a score: it would flatten every curve on a shared axis
    eval_keys = sorted({k for r in rows for k in r if k.startswith("eval/") and k != "eval/n"})
    panels = train_keys + (["eval"] if eval_keys else [])
    if not panels:
        return False
    fig = _new_figure(4.0 * len(panels), 3.5)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        keys = eval_keys if panel == "eval" else [panel]
        for key in keys:
            xs = [r["step"] for r in rows if key in r]
            ys = [r[key] for r in rows if key in r]
            ax.plot(xs, ys, marker="o" if panel == "eval" else None, markersize=3, label=key)
        ax.set_xlabel("step")
        ax.set_title(panel)
        if panel == "eval":
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"training: {name}")
    fig.tight_layout()
    fig.savefig(path)
    return True


def write_report(
    results: dict[str, Any], out_dir: str | os.PathLike[str], *, plots: bool = True
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and the PNG plots.

    Plots: ``tradeoff.png`` (primary metric vs throughput of every entry, Pareto front marked),
    ``cka_<student>.png`` (per-layer CKA heatmap per student with a CKA matrix), and
    ``curves_<model>.png`` (loss, learning rate and eval metrics from the model directory's
    ``metrics.jsonl``, or its run directory's, when present).

    Args:
        results: the benchmark results (schema in the module docstring); ``retention`` is added to its
            entries in place when missing.
        out_dir: destination directory (created).
        plots: draw the PNGs (needs matplotlib; skipped with a note in the Markdown when missing).

    Returns:
        ``{"json": path, "markdown": path, "<plot name>": path, ...}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any("retention" not in e for e in results.get("entries", [])):
        add_retention(results)

    written: dict[str, Path] = {}
    plot_files: dict[str, str] = {}
    note = None
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            note = f"Plots skipped: matplotlib is not installed ({PLOT_HINT})."
            log.warning(note)
        else:
            targets: list[tuple[str, Path, Any]] = [
                ("tradeoff", out / "tradeoff.png", partial(_plot_tradeoff, results))
            ]
            for name, entry in (results.get("cka") or {}).items():
                targets.append(
                    (f"cka {name}", out / f"cka_{slug(name)}.png", partial(_plot_cka, name, entry))
                )
            for m in results.get("models") or []:
                log_path = find_metrics_jsonl(m.get("dir"))
                if log_path is not None:
                    name = str(m["name"])
                    curves = partial(_plot_curves, name, read_metrics_jsonl(log_path))
                    targets.append((f"training {name}", out / f"curves_{slug(name)}.png", curves))
            for label, path, draw in targets:
                if draw(path):
                    written[label] = path
                    plot_files[label] = path.name

    json_path = out / "report.json"
    json_path.write_text(json.dumps(_finite(results), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path = out / "report.md"
    md_path.write_text(_markdown(results, plot_files, note), encoding="utf-8")
    return {"json": json_path, "markdown": md_path, **written}
