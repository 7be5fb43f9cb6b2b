"""Metrics against hand-computed values, evaluation order and agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from textdistill.errors import DataError
from textdistill.evaluation.metrics import (
    agreement,
    average_ranks,
    collect_logits,
    compute_metrics,
    evaluate_model,
    macro_f1,
    matthews_corrcoef,
)
from textdistill.models.outputs import ModelOutputs

# labels / predictions with a hand-worked confusion matrix (rows = true):
#   true 0: [1, 1, 0]   true 1: [0, 2, 0]   true 2: [1, 0, 2]
LABELS = [0, 0, 1, 1, 2, 2, 2]
PREDS = [0, 1, 1, 1, 2, 0, 2]


def test_classification_metrics_match_hand_computation():
    m = compute_metrics(torch.tensor(PREDS), torch.tensor(LABELS), regression=False)
    assert m["accuracy"] == pytest.approx(5 / 7)
    # F1: class 0 = 2*1/(2+1+1) = 0.5; class 1 = 4/(4+1+0) = 0.8; class 2 = 4/(4+0+1) = 0.8
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    # MCC: t=[2,2,3], p=[2,3,2], c=5, s=7 -> (35-16)/sqrt((49-17)(49-17)) = 19/32
    assert m["mcc"] == pytest.approx(19 / 32)
    assert m["n"] == 7


def test_logits_are_argmaxed_like_class_ids():
    logits = torch.full((7, 3), -1.0)
    logits[torch.arange(7), torch.tensor(PREDS)] = 2.0
    assert compute_metrics(logits, LABELS, regression=False) == compute_metrics(
        PREDS, LABELS, regression=False
    )


def test_binary_mcc_equals_the_textbook_formula():
    labels = [1, 1, 1, 0, 0, 0, 1, 0]
    preds = [1, 0, 1, 0, 1, 0, 1, 0]
    tp, tn, fp, fn = 3, 3, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corrcoef(np.array(preds), np.array(labels)) == pytest.approx(expected)


def test_mcc_is_zero_for_a_constant_predictor_and_f1_skips_absent_classes():
    assert matthews_corrcoef(np.array([1, 1, 1, 1]), np.array([0, 1, 0, 1])) == 0.0
    # class 2 is neither a label nor predicted: the mean is over classes 0 and 1 only
    assert macro_f1(np.array([0, 1]), np.array([0, 1])) == pytest.approx(1.0)


def test_unlabelled_rows_are_skipped():
    m = compute_metrics([0, 1, 1], [0, -100, 0], regression=False)
    assert m["n"] == 2
    assert m["accuracy"] == pytest.approx(0.5)
    assert compute_metrics([0.1, 0.2], [math.nan, math.nan], regression=True) == {"n": 0}


def test_average_ranks_share_ties():
    np.testing.assert_allclose(average_ranks(np.array([3.0, 1.0, 2.0, 2.0, 5.0, 2.0])), [5, 1, 3, 3, 6, 3])
    np.testing.assert_allclose(average_ranks(np.array([1, 2, 2, 3])), [1, 2.5, 2.5, 4])


def test_regression_metrics_match_hand_computation():
    pred = torch.tensor([[1.0], [2.0], [2.0], [3.0]])  # (N, 1) as a regression head outputs
    gold = torch.tensor([1.0, 3.0, 2.0, 4.0])
    m = compute_metrics(pred, gold, regression=True)
    # ranks: pred [1, 2.5, 2.5, 4], gold [1, 3, 2, 4]; deviations from 2.5:
    # dx = [-1.5, 0, 0, 1.5], dy = [-1.5, .5, -.5, 1.5] -> 4.5 / sqrt(4.5 * 5)
    assert m["spearman"] == pytest.approx(4.5 / math.sqrt(4.5 * 5.0))
    # pearson: dx = [-1, 0, 0, 1], gold mean 2.5 -> dy = [-1.5, .5, -.5, 1.5] -> 3 / sqrt(2 * 5)
    assert m["pearson"] == pytest.approx(3.0 / math.sqrt(10.0))
    assert m["mse"] == pytest.approx((0 + 1 + 0 + 1) / 4)
    assert m["n"] == 4


def test_constant_regression_prediction_scores_zero_correlation():
    m = compute_metrics([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], regression=True)
    assert m["pearson"] == 0.0 and m["spearman"] == 0.0


def test_shape_errors_name_the_problem():
    with pytest.raises(DataError, match="3 predictions.*2 labels"):
        compute_metrics([0, 1, 1], [0, 1], regression=False)
    with pytest.raises(DataError, match="exactly one output"):
        compute_metrics(torch.zeros(2, 3), [0.0, 1.0], regression=True)


def test_agreement():
    t = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0], [5.0, 0.0], [0.0, 1.0]])
    assert agreement(s, t) == pytest.approx(0.75)
    # single-output models: the correlation of the two outputs
    assert agreement(
        torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[2.0], [4.0], [6.0]])
    ) == pytest.approx(1.0)
    with pytest.raises(DataError, match="differ in shape"):
        agreement(torch.zeros(3, 2), torch.zeros(3, 3))


class _MeanPool(nn.Module):
    """A contract model: masked mean of embeddings -> linear; training mode switches dropout on."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 8)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask, token_type_ids=None, features=None):
        m = attention_mask.unsqueeze(-1).float()
        pooled = (self.emb(input_ids) * m).sum(1) / m.sum(1)
        return ModelOutputs(logits=self.out(self.drop(pooled)), attention_mask=attention_mask)


def _batches():
    g = torch.Generator().manual_seed(1)
    out = []
    for ids in ([5, 2], [4, 0, 3], [1]):  # example ids out of order
        n = len(ids)
        mask = torch.ones(n, 6, dtype=torch.long)
        mask[0, 4:] = 0
        out.append(
            {
                "input_ids": torch.randint(1, 20, (n, 6), generator=g),
                "attention_mask": mask,
                "labels": torch.randint(0, 3, (n,), generator=g),
                "example_ids": torch.tensor(ids),
            }
        )
    return out


def test_evaluate_model_orders_rows_by_example_id_and_restores_train_mode():
    model = _MeanPool().train()
    batches = _batches()
    metrics, logits = evaluate_model(model, batches, regression=False)
    assert model.training
    # reference: eval-mode forward of each batch, rows placed by example id
    model.eval()
    expected = torch.zeros(6, 3)
    labels = torch.zeros(6, dtype=torch.long)
    with torch.no_grad():
        for b in batches:
            expected[b["example_ids"]] = model(b["input_ids"], b["attention_mask"]).logits
            labels[b["example_ids"]] = b["labels"]
    torch.testing.assert_close(logits, expected)
    assert metrics == compute_metrics(expected, labels, regression=False)


def test_evaluate_model_under_bf16_autocast_returns_float32_logits():
    model = _MeanPool()
    _, fp32 = evaluate_model(model, _batches(), regression=False)
    _, bf16 = evaluate_model(model, _batches(), regression=False, autocast_dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, atol=0.05, rtol=0.05)


def test_collect_logits_without_ids_keeps_loader_order_and_needs_batches():
    batches = [{k: v for k, v in b.items() if k != "example_ids"} for b in _batches()]
    logits, labels = collect_logits(lambda b: b["input_ids"][:, :2].float(), batches)
    torch.testing.assert_close(logits, torch.cat([b["input_ids"][:, :2].float() for b in batches]))
    torch.testing.assert_close(labels, torch.cat([b["labels"] for b in batches]))
    with pytest.raises(DataError, match="empty"):
        collect_logits(lambda b: b["input_ids"], [])


# -- positive-class F1 (binary tasks: MRPC / QQP) ------------------------------------------------------------
def test_positive_f1_matches_scikit_learn_on_random_binary_data():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        gold = rng.integers(0, 2, size=37)
        pred = rng.integers(0, 2, size=37)
        m = compute_metrics(pred, gold, regression=False)
        assert m["f1"] == pytest.approx(sklearn_metrics.f1_score(gold, pred, pos_label=1))
        assert m["mcc"] == pytest.approx(sklearn_metrics.matthews_corrcoef(gold, pred))
        assert m["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(gold, pred, average="macro"))


def test_positive_f1_by_hand_and_only_for_binary_tasks():
    # TP = 2 (rows 0, 2), FP = 1 (row 4), FN = 1 (row 1): F1 = 4 / (4 + 1 + 1)
    gold = [1, 1, 1, 0, 0, 0]
    pred = [1, 0, 1, 0, 1, 0]
    assert compute_metrics(pred, gold, regression=False)["f1"] == pytest.approx(4 / 6)
    # a model that never predicts the positive class on data without it: 0, not a division by zero
    assert compute_metrics([0, 0], [0, 0], regression=False)["f1"] == 0.0
    assert "f1" not in compute_metrics(PREDS, LABELS, regression=False)  # 3 classes


def test_agreement_measure_names_what_is_measured():
    from textdistill.evaluation.metrics import agreement_measure

    assert agreement_measure(True).startswith("Pearson correlation")
    assert agreement_measure(False).startswith("share of examples")
