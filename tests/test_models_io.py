"""Saving / loading students (HF format and BiLSTM) and parameter counting."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification, pipeline

from conftest import make_tokenizer, tiny_bert_config
from textdistill.config.schema import StudentConfig
from textdistill.errors import ModelError
from textdistill.models.bilstm import BiLSTMClassifier, BiLSTMConfig
from textdistill.models.hf import HFClassifier
from textdistill.models.io import count_parameters, load_student, save_model
from textdistill.models.students import build_student
from textdistill.models.teacher import load_teacher, load_tokenizer

LABELS = {0: "negative", 1: "positive"}


@pytest.fixture
def teacher(tiny_teacher_dir) -> HFClassifier:
    return load_teacher(tiny_teacher_dir)


@pytest.fixture
def tokenizer(tiny_teacher_dir):
    return load_tokenizer(tiny_teacher_dir)


def encode(tokenizer, texts=("good fun movie", "the plot was very bad and boring")):
    return tokenizer(list(texts), padding=True, return_tensors="pt")


def test_hf_student_round_trip_and_pipeline(teacher, tokenizer, tmp_path):
    student = build_student(StudentConfig(type="truncate", layers=[1, 3]), teacher, 2, None)
    # make the two classes distinguishable by a pipeline: a large bias towards "positive"
    with torch.no_grad():
        student.model.classifier.bias.copy_(torch.tensor([-5.0, 5.0]))
    out = save_model(student, tmp_path / "student", tokenizer, LABELS)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"} and config["label2id"]["positive"] == 1

    batch = encode(tokenizer)
    student.eval()
    expected = student(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
    loaded = load_student(out)
    assert isinstance(loaded, HFClassifier) and not loaded.training
    got = loaded(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    plain = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    torch.testing.assert_close(plain(**batch).logits, expected, rtol=0, atol=0)

    texts = ["good fun movie", "bad plot", "the worst film"]  # one at a time: no padding involved
    predictions = pipeline("text-classification", model=str(out))(texts)
    for text, pred in zip(texts, predictions):
        one = encode(tokenizer, [text])
        with torch.no_grad():
            probs = loaded(one["input_ids"], one["attention_mask"]).logits.softmax(-1)[0]
        assert pred["label"] == LABELS[int(probs.argmax())]
        assert pred["score"] == pytest.approx(float(probs.max()), abs=1e-5)
    # the +5 bias of "positive" dominates this tiny random model: the pipeline reports label names
    assert {p["label"] for p in predictions} == {"positive"}


def test_bilstm_round_trip(teacher, tokenizer, tmp_path):
    cfg = StudentConfig(type="bilstm", embedding_dim=8, lstm_hidden=6, mlp_hidden=5, pooling="mean")
    student = build_student(cfg, teacher, 2, LABELS).eval()
    out = save_model(student, tmp_path / "bilstm", tokenizer)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("tokenizer")) == [
        "model.safetensors",
        "textdistill_bilstm.json",
    ]
    meta = json.loads((out / "textdistill_bilstm.json").read_text())
    assert meta["config"]["pooling"] == "mean" and meta["label2id"] == {"negative": 0, "positive": 1}
    loaded = load_student(out)
    assert isinstance(loaded, BiLSTMClassifier) and loaded.id2label == LABELS and not loaded.training
    batch = encode(load_tokenizer(out))
    torch.testing.assert_close(
        loaded(batch["input_ids"], batch["attention_mask"]).logits,
        student(batch["input_ids"], batch["attention_mask"]).logits,
        rtol=0,
        atol=0,
    )


def test_save_replaces_atomically_and_leaves_nothing_on_failure(teacher, tokenizer, tmp_path):
    target = tmp_path / "out"
    save_model(teacher, target, tokenizer)
    first = (target / "model.safetensors").read_bytes()

    class BrokenTokenizer:
        def save_pretrained(self, _path):
            raise OSError("disk full")

    other = build_student(StudentConfig(type="truncate", num_layers=1), teacher, 2, LABELS)
    with pytest.raises(OSError, match="disk full"):
        save_model(other, target, BrokenTokenizer())
    assert (target / "model.safetensors").read_bytes() == first  # the old model is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "teacher"]  # no temp dirs left

    save_model(other, target, tokenizer)
    assert json.loads((target / "config.json").read_text())["num_hidden_layers"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "teacher"]


def test_load_student_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_student(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"neither config\.json.*nor textdistill_bilstm\.json"):
        load_student(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        save_model(BiLSTMClassifier(BiLSTMConfig(vocab_size=5, num_labels=2)), tmp_path / "file")


def test_count_parameters_hf_golden(tmp_path):
    tok = make_tokenizer(tmp_path / "tok")
    config = tiny_bert_config(len(tok), layers=2, hidden=16, heads=2)
    model = HFClassifier(BertForSequenceClassification(config))
    v, h, p, t = len(tok), 16, config.max_position_embeddings, config.type_vocab_size
    embedding = (v + p + t) * h
    per_layer = 4 * (h * h + h) + 2 * h + (h * 2 * h + 2 * h) + (2 * h * h + h) + 2 * h
    rest = (
        2 * h + 2 * per_layer + (h * h + h) + (h * 2 + 2)
    )  # embedding LayerNorm, layers, pooler, classifier
    assert count_parameters(model) == {
        "total": embedding + rest,
        "embedding": embedding,
        "non_embedding": rest,
    }


def test_count_parameters_bilstm_golden_and_tied_weights_counted_once():
    model = BiLSTMClassifier(
        BiLSTMConfig(vocab_size=50, num_labels=3, embedding_dim=8, lstm_hidden=6, mlp_hidden=5)
    )
    lstm = 2 * (4 * 6 * 8 + 4 * 6 * 6 + 2 * 4 * 6)  # two directions: W_ih, W_hh, b_ih, b_hh
    head = (12 * 5 + 5) + (5 * 3 + 3)
    assert count_parameters(model) == {
        "total": 400 + lstm + head,
        "embedding": 400,
        "non_embedding": lstm + head,
    }

    tied = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    tied[1].weight = tied[0].weight
    assert count_parameters(tied) == {"total": 40, "embedding": 40, "non_embedding": 0}
