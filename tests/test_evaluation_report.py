"""Report writing: JSON, Markdown tables, plots, Pareto front, tolerant training-log reading."""

from __future__ import annotations

import json
import sys

import pytest

from textdistill.evaluation.report import add_retention, pareto_front, read_metrics_jsonl, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _speed(eps: float, p50: float) -> dict:
    return {
        "latency_ms_p50": p50,
        "latency_ms_p90": p50 * 1.5,
        "throughput_eps": eps,
        "throughput_batch_size": 32,
    }


def _results(tmp_path) -> dict:
    student_dir = tmp_path / "run" / "best"
    student_dir.mkdir(parents=True)
    (tmp_path / "run" / "metrics.jsonl").write_text(
        "\n".join(
            [
                '{"step": 1, "loss": 2.0, "lr": 0.0001}',
                "not json",
                "",
                "[1, 2]",
                '{"step": 2, "loss": 1.5, "lr": 0.0002, "note": "text"}',
                '{"step": 2, "eval/accuracy": 0.7, "eval/macro_f1": 0.6, "eval/n": 40, "eval/best": true}',
                '{"loss": 1.0}',
            ]
        ),
        encoding="utf-8",
    )
    model = {
        "params": {"total": 1000, "embedding": 400, "non_embedding": 600},
        "size": {"weights_bytes": 4_000_000},
    }
    return {
        "environment": {"cpu": "Test CPU", "threads": 2, "torch": "2.x", "bf16": {"native": False}},
        "task": {
            "data": "dev.tsv",
            "examples": 10,
            "metric": "accuracy",
            "seq_len_mean": 7.5,
            "seq_len_max": 12,
        },
        "models": [
            {
                "name": "teacher",
                "role": "teacher",
                "dir": str(tmp_path / "teacher"),
                **model,
                "flops_per_example": 2e9,
            },
            {
                "name": "student-a",
                "role": "student",
                "dir": str(student_dir),
                "params": {"total": 250, "embedding": 100, "non_embedding": 150},
                "size": {"weights_bytes": 1_000_000},
                "compression": {"params": 4.0, "non_embedding_params": 4.0, "size": 4.0},
                "flops_per_example": 5e8,
            },
        ],
        "entries": [
            {
                "name": "teacher",
                "model": "teacher",
                "runtime": "pytorch",
                "precision": "fp32",
                "device": "cpu",
                "metrics": {"accuracy": 0.9, "mcc": 0.8},
                "agreement": 1.0,
                "speed": _speed(100.0, 10.0),
            },
            {
                "name": "student-a",
                "model": "student-a",
                "runtime": "pytorch",
                "precision": "fp32",
                "device": "cpu",
                "metrics": {"accuracy": 0.81, "mcc": 0.6},
                "agreement": 0.85,
                "speed": _speed(400.0, 3.0),
            },
            {
                "name": "student-a [onnxruntime int8 cpu]",
                "model": "student-a",
                "runtime": "onnxruntime",
                "precision": "int8",
                "device": "cpu",
                "metrics": {"accuracy": 0.72},
                "agreement": 0.8,
                "speed": _speed(300.0, 2.0),
            },
        ],  # fmt: skip
        "cka": {
            "student-a": {
                "matrix": [[1.0, 0.5], [0.4, float("nan")], [0.2, 0.9]],
                "pooling": "tokens",
                "rows": 40,
            }
        },
    }


def test_write_report_files_tables_and_plots(tmp_path):
    results = _results(tmp_path)
    files = write_report(results, tmp_path / "report")
    out = tmp_path / "report"
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))  # strict JSON: NaN became null
    assert data["cka"]["student-a"]["matrix"][1][1] is None
    assert [e["retention"] for e in data["entries"]] == pytest.approx([100.0, 90.0, 80.0])

    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Size and cost" in md and "## Quality and speed" in md and "## Layer CKA" in md
    assert "| Model | Role | Type | Params | Non-emb. params | Weights (MB) |" in md
    assert "| student-a | student | - | 250 | 150 | 1.0 | 4.00 | 4.00 | 4.00 | 0.500 |" in md
    assert "| teacher | pytorch | fp32 | cpu | - | 0.9000 | 100.0 | 1.0000 | 10.00 | 15.00 | 100.0 |" in md
    assert "| student-a [onnxruntime int8 cpu] | onnxruntime | int8 | cpu | - | 0.7200 | 80.0 |" in md
    assert "Throughput (ex/s, bs 32)" in md
    assert "| student-a | pytorch | fp32 | 0.6000 |" in md  # other metrics table (mcc)
    assert "Test CPU" in md

    for key, name in (("tradeoff", "tradeoff.png"), ("cka student-a", "cka_student-a.png"),
                      ("training student-a", "curves_student-a.png")):  # fmt: skip
        assert files[key] == out / name
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        assert f"]({name})" in md
    assert not (out / "curves_teacher.png").exists()  # the teacher has no metrics.jsonl


def test_report_without_matplotlib_still_writes_json_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    files = write_report(_results(tmp_path), tmp_path / "r")
    assert set(files) == {"json", "markdown"}
    assert "pip install 'textdistill[report]'" in (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert not list((tmp_path / "r").glob("*.png"))


def test_pareto_front():
    # (throughput, accuracy): 1 dominates 0; 2 and 3 trade off; 4 is dominated by 3; 5 ties 3 exactly
    points = [(100, 0.80), (150, 0.85), (400, 0.78), (300, 0.83), (250, 0.82), (300, 0.83)]
    assert pareto_front(points) == [1, 3, 5, 2]
    assert pareto_front([(1.0, 1.0)]) == [0]


def test_read_metrics_jsonl_is_tolerant(tmp_path):
    rows = read_metrics_jsonl(_results(tmp_path)["models"][1]["dir"] + "/../metrics.jsonl")
    assert rows == [
        {"step": 1.0, "loss": 2.0, "lr": 0.0001},
        {"step": 2.0, "loss": 1.5, "lr": 0.0002},
        {"step": 2.0, "eval/accuracy": 0.7, "eval/macro_f1": 0.6, "eval/n": 40.0},  # bools dropped
        {"loss": 1.0, "step": 6.0},  # no step: its line number
    ]


def test_retention_uses_the_teacher_fp32_entry():
    results = {
        "task": {"regression": True},
        "models": [{"name": "t", "role": "teacher"}],
        "entries": [
            {"model": "t", "runtime": "pytorch", "precision": "bf16", "metrics": {"pearson": 0.5}},
            {"model": "t", "runtime": "pytorch", "precision": "fp32", "metrics": {"pearson": 0.8}},
            {"model": "s", "runtime": "pytorch", "precision": "fp32", "metrics": {"pearson": 0.6}},
            {"model": "s", "runtime": "onnxruntime", "precision": "int8", "metrics": {}},
        ],
    }
    add_retention(results)
    assert [e["retention"] for e in results["entries"]] == pytest.approx([62.5, 100.0, 75.0, None])
