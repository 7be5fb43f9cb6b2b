"""Causal-LM students: truncate / shrink / pretrained, saved as plain HF models, and loading errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lm_fixtures import make_lm_tokenizer, tiny_gpt2, tiny_llama
from textdistill.errors import ModelError
from textdistill.models.causal_lm import (
    HFCausalLM,
    causal_lm_info,
    layer_list,
    load_causal_lm,
    load_pretrained_student,
    save_causal_lm,
    shrink_causal_lm,
    truncate_causal_lm,
)
from textdistill.models.outputs import FeatureRequest
from textdistill.models.students import project_embeddings

TOK = make_lm_tokenizer()
V = len(TOK)
IDS = torch.tensor([[1, 7, 8, 9, 10, 11], [1, 12, 13, 14, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK, use_cache=False).logits


def hand_truncated(teacher: nn.Module, keep: list[int]) -> nn.Module:
    """The teacher itself with its layer list replaced by the kept layers (an independent construction)."""
    model = copy.deepcopy(teacher)
    prefix, layers = layer_list(model)
    parent_name, _, attr = prefix.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.ModuleList(layers[i] for i in keep))
    model.config.num_hidden_layers = len(keep)
    return model


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_truncate_copies_the_chosen_layers(make):
    teacher = make(V)
    student = truncate_causal_lm(teacher, [0, 3]).eval()
    assert student.config.num_hidden_layers == 2
    assert type(student) is type(teacher)
    torch.testing.assert_close(logits(student), logits(hand_truncated(teacher, [0, 3])), rtol=0, atol=0)
    full = truncate_causal_lm(teacher, [0, 1, 2, 3]).eval()
    torch.testing.assert_close(logits(full), logits(teacher), rtol=0, atol=0)
    with pytest.raises(ModelError, match=r"distinct teacher layers in 0..3"):
        truncate_causal_lm(teacher, [0, 4])


def test_shrink_llama_fewer_layers_narrower_fewer_kv_heads():
    teacher = tiny_llama(V)
    student = shrink_causal_lm(teacher, num_layers=2, hidden_size=16, num_heads=2, num_kv_heads=1)
    c = student.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (2, 16, 2, 1)
    assert c.head_dim == 8 and c.intermediate_size == 64
    expected = project_embeddings(teacher.get_input_embeddings().weight.detach(), 16)
    torch.testing.assert_close(student.get_input_embeddings().weight.detach(), expected)
    assert logits(student.eval()).shape == (2, 6, V)
    n_student = sum(p.numel() for p in student.parameters())
    assert n_student < sum(p.numel() for p in teacher.parameters()) / 3
    with pytest.raises(ModelError, match="num_kv_heads=3 must divide student.num_heads=4"):
        shrink_causal_lm(teacher, num_layers=2, num_kv_heads=3)
    with pytest.raises(ModelError, match="not divisible"):
        shrink_causal_lm(teacher, num_layers=2, hidden_size=18, num_heads=4)


def test_shrink_gpt2_and_kv_heads_refused_there():
    teacher = tiny_gpt2(V)
    student = shrink_causal_lm(teacher, num_layers=1, hidden_size=16, num_heads=2)
    assert (student.config.n_layer, student.config.n_embd, student.config.n_head) == (1, 16, 2)
    assert logits(student.eval()).shape == (2, 6, V)
    with pytest.raises(ModelError, match="num_kv_heads is not supported for model_type 'gpt2'"):
        shrink_causal_lm(teacher, num_layers=1, num_kv_heads=1)


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_saved_student_is_a_plain_hf_model_for_text_generation(tmp_path, make):
    from transformers import pipeline

    student = truncate_causal_lm(make(V), [1, 3]).eval()
    out = save_causal_lm(HFCausalLM(student), TOK, tmp_path / "student")
    generate = pipeline("text-generation", model=str(out), tokenizer=str(out))
    text = generate("the cat", max_new_tokens=3, do_sample=False, return_full_text=False)[0]["generated_text"]
    prompt = TOK("the cat", return_tensors="pt")
    greedy = student.generate(**prompt, max_new_tokens=3, do_sample=False, pad_token_id=0)[0, 3:]
    assert len(greedy) > 0 and text == TOK.decode(greedy, skip_special_tokens=True)
    reloaded = load_causal_lm(out)
    torch.testing.assert_close(logits(reloaded.model), logits(student), rtol=0, atol=0)


def test_wrapper_outputs_and_info():
    teacher = tiny_llama(V)
    wrapped = HFCausalLM(teacher)
    out = wrapped(IDS, MASK, features=FeatureRequest(hidden_states=True))
    assert out.logits.shape == (2, 6, V) and len(out.hidden_states) == 5
    info = causal_lm_info(teacher.config)
    assert (info.kind, info.vocab_size, info.num_layers, info.num_heads) == ("causal_lm", V, 4, 4)
    with pytest.raises(ModelError, match="attention features"):
        wrapped(IDS, MASK, features=FeatureRequest(attentions={0}))


def test_loading_errors_and_vocabulary_mismatch(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_causal_lm(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_causal_lm(tmp_path / "empty")
    with pytest.raises(ModelError, match=r"GGUF file 'm.gguf' is not in"):
        load_causal_lm(tmp_path / "empty", gguf_file="m.gguf")
    (tmp_path / "empty" / "m.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(ModelError, match="m.gguf"):
        load_causal_lm(tmp_path / "empty", gguf_file="m.gguf")
    other = tiny_llama(V + 5)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ModelError, match="vocabulary has .* tokens") as err:
        load_pretrained_student(tmp_path / "other", causal_lm_info(tiny_llama(V).config))
    assert "sequence-level KD" in str(err.value)
    same = load_pretrained_student(tmp_path / "other", causal_lm_info(other.config))
    assert same.training and all(p.requires_grad for p in same.parameters())
