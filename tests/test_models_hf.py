"""HFClassifier, hook-based feature capture and teacher loading."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BertForMaskedLM,
    BertModel,
    DistilBertConfig,
    RobertaConfig,
)

from conftest import tiny_bert_config
from textdistill.errors import ModelError
from textdistill.models.hf import HFClassifier
from textdistill.models.hooks import SCORE_VERIFIED_MODEL_TYPES, discover_projections
from textdistill.models.outputs import ALL_FEATURES, FeatureRequest
from textdistill.models.teacher import load_teacher, load_tokenizer, model_info, resolve_model_path

VOCAB = 60


def tiny_config(model_type: str, **extra):
    """A 2-layer, 16-wide, 2-head config of any family (DistilBERT spells the sizes differently)."""
    if model_type == "distilbert":
        return DistilBertConfig(
            vocab_size=VOCAB,
            dim=16,
            n_layers=2,
            n_heads=2,
            hidden_dim=32,
            max_position_embeddings=40,
            **extra,
        )
    if model_type == "roberta":
        return RobertaConfig(
            vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=40, pad_token_id=1, **extra,
        )  # fmt: skip
    sizes = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    return AutoConfig.for_model(
        model_type, vocab_size=VOCAB, max_position_embeddings=40, pad_token_id=1, **sizes, **extra
    )


def make_model(config, attn: str | None = None, seed: int = 0):
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation=attn)


def padded_batch(seed: int = 0):
    """Two rows of length 7; the second has 3 padding positions."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    ids[1, 4:] = 1
    return ids, mask


ALL_LAYERS = FeatureRequest(hidden_states=True, attentions={0, 1}, attention_scores={0, 1}, qkv={0, 1})


# ----------------------------------------------------------------------------------------- hooks vs HF eager
@pytest.mark.parametrize("model_type", sorted(SCORE_VERIFIED_MODEL_TYPES))
def test_hook_probabilities_equal_hf_eager_attentions(model_type):
    """Every family we claim scores for: hooks under the default attention (sdpa where the family has it) ==
    HF's own eager ``output_attentions`` in eval mode."""
    config = tiny_config(model_type)
    eager = make_model(config, "eager").eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        reference = eager(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
        default = make_model(config).eval()
        default.load_state_dict(eager.state_dict())
        out = HFClassifier(default)(ids, mask, features=FeatureRequest(attentions={0, 1}))
    for layer in (0, 1):
        torch.testing.assert_close(out.attentions[layer], reference[layer], rtol=0, atol=1e-6)


def test_scores_and_qkv_match_an_independent_computation():
    """Q/K/V recomputed from the returned hidden states and the layer weights; scores = QK^T/sqrt(d)."""
    model = make_model(tiny_bert_config(VOCAB, layers=2, hidden=16, heads=2)).eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        out = HFClassifier(model)(ids, mask, features=ALL_LAYERS)
    assert len(out.hidden_states) == 3 and out.num_heads == 2
    for layer in (0, 1):
        attn = model.bert.encoder.layer[layer].attention.self
        x = out.hidden_states[layer]  # input of layer `layer`
        q, k, v = (x @ m.weight.T + m.bias for m in (attn.query, attn.key, attn.value))
        for got, want in zip(out.qkv[layer], (q, k, v)):
            assert got.shape == (2, 7, 16)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        qh, kh = (t.view(2, 7, 2, 8).transpose(1, 2) for t in (q, k))
        scores = torch.einsum("bhid,bhjd->bhij", qh, kh) / math.sqrt(8)
        torch.testing.assert_close(out.attention_scores[layer], scores, rtol=1e-5, atol=1e-6)
        # padded keys of row 1 get exactly zero probability; each row sums to one
        assert torch.all(out.attentions[layer][1, :, :, 4:] == 0)
        torch.testing.assert_close(out.attentions[layer].sum(-1), torch.ones(2, 2, 7))


def test_scores_alone_do_not_compute_probabilities(monkeypatch):
    """A scores-only request (attention_mse) skips the per-layer softmax; asking for probs still runs it."""
    from textdistill.models import hooks

    calls = []
    real = hooks.probs_from_scores
    monkeypatch.setattr(hooks, "probs_from_scores", lambda *a: calls.append(1) or real(*a))
    model = make_model(tiny_bert_config(VOCAB, layers=2, hidden=16, heads=2)).eval()
    ids, mask = padded_batch()
    wrapped = HFClassifier(model)
    with torch.no_grad():
        only_scores = wrapped(ids, mask, features=FeatureRequest(attention_scores={0, 1}))
        assert (
            calls == [] and only_scores.attentions is None and sorted(only_scores.attention_scores) == [0, 1]
        )
        both = wrapped(ids, mask, features=FeatureRequest(attentions={1}, attention_scores={0, 1}))
    assert len(calls) == 1 and sorted(both.attentions) == [1]
    torch.testing.assert_close(both.attention_scores[0], only_scores.attention_scores[0], rtol=0, atol=0)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_train_mode_probabilities_are_pre_dropout_and_differentiable(attn):
    config = tiny_bert_config(VOCAB, layers=2, hidden=16, heads=2)
    config.attention_probs_dropout_prob = 0.5
    model = make_model(config, attn).train()
    ids, mask = padded_batch()
    out = HFClassifier(model)(ids, mask, features=FeatureRequest(hidden_states=True, attentions={1}))
    attn = model.bert.encoder.layer[1].attention.self
    x = out.hidden_states[1]
    q, k = attn.query(x), attn.key(x)
    scores = (q.view(2, 7, 2, 8).transpose(1, 2) @ k.view(2, 7, 2, 8).permute(0, 2, 3, 1)) / math.sqrt(8)
    scores = scores + (1 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    # dropout would zero entries and rescale the rest; pre-dropout rows are a plain softmax
    torch.testing.assert_close(out.attentions[1], scores.softmax(-1), rtol=1e-5, atol=1e-6)
    out.attentions[1][:, :, 0, 1].sum().backward()
    assert attn.query.weight.grad is not None and attn.query.weight.grad.abs().sum() > 0


def test_roberta_and_distilbert_qkv_shapes_and_hidden_states_only_when_requested():
    for config in (tiny_config("roberta"), tiny_config("distilbert")):
        wrapped = HFClassifier(make_model(config).eval())
        ids, mask = padded_batch()
        plain = wrapped(ids, mask, token_type_ids=torch.zeros_like(ids))
        assert plain.hidden_states is None and plain.attentions is None and plain.qkv is None
        full = wrapped(ids, mask, features=ALL_LAYERS)
        torch.testing.assert_close(full.logits, plain.logits)
        assert len(full.hidden_states) == 3
        assert [t.shape for t in full.qkv[1]] == [(2, 7, 16)] * 3
        assert full.attention_scores[0].shape == (2, 2, 7, 7)


def test_hooks_are_removed_after_forward_and_after_errors():
    model = make_model(tiny_config("distilbert")).eval()
    wrapped = HFClassifier(model)
    ids, mask = padded_batch()
    projections = discover_projections(model)
    wrapped(ids, mask, features=ALL_LAYERS)
    assert all(not m._forward_hooks for p in projections for m in (p.query, p.key, p.value))
    with pytest.raises(RuntimeError):
        wrapped(ids[:, :3], mask, features=ALL_LAYERS)  # mask/ids length mismatch fails inside HF
    assert all(not m._forward_hooks for p in projections for m in (p.query, p.key, p.value))


def test_layer_out_of_range_names_valid_layers():
    wrapped = HFClassifier(make_model(tiny_config("bert")))
    ids, mask = padded_batch()
    with pytest.raises(ModelError, match=r"layers \[2\].*0\.\.1"):
        wrapped(ids, mask, features=FeatureRequest(attention_scores={2}))


def test_relative_positions_are_refused_for_scores_but_not_for_qkv():
    config = tiny_config("bert")
    config.position_embedding_type = "relative_key"
    wrapped = HFClassifier(make_model(config))
    assert {"attentions", "attention_scores"}.isdisjoint(wrapped.info.capabilities)
    ids, mask = padded_batch()
    with pytest.raises(ModelError, match="relative_key.*relative position"):
        wrapped(ids, mask, features=FeatureRequest(attentions={0}))
    assert wrapped(ids, mask, features=FeatureRequest(qkv={0})).qkv[0][0].shape == (2, 7, 16)


def test_rotary_family_is_refused_for_scores():
    wrapped = HFClassifier(make_model(tiny_config("roformer")))
    ids, mask = padded_batch()
    with pytest.raises(ModelError, match="rotary"):
        wrapped(ids, mask, features=FeatureRequest(attention_scores={0}))


def test_unsupported_family_gets_a_clear_error_but_still_gives_logits():
    config = AutoConfig.for_model(
        "albert", vocab_size=VOCAB, embedding_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=40,
    )  # fmt: skip
    wrapped = HFClassifier(make_model(config))
    assert wrapped.info.capabilities == {"logits", "hidden_states"}
    ids, mask = padded_batch()
    assert wrapped(ids, mask).logits.shape == (2, 2)
    with pytest.raises(ModelError, match="'albert'.*1 modules for 2 layers"):
        wrapped(ids, mask, features=FeatureRequest(qkv={0}))


# ------------------------------------------------------------------------------------------ teacher loading
def test_load_teacher_is_frozen_and_matches_the_checkpoint(tiny_teacher_dir):
    teacher = load_teacher(tiny_teacher_dir)
    assert not teacher.training and not teacher.model.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert teacher.id2label == {0: "negative", 1: "positive"}
    info = teacher.info
    assert (info.kind, info.model_type, info.num_layers, info.hidden_size, info.num_heads, info.num_labels) == (
        "hf", "bert", 4, 32, 4, 2,
    )  # fmt: skip
    assert info.capabilities == ALL_FEATURES
    reference = AutoModelForSequenceClassification.from_pretrained(str(tiny_teacher_dir)).eval()
    tok = load_tokenizer(tiny_teacher_dir)
    batch = tok(["good movie", "the plot was very bad"], padding=True, return_tensors="pt")
    out = teacher(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    torch.testing.assert_close(out.logits, reference(**batch).logits)


def test_model_info_reads_only_the_config(tiny_teacher_dir, tmp_path):
    only_config = tmp_path / "cfg_only"
    only_config.mkdir()
    (only_config / "config.json").write_text((tiny_teacher_dir / "config.json").read_text())
    assert model_info(only_config) == model_info(tiny_teacher_dir)
    assert model_info(AutoConfig.from_pretrained(str(only_config)), num_labels=5).num_labels == 5


def test_missing_dir_and_missing_config_errors(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ModelError, match=r"nope.*does not exist.*textdistill finetune"):
        load_teacher(missing)
    with pytest.raises(ModelError, match="does not exist"):
        model_info(str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"empty.*no config\.json.*textdistill finetune"):
        load_teacher(str(empty))
    with pytest.raises(ModelError, match="tokenizer"):
        load_tokenizer(empty)


def test_non_classifier_checkpoint_is_refused(tmp_path, tiny_teacher_dir):
    d = tmp_path / "mlm"
    BertForMaskedLM(tiny_bert_config(VOCAB)).save_pretrained(str(d))
    with pytest.raises(ModelError, match=r"mlm.*BertForMaskedLM.*textdistill finetune"):
        load_teacher(d)
    with pytest.raises(ModelError, match="BertForMaskedLM"):
        model_info(d, require_classifier=True)
    loose = load_teacher(d, require_classifier=False)  # new head, explicitly allowed
    assert loose.info.num_labels == 2


def test_classifier_architecture_without_head_weights_is_refused(tmp_path):
    d = tmp_path / "headless"
    BertModel(tiny_bert_config(VOCAB)).save_pretrained(str(d))
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["BertForSequenceClassification"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=r"headless.*classifier.*random"):
        load_teacher(d)


def test_hub_ids_pass_through_and_bad_paths_do_not():
    assert resolve_model_path("bert-base-uncased") == "bert-base-uncased"
    assert resolve_model_path("org/some-model") == "org/some-model"
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_path("./runs/teacher-that-is-not-there")


def test_missing_dir_inside_an_existing_dir_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ModelError, match="'runs/teacher' does not exist"):
        resolve_model_path("runs/teacher", "teacher")
