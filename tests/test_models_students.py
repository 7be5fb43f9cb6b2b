"""Student builders: pretrained, truncate, shrink, bilstm."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

from conftest import tiny_bert_config
from textdistill.config.schema import StudentConfig
from textdistill.errors import ConfigError, ModelError
from textdistill.models.bilstm import BiLSTMClassifier
from textdistill.models.hf import HFClassifier
from textdistill.models.outputs import FeatureRequest
from textdistill.models.students import (
    STUDENTS,
    build_student,
    evenly_spread_layers,
    project_embeddings,
    student_info,
    validate_student,
)
from textdistill.models.teacher import load_teacher

LABELS = {0: "negative", 1: "positive"}


@pytest.fixture
def teacher(tiny_teacher_dir) -> HFClassifier:
    return load_teacher(tiny_teacher_dir)


def batch(vocab: int = 60, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (3, 8), generator=g)
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    return ids * mask, mask


def test_registry_names_and_unknown_type(teacher):
    assert STUDENTS.names() == ["bilstm", "pretrained", "shrink", "truncate"]
    problems = validate_student(StudentConfig(type="truncat"), teacher.info)
    assert len(problems) == 1 and "Did you mean 'truncate'" in problems[0]


def test_options_of_another_type_are_reported_all_at_once(teacher):
    cfg = StudentConfig(type="bilstm", hidden_size=64, layers=[0], pooling="sum")
    with pytest.raises(ConfigError) as err:
        student_info(cfg, teacher.info, 2)
    text = str(err.value)
    assert "3 configuration problems" in text
    assert "student.hidden_size=64 has no effect" in text and "student.layers=[0]" in text and "'sum'" in text


# ------------------------------------------------------------------------------------------------ truncate
def test_evenly_spread_layers_keeps_the_last_layer():
    assert evenly_spread_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    assert evenly_spread_layers(12, 4) == [2, 5, 8, 11]
    assert evenly_spread_layers(4, 4) == [0, 1, 2, 3]
    assert evenly_spread_layers(4, 1) == [3]


def test_truncate_copies_chosen_layers_exactly(teacher):
    student = build_student(StudentConfig(type="truncate", layers=[0, 2]), teacher, 2, LABELS)
    assert student.training and all(p.requires_grad for p in student.parameters())
    t_sd, s_sd = teacher.model.state_dict(), student.model.state_dict()
    assert student.info.num_layers == 2 and student.config.id2label == LABELS
    for key, value in s_sd.items():
        src = re.sub(r"encoder\.layer\.(\d+)\.", lambda m: f"encoder.layer.{[0, 2][int(m.group(1))]}.", key)
        assert torch.equal(value, t_sd[src]), key
    # every non-layer tensor (embeddings, pooler, classifier) is there too
    assert {k for k in s_sd if ".layer." not in k} == {k for k in t_sd if ".layer." not in k}


def test_truncate_keeping_every_layer_reproduces_the_teacher(teacher):
    student = build_student(StudentConfig(type="truncate", num_layers=4), teacher, 2, LABELS).eval()
    ids, mask = batch(teacher.config.vocab_size)
    torch.testing.assert_close(student(ids, mask).logits, teacher(ids, mask).logits, rtol=0, atol=0)


def test_truncate_distilbert_and_new_label_count():
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=60, dim=16, n_layers=4, n_heads=2, hidden_dim=32, max_position_embeddings=40
    )
    teacher = HFClassifier(DistilBertForSequenceClassification(config).eval())
    student = build_student(StudentConfig(type="truncate", num_layers=2), teacher, 3, None)
    assert student.config.n_layers == 2 and student.info.num_labels == 3
    t_sd, s_sd = teacher.model.state_dict(), student.model.state_dict()
    for j, i in enumerate([1, 3]):  # evenly spread, last included
        for name in ("attention.q_lin.weight", "ffn.lin2.bias", "output_layer_norm.weight"):
            assert torch.equal(
                s_sd[f"distilbert.transformer.layer.{j}.{name}"],
                t_sd[f"distilbert.transformer.layer.{i}.{name}"],
            )
    assert torch.equal(s_sd["pre_classifier.weight"], t_sd["pre_classifier.weight"])
    assert s_sd["classifier.weight"].shape == (3, 16)  # 3 labels: a fresh output layer


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (StudentConfig(type="truncate", layers=[0, 7]), r"\[7\] out of range.*4 layers.*0\.\.3"),
        (StudentConfig(type="truncate", layers=[-1, 2]), r"\[-1\] out of range.*0\.\.3"),
        (StudentConfig(type="truncate", layers=[1, 1]), "repeats a layer"),
        (StudentConfig(type="truncate", layers=[2, 0]), r"increasing order \(e\.g\. \[0, 2\]\)"),
        (StudentConfig(type="truncate"), r"needs student\.num_layers.*0\.\.3"),
        (StudentConfig(type="truncate", num_layers=9), "num_layers=9 exceeds the teacher's 4 layers"),
        (StudentConfig(type="truncate", num_layers=0), "positive integer, got 0"),
        (StudentConfig(type="truncate", num_layers=3, layers=[0, 1]), "disagrees with student.layers"),
    ],
)
def test_truncate_rejects_bad_layer_choices(teacher, cfg, message):
    with pytest.raises(ConfigError, match=message):
        build_student(cfg, teacher, 2, LABELS)
    with pytest.raises(ConfigError, match=message):
        student_info(cfg, teacher.info, 2)


# -------------------------------------------------------------------------------------------------- shrink
def test_shrink_shapes_info_and_exact_embedding_copy_at_same_width(teacher):
    cfg = StudentConfig(type="shrink", num_layers=2, num_heads=2, intermediate_size=40)
    info = student_info(cfg, teacher.info, 2)
    student = build_student(cfg, teacher, 2, LABELS)
    assert student.info == info
    assert (info.num_layers, info.hidden_size, info.num_heads) == (2, 32, 2)
    layer = student.model.bert.encoder.layer[1]
    assert layer.intermediate.dense.weight.shape == (40, 32)
    assert layer.attention.self.num_attention_heads == 2
    torch.testing.assert_close(
        student.model.get_input_embeddings().weight,
        teacher.model.get_input_embeddings().weight,
        rtol=0,
        atol=0,
    )
    # the body is random: not a copy of the teacher
    assert not torch.equal(
        layer.attention.self.query.weight, teacher.model.bert.encoder.layer[1].attention.self.query.weight
    )


def test_shrink_narrower_projects_embeddings_by_pca(teacher):
    student = build_student(StudentConfig(type="shrink", num_layers=1, hidden_size=16), teacher, 2, LABELS)
    assert student.info.num_heads == 4 and student.model.config.intermediate_size == 64  # defaults
    got = student.model.get_input_embeddings().weight.detach().double().numpy()
    w = teacher.model.get_input_embeddings().weight.detach().double().numpy()
    centred = w - w.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    # PCA keeps the top-16 principal directions: the token Gram matrix is the rank-16 one, up to the rescale
    gram_ref = (u[:, :16] * s[:16] ** 2) @ u[:, :16].T
    gram = got @ got.T
    scale = (gram * gram_ref).sum() / (gram_ref * gram_ref).sum()
    np.testing.assert_allclose(gram, scale * gram_ref, atol=1e-4 * np.abs(gram).max())
    assert got.std() == pytest.approx(w.std(), rel=1e-4)


def test_shrink_without_embedding_init_and_bad_heads(teacher):
    student = build_student(
        StudentConfig(type="shrink", num_layers=1, init_embeddings_from_teacher=False), teacher, 2, LABELS
    )
    assert not torch.equal(
        student.model.get_input_embeddings().weight, teacher.model.get_input_embeddings().weight
    )
    with pytest.raises(ConfigError, match=r"hidden_size=30 is not divisible by student.num_heads=4"):
        student_info(StudentConfig(type="shrink", hidden_size=30, num_heads=4), teacher.info, 2)


def test_project_embeddings_wider_preserves_inner_products():
    torch.manual_seed(0)
    w = torch.randn(20, 6)
    out = project_embeddings(w, 10)
    assert out.shape == (20, 10)
    gram, gram_ref = out @ out.T, w @ w.T
    scale = (gram * gram_ref).sum() / (gram_ref * gram_ref).sum()
    torch.testing.assert_close(gram, scale * gram_ref, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------- pretrained
def test_pretrained_student_gets_a_new_head_for_another_label_count(tmp_path):
    torch.manual_seed(1)
    d = tmp_path / "student"
    body = BertForSequenceClassification(tiny_bert_config(60, layers=2, hidden=16, heads=2))
    body.save_pretrained(str(d))
    teacher = HFClassifier(BertForSequenceClassification(tiny_bert_config(60)).eval())
    cfg = StudentConfig(type="pretrained", path=str(d))
    assert student_info(cfg, teacher.info, 3).num_labels == 3
    labels = {0: "a", 1: "b", 2: "c"}
    student = build_student(cfg, teacher, 3, labels)
    assert student.model.classifier.weight.shape == (3, 16) and student.config.id2label == labels
    key = "bert.encoder.layer.1.output.dense.weight"
    assert torch.equal(student.model.state_dict()[key], body.state_dict()[key])


def test_pretrained_student_path_problems(teacher, tmp_path):
    assert "student.path is required" in validate_student(StudentConfig(type="pretrained"), teacher.info)[0]
    problems = validate_student(
        StudentConfig(type="pretrained", path=str(tmp_path / "missing")), teacher.info
    )
    assert len(problems) == 1 and "missing" in problems[0] and "does not exist" in problems[0]


# -------------------------------------------------------------------------------------------------- bilstm
def small_bilstm(teacher, **kw) -> BiLSTMClassifier:
    cfg = StudentConfig(type="bilstm", embedding_dim=12, lstm_hidden=10, mlp_hidden=8, **kw)
    return build_student(cfg, teacher, 2, LABELS)


def test_bilstm_info_embeddings_and_forward_backward(teacher):
    info = student_info(StudentConfig(type="bilstm", embedding_dim=12, lstm_hidden=10), teacher.info, 2)
    assert info.capabilities == {"logits"} and info.kind == "bilstm" and info.vocab_size == 102
    student = small_bilstm(teacher, dropout=0.3)
    t_emb = teacher.model.get_input_embeddings().weight
    assert student.embeddings.weight.shape == (t_emb.shape[0], 12)
    torch.testing.assert_close(student.embeddings.weight, project_embeddings(t_emb, 12))
    ids, mask = batch(102)
    out = student(ids, mask)
    assert out.logits.shape == (3, 2) and out.num_heads is None and out.attention_mask is mask
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 1])).backward()
    no_grad = [n for n, p in student.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    with pytest.raises(ModelError, match="logits only.*hidden_states"):
        student(ids, mask, features=FeatureRequest(hidden_states=True))


@pytest.mark.parametrize("pooling", ["max", "mean", "last"])
def test_bilstm_matches_unpadded_sequences_and_ignores_extra_padding(teacher, pooling):
    student = small_bilstm(teacher, pooling=pooling, lstm_layers=2).eval()
    ids, mask = batch(102)
    logits = student(ids, mask).logits
    more_ids = torch.cat([ids, torch.zeros(3, 5, dtype=ids.dtype)], dim=1)
    more_mask = torch.cat([mask, torch.zeros(3, 5, dtype=mask.dtype)], dim=1)
    torch.testing.assert_close(student(more_ids, more_mask).logits, logits, rtol=1e-5, atol=1e-6)
    # independent reference: each sequence alone, unpadded, through the same modules
    for row in range(3):
        n = int(mask[row].sum())
        out, (h_n, _) = student.lstm(student.embeddings(ids[row : row + 1, :n]))
        if pooling == "max":
            pooled = out.max(dim=1).values
        elif pooling == "mean":
            pooled = out.mean(dim=1)
        else:
            pooled = torch.cat([out[:, -1, :10], out[:, 0, 10:]], dim=-1)
        torch.testing.assert_close(student.head(pooled), logits[row : row + 1], rtol=1e-5, atol=1e-6)


def test_bilstm_rejects_left_padding_and_bad_options(teacher):
    student = small_bilstm(teacher)
    ids, mask = batch(102)
    with pytest.raises(ModelError, match="right-padded"):
        student(ids, mask.flip(1))
    problems = validate_student(StudentConfig(type="bilstm", lstm_hidden=0, dropout=1.0), teacher.info)
    assert problems == [
        "student.lstm_hidden must be a positive integer, got 0",
        "student.dropout must be a probability in [0, 1), got 1.0",
    ]
