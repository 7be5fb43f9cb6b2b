"""Resume of causal-LM runs: a run stopped after N steps and resumed ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from safetensors.torch import load_file

from lm_fixtures import make_lm_tokenizer, tiny_llama
from textdistill.config.loader import load_config
from textdistill.errors import ConfigError, RunDirError
from textdistill.training.distiller import Distiller
from textdistill.training.runner import run_training
from textdistill.training.signals import TrainingInterrupted

TOK = make_lm_tokenizer()
V = len(TOK)
TRAIN = [
    "the cat sat on the mat",
    "a dog ran to the park",
    "the movie was very good and fun",
    "i liked it",
    "the film was not fun",
    "what did the dog say",
    "hello world",
]
DEV = ["the dog sat on the mat", "the cat ran to the park"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm_resume")
    teacher = tiny_llama(V, seed=5)
    teacher.config.attention_dropout = 0.2  # the truncated student inherits it: training draws random numbers
    teacher.save_pretrained(tmp / "teacher")
    TOK.save_pretrained(tmp / "teacher")
    (tmp / "train.txt").write_text("\n".join(TRAIN) + "\n")
    (tmp / "dev.txt").write_text("\n".join(DEV) + "\n")
    return tmp


def cfg(tmp, out: str, *extra: str):
    return load_config(
        None,
        [
            f"teacher.path={tmp / 'teacher'}",
            f"data.train={tmp / 'train.txt'}",
            f"data.dev={tmp / 'dev.txt'}",
            "data.max_length=16",
            "student.type=truncate",
            "student.layers=[0,2]",
            "objective.0.name=lm_kl",
            "train.max_steps=8",  # 3 epochs of 3 batches (the last cut short): epoch boundaries are crossed
            "train.batch_size=3",
            "train.lr=1e-2",
            "train.warmup_steps=2",
            "train.precision=fp32",
            "train.save_every=2",
            "train.progress=false",
            f"output_dir={tmp / out}",
            f"teacher.cache_dir={tmp / 'cache'}",
            *extra,
        ],
    )


def weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


def metric_lines(run_dir) -> list[tuple[int, tuple[str, ...]]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(d["step"], tuple(sorted(d))) for d in map(json.loads, lines)]


def stop_after(monkeypatch, step: int, how: str) -> None:
    """Stop the loop after optimizer step ``step``: a SIGTERM request (graceful) or a crash."""
    original = Distiller.train_step

    def patched(self, batch):
        logs = original(self, batch)
        if self.state.step == step:
            if how == "signal":
                self.request_stop(signal.SIGTERM)
            else:
                raise RuntimeError("simulated crash")
        return logs

    monkeypatch.setattr(Distiller, "train_step", patched)


@pytest.fixture(scope="module")
def baseline(setup):
    return {
        extra: weights(run_training(cfg(setup, f"base{i}", *extra), quiet=True).run_dir)
        for i, extra in enumerate([(), ("teacher.store_topk=5",)])
    }


@pytest.mark.parametrize("extra", [(), ("teacher.store_topk=5",)], ids=["live", "store"])
@pytest.mark.parametrize(("step", "how"), [(3, "signal"), (5, "crash")])
def test_stopped_run_resumes_bit_identical(setup, baseline, monkeypatch, extra, step, how):
    out = f"stop-{how}-{step}-{len(extra)}"
    with monkeypatch.context() as m:
        stop_after(m, step, how)
        with pytest.raises(TrainingInterrupted if how == "signal" else RuntimeError):
            run_training(cfg(setup, out, *extra), quiet=True)
    run_json = json.loads((setup / out / "run.json").read_text())
    assert run_json["status"] == ("interrupted" if how == "signal" else "failed")
    assert "--resume" in run_json["resume_command"]
    resumed = run_training(cfg(setup, out, *extra), quiet=True, resume=True)
    assert resumed.details["steps"] == 8
    final = json.loads((setup / out / "run.json").read_text())
    assert final["status"] == "finished"
    assert final["resumes"][0]["from_step"] == (3 if how == "signal" else 4)  # crash: last saved step 4
    got, want = weights(setup / out), baseline[extra]
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    base_dir = setup / f"base{len(extra)}"
    assert metric_lines(setup / out) == metric_lines(base_dir)  # cut back on resume: no line written twice


def test_baseline_is_sensitive_to_the_rng(setup, baseline):
    """The check above means something: another seed (dropout, order) gives other weights."""
    other = weights(run_training(cfg(setup, "seed7", "train.seed=7"), quiet=True).run_dir)
    assert any(not torch.equal(other[k], baseline[()][k]) for k in other)


def test_resume_refuses_a_finished_run_and_a_changed_config(setup, baseline, monkeypatch):
    with pytest.raises(RunDirError, match="already finished"):
        run_training(cfg(setup, "base0"), quiet=True, resume=True)
    with monkeypatch.context() as m:
        stop_after(m, 2, "signal")
        with pytest.raises(TrainingInterrupted):
            run_training(cfg(setup, "changed"), quiet=True)
    with pytest.raises(ConfigError, match="train.lr"):
        run_training(cfg(setup, "changed", "train.lr=0.5"), quiet=True, resume=True)


def test_resume_without_a_run_starts_one(setup):
    result = run_training(cfg(setup, "fresh", "train.max_steps=2"), quiet=True, resume=True)
    assert result.details["steps"] == 2
