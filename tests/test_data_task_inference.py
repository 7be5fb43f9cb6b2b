"""Task inference (data/task_inference.py): columns, kind, metric, logit term and lr, each overridable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import make_tokenizer, tiny_bert_config
from textdistill.config.loader import load_config
from textdistill.data.task_inference import (
    choose_metric,
    default_lr,
    eval_task,
    infer_columns,
    infer_data,
    looks_like_regression,
    peek_columns,
    resolve_task,
)
from textdistill.errors import ConfigError, DataError


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def _scores(n: int) -> list[str]:
    """STS-B-like scores in 0..5 written three ways (``4``, ``4.00``, ``4.000`` are the same number)."""
    return [f"{(i * 7 % 26) / 5:.3f}" if i % 3 else str(i % 6) for i in range(n)]


@pytest.fixture
def sts_file(tmp_path) -> Path:
    rows = [[f"a man plays {i}", f"a person plays {i}", s] for i, s in enumerate(_scores(60))]
    return _write(tmp_path / "sts.tsv", ["sentence1", "sentence2", "score"], rows)


def _teacher(directory: Path, num_labels: int, names: list[str] | None = None) -> Path:
    from transformers import BertForSequenceClassification

    tok = make_tokenizer(directory)
    cfg = tiny_bert_config(len(tok), layers=1, num_labels=num_labels)
    if names is not None:
        cfg.id2label = dict(enumerate(names))
        cfg.label2id = {n: i for i, n in enumerate(names)}
    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(str(directory))
    return directory


# -- columns ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["sentence1", "sentence2", "label"], ("sentence1", "sentence2")),
        (["idx", "question", "sentence", "label"], ("question", "sentence")),
        (["premise", "hypothesis", "label"], ("premise", "hypothesis")),
        (["text_a", "text_b", "label"], ("text_a", "text_b")),
        (["question1", "question2", "label"], ("question1", "question2")),
        (["sentence", "label"], ("sentence", None)),
        (["id", "text", "label"], ("text", None)),
    ],
)
def test_columns_from_common_names(columns, expected):
    text, pair, label, _ = infer_columns(
        columns, text_column=None, text_pair_column=None, label_column=None, source="f.tsv"
    )
    assert (text, pair, label) == (*expected, "label")


def test_configured_columns_win_and_turn_off_pair_inference():
    cols = ["question", "sentence", "label"]
    text, pair, label, inferred = infer_columns(
        cols, text_column="sentence", text_pair_column=None, label_column=None, source="f.tsv"
    )
    assert (text, pair, label, inferred) == ("sentence", None, "label", [])
    text, pair, _, _ = infer_columns(
        cols, text_column="question", text_pair_column="sentence", label_column="label", source="f.tsv"
    )
    assert (text, pair) == ("question", "sentence")


def test_label_column_from_common_names():
    _, _, label, inferred = infer_columns(
        ["sentence1", "sentence2", "score"],
        text_column=None,
        text_pair_column=None,
        label_column=None,
        source="f.tsv",
    )
    assert label == "score" and inferred == ["pair columns", "label column"]


def test_no_text_column_names_both_settings():
    with pytest.raises(DataError) as e:
        infer_columns(
            ["a", "b", "label"], text_column=None, text_pair_column=None, label_column=None, source="x"
        )
    msg = str(e.value)
    assert msg.startswith("x: no text column found among the columns 'a', 'b', 'label'.")
    assert "set data.text_column" in msg and "data.text_pair_column" in msg and "sentence1/sentence2" in msg
    with pytest.raises(DataError, match="no label column found .* set data.label_column"):
        infer_columns(
            ["sentence", "b"], text_column=None, text_pair_column=None, label_column=None, source="x"
        )


def test_peek_columns_of_each_format(tmp_path):
    (tmp_path / "a.tsv").write_text("\ufeffsentence1\tsentence2\tlabel\nx\ty\t1\n", encoding="utf-8")
    (tmp_path / "a.csv").write_text('premise,"hypothesis",label\nx,y,1\n', encoding="utf-8")
    (tmp_path / "a.jsonl").write_text('\n{"text": "x", "label": 1}\n', encoding="utf-8")
    assert peek_columns(tmp_path / "a.tsv") == ["sentence1", "sentence2", "label"]
    assert peek_columns(tmp_path / "a.csv") == ["premise", "hypothesis", "label"]
    assert peek_columns(tmp_path / "a.jsonl") == ["text", "label"]


# -- kind -----------------------------------------------------------------------------------------------------
def test_regression_from_numeric_labels():
    assert looks_like_regression(_scores(60)) == (True, "numeric labels with fractions, 26 distinct values")
    # 4, 4.00 and 4.000 are one value: integral numbers with few values are classes
    assert looks_like_regression(["4", "4.00", "4.000", "1", "2"]) == (False, "")
    assert looks_like_regression([str(i % 5 + 1) for i in range(100)]) == (False, "")  # 1..5 stars
    assert looks_like_regression([str(i) for i in range(11)]) == (True, "11 distinct numeric labels")
    assert looks_like_regression(["0", "1", "positive"]) == (False, "")
    assert looks_like_regression(["nan", "1.5"]) == (False, "")


def test_infer_data_pair_regression_without_a_teacher(sts_file):
    from textdistill.config.schema import DataConfig

    data, spec = infer_data(DataConfig(train=str(sts_file)))
    assert (data.text_column, data.text_pair_column, data.label_column, data.regression) == (
        "sentence1",
        "sentence2",
        "score",
        True,
    )
    assert spec.num_labels == 1 and spec.metric == "pearson" and spec.logit_term == "kd_mse"


def test_explicit_regression_false_overrides_the_inference(sts_file):
    from textdistill.config.schema import DataConfig

    data, spec = infer_data(DataConfig(train=str(sts_file), regression=False))
    assert data.regression is False and spec.kind == "classification" and spec.logit_term == "kd_kl"
    assert spec.num_labels == len(set(_scores(60))) == 28  # each spelling a class: what the user asked for


def test_teacher_with_one_output_makes_regression(tmp_path):
    from textdistill.config.schema import DataConfig

    f = _write(tmp_path / "t.tsv", ["sentence", "label"], [["a", "1"], ["b", "0"]])
    data, spec = infer_data(DataConfig(train=str(f)), {0: "score"})
    assert data.regression is True and "kind (teacher has 1 output)" in spec.inferred
    data, spec = infer_data(DataConfig(train=str(f)), {0: "LABEL_0", 1: "LABEL_1"})
    assert data.regression is False and spec.num_labels == 2


# -- metric, lr, logit term -----------------------------------------------------------------------------------
def test_metric_per_task():
    def metric(num_labels, names=(), labels=None, regression=False):
        return choose_metric(regression=regression, num_labels=num_labels, labels=labels, names=names)

    assert metric(1, regression=True) == "pearson"
    assert metric(2, ["data/CoLA/train.tsv"]) == "mcc"
    assert metric(2, labels=["acceptable", "unacceptable"]) == "mcc"
    assert metric(2, ["glue/MRPC/train.tsv"]) == "f1"
    assert metric(2, ["qqp/train.tsv"]) == "f1"
    assert metric(2, labels=["not_duplicate", "duplicate"]) == "f1"
    assert metric(3, ["paraphrase-3way/train.tsv"]) == "accuracy"  # f1 of one class: binary tasks only
    assert metric(5, ["sst5/train.tsv"]) == "macro_f1"
    assert metric(3, ["mnli/train.tsv"]) == "accuracy"
    assert metric(2, ["sst2/train.tsv"]) == "accuracy"


def test_lr_by_student_kind():
    assert default_lr("distill", "shrink") == default_lr("distill", "bilstm") == 5e-4
    assert default_lr("distill", "truncate") == default_lr("distill", "pretrained") == 5e-5
    assert default_lr("finetune", "pretrained") == 5e-5


def test_resolve_task_distill_regression(tmp_path, sts_file):
    teacher = _teacher(tmp_path / "teacher", 1, ["score"])
    cfg = load_config(None, [f"teacher.path={teacher}", f"data.train={sts_file}", "student.type=shrink"])
    resolved, spec = resolve_task(cfg, "distill")
    assert [t.name for t in resolved.objective] == ["kd_mse"]
    assert (resolved.train.metric, resolved.train.lr, resolved.data.regression) == ("pearson", 5e-4, True)
    assert spec.describe() == (
        "task: sentence-pair regression, columns sentence1 + sentence2 -> score, metric pearson, logit term "
        "kd_mse, lr 0.0005 [inferred: pair columns; label column; kind (teacher has 1 output); lr for a "
        "shrink student; logit term]"
    )


def test_resolve_task_keeps_every_explicit_setting(tmp_path, sts_file):
    teacher = _teacher(tmp_path / "teacher", 1, ["score"])
    cfg = load_config(
        None,
        [
            f"teacher.path={teacher}",
            f"data.train={sts_file}",
            "data.text_column=sentence1",
            "data.text_pair_column=sentence2",
            "data.label_column=score",
            "train.metric=spearman",
            "train.lr=1e-3",
            "objective=[{name: kd_mse, weight: 0.5}]",
        ],
    )
    resolved, spec = resolve_task(cfg, "distill")
    assert resolved.train.metric == "spearman" == spec.metric and resolved.train.lr == 1e-3
    assert resolved.objective == cfg.objective
    assert spec.inferred == ("kind (teacher has 1 output)",)


def test_resolve_task_finetune_trains_on_labels_and_picks_the_metric(tmp_path):
    rows = [[f"the cat {i}", "acceptable" if i % 2 else "unacceptable"] for i in range(10)]
    f = _write(tmp_path / "cola_train.tsv", ["sentence", "label"], rows)
    cfg = load_config(None, [f"data.train={f}", "student.path=x"])
    resolved, spec = resolve_task(cfg, "finetune")
    assert [t.name for t in resolved.objective] == ["hard_ce"] and spec.logit_term == "hard_ce"
    assert resolved.train.metric == "mcc" and spec.labels == ("acceptable", "unacceptable")


def test_f1_on_a_multiclass_task_is_refused(tmp_path):
    rows = [[f"w {i}", str(i % 3)] for i in range(9)]
    f = _write(tmp_path / "t.tsv", ["sentence", "label"], rows)
    cfg = load_config(None, [f"data.train={f}", "train.metric=f1"])
    with pytest.raises(
        ConfigError, match="f1 is the F1 of the positive class .* 3 classes. Fix: use macro_f1"
    ):
        resolve_task(cfg, "finetune")


def test_eval_task_from_a_model_with_one_output(sts_file):
    spec = eval_task(sts_file, {0: "score"}, names=["runs/stsb-student/model"])
    assert spec.regression and spec.metric == "pearson" and spec.pair
    spec = eval_task(sts_file, {0: "LABEL_0", 1: "LABEL_1"}, regression=False, label_column="score")
    assert spec.kind == "classification" and spec.metric == "accuracy"


# -- config validate opens the data ----------------------------------------------------------------------------
def test_config_validate_reports_the_pair_task_and_data_problems(tmp_path, sts_file, capsys):
    from textdistill.cli import main

    teacher = _teacher(tmp_path / "teacher", 1, ["score"])
    args = [
        "config",
        "validate",
        "--teacher",
        str(teacher),
        "--train",
        str(sts_file),
        "-o",
        str(tmp_path / "r"),
    ]
    assert main([*args, "student.type=truncate", "student.num_layers=1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(
        "task: sentence-pair regression, columns sentence1 + sentence2 -> score"
    )
    assert out.splitlines()[1] == "config and data are valid for distill"
    # a classification teacher on the same file: the label problem is found without loading weights
    clf = _teacher(tmp_path / "clf", 2, ["negative", "positive"])
    args[3] = str(clf)
    assert main([*args, "student.type=truncate", "student.num_layers=1"]) == 2
    err = capsys.readouterr().err
    assert "label map mismatch" in err and not (tmp_path / "r").exists()


def test_config_show_help_keys_and_teacher(tmp_path, capsys):
    from textdistill.cli import main

    assert main(["config", "show", "--help-keys"]) == 0
    out = capsys.readouterr().out
    assert "data.text_column  (str | None; default unset: inferred)" in out
    assert "train.lr  (float | None; default unset: inferred)" in out
    assert "5e-4 for students that start from random" in " ".join(out.split())
    assert main(["config", "show", "--teacher", "some/dir"]) == 0
    assert "path: some/dir" in capsys.readouterr().out


def test_run_json_records_the_task(tmp_path):
    """The one-line description is the same dict the run directory stores (to_dict round-trips JSON)."""
    spec = eval_task(
        _write(tmp_path / "p.tsv", ["premise", "hypothesis", "label"], [["a", "b", "entailment"]]),
        {0: "entailment", 1: "neutral", 2: "contradiction"},
    )
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["text_column"] == "premise" and d["text_pair_column"] == "hypothesis" and d["num_labels"] == 3
