"""Hidden-state terms between decoders (hidden_mse, hidden_cos, embedding_mse with layer maps and learned
projections) in causal-LM runs: golden values against an independent computation, end to end, refusals."""

from __future__ import annotations

import json

import pytest
import torch

from lm_fixtures import make_lm_tokenizer, tiny_llama
from textdistill.config.loader import load_config
from textdistill.config.schema import LayerMapConfig, LossTermConfig
from textdistill.errors import ConfigError
from textdistill.losses.objective import Objective
from textdistill.models.causal_lm import HFCausalLM, causal_lm_info, shrink_causal_lm
from textdistill.training.runner import run_training

TOK = make_lm_tokenizer()
V = len(TOK)


def _batch():
    ids = torch.tensor([[1, 8, 9, 10, 11, 2], [1, 12, 13, 2, 0, 0]])
    mask = (torch.arange(6) < torch.tensor([[6], [4]])).long()
    labels = torch.where(mask.bool(), ids, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_hidden_terms_between_decoders_equal_an_independent_computation():
    teacher = tiny_llama(V, layers=4, seed=1)
    student_model = shrink_causal_lm(teacher, num_layers=2, hidden_size=16, num_heads=2, num_kv_heads=1)
    student, t = HFCausalLM(student_model), HFCausalLM(teacher)
    terms = [
        LossTermConfig("hidden_mse"),  # uniform map: (0, 0), (1, 2), (2, 4)
        LossTermConfig("hidden_cos", layer_map=LayerMapConfig(strategy="explicit", pairs=[[1, 3]])),
        LossTermConfig("embedding_mse"),
    ]
    objective = Objective(terms, causal_lm_info(teacher.config), causal_lm_info(student_model.config))
    batch = _batch()
    s_out = student(batch["input_ids"], batch["attention_mask"], features=objective.student_request())
    with torch.no_grad():
        t_out = t(batch["input_ids"], batch["attention_mask"], features=objective.teacher_request())
    total, parts = objective(s_out, t_out, batch, 0.0)

    # independent: HF hidden states, the objective's projection weights, the formulas written out
    hs = student_model(**{k: batch[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True)
    ht = teacher(**{k: batch[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True)
    m = batch["attention_mask"].float()
    n = m.sum(-1)

    def proj(term, i, x):
        lin = objective.terms[term].projections.maps[i]
        return x @ lin.weight.T + lin.bias

    def mse(a, b):
        per = ((a - b) ** 2).sum(-1) * m
        return (per.sum(-1) / (n * b.shape[-1])).mean()

    want_mse = sum(
        mse(proj(0, i, hs.hidden_states[s]), ht.hidden_states[t_])
        for i, (s, t_) in enumerate([(0, 0), (1, 2), (2, 4)])
    )
    cos = torch.nn.functional.cosine_similarity(proj(1, 0, hs.hidden_states[1]), ht.hidden_states[3], dim=-1)
    want_cos = (((1 - cos) * m).sum(-1) / n).mean()
    want_emb = mse(proj(2, 0, hs.hidden_states[0]), ht.hidden_states[0])
    torch.testing.assert_close(parts["hidden_mse"], want_mse.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["hidden_cos"], want_cos.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["embedding_mse"], want_emb.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total, (want_mse + want_cos + want_emb), rtol=1e-5, atol=1e-6)


@pytest.fixture
def setup(tmp_path):
    tiny_llama(V, seed=3).save_pretrained(tmp_path / "teacher")
    TOK.save_pretrained(tmp_path / "teacher")
    rows = [{"text": "the cat sat on the mat"}, {"prompt": "what did the cat say", "response": "yes"}] * 3
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def cfg(tmp_path, *extra):
    return load_config(
        None,
        [
            f"teacher.path={tmp_path / 'teacher'}",
            f"data.train={tmp_path / 'train.jsonl'}",
            f"data.dev={tmp_path / 'train.jsonl'}",
            "data.max_length=16",
            "student.type=shrink",
            "student.num_layers=2",
            "student.hidden_size=16",
            "student.num_heads=2",
            "train.max_steps=3",
            "train.batch_size=2",
            "train.lr=1e-3",
            "train.precision=fp32",
            "train.progress=false",
            "lm.samples=0",
            f"output_dir={tmp_path / 'out'}",
            f"teacher.cache_dir={tmp_path / 'cache'}",
            *extra,
        ],
    )


def test_an_lm_run_trains_with_hidden_terms_and_logit_terms(setup, monkeypatch):
    from textdistill.training.distiller import Distiller

    logs: list = []
    original = Distiller.train_step
    monkeypatch.setattr(
        Distiller, "train_step", lambda self, batch: logs.append(original(self, batch)) or logs[-1]
    )
    c = cfg(setup)
    c.objective = [
        LossTermConfig("lm_kl"),
        LossTermConfig("hidden_mse", weight=0.5),
        LossTermConfig("hidden_cos"),
    ]
    result = run_training(c, quiet=True)
    assert result.details["steps"] == 3 and len(logs) == 3
    for entry in logs:
        parts = entry["loss/lm_kl"] + 0.5 * entry["loss/hidden_mse"] + entry["loss/hidden_cos"]
        assert entry["loss"] == pytest.approx(parts, rel=1e-6) and entry["loss/hidden_mse"] > 0


def test_hidden_terms_with_a_topk_store_are_refused(setup):
    c = cfg(setup, "teacher.store_topk=4")
    c.objective = [LossTermConfig("lm_kl"), LossTermConfig("hidden_mse")]
    with pytest.raises(ConfigError, match="teacher.store_topk=null"):
        run_training(c, quiet=True)
