"""The Python API: ``textdistill.finetune`` / ``distill`` / ``evaluate``, its config precedence, and a light
``import textdistill``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import textdistill as td
from textdistill.api import _config
from textdistill.errors import ConfigError


def test_import_is_light():
    # A fresh interpreter: the package imports without torch/transformers until something is used.
    code = "import sys, textdistill; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert {"finetune", "distill", "evaluate", "load_config", "Config"} <= set(td.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        td.nope  # noqa: B018


def test_config_precedence(tmp_path):
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("train:\n  lr: 0.01\n  epochs: 2\noutput_dir: from-yaml\n")
    # keyword arguments beat the file, overrides beat both
    cfg = _config(yaml_path, ["train.lr=0.02"], {"output_dir": tmp_path / "kw", "data.train": None})
    assert (cfg.train.lr, cfg.train.epochs, cfg.output_dir) == (0.02, 2.0, str(tmp_path / "kw"))
    assert cfg.data.train is None  # a None keyword argument leaves the key alone
    cfg = _config({"train": {"lr": 0.5}}, ["output_dir=over"], {"output_dir": "kw"})
    assert (cfg.train.lr, cfg.output_dir) == (0.5, "over")
    # Paths are taken as given, never parsed as YAML (these would become True, None, a list, a comment).
    for odd in ("runs/yes", "yes", "~", "[exp]", "a #1", "123"):
        assert _config(None, None, {"output_dir": odd}).output_dir == odd
    with pytest.raises(ConfigError, match="config must be a YAML path or a mapping, got a list"):
        _config(["train.lr=1"], None, {})  # type: ignore[arg-type]


def test_finetune_distill_evaluate(tmp_path, tiny_teacher_dir, sentiment_files):
    common = ["train.progress=false", "train.keep_checkpoints=0", "train.batch_size=32", "report=false"]
    teacher = td.finetune(
        tiny_teacher_dir,
        train=sentiment_files["train"],
        dev=sentiment_files["dev"],
        output_dir=tmp_path / "teacher run",  # a space in the path is fine
        overrides=["train.max_steps=3", *common],
    )
    assert teacher.model_dir == tmp_path / "teacher run" / "model"
    assert teacher.state["step"] == 3
    assert teacher.test_metrics is None and teacher.teacher_dev_metrics is None
    student = td.distill(
        teacher.model_dir,
        train=sentiment_files["train"],
        dev=sentiment_files["dev"],
        output_dir=tmp_path / "student",
        config={"student": {"type": "truncate", "num_layers": 1}, "train": {"max_steps": 2}},
        overrides=common,
    )
    assert student.state["step"] == 2
    assert student.teacher_dev_metrics is not None
    results = json.loads((student.run_dir / "eval_results.json").read_text())
    assert results["dev"] == student.dev_metrics
    assert td.evaluate(student.model_dir, sentiment_files["dev"]) == pytest.approx(student.dev_metrics)
    # Bad input is a ConfigError naming the key, raised before anything is written.
    with pytest.raises(ConfigError, match="student.num_layrs: unknown key; did you mean 'num_layers'"):
        td.distill(
            teacher.model_dir,
            train=sentiment_files["train"],
            output_dir=tmp_path / "x",
            overrides=["student.num_layrs=1"],
        )
    assert not (tmp_path / "x").exists()
