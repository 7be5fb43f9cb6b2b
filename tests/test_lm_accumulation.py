"""``reduction: token`` is exact under gradient accumulation: 4 micro-batches of 2 train the same causal-LM
student as one batch of 8, step for step (the distiller hands every micro-batch the global batch's loss
positions and rows). The rows have different numbers of loss positions, so a micro-batch's own token mean,
weighted by its share of rows, would differ (checked at the term level in test_losses_lm_reduction.py).
"""

from __future__ import annotations

import copy

import pytest
import torch

from lm_fixtures import tiny_llama
from textdistill.config.schema import LossTermConfig, TrainConfig
from textdistill.losses.objective import Objective
from textdistill.models.causal_lm import HFCausalLM
from textdistill.training.distiller import Callback, Distiller, LiveTeacher

V, STEPS, BATCH, LENGTH = 40, 3, 8, 9


def batches() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(STEPS):
        ids = torch.randint(3, V, (BATCH, LENGTH), generator=g)
        lengths = torch.randint(2, LENGTH + 1, (BATCH,), generator=g)
        mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).long()
        ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
        labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
        labels[: BATCH // 2, :2] = -100  # prompts on half of the rows
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


class _Logs(Callback):
    def __init__(self):
        self.steps: list[dict[str, float]] = []

    def on_step_end(self, distiller, logs):
        self.steps.append(dict(logs))


def train(grad_accum: int, terms: list[LossTermConfig]):
    teacher = HFCausalLM(tiny_llama(V, layers=2, seed=1))
    student = HFCausalLM(tiny_llama(V, layers=1, seed=2))
    student0 = copy.deepcopy(student.state_dict())
    cfg = TrainConfig(
        batch_size=BATCH, grad_accum=grad_accum, max_steps=STEPS, lr=1e-3, warmup_steps=1,
        precision="fp32", max_grad_norm=1.0, progress=False,
    )  # fmt: skip
    objective = Objective(terms, teacher.info, student.info)
    data, logs = batches(), _Logs()
    distiller = Distiller(
        student=student,
        objective=objective,
        train_cfg=cfg,
        train_loader_fn=lambda epoch, start: data[start:],
        steps_per_epoch=len(data),
        teacher=LiveTeacher(teacher, objective.teacher_request(), "fp32", torch.device("cpu")),
        callbacks=[logs],
    )
    assert distiller.fit().step == STEPS
    return distiller.unwrapped_student().state_dict(), student0, logs.steps


@pytest.mark.parametrize("reduction", ["token", "sequence"])
def test_lm_accumulation_4x2_equals_1x8(reduction):
    terms = [
        LossTermConfig(name="lm_kl", weight=0.7, params={"reduction": reduction}),
        LossTermConfig(name="lm_ce", weight=0.3, params={"reduction": reduction}),
    ]
    full, start, full_logs = train(1, terms)
    acc, _, acc_logs = train(4, terms)
    for f, a in zip(full_logs, acc_logs, strict=True):
        assert a["loss"] == pytest.approx(f["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(f["grad_norm"], rel=1e-5)
    moved = 0
    for key, value in full.items():
        torch.testing.assert_close(acc[key], value, atol=1e-6, rtol=1e-5, msg=key)
        moved += not torch.equal(value, start[key])
    assert moved > len(full) // 2
