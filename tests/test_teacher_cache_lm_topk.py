"""Teacher-logit store for causal LMs: k = V equals the live teacher; reuse, rebuild, bad k, wrong rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lm_fixtures import make_lm_tokenizer, tiny_llama
from textdistill.data.lm_data import LMCollator, LMExample, encode_lm_examples
from textdistill.errors import DataError
from textdistill.losses import LOSSES
from textdistill.models.causal_lm import HFCausalLM, causal_lm_info, truncate_causal_lm
from textdistill.training.teacher_cache import lm_topk
from textdistill.training.teacher_cache.lm_topk import LMTopKStore, StoredLMTeacher, build_lm_topk_store

TOK = make_lm_tokenizer()
V = len(TOK)
TEXTS = ["the cat sat on the mat", "a dog ran to the park", "the movie was very good", "i liked it"]
ROWS = encode_lm_examples(
    [LMExample(text=t) for t in TEXTS[:3]] + [LMExample(prompt="what did the cat say", response="yes no")],
    TOK,
    16,
)
COLLATE = LMCollator(0)
TERMS = [
    ("lm_kl", {}),
    ("lm_reverse_kl", {}),
    ("lm_jsd", {"beta": 0.5}),
    ("lm_skew_kl", {"alpha": 0.1}),
    ("lm_skew_reverse_kl", {"alpha": 0.1}),
    ("lm_tvd", {}),
]


@pytest.fixture(scope="module")
def models():
    teacher = HFCausalLM(tiny_llama(V, seed=1))
    student = HFCausalLM(truncate_causal_lm(tiny_llama(V, seed=1), [0, 3]))
    return teacher, student


def losses(teacher_out, student, batch):
    out = {}
    for name, params in TERMS:
        term = LOSSES.get(name)(params, causal_lm_info(student.config), causal_lm_info(student.config), None)
        student.zero_grad()
        s = student(batch["input_ids"], batch["attention_mask"])
        loss = term(s, teacher_out, batch)
        loss.backward()
        grad = student.model.get_input_embeddings().weight.grad.clone()
        out[name] = (loss.item(), grad)
    return out


@pytest.mark.parametrize(("batch_size", "tol"), [(4, 1e-9), (3, 2e-8)])
def test_full_k_store_equals_live_teacher_values_and_gradients(models, tmp_path, batch_size, tol):
    """k = V: the buckets are the vocabulary in another order. Built with the training batch's padding the
    values differ only by summation order (< 1e-9 on losses of ~1e-3) and gradients are identical; built
    with other padding the teacher's own logits move by float32 rounding (sdpa on other shapes)."""
    teacher, student = models
    store = build_lm_topk_store(teacher, ROWS, tmp_path / "s", V, collate=COLLATE, batch_size=batch_size)
    batch = COLLATE(ROWS)
    with torch.no_grad():
        teacher_out = teacher(batch["input_ids"], batch["attention_mask"])
    live = losses(teacher_out, student, batch)
    stored = losses(StoredLMTeacher(store)(batch), student, batch)
    for name, _ in TERMS:
        assert live[name][0] > 1e-4
        assert abs(stored[name][0] - live[name][0]) <= tol, name
        torch.testing.assert_close(stored[name][1], live[name][1], rtol=0, atol=tol)


def test_layout_is_compact_and_exact(models, tmp_path):
    teacher, _ = models
    k = 4
    store = build_lm_topk_store(teacher, ROWS, tmp_path / "s", k, collate=COLLATE, batch_size=2)
    tokens = sum(len(r["input_ids"]) for r in ROWS)
    assert store.ids.shape == (tokens, k) and store.ids.dtype == np.uint16
    assert store.logp.dtype == np.float32 and store.rest.shape == (tokens,)
    # Independent check of one position: top-k of the softmax and the rest mass 1 - sum(top-k).
    batch = COLLATE(ROWS[1:2])
    with torch.no_grad():
        p = torch.softmax(teacher(batch["input_ids"], batch["attention_mask"]).logits.double(), -1)[0, 2]
    ref = p.topk(k)
    at = int(store.offsets[1]) + 2
    assert store.ids[at].tolist() == ref.indices.tolist()
    np.testing.assert_allclose(np.exp(store.logp[at]), ref.values.numpy(), rtol=1e-5)
    assert float(np.exp(store.rest[at])) == pytest.approx(1 - ref.values.sum().item(), rel=1e-4)
    fp16 = build_lm_topk_store(teacher, ROWS, tmp_path / "h", k, collate=COLLATE, store_dtype="fp16")
    assert fp16.logp.dtype == np.float16 and fp16.nbytes() < store.nbytes()


def test_reused_when_unchanged_rebuilt_when_data_or_k_change(models, tmp_path, monkeypatch):
    teacher, _ = models
    first = build_lm_topk_store(teacher, ROWS, tmp_path / "s", 3, collate=COLLATE)

    def no_pass(*args, **kwargs):
        raise AssertionError("the teacher ran although the store matched")

    with monkeypatch.context() as m:
        m.setattr(lm_topk, "_teacher_pass", no_pass)
        assert (
            build_lm_topk_store(teacher, ROWS, tmp_path / "s", 3, collate=COLLATE).fingerprint
            == first.fingerprint
        )
    other = build_lm_topk_store(teacher, ROWS[:2], tmp_path / "s", 3, collate=COLLATE)
    assert other.fingerprint != first.fingerprint and len(other.lengths) == 2
    assert build_lm_topk_store(teacher, ROWS[:2], tmp_path / "s", 5, collate=COLLATE).k == 5


def test_bad_k_wrong_rows_and_missing_ids(models, tmp_path):
    teacher, _ = models
    with pytest.raises(DataError, match=rf"k=.* between 1 and the teacher's vocabulary size {V}"):
        build_lm_topk_store(teacher, ROWS, tmp_path / "s", V + 1, collate=COLLATE)
    with pytest.raises(DataError, match="between 1 and"):
        build_lm_topk_store(teacher, ROWS, tmp_path / "s", 0, collate=COLLATE)
    assert not (tmp_path / "s").exists()
    store = build_lm_topk_store(teacher, ROWS, tmp_path / "s", 3, collate=COLLATE)
    batch = COLLATE(ROWS[:2])
    batch["input_ids"][1, 1] = 5
    with pytest.raises(DataError, match="rebuild it"):
        StoredLMTeacher(store)(batch)
    batch = COLLATE(ROWS[:2])
    del batch["example_id"]
    with pytest.raises(DataError, match="example_id"):
        StoredLMTeacher(store)(batch)
    with pytest.raises(DataError, match="not a finished"):
        LMTopKStore(tmp_path / "nothing")
