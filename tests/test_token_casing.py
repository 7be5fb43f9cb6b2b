"""Casing ids of token tasks (data/word_shape.py) and the casing BiLSTM token student that reads them."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tokenizer
from test_token_training import distill_cfg, ner  # noqa: F401 (fixture)
from textdistill.config.schema import StudentConfig
from textdistill.data.collate import Collator
from textdistill.data.conll import TokenExample
from textdistill.data.labels import LabelMap
from textdistill.data.token_encoding import TokenEncodedDataset
from textdistill.data.word_shape import NUM_CASE_IDS, SHAPES, case_ids, word_shape
from textdistill.errors import ModelError
from textdistill.models.io import load_student
from textdistill.training.runner import run_training


@pytest.mark.parametrize(
    ("word", "shape"),
    [
        ("paris", "lower"),
        ("Paris", "title"),
        ("A", "title"),
        ("EU", "upper"),
        ("iPhone", "mixed"),
        ("McDonald", "mixed"),
        ("1996", "digits"),
        ("12,5", "digits"),
        ("B2B", "alnum"),
        ("--", "other"),
    ],
)
def test_word_shapes(word, shape):
    assert SHAPES[word_shape(word)] == shape


def test_case_ids_follow_words_and_pieces():
    # [CLS] EU(1 piece) rejects(2 pieces) [SEP]: 1 + 2 * shape, +1 on a word's later pieces, 0 for specials
    upper, lower = SHAPES.index("upper"), SHAPES.index("lower")
    got = case_ids(["EU", "rejects"], [None, 0, 1, 1, None])
    assert got == [0, 1 + 2 * upper, 1 + 2 * lower, 2 + 2 * lower, 0]
    assert max(got) < NUM_CASE_IDS


def test_datasets_carry_case_ids_and_the_collator_pads_them(tmp_path):
    tok = make_tokenizer(tmp_path / "tok")
    labels = LabelMap(("B-PER", "O"))
    ds = TokenEncodedDataset(
        [TokenExample(0, ["The", "actor"], ["O", "B-PER"]), TokenExample(1, ["the"], ["O"])], tok, 16, labels
    )
    title, lower = SHAPES.index("title"), SHAPES.index("lower")
    assert ds[0]["case_ids"] == [0, 1 + 2 * title, 1 + 2 * lower, 0]
    batch = Collator.for_tokenizer(tok)([ds[0], ds[1]])
    assert batch["case_ids"].tolist() == [[0, 1 + 2 * title, 1 + 2 * lower, 0], [0, 1 + 2 * lower, 0, 0]]
    # the uncased tokenizer gives "The" and "the" the same id: only case_ids tell them apart
    assert ds[0]["input_ids"][1] == ds[1]["input_ids"][1]


def test_casing_bilstm_student_trains_saves_loads_and_reads_the_casing(ner, tmp_path):  # noqa: F811
    student = StudentConfig(type="bilstm", embedding_dim=8, lstm_hidden=8, mlp_hidden=8, case_embedding_dim=4)
    res = run_training(distill_cfg(ner, tmp_path / "b", student), quiet=True)
    model = load_student(res.model_dir)
    assert model.config.case_embedding_dim == 4 and model.extra_input_names == ("case_ids",)
    ids, mask = torch.tensor([[2, 10, 11, 3]]), torch.ones(1, 4, dtype=torch.long)
    lower, title = torch.tensor([[0, 1, 1, 0]]), torch.tensor([[0, 3, 3, 0]])
    with torch.no_grad():
        a = model(ids, mask, case_ids=lower).logits
        b = model(ids, mask, case_ids=title).logits
    assert a.shape == (1, 4, 5) and not torch.allclose(a, b)  # the casing changes the prediction
    with pytest.raises(ModelError, match="got no case_ids"):
        model(ids, mask)
    from textdistill.evaluation.evaluate import evaluate_dir
    from textdistill.export.onnx import export_dir

    assert evaluate_dir(res.model_dir, ner["dev"])["entity_f1"] == pytest.approx(res.dev_metrics["entity_f1"])
    out = export_dir(res.model_dir, tmp_path / "onnx", ner["dev"])  # case_ids is an input of the graph
    assert out.max_abs_diff <= 1e-4
    from textdistill.evaluation.benchmark import run_benchmark

    bench = run_benchmark(
        ner["teacher"], [res.model_dir], ner["dev"], out_dir=tmp_path / "bench", speed_examples=4,
        latency_examples=2, warmup=0, repeats=1, plots=False, bf16=False, gpu=False, cka=False,
    )  # fmt: skip
    assert all(e["speed"]["throughput_eps"] > 0 for e in bench["entries"])  # latency and throughput timed


def test_casing_is_refused_for_a_sentence_task(tmp_path):
    from transformers import BertForSequenceClassification

    from conftest import tiny_bert_config
    from textdistill.models.students import build_student
    from textdistill.models.teacher import load_teacher

    tok = make_tokenizer(tmp_path / "t")
    BertForSequenceClassification(tiny_bert_config(len(tok), num_labels=2)).save_pretrained(
        str(tmp_path / "t")
    )
    teacher = load_teacher(tmp_path / "t")
    cfg = StudentConfig(type="bilstm", embedding_dim=8, lstm_hidden=8, mlp_hidden=8, case_embedding_dim=4)
    with pytest.raises(ModelError, match="needs a token-classification task"):
        build_student(cfg, teacher, 2, None)
