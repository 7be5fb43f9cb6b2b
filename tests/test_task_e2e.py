"""Tasks the code has never seen, run as a new user would: no option beyond the files (and the teacher).

A sentence-pair regression file (sentence1 / sentence2 / score) goes through finetune -> distill -> report
-> evaluate -> benchmark -> export with every task setting inferred; a teacher stuck at one class is
flagged before distillation; placeholder label names (LABEL_0, LABEL_1) evaluate on 0/1 data; the
messages of issue #16 name the right settings.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from conftest import FILLER, NEGATIVE, POSITIVE, make_tokenizer, tiny_bert_config
from textdistill.config.loader import load_config
from textdistill.errors import DataError
from textdistill.training.runner import run_training

COMMON = ["train.batch_size=16", "train.progress=false", "train.keep_checkpoints=0", "train.seed=0"]
COMMON += ["train.precision=fp32"]


def _pair_rows(n: int, seed: int) -> list[list[str]]:
    """(sentence1, sentence2, score): the score is 5 x the share of positive words in sentence2."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randint(0, 4)
        words = [rng.choice(POSITIVE) for _ in range(k)] + [rng.choice(NEGATIVE) for _ in range(4 - k)]
        rng.shuffle(words)
        rows.append([" ".join(rng.choice(FILLER) for _ in range(3)), " ".join(words), f"{5 * k / 4:.3f}"])
    return rows


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    from transformers import BertForSequenceClassification

    d = tmp_path_factory.mktemp("task")
    tok = make_tokenizer(d / "base")
    torch.manual_seed(0)
    BertForSequenceClassification(tiny_bert_config(len(tok), layers=2)).save_pretrained(str(d / "base"))
    header = ["sentence1", "sentence2", "score"]
    _write(d / "train.tsv", header, _pair_rows(160, 1))
    _write(d / "dev.tsv", header, _pair_rows(48, 2))
    return d


@pytest.fixture(scope="module")
def regression_teacher(work):
    cfg = load_config(
        None,
        [
            f"student.path={work / 'base'}",
            f"data.train={work / 'train.tsv'}",
            f"data.dev={work / 'dev.tsv'}",
            f"output_dir={work / 'teacher'}",
            "train.lr=2e-3",
            "train.epochs=4",
            *COMMON,
        ],
    )
    return run_training(cfg, "finetune", quiet=True)


def test_finetune_infers_a_pair_regression_task(regression_teacher):
    results = json.loads((regression_teacher.run_dir / "eval_results.json").read_text())
    assert results["metric"] == "pearson"
    assert results["task"]["kind"] == "regression"
    assert (results["task"]["text_column"], results["task"]["text_pair_column"]) == ("sentence1", "sentence2")
    assert results["dev"]["pearson"] > 0.3 and results["dev"]["n"] == 48
    config = json.loads((regression_teacher.model_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "score"}


def test_distill_picks_kd_mse_and_reports_on_the_task_metric(regression_teacher, work, capsys):
    cfg = load_config(
        None,
        [
            f"teacher.path={regression_teacher.model_dir}",
            f"data.train={work / 'train.tsv'}",
            f"data.dev={work / 'dev.tsv'}",
            f"output_dir={work / 'student'}",
            "student.type=shrink",
            "student.num_layers=1",
            "student.hidden_size=16",
            "student.num_heads=2",
            "train.epochs=2",
            *COMMON,
        ],
    )
    result = run_training(cfg, "distill")
    out = capsys.readouterr().out
    task_line = next(line for line in out.splitlines() if "task:" in line)
    assert task_line == (
        "textdistill distill: task: sentence-pair regression, columns sentence1 + sentence2 -> score, metric "
        "pearson, logit term kd_mse, lr 0.0005 [inferred: pair columns; label column; kind (teacher has 1 "
        "output); lr for a shrink student; logit term]"
    )
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["task"]["logit_term"] == "kd_mse" and run["coverage"]["unk_rate"] == 0.0
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/kd_mse" in r for r in records)
    # the report: the whole dev set, the run's metric, the agreement measure named, no timing by default
    report = json.loads((result.run_dir / "report" / "report.json").read_text())
    assert report["task"]["metric"] == "pearson" and report["task"]["examples"] == 48
    student = next(e for e in report["entries"] if e["model"] == "student")
    assert student["metrics"]["pearson"] == pytest.approx(result.dev_metrics["pearson"], abs=1e-5)
    assert student["speed"] is None and report["cka"] == {}
    md = (result.run_dir / "report" / "report.md").read_text()
    assert "| Pearson r w/ teacher |" in md and "**Warning: only 48 evaluation examples.**" in md
    assert "Agreement: Pearson correlation of the student's and the teacher's outputs." in md


def test_evaluate_benchmark_export_detect_regression_from_the_model(regression_teacher, work, capsys):
    from textdistill.cli import main

    model = str(regression_teacher.model_dir)
    dev = str(work / "dev.tsv")
    # fp32: the run scored its dev set in fp32 (auto may be bf16 on this CPU, which rounds the outputs).
    assert main(["evaluate", "--model", model, "--data", dev, "--precision", "fp32"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert metrics["pearson"] == pytest.approx(regression_teacher.dev_metrics["pearson"], abs=1e-5)
    assert "textdistill evaluate: task: sentence-pair regression" in captured.err
    out = work / "bench"
    assert (
        main(["benchmark", "--teacher", model, "--data", dev, "-o", str(out), "--no-speed", "--no-plots"])
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["task"]["regression"] is True and report["task"]["metric"] == "pearson"
    pytest.importorskip("onnxruntime")
    assert main(["export", model, "--data", dev, "-o", str(work / "onnx"), "--no-int8"]) == 0
    exported = json.loads((work / "onnx" / "export.json").read_text())
    assert "pearson" in exported["dev_metrics"]["onnx_fp32"]
    assert exported["agreement_measure"].startswith("Pearson correlation of the exported graph's")


def test_a_teacher_stuck_at_one_class_is_flagged_before_distillation(tmp_path, capsys):
    from transformers import BertForSequenceClassification

    from conftest import make_sentiment_rows, write_tsv

    d = tmp_path / "teacher"
    tok = make_tokenizer(d)
    cfg = tiny_bert_config(len(tok), layers=1)
    cfg.id2label, cfg.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():  # always "negative"
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([5.0, 0.0]))
    model.save_pretrained(str(d))
    train = write_tsv(tmp_path / "train.tsv", make_sentiment_rows(40, seed=1))
    dev = write_tsv(tmp_path / "dev.tsv", make_sentiment_rows(20, seed=2))
    run_cfg = load_config(
        None,
        [
            f"teacher.path={d}",
            f"data.train={train}",
            f"data.dev={dev}",
            f"output_dir={tmp_path / 'run'}",
            "student.type=truncate",
            "student.num_layers=1",
            "train.max_steps=1",
            "report=false",
            *COMMON,
        ],
    )
    result = run_training(run_cfg, "distill")
    err = capsys.readouterr().err
    assert "textdistill: warning: the teacher predicts one class ('negative') for all 20 dev examples" in err
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["warnings"][0].startswith("the teacher predicts one class ('negative')")


def test_placeholder_label_names_evaluate_on_integer_labels(tmp_path):
    from transformers import BertForSequenceClassification

    from textdistill.evaluation.evaluate import evaluate_dir

    d = tmp_path / "model"
    tok = make_tokenizer(d)
    torch.manual_seed(0)
    BertForSequenceClassification(tiny_bert_config(len(tok), layers=1)).save_pretrained(str(d))  # LABEL_0/1
    rows = [["good movie", "1"], ["bad film", "0"], ["great plot", "1"], ["dull story", "0"]]
    data = _write(tmp_path / "dev.tsv", ["sentence", "label"], rows)
    plain = evaluate_dir(d, data)
    assert plain["n"] == 4 and "f1" in plain
    assert evaluate_dir(d, data, overrides=["labels=[0,1]"]) == plain


def test_messages_name_the_settings_a_user_can_change(tmp_path, work):
    from textdistill.data.labels import LabelMap, check_labels
    from textdistill.data.readers import read_examples
    from textdistill.evaluation.evaluate import evaluate_dir

    # numeric labels read as classes: the message points at data.regression
    f = _write(tmp_path / "d.tsv", ["sentence", "label"], [["a", "2.615"]])
    with pytest.raises(DataError) as e:
        check_labels(read_examples(f), LabelMap(("0", "0.00", "4.000"), source="train"))
    assert str(e.value).endswith(
        "The labels are numbers: if they are scores (a regression task), set data.regression=true."
    )
    # a regression teacher met with class labels
    from textdistill.data.labels import resolve_label_map

    with pytest.raises(DataError, match=r"the model has one output .* set data.regression=true"):
        resolve_label_map(["0", "1"], None, {0: "score"})
    # evaluate names its own key=value settings, not the config's data.* keys
    bad = _write(tmp_path / "bad.tsv", ["txt", "label"], [["a", "1"]])
    with pytest.raises(DataError) as e:
        evaluate_dir(work / "base", bad)
    assert "set text_column to the text column" in str(e.value) and "data.text_column" not in str(e.value)
    assert str(e.value).endswith(
        "(evaluate takes these settings as key=value arguments, e.g. text_column=text)"
    )
