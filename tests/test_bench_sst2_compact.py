"""benchmarks/sst2_compact.py: student specs, run names and the results table (no training, no models)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sst2_compact.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("sst2_compact", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_specs_add_overrides_to_a_named_student(bench, tmp_path):
    known = bench.variants(tmp_path, n_aug=3)
    name, overrides = bench.parse_spec("bilstm-pca-trim,train.seed=1,train.epochs=6", known)
    assert name == "bilstm-pca-trim"
    assert overrides == [*known["bilstm-pca-trim"], "train.seed=1", "train.epochs=6"]
    assert "student.vocab=auto" in overrides and "objective=[{name: kd_mse}]" in overrides
    assert "augment.n_aug=3" in known["bilstm-pca-aug"]
    assert "student.init_embeddings_from_teacher=false" in known["bilstm-random-trim"]
    assert bench.run_name("bilstm-pca-trim,train.seed=1") == "bilstm-pca-trim__train.seed-1"
    with pytest.raises(ValueError, match="unknown student 'bilstm-nope'; choose from bilstm-pca-trim"):
        bench.parse_spec("bilstm-nope", known)
    with pytest.raises(ValueError, match=r"extra settings must be key=value, got \['seed'\]"):
        bench.parse_spec("bilstm-pca-trim,seed", known)


def _entry(model: str, runtime: str, precision: str, acc: float, latency_ms: float, eps: float) -> dict:
    return {
        "model": model,
        "runtime": runtime,
        "precision": precision,
        "device": "cpu",
        "metrics": {"accuracy": acc},
        "speed": {"latency_ms_mean": latency_ms, "throughput_eps": eps},
    }


def test_table_ratios_against_the_teacher(bench):
    report = {
        "models": [
            {
                "name": "t",
                "role": "teacher",
                "dir": "/t",
                "params": {"total": 20_000_000, "non_embedding": 8},
            },
            {
                "name": "s",
                "role": "student",
                "dir": "/w/s/model",
                "params": {"total": 2_000_000, "non_embedding": 1},
            },
        ],
        "entries": [
            _entry("t", "pytorch", "fp32", 0.9, 100.0, 10.0),
            _entry("t", "pytorch", "bf16", 0.9, 50.0, 20.0),
            _entry("s", "pytorch", "fp32", 0.87, 10.0, 150.0),
            _entry("s", "pytorch", "bf16", 0.86, 20.0, 120.0),
            _entry("s", "onnxruntime", "int8", 0.85, 5.0, 400.0),
        ],
    }
    rows, md = bench.table(report, {"/w/s/model": "bilstm-pca-trim"})
    teacher, student = rows
    assert teacher["model"] == "teacher" and teacher["onnx_int8_ex_s_batch32"] is None
    assert student["model"] == "bilstm-pca-trim"
    assert student["compression"] == pytest.approx(10.0)
    assert (student["cpu_ex_s_batch1"], student["cpu_ex_s_batch32"]) == (pytest.approx(100.0), 150.0)
    assert (student["speedup_batch1"], student["speedup_batch32"]) == (
        pytest.approx(10.0),
        pytest.approx(15.0),
    )
    assert student["bf16_speedup_batch32_vs_teacher_bf16"] == pytest.approx(6.0)
    assert student["pct_of_teacher"] == pytest.approx(100 * 0.87 / 0.9)
    assert student["onnx_int8_ex_s_batch32"] == 400.0
    assert (
        "| bilstm-pca-trim | 2.00M | 0.00M | 10.0x | 100 | 150 | 10.0x | 15.0x | 400 | 0.8700 | 96.7% |" in md
    )
    assert "| bilstm-pca-trim | 100 | 50 | 150 | 120 | 0.80x | 0.8700 / 0.8600 |" in md
    assert "| teacher | 10 | 20 | 10 | 20 | 2.00x | 0.9000 / 0.9000 |" in md


def test_only_finished_runs_are_reused(bench, tmp_path):
    run = tmp_path / "bilstm-pca-trim"
    assert bench._finished_run(run) is None
    (run / "model").mkdir(parents=True)
    (run / "run.json").write_text('{"status": "running"}', encoding="utf-8")
    assert bench._finished_run(run) is None  # a run still training (or killed) is not reused
    (run / "run.json").write_text('{"status": "finished", "seconds": 3}', encoding="utf-8")
    assert bench._finished_run(run) == {"status": "finished", "seconds": 3}


def test_table_without_speed_and_sections_of_the_json(bench, tmp_path):
    report = {
        "models": [
            {"name": "t", "role": "teacher", "dir": "/t", "params": {"total": 10, "non_embedding": 8}},
            {"name": "s", "role": "student", "dir": "/s", "params": {"total": 5, "non_embedding": 1}},
        ],
        "entries": [
            {**_entry("t", "pytorch", "fp32", 0.8, 1.0, 1.0), "speed": None},
            {**_entry("s", "pytorch", "fp32", 0.6, 1.0, 1.0), "speed": None},
        ],
    }
    rows, md = bench.table(report, {"/s": "small"})
    assert rows[1]["speedup_batch32"] is None and rows[1]["pct_of_teacher"] == pytest.approx(75.0)
    assert "| small | 0.00M | 0.00M | 2.0x | n/a | n/a | n/a | n/a | n/a | 0.6000 | 75.0% |" in md
    assert "bf16 / fp32" not in md  # no probe table without bf16 timings
    path = tmp_path / "r.json"
    bench.write_section(path, "main", {"a": 1})
    bench.write_section(path, "ablation", {"b": 2})
    bench.write_section(path, "main", {"a": 3})
    assert json.loads(path.read_text()) == {"sections": {"main": {"a": 3}, "ablation": {"b": 2}}}
