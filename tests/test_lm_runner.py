"""Causal-LM distillation end to end: config -> store or live teacher -> Distiller -> saved HF model."""

from __future__ import annotations

import json

import pytest
import torch

from lm_fixtures import make_lm_tokenizer, tiny_llama
from textdistill.config.loader import load_config
from textdistill.config.schema import LossTermConfig
from textdistill.errors import ConfigError
from textdistill.training import lm_runner
from textdistill.training.runner import run_training

TOK = make_lm_tokenizer()
V = len(TOK)
TRAIN = [
    {"text": "the cat sat on the mat"},
    {"text": "a dog ran to the park"},
    {"prompt": "what did the cat say", "response": "yes"},
    {"text": "the movie was very good and fun"},
    {"prompt": "is the film good", "response": "no it was bad"},
    {"text": "i liked it"},
]
DEV = [{"text": "the dog sat on the mat"}, {"prompt": "what did the dog say", "response": "hello world"}]


@pytest.fixture
def setup(tmp_path):
    teacher = tiny_llama(V, seed=3)
    teacher.save_pretrained(tmp_path / "teacher")
    TOK.save_pretrained(tmp_path / "teacher")
    for name, rows in (("train", TRAIN), ("dev", DEV)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def cfg(tmp_path, out: str, *extra: str):
    return load_config(
        None,
        [
            f"teacher.path={tmp_path / 'teacher'}",
            f"data.train={tmp_path / 'train.jsonl'}",
            f"data.dev={tmp_path / 'dev.jsonl'}",
            "data.max_length=16",
            "student.type=truncate",
            "student.layers=[0,3]",
            "objective.0.name=lm_kl",
            "train.max_steps=3",
            "train.batch_size=3",
            "train.lr=1e-3",
            "train.warmup_ratio=0",
            "train.progress=false",
            f"output_dir={tmp_path / out}",
            f"teacher.cache_dir={tmp_path / 'cache'}",
            *extra,
        ],
    )


def test_detected_from_the_teacher_and_full_store_equals_live(setup):
    live = run_training(cfg(setup, "live"), quiet=True)
    stored = run_training(cfg(setup, "stored", f"teacher.store_topk={V}"), quiet=True)
    assert live.details["teacher_in_memory_during_training"] is True
    assert stored.details["teacher_in_memory_during_training"] is False
    assert stored.details["steps"] == 3
    from transformers import AutoModelForCausalLM

    m_live = AutoModelForCausalLM.from_pretrained(live.model_dir)
    m_store = AutoModelForCausalLM.from_pretrained(stored.model_dir)
    for (name, p), q in zip(m_live.state_dict().items(), m_store.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    for key in ("student_ppl", "teacher_ppl", "token_kl", "top1_agreement"):
        assert stored.dev_metrics[key] == pytest.approx(live.dev_metrics[key], rel=1e-4), key
    # distillation moved the student towards the teacher
    assert live.dev_metrics["token_kl"] < live.details["dev_before"]["token_kl"]


def test_warm_store_trains_a_pretrained_student_without_loading_the_teacher(setup, monkeypatch):
    first = run_training(cfg(setup, "first", "teacher.store_topk=4"), quiet=True)
    assert first.details["teacher_store_warm"] is False

    from textdistill.models import causal_lm

    original = causal_lm.load_causal_lm

    def refuse(path, **kwargs):
        if str(path) == str(setup / "teacher"):
            raise AssertionError("the teacher was loaded although the store covers the data")
        return original(path, **kwargs)  # the pretrained student

    monkeypatch.setattr("textdistill.models.causal_lm.load_causal_lm", refuse)
    second = run_training(
        cfg(setup, "second", "teacher.store_topk=4", "student.type=pretrained", f"student.path={first.model_dir}",
            "student.layers=null", "lm.samples=0"),
        quiet=True,
    )  # fmt: skip
    assert second.details["teacher_store_warm"] is True
    assert second.details["teacher_in_memory_during_training"] is False
    assert second.dev_metrics["teacher_ppl"] == pytest.approx(first.dev_metrics["teacher_ppl"], rel=1e-6)


def test_config_errors_before_any_weights_load(setup, monkeypatch):
    monkeypatch.setattr("textdistill.models.causal_lm.load_causal_lm", lambda *a, **k: 1 / 0)
    with pytest.raises(ConfigError) as err:
        run_training(cfg(setup, "x", f"teacher.store_topk={V + 1}"), quiet=True)
    assert f"vocabulary size {V}" in str(err.value)
    bad = cfg(setup, "x", "teacher.store_topk=3")
    bad.objective = [LossTermConfig("lm_kl", params={"temperature": 2.0}), LossTermConfig("kd_kl")]
    with pytest.raises(ConfigError) as err:
        run_training(bad, quiet=True)
    text = str(err.value)
    assert "cannot be re-tempered" in text and "'kd_kl' is not a causal-LM term" in text
    assert lm_runner.is_causal_lm_run(cfg(setup, "x", "data.task=causal_lm"))


def test_the_default_objective_becomes_forward_kl_and_a_run_needs_no_objective_setting(setup):
    from textdistill.config.schema import Config

    default = Config()
    assert [t.name for t in lm_runner.with_lm_objective(default).objective] == ["lm_kl"]
    explicit = cfg(setup, "x", "objective.0.name=lm_tvd")
    assert lm_runner.with_lm_objective(explicit) is explicit  # a chosen objective is kept
    plain = cfg(setup, "plain")
    plain.objective = Config().objective  # as if the user set no objective (schema default kd_kl)
    run_training(plain, quiet=True)
    written = json.loads((setup / "plain" / "results.json").read_text())
    assert written["dev"]["token_kl"] >= 0
