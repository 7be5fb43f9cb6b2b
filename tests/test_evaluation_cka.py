"""Linear CKA: invariances, an independent HSIC implementation, pooling and layer matrices."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_bert_config
from textdistill.errors import ModelError
from textdistill.evaluation.cka import cka_matrix, collect_representations, linear_cka, pool_hidden
from textdistill.models.bilstm import BiLSTMClassifier, BiLSTMConfig
from textdistill.models.hf import HFClassifier


def hsic_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """CKA written out with Gram matrices: HSIC(K, L) = tr(K H L H) / (n - 1)^2, H = I - 11^T / n."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - torch.full((n, n), 1.0 / n, dtype=torch.float64)
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return torch.trace(a @ h @ b @ h) / (n - 1) ** 2

    return float(hsic(k, l_) / torch.sqrt(hsic(k, k) * hsic(l_, l_)))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_cka_of_a_representation_with_itself_is_one():
    x = torch.randn(50, 8, generator=_gen())
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_scaling():
    x = torch.randn(60, 12, generator=_gen(1))
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=_gen(2), dtype=torch.float64))
    assert linear_cka(x, x.double() @ q) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, 3.5 * x + 2.0) == pytest.approx(1.0, abs=1e-10)  # scale + offset (centering)


def test_cka_of_independent_noise_is_low():
    x = torch.randn(2000, 10, generator=_gen(3))
    y = torch.randn(2000, 16, generator=_gen(4))
    assert linear_cka(x, y) < 0.2


def test_cka_equals_the_hsic_formula():
    x = torch.randn(40, 7, generator=_gen(5))
    y = torch.tanh(x @ torch.randn(7, 11, generator=_gen(6))) + 0.3 * torch.randn(40, 11, generator=_gen(7))
    value = linear_cka(x, y)
    assert 0.2 < value < 0.99  # a non-trivial case
    assert value == pytest.approx(hsic_cka(x, y), abs=1e-10)


def test_cka_rejects_mismatched_rows_and_is_nan_for_constant_input():
    with pytest.raises(ModelError, match=r"\(5, 3\) and \(6, 3\)"):
        linear_cka(torch.zeros(5, 3), torch.zeros(6, 3))
    assert math.isnan(linear_cka(torch.ones(5, 3), torch.randn(5, 3)))


def test_pooling_rows():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(pool_hidden(hidden, mask, "tokens"), hidden[mask.bool()])
    assert pool_hidden(hidden, mask, "tokens").shape == (5, 2)
    torch.testing.assert_close(pool_hidden(hidden, mask, "cls"), hidden[:, 0])
    torch.testing.assert_close(
        pool_hidden(hidden, mask, "mean"), torch.stack([hidden[0, :2].mean(0), hidden[1].mean(0)])
    )
    with pytest.raises(ModelError, match="unknown CKA pooling 'max'"):
        pool_hidden(hidden, mask, "max")


def test_cka_matrix_of_pooled_layers_matches_pairwise_cka():
    g = _gen(8)
    mask = torch.ones(3, 5, dtype=torch.long)
    mask[1, 3:] = 0
    teacher = [torch.randn(3, 5, 6, generator=g) for _ in range(4)]
    student = [teacher[0], teacher[3] @ torch.randn(6, 4, generator=g)]
    m = cka_matrix([pool_hidden(h, mask) for h in teacher], [pool_hidden(h, mask) for h in student])
    assert m.shape == (4, 2)
    real = mask.bool()
    for i in range(4):
        for j in range(2):
            assert m[i, j] == pytest.approx(hsic_cka(teacher[i][real], student[j][real]), abs=1e-10)
    assert m[0, 0] == pytest.approx(1.0)


def test_collect_representations_from_a_model(tiny_tokenizer):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = HFClassifier(BertForSequenceClassification(tiny_bert_config(len(tiny_tokenizer), layers=2)))
    enc = tiny_tokenizer(
        ["good movie", "the plot was very dull and boring", "fun"], padding=True, return_tensors="pt"
    )
    batch = dict(enc)
    n_tokens = int(enc["attention_mask"].sum())
    reps = collect_representations(model, [batch, batch], max_rows=n_tokens + 5)
    assert len(reps) == 3 and reps[0].shape == (n_tokens + 5, 32)  # embeddings + 2 layers; 2nd batch cut
    assert model.training  # mode restored
    # same model, same rows -> the CKA matrix has ones on its diagonal
    assert torch.diagonal(cka_matrix(reps, reps)).tolist() == pytest.approx([1.0] * 3)
    first = collect_representations(model, [batch], max_rows=None)
    assert first[0].shape[0] == n_tokens
    torch.testing.assert_close(reps[1][:n_tokens], first[1])
    torch.testing.assert_close(reps[1][n_tokens:], first[1][:5])


def test_collect_representations_rejects_models_without_hidden_states():
    model = BiLSTMClassifier(
        BiLSTMConfig(vocab_size=10, num_labels=2, embedding_dim=4, lstm_hidden=3, mlp_hidden=4)
    )
    batch = {
        "input_ids": torch.ones(1, 3, dtype=torch.long),
        "attention_mask": torch.ones(1, 3, dtype=torch.long),
    }
    with pytest.raises(ModelError, match="provides no hidden states"):
        collect_representations(model, [batch])
