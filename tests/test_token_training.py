"""Token classification end to end: alignment, distillation (live and cached teacher), students, saving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import make_tokenizer, tiny_bert_config
from textdistill.config.schema import (
    Config,
    DataConfig,
    LossTermConfig,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
)
from textdistill.data.collate import Collator
from textdistill.data.conll import TokenExample
from textdistill.data.encoding import IGNORE_INDEX
from textdistill.data.labels import LabelMap
from textdistill.data.token_encoding import TokenEncodedDataset
from textdistill.errors import ConfigError, DataError
from textdistill.models.io import load_student
from textdistill.training.runner import run_training
from token_data import make_ner_sentences, make_token_teacher, write_conll

LABELS = LabelMap(("B-PER", "I-PER", "O"))


def test_first_subtoken_alignment(tiny_tokenizer):
    ex = TokenExample(0, ["the", "unable", "actor"], ["O", "B-PER", "I-PER"])
    ds = TokenEncodedDataset([ex], tiny_tokenizer, 32, LABELS)
    item = ds[0]
    pieces = tiny_tokenizer.convert_ids_to_tokens(item["input_ids"])
    assert pieces == ["[CLS]", "the", "un", "##able", "actor", "[SEP]"]
    assert item["label"] == [IGNORE_INDEX, 2, 0, IGNORE_INDEX, 1, IGNORE_INDEX]
    assert item["token_mask"] == [0, 1, 1, 0, 1, 0] and item["word_mask"] == [0, 1, 1, 0, 1, 0]
    assert ds.word_positions == [[1, 2, 4]]
    every = TokenEncodedDataset([ex], tiny_tokenizer, 32, LABELS, label_all_subtokens=True)[0]
    assert every["label"] == [IGNORE_INDEX, 2, 0, 0, 1, IGNORE_INDEX]
    assert every["token_mask"] == [0, 1, 1, 1, 1, 0] and every["word_mask"] == [0, 1, 1, 0, 1, 0]


def test_truncated_words_are_counted_and_collated(tiny_tokenizer):
    ex = TokenExample(7, ["the"] * 10, ["O"] * 10)
    ds = TokenEncodedDataset([ex, TokenExample(8, ["actor"], None)], tiny_tokenizer, 6, LABELS)
    assert ds.truncated_words == 6 and ds.word_positions[0][4:] == [-1] * 6
    batch = Collator.for_tokenizer(tiny_tokenizer)([ds[0], ds[1]])
    assert batch["labels"].shape == (2, 6)
    assert batch["labels"][1].tolist() == [IGNORE_INDEX] * 6  # unlabelled sentence: no gold, padded
    assert batch["token_mask"][1].tolist() == [False, True, False, False, False, False]


def test_slow_tokenizer_is_refused():
    from types import SimpleNamespace

    # transformers 5 has no slow BERT tokenizer left to build; any tokenizer without word_ids() reports so
    slow = SimpleNamespace(is_fast=False)
    with pytest.raises(DataError, match="needs a fast tokenizer"):
        TokenEncodedDataset([TokenExample(0, ["the"], ["O"])], slow, 8, LABELS)


@pytest.fixture
def ner(tmp_path) -> dict[str, Path]:
    return {
        "train": write_conll(tmp_path / "train.conll", make_ner_sentences(48, seed=1), extra_columns=2),
        "dev": write_conll(tmp_path / "dev.conll", make_ner_sentences(16, seed=2), extra_columns=2),
        "teacher": make_token_teacher(tmp_path / "teacher"),
    }


def distill_cfg(ner, out: Path, student: StudentConfig, **teacher) -> Config:
    return Config(
        teacher=TeacherConfig(path=str(ner["teacher"]), **teacher),
        student=student,
        data=DataConfig(train=str(ner["train"]), dev=str(ner["dev"]), test=str(ner["dev"])),
        objective=[LossTermConfig(name="kd_kl", params={"temperature": 2.0}), LossTermConfig(name="hard_ce")],
        train=TrainConfig(max_steps=4, batch_size=8, eval_every=2, progress=False, precision="fp32"),
        output_dir=str(out),
        report=False,
    )


SHRINK = StudentConfig(type="shrink", num_layers=2, hidden_size=16, num_heads=2)


def test_cached_teacher_trains_the_same_student_as_the_live_one(ner, tmp_path):
    live = run_training(distill_cfg(ner, tmp_path / "live", SHRINK, cache=False), quiet=True)
    cached = run_training(
        distill_cfg(ner, tmp_path / "cached", SHRINK, cache=True, cache_dtype="fp32"), quiet=True
    )
    caches = list((tmp_path / ".textdistill-cache").glob("*/token_logits.bin"))
    assert len(caches) == 1  # per-token logits, real tokens only
    meta = json.loads((caches[0].parent / "meta.json").read_text())
    assert meta["arrays"]["token_logits"]["shape"] == [meta["num_tokens"], 5]
    assert "logits" not in meta["arrays"]
    a, b = load_student(live.model_dir).state_dict(), load_student(cached.model_dir).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert live.dev_metrics == pytest.approx(cached.dev_metrics)
    assert set(live.dev_metrics) >= {"entity_f1", "entity_precision", "entity_recall", "token_accuracy"}
    run = json.loads((tmp_path / "live" / "run.json").read_text())
    assert run["results"]["test"]["n"] == 16 and 0.0 <= run["results"]["dev_agreement_with_teacher"] <= 1.0


def test_saved_student_runs_in_the_hf_token_classification_pipeline(ner, tmp_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    res = run_training(distill_cfg(ner, tmp_path / "run", SHRINK), quiet=True)
    model = AutoModelForTokenClassification.from_pretrained(str(res.model_dir))
    tok = AutoTokenizer.from_pretrained(str(res.model_dir))
    text = "the actor story was the movie film"  # whole-word tokens of the tiny vocab
    grouped = pipeline("token-classification", model=model, tokenizer=tok, aggregation_strategy="simple")(
        text
    )
    raw = pipeline("token-classification", model=model, tokenizer=tok, aggregation_strategy="none")(text)
    # the pipeline's per-token tags are the argmax of textdistill's own forward of the saved student
    student = load_student(res.model_dir)
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        ids = student(enc["input_ids"], enc["attention_mask"]).logits[0].argmax(-1).tolist()
    names = student.id2label
    expected = [names[i] for i in ids[1:-1]]
    got = {r["index"]: r["entity"] for r in raw}
    assert [got.get(i, "O") for i in range(1, len(ids) - 1)] == expected
    for g in grouped:
        assert {"entity_group", "word", "start", "end", "score"} <= set(g)
        assert text[g["start"] : g["end"]] == g["word"]


def test_bilstm_token_student(ner, tmp_path):
    cfg = distill_cfg(
        ner, tmp_path / "b", StudentConfig(type="bilstm", embedding_dim=8, lstm_hidden=8, mlp_hidden=8)
    )
    res = run_training(cfg, quiet=True)
    student = load_student(res.model_dir)
    assert student.config.pooling == "none"
    out = student(torch.tensor([[2, 10, 11, 3]]), torch.ones(1, 4, dtype=torch.long))
    assert out.logits.shape == (1, 4, 5)


def test_truncated_student_of_a_token_teacher_copies_it(ner):
    from textdistill.models.students import build_student
    from textdistill.models.teacher import load_teacher

    teacher = load_teacher(ner["teacher"])
    student = build_student(StudentConfig(type="truncate", num_layers=4), teacher, 5, teacher.id2label).eval()
    x, m = torch.tensor([[2, 10, 11, 3]]), torch.ones(1, 4, dtype=torch.long)
    torch.testing.assert_close(student(x, m).logits, teacher(x, m).logits)


def test_finetune_a_token_model_from_a_plain_encoder(ner, tmp_path):
    from transformers import BertModel

    base = tmp_path / "base"
    tok = make_tokenizer(base)
    BertModel(tiny_bert_config(len(tok))).save_pretrained(str(base))
    cfg = Config(
        student=StudentConfig(type="pretrained", path=str(base)),
        data=DataConfig(train=str(ner["train"]), dev=str(ner["dev"])),
        train=TrainConfig(max_steps=2, batch_size=8, progress=False, metric="token_accuracy"),
        output_dir=str(tmp_path / "ft"),
    )
    res = run_training(cfg, "finetune", quiet=True)
    saved = json.loads((res.model_dir / "config.json").read_text())
    assert saved["architectures"] == ["BertForTokenClassification"]
    assert saved["id2label"]["0"] == "B-LOC"


def test_augmentation_is_refused_for_token_tasks(ner, tmp_path):
    from dataclasses import replace

    from textdistill.config.augment import AugmentConfig

    cfg = replace(distill_cfg(ner, tmp_path / "a", SHRINK), augment=AugmentConfig(method="tang"))
    with pytest.raises(ConfigError, match="not available for token classification"):
        run_training(cfg, quiet=True)
    assert not (tmp_path / "a" / "model").exists()


def test_a_sequence_metric_is_refused_for_a_token_task(ner, tmp_path):
    cfg = distill_cfg(ner, tmp_path / "m", SHRINK)
    cfg.train.metric = "macro_f1"
    with pytest.raises(ConfigError, match="entity_f1"):
        run_training(cfg, quiet=True)


def test_evaluate_benchmark_and_export_of_token_models(ner, tmp_path):
    from textdistill.evaluation.benchmark import run_benchmark
    from textdistill.evaluation.evaluate import evaluate_dir
    from textdistill.export.onnx import export_dir
    from textdistill.models.io import save_model
    from textdistill.models.students import build_student
    from textdistill.models.teacher import load_teacher, load_tokenizer

    teacher = load_teacher(ner["teacher"])
    tok = load_tokenizer(ner["teacher"])
    torch.manual_seed(0)
    student = build_student(SHRINK, teacher, 5, teacher.id2label)
    save_model(student, tmp_path / "student", tok, teacher.id2label)

    metrics = evaluate_dir(tmp_path / "student", ner["dev"])
    assert metrics["n"] == 16 and 0.0 <= metrics["entity_f1"] <= 1.0

    res = run_benchmark(
        ner["teacher"],
        [tmp_path / "student"],
        ner["dev"],
        out_dir=tmp_path / "bench",
        onnx=True,
        speed_examples=8,
        latency_examples=2,
        warmup=0,
        repeats=1,
        plots=False,
        bf16=False,
        gpu=False,
    )
    assert res["task"]["metric"] == "entity_f1"
    rows = {e["name"]: e for e in res["entries"]}
    assert rows["teacher"]["agreement"] == 1.0 and "entity_f1" in rows["student"]["metrics"]
    # the student's own (fp32 CPU) entity F1 is the one evaluate_dir reports for the same file
    assert rows["student"]["metrics"]["entity_f1"] == pytest.approx(metrics["entity_f1"])
    assert len(res["cka"]["student"]["matrix"]) == 5  # teacher hidden states: embeddings + 4 layers
    export = res["exports"]["student"]
    assert export["max_abs_diff"] <= 1e-4 and "entity_f1" in export["dev_metrics"]["onnx_int8"]

    out = export_dir(tmp_path / "student", tmp_path / "onnx", ner["dev"])
    assert out.max_abs_diff <= 1e-4
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out.onnx_path))
    enc = tok(["the actor", "the movie film plot was"], padding=True, return_tensors="np")
    feed = {i.name: enc[i.name].astype("int64") for i in sess.get_inputs()}
    (logits,) = sess.run(None, feed)
    assert logits.shape == (2, enc["input_ids"].shape[1], 5)  # per-token logits, dynamic sequence axis


def test_shipped_recipe_distils_a_token_task(ner, tmp_path):
    from textdistill.pipeline.runner import run_pipeline

    params = {
        "teacher": str(ner["teacher"]),
        "task_train": str(ner["train"]),
        "task_dev": str(ner["dev"]),
        "student_layers": 2,
    }
    overrides = ["defaults.train.max_steps=2", "defaults.train.batch_size=8"]
    res = run_pipeline("hinton", params, output_dir=tmp_path / "pipe", overrides=overrides, quiet=True)
    saved = json.loads((res.model_dir / "config.json").read_text())
    assert saved["architectures"] == ["BertForTokenClassification"] and saved["num_hidden_layers"] == 2
    ev = json.loads((res.model_dir.parent / "eval_results.json").read_text())
    assert "entity_f1" in ev["dev"]


def test_a_student_with_another_tokenization_is_refused(ner, tmp_path):
    from dataclasses import replace

    cfg = distill_cfg(ner, tmp_path / "v", replace(SHRINK, vocab="auto"))
    with pytest.raises(ConfigError, match="sub-token by sub-token"):
        run_training(cfg, quiet=True)
    assert not (tmp_path / "v" / "model").exists()
