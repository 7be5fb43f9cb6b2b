"""Parameter counts, sizes and FLOPs against hand counts and torch's FLOP counter."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from conftest import tiny_bert_config
from textdistill.errors import ModelError
from textdistill.evaluation.compression import (
    compression_ratio,
    flops_per_example,
    recurrent_flops,
    size_on_disk,
    transformer_flops,
)
from textdistill.models.bilstm import BiLSTMClassifier, BiLSTMConfig
from textdistill.models.hf import HFClassifier
from textdistill.models.io import count_parameters

V, H, N, FF, P, T, C = 50, 16, 2, 32, 64, 2, 3  # vocab, hidden, layers, ffn, positions, token types, labels


def _tiny_bert(attn: str = "eager") -> nn.Module:
    from transformers import BertForSequenceClassification

    cfg = tiny_bert_config(V, layers=N, hidden=H, heads=4, num_labels=C)
    cfg.intermediate_size = FF
    cfg._attn_implementation = attn
    return BertForSequenceClassification(cfg).eval()


def _bilstm(**kw) -> BiLSTMClassifier:
    cfg = dict(vocab_size=V, num_labels=C, embedding_dim=10, lstm_hidden=6, lstm_layers=2, mlp_hidden=7)
    cfg.update(kw)
    return BiLSTMClassifier(BiLSTMConfig(**cfg)).eval()


def test_bert_parameter_counts_match_a_hand_count():
    embedding = V * H + P * H + T * H
    per_layer = (
        4 * (H * H + H)  # Q, K, V, attention output
        + 2 * H  # attention LayerNorm
        + (H * FF + FF)  # intermediate
        + (FF * H + H)  # output
        + 2 * H  # output LayerNorm
    )
    total = embedding + 2 * H + N * per_layer + (H * H + H) + (H * C + C)  # + emb LayerNorm, pooler, head
    counts = count_parameters(HFClassifier(_tiny_bert()))
    assert counts == {"total": total, "embedding": embedding, "non_embedding": total - embedding}


def test_bilstm_parameter_counts_match_a_hand_count():
    e, h, m = 10, 6, 7
    lstm = 2 * (4 * h * e + 4 * h * h + 8 * h) + 2 * (4 * h * 2 * h + 4 * h * h + 8 * h)  # 2 layers x 2 dirs
    head = (2 * h * m + m) + (m * C + C)
    counts = count_parameters(_bilstm())
    assert counts == {"total": V * e + lstm + head, "embedding": V * e, "non_embedding": lstm + head}


@pytest.mark.parametrize("family", ["bert", "distilbert", "electra"])
def test_transformer_flops_equal_torch_flop_counter(family):
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        ElectraConfig,
        ElectraForSequenceClassification,
    )

    if family == "bert":
        model = _tiny_bert()
    elif family == "distilbert":
        cfg = DistilBertConfig(vocab_size=V, dim=H, n_layers=N, n_heads=4, hidden_dim=FF, num_labels=C)
        cfg._attn_implementation = "eager"
        model = DistilBertForSequenceClassification(cfg).eval()
    else:  # factorised embeddings: an E -> H projection per token
        cfg = ElectraConfig(
            vocab_size=V, embedding_size=8, hidden_size=H, num_hidden_layers=N, num_attention_heads=4,
            intermediate_size=FF, num_labels=C,
        )  # fmt: skip
        cfg._attn_implementation = "eager"
        model = ElectraForSequenceClassification(cfg).eval()
    seq = 11
    ids = torch.randint(5, V, (1, seq))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert flops_per_example(HFClassifier(model), seq) == counter.get_total_flops()
    assert flops_per_example(model, seq) == counter.get_total_flops()  # a bare transformers model too


def test_transformer_flops_hand_value():
    # N (4 L H^2 + 2 L^2 H + 2 L H FF) + H^2 + H C MACs, times 2; L = 10
    macs = N * (4 * 10 * H * H + 2 * 100 * H + 2 * 10 * H * FF) + H * H + H * C
    assert transformer_flops(_tiny_bert().config, 10) == 2 * macs


def test_bilstm_flops_equal_an_unrolled_lstm_cell_count():
    model = _bilstm()
    seq, e, h = 9, 10, 6
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        for layer in range(2):
            width = e if layer == 0 else 2 * h
            for _direction in range(2):
                cell = nn.LSTMCell(width, h)
                state = None
                for _t in range(seq):
                    state = cell(torch.randn(1, width), state)
        model.head(torch.randn(1, 2 * h))
    assert recurrent_flops(model, seq) == counter.get_total_flops()
    assert flops_per_example(model, seq) == counter.get_total_flops()


def test_gru_and_projected_lstm_flops():
    class Rnn(nn.Module):
        def __init__(self, rnn):
            super().__init__()
            self.rnn = rnn
            self.out = nn.Linear(4, 2)

    # GRU: 3 gates -> 3 h (D + h) MACs per step; single direction
    assert recurrent_flops(Rnn(nn.GRU(5, 4)), 3) == 2 * (3 * 3 * 4 * (5 + 4) + 4 * 2)
    # LSTM with proj_size p: gates read the projected state (4 h (D + p)) plus the h -> p projection
    lstm = nn.LSTM(5, 6, proj_size=4)
    assert recurrent_flops(Rnn(lstm), 3) == 2 * (3 * (4 * 6 * (5 + 4) + 6 * 4) + 4 * 2)
    with pytest.raises(ModelError, match="neither a transformers encoder nor a recurrent"):
        flops_per_example(nn.Sequential(nn.Linear(3, 3)), 5)


def test_size_on_disk_and_compression_ratio(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.onnx").write_bytes(b"x" * 300)
    (tmp_path / "vocab.txt").write_bytes(b"x" * 50)
    assert size_on_disk(tmp_path) == {"total_bytes": 1350, "weights_bytes": 1300}
    assert size_on_disk(tmp_path / "vocab.txt") == {"total_bytes": 50, "weights_bytes": 0}
    with pytest.raises(ModelError, match="does not exist"):
        size_on_disk(tmp_path / "missing")
    assert compression_ratio(110_000_000, 14_500_000) == pytest.approx(7.5862, rel=1e-4)
    with pytest.raises(ModelError, match="positive student size, got 0"):
        compression_ratio(10, 0)
