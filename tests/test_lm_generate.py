"""Sequence-level KD: generate-responses (greedy / sampled, resumable, atomic, fingerprinted) and the
``mode: generate`` pipeline stage whose responses the next stage trains on."""

from __future__ import annotations

import json

import pytest
import torch

from lm_fixtures import make_lm_tokenizer, tiny_llama
from textdistill.cli import main
from textdistill.config.lm import LMConfig
from textdistill.errors import ConfigError, DataError
from textdistill.training import lm_generate
from textdistill.training.lm_generate import generate_responses

TOK = make_lm_tokenizer()
V = len(TOK)
PROMPTS = ["what did the cat say", "is the film good", "the dog", "hello", "the movie was"]


@pytest.fixture
def setup(tmp_path):
    tiny_llama(V, seed=3).save_pretrained(tmp_path / "teacher")
    TOK.save_pretrained(tmp_path / "teacher")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return tmp_path


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_greedy_responses_equal_an_independent_argmax_loop_and_a_finished_file_is_reused(setup, monkeypatch):
    out = setup / "resp.jsonl"
    assert main(["generate-responses", "--teacher", str(setup / "teacher"), "--prompts", str(setup / "prompts.txt"),
                 "-o", str(out), "--max-new-tokens", "4", "--batch-size", "2"]) == 0  # fmt: skip
    got = lines(out)
    teacher = tiny_llama(V, seed=3)
    for prompt, row in zip(PROMPTS, got, strict=True):
        seq = TOK(prompt)["input_ids"]
        n = len(seq)
        with torch.no_grad():
            while len(seq) < n + 4:
                seq.append(int(teacher(torch.tensor([seq])).logits[0, -1].argmax()))
                if seq[-1] == TOK.eos_token_id:
                    break
        assert row == {"prompt": prompt, "response": TOK.decode(seq[n:], skip_special_tokens=True)}
    assert not (setup / "resp.jsonl.partial").exists()
    monkeypatch.setattr("textdistill.models.causal_lm.load_causal_lm", lambda *a, **k: 1 / 0)
    again = generate_responses(setup / "teacher", setup / "prompts.txt", out, lm=LMConfig(max_new_tokens=4,
                               temperature=0.0), batch_size=3)  # fmt: skip
    assert again.reused and again.n == 5  # batch size is not part of the fingerprint


def test_an_interrupted_sampled_run_resumes_and_ends_with_the_uninterrupted_file(setup, monkeypatch):
    lm = LMConfig(max_new_tokens=5, temperature=1.0, top_p=0.9)
    ref = generate_responses(
        setup / "teacher", setup / "prompts.txt", setup / "ref.jsonl", lm=lm, batch_size=2
    )
    assert ref.resumed_from == 0 and not ref.reused
    from textdistill.models import lm_sampling

    original = lm_sampling.generate
    calls = {"n": 0}

    def crash_on_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(lm_sampling, "generate", crash_on_second_batch)
    out = setup / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_responses(setup / "teacher", setup / "prompts.txt", out, lm=lm, batch_size=2)
    assert not out.exists() and len(lines(setup / "out.jsonl.partial")) == 2
    with (setup / "out.jsonl.partial").open("a") as f:
        f.write('{"prompt": "half a li')  # a crash in the middle of a write
    monkeypatch.setattr(lm_sampling, "generate", original)
    resumed = generate_responses(setup / "teacher", setup / "prompts.txt", out, lm=lm, batch_size=2)
    assert resumed.resumed_from == 2 and resumed.fingerprint == ref.fingerprint
    assert out.read_text() == (setup / "ref.jsonl").read_text()
    other_seed = generate_responses(
        setup / "teacher", setup / "prompts.txt", out, lm=lm, batch_size=2, seed=1
    )
    assert not other_seed.reused and other_seed.fingerprint != ref.fingerprint


def test_bad_input_is_refused_and_nothing_is_written(setup):
    (setup / "long.txt").write_text("the cat\n" + " ".join(["the"] * 40) + "\n")
    with pytest.raises(DataError, match="long.txt:2"):
        generate_responses(setup / "teacher", setup / "long.txt", setup / "x.jsonl", max_length=16)
    assert not list(setup.glob("x.jsonl*"))
    (setup / "mine.jsonl").write_text("precious\n")
    with pytest.raises(ConfigError, match="not written by generate-responses"):
        generate_responses(setup / "teacher", setup / "prompts.txt", setup / "mine.jsonl")
    assert (setup / "mine.jsonl").read_text() == "precious\n"
    with pytest.raises(ConfigError, match="lm.top_p"):
        generate_responses(setup / "teacher", setup / "prompts.txt", setup / "y.jsonl", lm=LMConfig(top_p=2))
    (setup / "bad.jsonl").write_text('{"question": "x"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        generate_responses(setup / "teacher", setup / "bad.jsonl", setup / "y.jsonl")


def test_a_generate_stage_feeds_the_next_stage_which_trains_on_the_responses(setup, monkeypatch):
    from textdistill.pipeline.recipe_format import recipe_from_dict
    from textdistill.pipeline.runner import run_pipeline

    (setup / "dev.txt").write_text("the cat sat on the mat\nthe dog ran to the park\n")
    recipe = recipe_from_dict(
        {
            "params": {"teacher": {"help": "teacher"}, "prompts": {"help": "prompts"}, "dev": {"help": "dev"}},
            "defaults": {"teacher": {"path": "${params.teacher}"}, "data": {"max_length": 16},
                         "train": {"seed": 3, "progress": False}, "lm": {"max_new_tokens": 4, "samples": 1}},
            "stages": [
                {"name": "gen", "mode": "generate", "data": {"train": "${params.prompts}"},
                 "lm": {"temperature": 0.0}},
                {"name": "student", "mode": "distill",
                 "data": {"task": "causal_lm", "train": "${stages.gen.output}", "dev": "${params.dev}"},
                 "student": {"type": "truncate", "layers": [0, 3]},
                 "objective": [{"name": "lm_ce"}],
                 "train": {"max_steps": 2, "batch_size": 2, "lr": 1e-3, "warmup_ratio": 0}},
            ],
        },
        name="seqkd",
    )  # fmt: skip
    params = {
        "teacher": str(setup / "teacher"),
        "prompts": str(setup / "prompts.txt"),
        "dev": str(setup / "dev.txt"),
    }
    seen: list = []
    original = lm_generate.generate_responses

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(lm_generate, "generate_responses", spy)
    first = run_pipeline(recipe, params, output_dir=setup / "pipe", quiet=True)
    responses = setup / "pipe" / "gen" / "responses.jsonl"
    assert first["gen"].status == "ran" and first["gen"].model_dir == responses
    assert [r["prompt"] for r in lines(responses)] == PROMPTS
    assert seen[0]["lm"].temperature == 0.0 and seen[0]["max_length"] == 16
    assert first["student"].status == "ran"
    results = json.loads((setup / "pipe" / "student" / "results.json").read_text())
    assert results["config"]["data"]["train"] == str(responses)
    assert results["steps"] == 2
    # the student's rows: loss on the response tokens only
    from textdistill.data.lm_data import encode_lm_examples, read_lm_examples

    rows = encode_lm_examples(read_lm_examples(responses), TOK, 16)
    for row, prompt in zip(rows, PROMPTS, strict=True):
        n_prompt = len(TOK(prompt)["input_ids"])
        assert row["labels"][:n_prompt] == [-100] * n_prompt and -100 not in row["labels"][n_prompt:]
    second = run_pipeline(recipe, params, output_dir=setup / "pipe", quiet=True)
    assert [s.status for s in second.stages] == ["skipped", "skipped"]
    with pytest.raises(ConfigError, match="stages.gen"):
        run_pipeline(
            recipe, {**params, "prompts": str(setup / "none.txt")}, output_dir=setup / "p2", quiet=True
        )


def test_prompts_are_rendered_with_the_chat_template_when_the_tokenizer_has_one(tmp_path):
    chat = make_lm_tokenizer(chat=True)
    tiny_llama(len(chat), seed=4).save_pretrained(tmp_path / "t")
    chat.save_pretrained(tmp_path / "t")
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "is the film good"}) + "\n")
    result = generate_responses(tmp_path / "t", tmp_path / "p.jsonl", tmp_path / "o.jsonl",
                                lm=LMConfig(max_new_tokens=3, temperature=0.0))  # fmt: skip
    seq = chat.apply_chat_template([{"role": "user", "content": "is the film good"}], add_generation_prompt=True,
                                   tokenize=True, return_dict=False)  # fmt: skip
    assert chat.convert_ids_to_tokens(seq)[-1] == "<|assistant|>"
    teacher, n = tiny_llama(len(chat), seed=4), len(seq)
    with torch.no_grad():
        while len(seq) < n + 3:
            seq.append(int(teacher(torch.tensor([seq])).logits[0, -1].argmax()))
            if seq[-1] == chat.eos_token_id:
                break
    assert lines(result.path) == [
        {"prompt": "is the film good", "response": chat.decode(seq[n:], skip_special_tokens=True)}
    ]


def test_an_interrupted_generate_stage_resumes_its_partial_file(setup, monkeypatch):
    from textdistill.models import lm_sampling
    from textdistill.pipeline.recipe_format import recipe_from_dict
    from textdistill.pipeline.runner import read_state, run_pipeline

    recipe = recipe_from_dict(
        {"params": {"teacher": {"help": "t"}, "prompts": {"help": "p"}},
         "stages": [{"name": "gen", "mode": "generate", "teacher": {"path": "${params.teacher}"},
                     "data": {"train": "${params.prompts}", "max_length": 16},
                     "train": {"eval_batch_size": 2, "seed": 5}, "lm": {"max_new_tokens": 4}}]},
        name="gen-only",
    )  # fmt: skip
    params = {"teacher": str(setup / "teacher"), "prompts": str(setup / "prompts.txt")}
    original, calls = lm_sampling.generate, {"n": 0}

    def crash_on_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(lm_sampling, "generate", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(recipe, params, output_dir=setup / "pipe", quiet=True)
    assert read_state(setup / "pipe")["stages"]["gen"]["status"] == "interrupted"
    assert len(lines(setup / "pipe" / "gen" / "responses.jsonl.partial")) == 2
    monkeypatch.setattr(lm_sampling, "generate", original)
    seen: list = []
    spy_original = lm_generate.generate_responses
    monkeypatch.setattr(
        lm_generate, "generate_responses", lambda *a, **k: seen.append(spy_original(*a, **k)) or seen[-1]
    )
    run_pipeline(recipe, params, output_dir=setup / "pipe", quiet=True)
    assert seen[0].resumed_from == 2  # the two finished responses were kept
    whole = generate_responses(setup / "teacher", setup / "prompts.txt", setup / "whole.jsonl", seed=5,
                               lm=LMConfig(max_new_tokens=4), max_length=16)  # fmt: skip
    assert (setup / "pipe" / "gen" / "responses.jsonl").read_text() == whole.path.read_text()
