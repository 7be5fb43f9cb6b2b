"""On-policy (GKD) distillation of causal LMs: sampling, batch replacement, live teacher, determinism."""

from __future__ import annotations

import json

import pytest
import torch

from lm_fixtures import make_lm_tokenizer, tiny_gpt2, tiny_llama
from textdistill.config.loader import load_config
from textdistill.errors import ConfigError
from textdistill.models.lm_sampling import generate, next_token_distribution
from textdistill.training.distiller import Distiller
from textdistill.training.lm_on_policy import OnPolicyBatches, is_on_policy_batch, prompt_length
from textdistill.training.runner import run_training

TOK = make_lm_tokenizer()
V = len(TOK)
TRAIN = [
    {"text": "the cat sat on the mat"},
    {"prompt": "what did the cat say", "response": "yes"},
    {"text": "a dog ran to the park"},
    {"prompt": "is the film good", "response": "no it was bad"},
]
DEV = [{"text": "the dog sat on the mat"}, {"prompt": "what did the dog say", "response": "hello world"}]


@pytest.fixture
def setup(tmp_path):
    for name, factory in (("teacher", tiny_llama), ("gpt2", tiny_gpt2)):
        factory(V, seed=3).save_pretrained(tmp_path / name)
        TOK.save_pretrained(tmp_path / name)
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
            "train.max_steps=4",
            "train.batch_size=2",
            "train.lr=1e-3",
            "train.warmup_ratio=0",
            "train.precision=fp32",
            "train.progress=false",
            "lm.max_new_tokens=5",
            "lm.samples=0",
            f"output_dir={tmp_path / out}",
            f"teacher.cache_dir={tmp_path / 'cache'}",
            *extra,
        ],
    )


def weights(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).state_dict()


@pytest.fixture
def recorded(monkeypatch):
    """Every (batch, logs) the Distiller trains on."""
    seen: list = []
    original = Distiller.train_step

    def spy(self, batch):
        logs = original(self, batch)
        seen.append(({k: v.clone() for k, v in batch.items()}, logs))
        return logs

    monkeypatch.setattr(Distiller, "train_step", spy)
    return seen


# ------------------------------------------------------------------------------------------ sampling
def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    logits = torch.log(torch.tensor([0.05, 0.5, 0.3, 0.15]))
    p = next_token_distribution(logits, 1.0, 0.7)  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7: keep {1, 2}
    torch.testing.assert_close(p, torch.tensor([0.0, 0.5 / 0.8, 0.3 / 0.8, 0.0]))
    t = next_token_distribution(logits, 2.0, 1.0)
    torch.testing.assert_close(t, torch.softmax(logits / 2, -1))


def test_greedy_generation_equals_an_argmax_loop_and_rows_do_not_depend_on_their_batch():
    model = tiny_llama(V, seed=5)
    prompts = [[1, 8, 9], [1, 10, 11, 12, 13], [1]]
    out = generate(
        model, prompts, max_new_tokens=4, max_length=16, eos_token_id=2, pad_token_id=0, temperature=0
    )
    for prompt, cont in zip(prompts, out, strict=True):
        seq = list(prompt)
        for _ in range(4):  # independent: one row at a time, no padding, full forward
            nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            seq.append(nxt)
            if nxt == 2:
                break
        assert cont == seq[len(prompt) :]
    sampled = generate(model, prompts, max_new_tokens=6, max_length=16, eos_token_id=None, pad_token_id=0,
                       seed=7, keys=["a", "b", "c"])  # fmt: skip
    alone = generate(model, prompts[1:2], max_new_tokens=6, max_length=16, eos_token_id=None, pad_token_id=0,
                     seed=7, keys=["b"])  # fmt: skip
    assert sampled[1] == alone[0]  # same seed and key: same tokens, whatever shares the batch
    assert all(len(s) == 6 for s in sampled)
    capped = generate(model, [[1] * 14], max_new_tokens=6, max_length=16, eos_token_id=None, pad_token_id=0)
    assert len(capped[0]) == 2  # never beyond max_length


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2])
def test_the_kv_cache_loop_equals_the_recomputing_loop(factory):
    model = factory(V, seed=2)
    prompts = [[1, 8, 9], [1, 10, 11, 12, 13, 14, 15], [1, 7]]
    kwargs = {"max_new_tokens": 8, "max_length": 16, "eos_token_id": None, "pad_token_id": 0}
    cached = generate(model, prompts, temperature=0, **kwargs)
    assert cached == generate(model, prompts, temperature=0, use_cache=False, **kwargs)
    sampled = generate(model, prompts, seed=3, top_p=0.9, **kwargs)
    assert sampled == generate(model, prompts, seed=3, top_p=0.9, use_cache=False, **kwargs)
    assert [len(c) for c in cached] == [8, 8, 8]


def test_prompt_length_of_prompt_response_and_text_rows():
    assert prompt_length([-100, -100, -100, 7, 2], 5, 0.5) == 3
    assert prompt_length([1, 5, 6, 7, 2], 5, 0.5) == 2  # round(2.5) = 2
    assert prompt_length([1, 5], 2, 0.9) == 1  # at least one target token left
    assert prompt_length([1], 1, 0.5) == 1


def test_fraction_zero_draws_nothing_and_yields_the_base_batches():
    base_batches = [{"input_ids": torch.tensor([[1, 2]]), "n": i} for i in range(5)]
    wrapper = OnPolicyBatches(lambda e, s: iter(base_batches[s:]), None, None,
                              load_config(None, ["lm.on_policy_fraction=0"]).lm,
                              seed=1, max_length=8, eos_token_id=2, pad_token_id=0)  # fmt: skip
    assert list(wrapper(0, 1)) == base_batches[1:]
    picks = [is_on_policy_batch(42, 0, b, 0.5) for b in range(200)]
    assert 60 < sum(picks) < 140 and picks == [is_on_policy_batch(42, 0, b, 0.5) for b in range(200)]


# --------------------------------------------------------------------------------------------- runs
def test_lambda_zero_equals_the_off_policy_run_exactly(setup):
    off = run_training(cfg(setup, "off"), quiet=True)
    zero = run_training(cfg(setup, "zero", "lm.on_policy_fraction=0", "lm.temperature=0.7", "lm.top_p=0.9"),
                        quiet=True)  # fmt: skip
    assert zero.details["on_policy_batches"] == 0
    for (name, p), q in zip(weights(off.model_dir).items(), weights(zero.model_dir).values(), strict=True):
        assert torch.equal(p, q), name
    assert zero.dev_metrics == off.dev_metrics


def _prompt_of(example: dict) -> list[int]:
    """The prompt the spec gives (independent of the code under test): a prompt's tokens, or the first
    round(0.5 n) of a text's n tokens (BOS and EOS included)."""
    if "text" in example:
        full = TOK(example["text"])["input_ids"] + [2]
        return full[: max(1, min(len(full) - 1, round(0.5 * len(full))))]
    return TOK(example["prompt"])["input_ids"]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_lambda_one_trains_on_the_students_continuations_with_the_loss_on_them_only(
    setup, recorded, temperature
):
    # lr 0: the student never changes, so its continuations can be checked against it afterwards
    result = run_training(
        cfg(setup, "on", "lm.on_policy_fraction=1", f"lm.temperature={temperature}", "train.lr=0",
            "train.max_steps=2"),
        quiet=True,
    )  # fmt: skip
    assert result.details["on_policy_batches"] == 2 and len(recorded) == 2
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(result.model_dir).eval()
    teacher = AutoModelForCausalLM.from_pretrained(setup / "teacher").eval()
    for batch, logs in recorded:
        assert bool(batch["on_policy"].all())
        per_row = []
        for ids, mask, labels, eid in zip(batch["input_ids"], batch["attention_mask"], batch["labels"],
                                          batch["example_id"], strict=True):  # fmt: skip
            prompt, n = _prompt_of(TRAIN[int(eid)]), int(mask.sum())
            seq = ids[:n].tolist()
            assert seq[: len(prompt)] == prompt and 1 <= n - len(prompt) <= 5 and n <= 16
            assert 2 not in seq[len(prompt) : -1]  # generation stops at EOS
            if temperature == 0:  # independent greedy loop: one row, full forward per token
                greedy = list(prompt)
                with torch.no_grad():
                    while len(greedy) < len(prompt) + 5:
                        greedy.append(int(student(torch.tensor([greedy])).logits[0, -1].argmax()))
                        if greedy[-1] == 2:
                            break
                assert seq == greedy
            want = [-100] * len(prompt) + seq[len(prompt) :] + [-100] * (len(ids) - n)
            assert labels.tolist() == want
            with torch.no_grad():  # KL(teacher || student) over the generated tokens only
                x = torch.tensor([seq])
                lp = torch.log_softmax(teacher(x).logits[0, :-1], -1)
                lq = torch.log_softmax(student(x).logits[0, :-1], -1)
            kl = (lp.exp() * (lp - lq)).sum(-1)[len(prompt) - 1 :]
            per_row.append(float(kl.mean()))
        assert logs["loss"] == pytest.approx(sum(per_row) / len(per_row), rel=1e-5)


def test_sampled_on_policy_runs_are_deterministic_under_the_seed_and_use_the_store_off_policy(
    setup, monkeypatch
):
    from textdistill.training.teacher_cache import lm_topk

    calls = {"store": 0}
    original = lm_topk.StoredLMTeacher.__call__

    def counting(self, batch):
        calls["store"] += 1
        return original(self, batch)

    monkeypatch.setattr(lm_topk.StoredLMTeacher, "__call__", counting)
    args = ("lm.on_policy_fraction=0.5", "train.max_steps=6", "lm.top_p=0.9", "teacher.store_topk=8")
    a = run_training(cfg(setup, "a", *args), quiet=True)
    b = run_training(cfg(setup, "b", *args), quiet=True)
    assert 0 < a.details["on_policy_batches"] < 6
    assert calls["store"] >= 2 * (6 - a.details["on_policy_batches"])  # off-policy batches read the store
    for (name, p), q in zip(weights(a.model_dir).items(), weights(b.model_dir).values(), strict=True):
        assert torch.equal(p, q), name
    c = run_training(cfg(setup, "c", *args, "train.seed=7"), quiet=True)
    assert any(
        not torch.equal(p, q) for p, q in zip(weights(a.model_dir).values(), weights(c.model_dir).values())
    )


def test_the_teacher_is_loaded_only_for_on_policy_batches_with_a_warm_store(setup, monkeypatch):
    first = run_training(cfg(setup, "first", "teacher.store_topk=4"), quiet=True)
    from textdistill.models import causal_lm
    from textdistill.training import lm_on_policy

    original = causal_lm.load_causal_lm
    loads: list[str] = []

    def counting(path, **kwargs):
        if str(path) == str(setup / "teacher"):
            loads.append("sampled" if sampled["n"] else "before")
        return original(path, **kwargs)

    sampled = {"n": 0}
    original_sample = lm_on_policy.OnPolicyBatches.sample

    def sample(self, batch, key):
        sampled["n"] += 1
        return original_sample(self, batch, key)

    monkeypatch.setattr("textdistill.models.causal_lm.load_causal_lm", counting)
    monkeypatch.setattr(lm_on_policy.OnPolicyBatches, "sample", sample)
    pretrained = ("student.type=pretrained", f"student.path={first.model_dir}", "student.layers=null",
                  "teacher.store_topk=4")  # fmt: skip
    off = run_training(cfg(setup, "off", *pretrained), quiet=True)
    assert loads == [] and off.details["teacher_in_memory_during_training"] is False
    on = run_training(
        cfg(setup, "on", *pretrained, "lm.on_policy_fraction=1", "train.max_steps=2"), quiet=True
    )
    assert loads == ["sampled"]  # once, when the first on-policy batch needed it
    assert on.details["teacher_in_memory_during_training"] is True


def test_gpt2_on_policy_run(setup):
    result = run_training(
        cfg(setup, "gpt2-run", f"teacher.path={setup / 'gpt2'}", "student.layers=[0,2]", "lm.on_policy_fraction=1",
            "train.max_steps=2", "lm.samples=2"),
        quiet=True,
    )  # fmt: skip
    assert result.details["on_policy_batches"] == 2
    assert len(result.details["samples"]) == 2
    assert "## Samples" in (result.run_dir / "report.md").read_text()


def test_bad_settings_and_packing_are_refused_before_loading(setup, monkeypatch):
    monkeypatch.setattr("textdistill.models.causal_lm.load_causal_lm", lambda *a, **k: 1 / 0)
    with pytest.raises(ConfigError) as err:
        run_training(
            cfg(
                setup,
                "x",
                "lm.on_policy_fraction=1.5",
                "lm.top_p=0",
                "lm.temperature=-1",
                "lm.max_new_tokens=0",
            ),
            quiet=True,
        )
    text = str(err.value)
    for key in ("on_policy_fraction", "top_p", "temperature", "max_new_tokens"):
        assert f"lm.{key}" in text
    with pytest.raises(ConfigError, match="data.packing=false"):
        run_training(cfg(setup, "x", "lm.on_policy_fraction=0.5", "data.packing=true"), quiet=True)


def test_a_stopped_on_policy_run_resumes_bit_identical(setup, monkeypatch):
    import signal

    from textdistill.training.signals import TrainingInterrupted

    args = ("lm.on_policy_fraction=0.5", "train.max_steps=6", "train.save_every=2", "lm.top_p=0.9")
    whole = run_training(cfg(setup, "whole", *args), quiet=True)
    original = Distiller.train_step

    def stop_after_4(self, batch):  # on-policy batches: steps 4, 5 and 6 (seed 42): before and after
        logs = original(self, batch)
        if self.state.step == 4:
            self.request_stop(signal.SIGTERM)
        return logs

    with monkeypatch.context() as m:
        m.setattr(Distiller, "train_step", stop_after_4)
        with pytest.raises(TrainingInterrupted):
            run_training(cfg(setup, "stopped", *args), quiet=True)
    resumed = run_training(cfg(setup, "stopped", *args), quiet=True, resume=True)
    assert resumed.details["steps"] == 6 and 0 < whole.details["on_policy_batches"] < 6
    for (name, p), q in zip(
        weights(whole.model_dir).items(), weights(resumed.model_dir).values(), strict=True
    ):
        assert torch.equal(p, q), name
