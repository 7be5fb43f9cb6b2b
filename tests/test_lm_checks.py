"""Causal-LM configs checked before any weights load: ``textdistill config validate`` and a run's start."""

from __future__ import annotations

import json

import pytest

from lm_fixtures import make_lm_tokenizer, tiny_gpt2, tiny_llama
from textdistill.cli import main
from textdistill.config.loader import load_config
from textdistill.errors import ConfigError
from textdistill.training.lm_runner import validate_lm_run
from textdistill.training.runner import run_training

TOK = make_lm_tokenizer()
V = len(TOK)


@pytest.fixture
def setup(tmp_path):
    teacher = tiny_llama(V, seed=1)
    teacher.save_pretrained(tmp_path / "teacher")
    TOK.save_pretrained(tmp_path / "teacher")
    (tmp_path / "train.jsonl").write_text(
        json.dumps({"text": "the cat sat on the mat"}) + "\n"
        + json.dumps({"prompt": "what did the cat say", "response": "yes"}) + "\n"
    )  # fmt: skip
    (tmp_path / "dev.txt").write_text("the dog sat on the mat\n")
    return tmp_path


def overrides(tmp, *extra: str) -> list[str]:
    return [
        f"teacher.path={tmp / 'teacher'}",
        f"data.train={tmp / 'train.jsonl'}",
        f"data.dev={tmp / 'dev.txt'}",
        "data.max_length=16",
        "student.type=truncate",
        "student.layers=[0,3]",
        f"output_dir={tmp / 'run'}",
        *extra,
    ]


def problems(tmp, *extra: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        validate_lm_run(load_config(None, overrides(tmp, *extra)))
    return err.value.problems


@pytest.fixture
def no_weights(monkeypatch):
    """Loading any causal LM's weights fails the test: the checks read configs and tokenizers only."""

    def refuse(*a, **k):
        raise AssertionError("weights were loaded during validation")

    monkeypatch.setattr("textdistill.models.causal_lm.load_causal_lm", refuse)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", refuse)


def test_a_good_config_passes_and_resolves_the_default_objective(setup, no_weights):
    cfg, config = validate_lm_run(load_config(None, overrides(setup)))
    assert config.vocab_size == V
    assert [t.name for t in cfg.objective] == ["lm_kl"]


def test_every_problem_at_once_before_weights_load(setup, no_weights):
    (setup / "long.jsonl").write_text(
        json.dumps({"prompt": " ".join(["the cat"] * 20), "response": "yes"}) + "\n"
    )
    found = problems(
        setup,
        f"data.train={setup / 'long.jsonl'}",
        f"teacher.store_topk={V + 5}",
        "objective.0.name=attention_mse",
        "train.metric=accuracy",
    )
    text = "\n".join(found)
    assert len(found) == 4, found
    assert "'attention_mse' is not a causal-LM term" in text and "lm_kl" in text
    assert f"between 1 and the teacher's vocabulary size {V}" in text
    assert "data.train: long.jsonl:1: the prompt is 41 tokens, but max_length is 16" in text
    assert "train.metric: 'accuracy' does not apply" in text


def test_student_vocabulary_size_mismatch_lists_the_cross_tokenizer_options(setup, no_weights):
    tiny_gpt2(V + 7).save_pretrained(setup / "other")
    found = problems(
        setup, "student.type=pretrained", f"student.path={setup / 'other'}", "student.layers=null"
    )
    assert len(found) == 1
    assert f"{V} tokens and the student's {V + 7}" in found[0]
    assert "sequence-level KD" in found[0] and "same tokenizer" in found[0]


def test_same_size_other_tokens_is_a_mismatch_too(setup, no_weights):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tiny_llama(V).save_pretrained(setup / "other")
    words = {f"w{i}": i for i in range(V - 1)} | {"<unk>": V - 1}
    raw = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>").save_pretrained(setup / "other")
    found = problems(
        setup, "student.type=pretrained", f"student.path={setup / 'other'}", "student.layers=null"
    )
    assert "maps tokens to other ids" in found[0] and "sequence-level KD" in found[0]


def test_an_existing_run_needs_overwrite_or_resume(setup):
    run_training(load_config(None, overrides(setup, "train.max_steps=1", "train.progress=false")), quiet=True)
    assert any("already holds a run" in p and "--resume" in p for p in problems(setup))
    validate_lm_run(load_config(None, overrides(setup, "overwrite=true")))
    with pytest.raises(Exception, match="already finished"):  # resume: the dir is fine, the run is done
        run_training(load_config(None, overrides(setup)), quiet=True, resume=True)


def test_a_missing_or_damaged_gguf_teacher_names_the_file_and_the_fix(setup, no_weights):
    found = problems(setup, f"teacher.path={setup / 'teacher' / 'absent.gguf'}")
    assert any("absent.gguf" in p and "pip install gguf" in p for p in found), found
    (setup / "teacher" / "bad.gguf").write_bytes(b"not a gguf file at all")
    found = problems(setup, f"teacher.path={setup / 'teacher' / 'bad.gguf'}")
    assert any(str(setup / "teacher" / "bad.gguf") in p and "re-download" in p for p in found), found
    found = problems(setup, f"teacher.path={setup / 'teacher' / 'bad.gguf'}", "teacher.gguf_file=other.gguf")
    assert "set only one of them" in found[0]


def test_config_validate_command(setup, capsys, no_weights):
    assert main(["config", "validate", *overrides(setup)]) == 0
    assert "valid for distill (causal_lm)" in capsys.readouterr().out
    code = main(
        [
            "config",
            "validate",
            *overrides(setup, f"teacher.store_topk={V + 1}", "objective.0.name=hidden_mse"),
        ]
    )
    err = capsys.readouterr().err
    assert code != 0
    assert "2 configuration problems" in err and "teacher.store_topk" in err and "hidden_mse" in err
    assert not (setup / "run").exists()  # nothing written
