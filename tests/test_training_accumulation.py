"""Gradient accumulation is exact: ``grad_accum=4`` on batches of 8 (4 micro-batches of 2) trains the same
student as ``grad_accum=1`` on the same batches of 8, step for step.

The distiller scales each micro-batch's loss by its share of the batch (``n_micro / n``); every loss term is a
mean over batch rows of a per-example value, so the accumulated gradient equals the full batch's gradient.
Dropout is off (its masks would be drawn differently for 4x2 and 1x8) and precision is fp32.
"""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import make_sentiment_rows, make_tokenizer, tiny_bert_config
from textdistill.config.schema import LayerMapConfig, LossTermConfig, TrainConfig
from textdistill.losses.objective import Objective
from textdistill.models.hf import HFClassifier
from textdistill.training.distiller import Callback, Distiller, LiveTeacher, split_batch

STEPS = 4
BATCH = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny 4-layer teacher, a 2-layer student (no dropout) and a fixed list of padded batches."""
    from transformers import BertForSequenceClassification

    tok = make_tokenizer(tmp_path_factory.mktemp("tok"))
    torch.manual_seed(0)
    teacher = HFClassifier(BertForSequenceClassification(tiny_bert_config(len(tok), layers=4)))
    s_cfg = tiny_bert_config(len(tok), layers=2, hidden=16, heads=2)
    s_cfg.hidden_dropout_prob = 0.0
    s_cfg.attention_probs_dropout_prob = 0.0
    student = HFClassifier(BertForSequenceClassification(s_cfg))
    rows = make_sentiment_rows(STEPS * BATCH, seed=3)
    batches = []
    for i in range(STEPS):
        chunk = rows[i * BATCH : (i + 1) * BATCH]
        enc = tok([t for t, _ in chunk], padding=True, return_tensors="pt")
        enc = {k: v for k, v in enc.items()}
        enc["labels"] = torch.tensor([int(label == "positive") for _, label in chunk])
        batches.append(enc)
    # The rows have different lengths, so micro-batches differ in real-token counts: a per-token (rather
    # than per-example) normalisation anywhere would break the equality below.
    assert len({int(b["attention_mask"].sum()) for b in split_batch(batches[0], 4)}) > 1
    return teacher, student, batches


class _Logs(Callback):
    """Keeps every step's logs (loss and pre-clipping gradient norm)."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []

    def on_step_end(self, distiller, logs):
        self.steps.append(dict(logs))


def _train(
    setup, grad_accum: int, objective_cfg: list[LossTermConfig]
) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    teacher, student0, batches = setup
    student = copy.deepcopy(student0)
    cfg = TrainConfig(
        batch_size=BATCH,
        grad_accum=grad_accum,
        max_steps=STEPS,
        lr=1e-3,
        warmup_steps=1,
        precision="fp32",
        max_grad_norm=1.0,
        progress=False,
    )
    logs = _Logs()
    torch.manual_seed(1)  # the projections of intermediate terms start alike
    objective = Objective(objective_cfg, teacher.info, student.info)
    distiller = Distiller(
        student=student,
        objective=objective,
        train_cfg=cfg,
        train_loader_fn=lambda epoch, start: batches[start:],
        steps_per_epoch=len(batches),
        teacher=LiveTeacher(teacher, objective.teacher_request(), "fp32", torch.device("cpu")),
        callbacks=[logs],
    )
    state = distiller.fit()
    assert state.step == STEPS
    params = {
        f"student.{k}": v.detach().clone() for k, v in distiller.unwrapped_student().state_dict().items()
    }
    params.update({f"objective.{k}": v.detach().clone() for k, v in objective.state_dict().items()})
    return params, logs.steps


OBJECTIVES = {
    "kd_kl+hard_ce": [
        LossTermConfig(name="kd_kl", weight=0.7, params={"temperature": 2.0}),
        LossTermConfig(name="hard_ce", weight=0.3),
    ],
    "hidden_mse": [
        LossTermConfig(name="hidden_mse", layer_map=LayerMapConfig(strategy="uniform")),
        LossTermConfig(name="kd_kl", weight=0.5),
    ],
}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_accumulation_4x2_equals_1x8(setup, name):
    full, full_logs = _train(setup, 1, OBJECTIVES[name])
    accumulated, acc_logs = _train(setup, 4, OBJECTIVES[name])
    # AdamW is nearly blind to a constant scale of the gradient, so the weights alone would not catch a
    # micro-batch loss summed instead of averaged: the logged loss and pre-clipping gradient norm would.
    for f, a in zip(full_logs, acc_logs, strict=True):
        assert a["loss"] == pytest.approx(f["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(f["grad_norm"], rel=1e-5)
        for key in f:
            if key.startswith("loss/"):
                # abs: a KL near 0 is a difference of nearly equal fp32 numbers
                assert a[key] == pytest.approx(f[key], rel=1e-5, abs=1e-6), key
    _, student0, _ = setup
    moved = 0
    for key, value in full.items():
        torch.testing.assert_close(accumulated[key], value, atol=1e-6, rtol=1e-5, msg=key)
        if key.startswith("student.") and not torch.equal(value, student0.state_dict()[key[8:]]):
            moved += 1
    # The comparison means something only if training changed the weights.
    assert moved > len(full) // 2
    if name == "hidden_mse":  # learned projections 16 -> 32 exist and were trained identically
        assert any(k.startswith("objective.") for k in full)


def test_split_batch_shares():
    batch = {"input_ids": torch.arange(7 * 3).view(7, 3), "labels": torch.arange(7)}
    parts = split_batch(batch, 3)
    assert [p["input_ids"].shape[0] for p in parts] == [2, 3, 2]
    assert torch.equal(torch.cat([p["labels"] for p in parts]), batch["labels"])
    # More parts than rows: one row each, never an empty micro-batch.
    assert [p["labels"].tolist() for p in split_batch(batch, 10)] == [[i] for i in range(7)]
