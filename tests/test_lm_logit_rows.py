"""The LM head at the loss positions only (``logit_rows``): same values, gradients and training as the head
at every position.

Causal-LM terms read next-token logits only where a loss counts, so the distiller asks a causal-LM student
(and a live causal-LM teacher) for its head at those rows (:func:`textdistill.losses.lm.loss_rows`); the
terms take the ``(N, V)`` logits as they are. Checked here: the model's row logits against its full forward,
every LM term's value and gradient against the full-logit path (live teacher and top-k store, both
reductions), rows that are a superset of the loss positions, a clear error for rows that miss one, the
fallback for a head that is not a plain linear map, and whole training runs with and without the rows.
"""

from __future__ import annotations

import copy

import pytest
import torch

import textdistill.training.distiller as distiller_module
from lm_fixtures import tiny_gpt2, tiny_llama
from textdistill.config.schema import LossTermConfig, TrainConfig
from textdistill.errors import DataError
from textdistill.losses import LOSSES
from textdistill.losses.lm import loss_rows
from textdistill.losses.objective import Objective
from textdistill.models.causal_lm import HFCausalLM, causal_lm_info
from textdistill.models.outputs import FeatureRequest, ModelOutputs, TokenTopK
from textdistill.training.distiller import Distiller, LiveTeacher, reads_loss_positions_only

V, B, L = 40, 4, 9
TERMS = ["lm_kl", "lm_reverse_kl", "lm_jsd", "lm_skew_kl", "lm_skew_reverse_kl", "lm_tvd", "lm_ce"]


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (B, L), generator=g)
    mask = (torch.arange(L)[None, :] < torch.tensor([L, 6, 3, 1])[:, None]).long()
    ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    labels[0, :4] = -100  # a prompt
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_row_logits_equal_the_full_forward_at_those_rows(make):
    model = HFCausalLM(make(V, layers=2, seed=3))
    b = batch()
    rows = loss_rows(b)
    assert rows.shape == (B, L) and not rows[:, -1].any()
    assert torch.equal(rows[:, :-1], b["labels"][:, 1:] != -100)
    request = FeatureRequest(hidden_states=True)
    full = model(b["input_ids"], b["attention_mask"], features=request)
    part = model(b["input_ids"], b["attention_mask"], features=request, logit_rows=rows)
    assert full.logit_rows is None and torch.equal(part.logit_rows, rows)
    assert part.logits.shape == (int(rows.sum()), V)
    torch.testing.assert_close(part.logits, full.logits[rows], rtol=1e-5, atol=1e-5)
    for h_full, h_part in zip(full.hidden_states, part.hidden_states, strict=True):
        torch.testing.assert_close(h_part, h_full)


def test_a_head_that_is_not_linear_falls_back_to_full_logits(capsys):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, final_logit_softcapping=1.0, pad_token_id=0,
    )  # fmt: skip
    model = HFCausalLM(Gemma2ForCausalLM(config).eval())
    b = batch()
    out = model(b["input_ids"], b["attention_mask"], logit_rows=loss_rows(b))
    assert out.logit_rows is None and out.logits.shape == (B, L, V)
    assert "not a linear head" in capsys.readouterr().out
    # Soft-capping at 1 keeps every logit inside (-1, 1): these are the model's real logits.
    assert float(out.logits.detach().abs().max()) < 1.0


def _pair(name: str, reduction: str, topk: int | None, rows_of) -> tuple[float, torch.Tensor]:
    """A term's value and gradient w.r.t. the student's full logits, fed full or as ``(N, V)`` rows."""
    info = causal_lm_info(tiny_llama(V, layers=1).config)
    term = LOSSES.get(name)({"reduction": reduction}, info, info, None)
    b = batch()
    g = torch.Generator().manual_seed(1)
    zs = torch.randn(B, L, V, generator=g, dtype=torch.float64).requires_grad_()
    zt = torch.randn(B, L, V, generator=g, dtype=torch.float64) * 2
    if topk is None:
        teacher = ModelOutputs(logits=zt)
    else:
        top = torch.log_softmax(zt, -1).topk(topk, dim=-1)
        rest = torch.log1p(-top.values.exp().sum(-1).clamp_max(1 - 1e-12))
        teacher = ModelOutputs(logits=torch.empty(0), token_topk=TokenTopK(top.values, top.indices, rest))
    rows = rows_of(b)
    student = ModelOutputs(logits=zs) if rows is None else ModelOutputs(logits=zs[rows], logit_rows=rows)
    value = term(student, teacher, b, 0.0)
    (grad,) = torch.autograd.grad(value, zs)
    return float(value), grad


@pytest.mark.parametrize("name", TERMS)
@pytest.mark.parametrize("reduction", ["sequence", "token"])
@pytest.mark.parametrize("topk", [None, 7])
def test_every_term_gives_the_same_value_and_gradient_on_rows(name, reduction, topk):
    full, g_full = _pair(name, reduction, topk, lambda b: None)
    part, g_part = _pair(name, reduction, topk, loss_rows)
    # A superset of the loss positions (every real token) is taken apart to the same rows.
    wide, g_wide = _pair(name, reduction, topk, lambda b: b["attention_mask"].bool())
    assert full > 0
    assert part == pytest.approx(full, rel=1e-12) and wide == pytest.approx(full, rel=1e-12)
    torch.testing.assert_close(g_part, g_full, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_wide, g_full, rtol=1e-10, atol=1e-12)


def test_rows_that_miss_a_loss_position_are_refused():
    b = batch()
    rows = loss_rows(b).clone()
    rows[1, 2] = False
    with pytest.raises(DataError, match="miss loss positions"):
        _pair("lm_kl", "sequence", None, lambda _: rows)
    with pytest.raises(DataError, match="do not match logit_rows"):
        info = causal_lm_info(tiny_llama(V, layers=1).config)
        term = LOSSES.get("lm_ce")({}, info, info, None)
        term(ModelOutputs(logits=torch.zeros(3, V), logit_rows=loss_rows(b)), None, b, 0.0)


def test_only_objectives_of_lm_logit_terms_use_rows():
    info = causal_lm_info(tiny_llama(V, layers=1).config)

    def objective(*names: str) -> Objective:
        return Objective([LossTermConfig(name=n) for n in names], info, info)

    assert reads_loss_positions_only(objective("lm_kl", "lm_ce"))
    assert reads_loss_positions_only(objective("lm_jsd", "hidden_mse"))
    assert not reads_loss_positions_only(objective("hidden_mse"))  # no logit term: nothing to gain
    assert not reads_loss_positions_only(torch.nn.Linear(2, 2))  # an objective without terms


def _train(use_rows: bool, monkeypatch, calls: list) -> dict[str, torch.Tensor]:
    monkeypatch.setattr(distiller_module, "reads_loss_positions_only", lambda objective: use_rows)
    teacher = HFCausalLM(tiny_llama(V, layers=2, seed=1))
    student = HFCausalLM(tiny_llama(V, layers=1, seed=2))
    forward = HFCausalLM.forward

    def spy(self, *args, logit_rows=None, **kwargs):
        calls.append((self is student, logit_rows is not None))
        return forward(self, *args, logit_rows=logit_rows, **kwargs)

    monkeypatch.setattr(HFCausalLM, "forward", spy)
    terms = [LossTermConfig(name="lm_jsd", weight=0.6), LossTermConfig(name="lm_ce", weight=0.4)]
    objective = Objective(terms, teacher.info, student.info)
    cfg = TrainConfig(batch_size=B, grad_accum=2, max_steps=3, lr=1e-2, warmup_steps=0, precision="fp32",
                      max_grad_norm=1.0, progress=False)  # fmt: skip
    data = [batch(seed) for seed in range(3)]
    distiller = Distiller(
        student=student, objective=objective, train_cfg=cfg, train_loader_fn=lambda epoch, start: data[start:],
        steps_per_epoch=3, teacher=LiveTeacher(teacher, objective.teacher_request(), "fp32", torch.device("cpu")),
    )  # fmt: skip
    distiller.fit()
    return copy.deepcopy(distiller.unwrapped_student().state_dict())


def test_training_on_rows_equals_training_on_every_position(monkeypatch):
    with_rows, without_rows = [], []
    trained = _train(True, monkeypatch, with_rows)
    monkeypatch.undo()
    reference = _train(False, monkeypatch, without_rows)
    # student and live teacher both took the rows on every micro-batch (3 steps x 2), or neither did
    assert with_rows == [(False, True), (True, True)] * 6
    assert without_rows == [(False, False), (True, False)] * 6
    start = HFCausalLM(tiny_llama(V, layers=1, seed=2)).state_dict()
    assert any(not torch.equal(trained[k], start[k].to(trained[k].dtype)) for k in start)
    for key, value in reference.items():
        torch.testing.assert_close(trained[key], value, rtol=1e-4, atol=2e-5)  # Adam moves each by ~1e-2
