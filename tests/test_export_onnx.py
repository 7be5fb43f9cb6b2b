"""ONNX export: onnxruntime logits match PyTorch on other shapes than the trace, int8 runs, files written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_bert_config
from textdistill.evaluation.metrics import agreement, compute_metrics
from textdistill.export.onnx import ExportError, create_session, export_onnx, onnx_input_names, onnx_predictor
from textdistill.models.bilstm import BiLSTMClassifier, BiLSTMConfig
from textdistill.models.hf import HFClassifier
from textdistill.models.outputs import ModelOutputs

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


SENTENCES = [
    "good movie",
    "the plot was very dull and boring",
    "fun",
    "it is not a great film but the actor was wonderful",
    "awful",
    "really happy and the story is nice",
    "sad ugly film",
]


def _batch(tokenizer, texts, labels=None, ids=None):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    batch = {k: v for k, v in enc.items()}
    if labels is not None:
        batch["labels"] = torch.tensor(labels)
        batch["example_ids"] = torch.tensor(ids)
    return batch


@pytest.fixture
def hf_model(tiny_tokenizer):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    cfg = tiny_bert_config(len(tiny_tokenizer), layers=2, num_labels=3)
    cfg.id2label = {0: "neg", 1: "neu", 2: "pos"}
    cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    return HFClassifier(BertForSequenceClassification(cfg))


def _max_diff(session, model, batch) -> float:
    with torch.no_grad():
        ref = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")).logits.numpy()
    return float(np.abs(onnx_predictor(session)(batch) - ref).max())


def test_hf_export_matches_pytorch_on_new_shapes(tmp_path, tiny_tokenizer, hf_model):
    sample = _batch(tiny_tokenizer, SENTENCES[:2])
    dev = [
        _batch(tiny_tokenizer, SENTENCES[:4], [0, 1, 2, 0], [0, 1, 2, 3]),
        _batch(tiny_tokenizer, SENTENCES[4:], [2, 2, 0], [4, 5, 6]),
    ]
    hf_model.train()
    result = export_onnx(
        hf_model,
        tiny_tokenizer,
        tmp_path / "exp",
        sample_batch=sample,
        quantize_int8=True,
        dev_batches=dev,
        threads=1,
    )
    assert hf_model.training  # the caller's mode is restored
    hf_model.eval()
    assert result.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert result.max_abs_diff <= 1e-4
    # the trace saw (2, L); onnxruntime must handle other batch sizes and lengths
    session = create_session(result.onnx_path, threads=1)
    for texts in (SENTENCES, SENTENCES[3:4], SENTENCES[2:5]):
        batch = _batch(tiny_tokenizer, texts)
        assert batch["input_ids"].shape != sample["input_ids"].shape
        assert _max_diff(session, hf_model, batch) < 1e-4
    # int8: the quantized graph runs and its reported numbers are consistent with its logits
    int8 = create_session(result.int8_path, threads=1)
    logits = np.concatenate([onnx_predictor(int8)(b) for b in dev])
    with torch.no_grad():
        ref = torch.cat(
            [hf_model(b["input_ids"], b["attention_mask"], b["token_type_ids"]).logits for b in dev]
        )
    labels = torch.cat([b["labels"] for b in dev])
    assert logits.shape == (7, 3)
    assert result.agreement["onnx_int8"] == pytest.approx(agreement(logits, ref))
    assert result.dev_metrics["onnx_int8"] == compute_metrics(logits, labels, regression=False)
    assert result.dev_metrics["pytorch"] == compute_metrics(ref, labels, regression=False)
    assert result.agreement["onnx_fp32"] == 1.0
    # files
    out = tmp_path / "exp"
    for name in ("model.onnx", "model.int8.onnx", "labels.json", "export.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "labels.json").read_text())["id2label"] == {"0": "neg", "1": "neu", "2": "pos"}
    meta = json.loads((out / "export.json").read_text())
    assert meta["max_abs_diff"] == pytest.approx(result.max_abs_diff)
    assert meta["dev_metrics"]["onnx_fp32"]["n"] == 7
    assert meta["sizes"]["onnx_int8"] < meta["sizes"]["onnx_fp32"]


class _TinyLSTM(nn.Module):
    """A contract stand-in: embeddings -> BiLSTM over the padded sequence -> masked mean -> linear."""

    def __init__(self, vocab: int):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab, 8)
        self.lstm = nn.LSTM(8, 5, batch_first=True, bidirectional=True)
        self.out = nn.Linear(10, 2)

    def forward(self, input_ids, attention_mask, token_type_ids=None, features=None):
        h, _ = self.lstm(self.emb(input_ids))
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return ModelOutputs(logits=self.out((h * m).sum(1) / m.sum(1)), attention_mask=attention_mask)


@pytest.mark.parametrize("kind", ["stand-in", "bilstm-student"])
def test_lstm_export_matches_pytorch_on_new_shapes(tmp_path, tiny_tokenizer, kind):
    if kind == "stand-in":
        model = _TinyLSTM(len(tiny_tokenizer)).eval()
    else:  # the shipped student packs its sequences: exported as ONNX LSTM sequence_lens
        torch.manual_seed(0)
        cfg = BiLSTMConfig(
            vocab_size=len(tiny_tokenizer), num_labels=2, embedding_dim=8, lstm_hidden=5, lstm_layers=2,
            mlp_hidden=6, id2label={0: "negative", 1: "positive"},
        )  # fmt: skip
        model = BiLSTMClassifier(cfg).eval()
    assert onnx_input_names(model) == ["input_ids", "attention_mask"]
    result = export_onnx(
        model,
        None,
        tmp_path / kind,
        sample_batch=_batch(tiny_tokenizer, SENTENCES[:3]),
        quantize_int8=True,
        threads=1,
    )
    assert result.input_names == ["input_ids", "attention_mask"]
    session = create_session(result.onnx_path, threads=1)
    for texts in (SENTENCES, SENTENCES[1:2], SENTENCES[4:6]):
        assert _max_diff(session, model, _batch(tiny_tokenizer, texts)) < 1e-4
    int8 = onnx_predictor(create_session(result.int8_path, threads=1))(_batch(tiny_tokenizer, SENTENCES))
    assert int8.shape == (7, 2) and np.isfinite(int8).all()
    assert not (tmp_path / kind / "tokenizer_config.json").exists()  # no tokenizer given
    labels_file = tmp_path / kind / "labels.json"
    assert labels_file.exists() == (kind == "bilstm-student")


class _ShapeBranch(nn.Module):
    """Doubles its logits for sequences longer than 6 tokens: a Python branch a trace freezes."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(200, 2)

    def forward(self, input_ids, attention_mask, token_type_ids=None, features=None):
        logits = self.emb(input_ids).mean(1)
        if input_ids.shape[1] > 6:
            logits = logits * 2
        return ModelOutputs(logits=logits)


def test_parity_failure_raises_export_error(tmp_path, tiny_tokenizer):
    sample = _batch(tiny_tokenizer, SENTENCES[:2])  # longer than 6 tokens: the trace keeps the doubling
    assert sample["input_ids"].shape[1] > 6
    with pytest.raises(ExportError, match=r"max \|delta logit\| = .* > tolerance 0\.0001"):
        export_onnx(_ShapeBranch(), None, tmp_path / "bad", sample_batch=sample)


def test_missing_onnx_gives_the_install_hint(tmp_path, monkeypatch, tiny_tokenizer):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    with pytest.raises(ImportError, match=r"pip install 'textdistill\[export\]'"):
        export_onnx(_TinyLSTM(10), None, tmp_path / "x", sample_batch=_batch(tiny_tokenizer, SENTENCES[:2]))


def test_export_cli_on_a_saved_student(tmp_path, tiny_teacher_dir, sentiment_files, capsys):
    from textdistill.cli import main

    out = tmp_path / "onnx"
    argv = ["export", str(tiny_teacher_dir), "--data", str(sentiment_files["dev"]), "-o", str(out)]
    assert main([*argv, "--max-examples", "12", "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["max_abs_diff"] <= 1e-4 and summary["dev_metrics"]["onnx_int8"]["n"] == 12
    assert summary["input_names"] == ["input_ids", "attention_mask", "token_type_ids"]
    labels = json.loads((out / "labels.json").read_text(encoding="utf-8"))
    assert labels["label2id"] == {"negative": 0, "positive": 1}
    assert (out / "model.int8.onnx").is_file() and (out / "tokenizer_config.json").is_file()
