"""Warnings with numbers (data/task_checks.py) and the report's noise / agreement notes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import make_tokenizer
from textdistill.data.readers import Example
from textdistill.data.task_checks import (
    baseline_warning,
    coverage_warning,
    majority_baseline,
    single_class_warning,
    vocabulary_coverage,
)
from textdistill.evaluation.report_notes import agreement_header, metric_standard_error, noise_note


def test_vocabulary_coverage_counts_unknown_tokens_and_truncation(tmp_path):
    tok = make_tokenizer(tmp_path / "tok")
    # "good movie" -> 2 known tokens; "电影很好" -> 4 CJK characters, each its own [UNK]; the pair adds both
    examples = [
        Example(0, "good movie"),
        Example(1, "电影很好"),
        Example(2, "good", text_pair="电影"),
    ]
    cov = vocabulary_coverage(examples, tok, max_length=5)
    assert cov["examples"] == 3 and cov["tokens"] == 2 + 4 + 3
    assert cov["unk_rate"] == pytest.approx(6 / 9)
    # full lengths with [CLS]/[SEP]: 4, 6, 6 -> two of three are over 5 tokens
    assert cov["truncated_rate"] == pytest.approx(2 / 3)
    msg = coverage_warning(cov, 5)
    assert msg == (
        "vocabulary coverage on 3 training examples: 66.7% of the tokens are [UNK] (the text is mostly "
        "outside the tokenizer's vocabulary: use a teacher / base model whose tokenizer covers this language, "
        "e.g. a multilingual or language-specific one); 66.7% of the examples are longer than "
        "data.max_length=5 tokens and are cut (raise data.max_length if the end of the text matters)."
    )
    assert coverage_warning(vocabulary_coverage(examples[:1], tok, 64), 64) is None


def test_majority_baseline_on_the_task_metric():
    train = [0, 0, 0, 1]
    dev = [0, 1, 1, 0, 0]
    assert majority_baseline(train, dev, "accuracy") == (0, pytest.approx(3 / 5))
    assert majority_baseline(train, dev, "mcc") == (0, 0.0)
    assert majority_baseline([], dev, "accuracy") is None
    assert majority_baseline(train, [-100], "accuracy") is None


def test_baseline_warning_for_a_model_at_the_majority_class():
    msg = baseline_warning("the teacher", {"accuracy": 0.6}, "accuracy", (0, 0.6), ["neg", "pos"], "Do X.")
    assert msg == (
        "the teacher scores accuracy 0.6000 on dev, no better than always predicting the majority class "
        "'neg' (accuracy 0.6000). Do X."
    )
    assert baseline_warning("t", {"accuracy": 0.61}, "accuracy", (0, 0.6), None, "") is None
    assert "no better than a constant prediction" in baseline_warning(
        "t", {"pearson": -0.1}, "pearson", None, None, ""
    )
    assert baseline_warning("t", {"pearson": 0.3}, "pearson", None, None, "") is None


def test_single_class_warning():
    logits = np.array([[2.0, 1.0], [3.0, -1.0], [0.5, 0.1]])
    msg = single_class_warning("the model", logits, regression=False, class_names=["neg", "pos"])
    assert msg.startswith("the model predicts one class ('neg') for all 3 dev examples: MCC is 0")
    logits[1] = [0.0, 1.0]
    assert single_class_warning("m", logits, regression=False) is None
    assert "the same value (0.2500)" in single_class_warning("m", np.full((4, 1), 0.25), regression=True)
    assert single_class_warning("m", np.array([[0.1], [0.2]]), regression=True) is None


def test_standard_error_formulas():
    assert metric_standard_error("accuracy", 0.9, 100) == pytest.approx(math.sqrt(0.9 * 0.1 / 100))
    assert metric_standard_error("pearson", 0.8, 101) == pytest.approx((1 - 0.64) / 10)
    assert metric_standard_error("mse", 0.8, 100) is None
    assert metric_standard_error("accuracy", 0.9, 1) is None


def test_noise_note_warns_on_small_evaluations():
    results = {
        "task": {"regression": False},
        "models": [{"name": "t", "role": "teacher"}],
        "entries": [{"model": "t", "metrics": {"accuracy": 0.9, "n": 100}}],
    }
    note = noise_note(results, "accuracy")
    assert note == (
        "**Warning: only 100 evaluation examples.** Noise: on 100 examples the teacher's accuracy (0.9000) "
        "has a standard error of about 0.0300, so retention is uncertain by about ±3.3 points (1 s.e.); "
        "differences smaller than twice that are not measured."
    )
    results["entries"][0]["metrics"]["n"] = 10000
    assert not noise_note(results, "accuracy").startswith("**Warning")
    assert agreement_header(results) == "Same class as teacher"
    assert agreement_header({"task": {"regression": True}}) == "Pearson r w/ teacher"


def test_finetune_at_the_majority_class_gets_the_advice(capsys):
    from textdistill.data.labels import LabelMap
    from textdistill.data.task import TaskData
    from textdistill.data.task_inference import TaskSpec
    from textdistill.training.task_hooks import FINETUNE_ADVICE, check_model

    def ex(i, label):
        return Example(i, f"text {i}", label=label)

    task = TaskData(
        train=[ex(0, "a"), ex(1, "a"), ex(2, "b")],
        dev=[ex(3, "a"), ex(4, "b"), ex(5, "a")],
        test=[],
        label_map=LabelMap(("a", "b")),
        regression=False,
    )
    spec = TaskSpec("classification", "sentence", None, "label", 2, ("a", "b"), "accuracy", "hard_ce")
    # two classes predicted (not one), but accuracy 2/3 = always "a" on this dev set
    logits = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    out = check_model(
        "the fine-tuned model", {"accuracy": 2 / 3}, logits, task, spec, FINETUNE_ADVICE, quiet=False
    )
    assert out == [
        "the fine-tuned model scores accuracy 0.6667 on dev, no better than always predicting the majority "
        f"class 'a' (accuracy 0.6667). {FINETUNE_ADVICE}"
    ]
    assert capsys.readouterr().err == f"textdistill: warning: {out[0]}\n"
    assert check_model("m", {"accuracy": 1.0}, logits, task, spec, "", quiet=True) == []
