"""Speed measurement protocol: real-length inputs, warm-up and repeat counts, threads, environment.

No assertion here is about how fast anything is: only about what is run and what is reported.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from textdistill.errors import ConfigError
from textdistill.evaluation.speed import (
    bf16_support,
    environment,
    measure_onnx,
    measure_torch,
    split_examples,
    time_predictor,
    torch_threads,
)
from textdistill.models.outputs import ModelOutputs


def _batches():
    g = torch.Generator().manual_seed(0)
    lengths = [[5, 3, 1], [4, 4]]
    out = []
    for ls in lengths:
        width = max(ls)
        mask = torch.tensor([[1] * n + [0] * (width - n) for n in ls])
        out.append(
            {
                "input_ids": torch.randint(1, 30, (len(ls), width), generator=g) * mask,
                "attention_mask": mask,
                "token_type_ids": torch.zeros_like(mask),
                "labels": torch.zeros(len(ls), dtype=torch.long),
            }
        )
    return out


def test_split_examples_cuts_each_row_to_its_real_length():
    batches = _batches()
    singles = split_examples(batches)
    assert [ex["input_ids"].shape for ex in singles] == [(1, 5), (1, 3), (1, 1), (1, 4), (1, 4)]
    assert torch.equal(singles[1]["input_ids"], batches[0]["input_ids"][1:2, :3])
    assert all(ex["attention_mask"].all() for ex in singles)
    assert set(singles[0]) == {"input_ids", "attention_mask", "token_type_ids"}


def test_time_predictor_runs_warmup_then_repeats_on_real_shapes():
    calls = []
    batches = _batches()
    timing = time_predictor(
        lambda b: calls.append(tuple(b["input_ids"].shape)), batches, warmup=2, repeats=3, latency_examples=4
    )
    singles = [(1, 5), (1, 3), (1, 1), (1, 4)]
    expected = singles[:2] + singles * 3 + [(3, 5), (2, 4)] + [(3, 5), (2, 4)] * 3
    assert calls == expected
    assert timing["latency_calls"] == 12
    assert timing["examples"] == 5 and timing["throughput_batch_size"] == 3
    assert timing["seq_len_mean"] == pytest.approx(17 / 5) and timing["seq_len_max"] == 5
    assert timing["latency_ms_p50"] <= timing["latency_ms_p90"]
    assert timing["throughput_eps_min"] <= timing["throughput_eps"] <= timing["throughput_eps_max"]


def test_time_predictor_rejects_empty_input():
    with pytest.raises(ConfigError, match="at least one batch"):
        time_predictor(lambda b: None, [])
    with pytest.raises(ConfigError, match="repeats must be >= 1"):
        time_predictor(lambda b: None, _batches(), repeats=0)


class _Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 2)
        self.seen = []

    def forward(self, input_ids, attention_mask, token_type_ids=None, features=None):
        self.seen.append((torch.get_num_threads(), torch.is_autocast_enabled("cpu"), self.training))
        return ModelOutputs(logits=self.lin(input_ids[:, :1].float()))


def test_measure_torch_fixes_threads_and_precision_and_restores_state():
    model = _Counting().train()
    before = torch.get_num_threads()
    result = measure_torch(model, _batches(), threads=1, precision="bf16", warmup=1, repeats=2)
    assert torch.get_num_threads() == before and model.training
    assert set(model.seen) == {(1, True, False)}  # 1 thread, autocast on, eval mode, on every call
    assert len(model.seen) == 1 + 2 * 5 + 1 + 2 * 2
    d = result.to_dict()
    assert (d["runtime"], d["device"], d["precision"], d["threads"]) == ("pytorch", "cpu", "bf16", 1)
    model.seen.clear()
    assert measure_torch(model, _batches(), precision="fp32", warmup=0, repeats=1).precision == "fp32"
    assert {s[1] for s in model.seen} == {False}


def test_measure_onnx_times_an_exported_graph(tmp_path):
    pytest.importorskip("onnxruntime")
    from textdistill.export.onnx import export_onnx

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(30, 4)
            self.lstm = nn.LSTM(4, 3, batch_first=True)
            self.out = nn.Linear(3, 2)

        def forward(self, input_ids, attention_mask, token_type_ids=None, features=None):
            return ModelOutputs(logits=self.out(self.lstm(self.emb(input_ids))[0].mean(1)))

    batches = _batches()
    result = export_onnx(Tiny().eval(), None, tmp_path, sample_batch=batches[0])
    speed = measure_onnx(result.onnx_path, batches, threads=1, warmup=1, repeats=2, latency_examples=2)
    assert (speed.runtime, speed.threads, speed.latency_calls, speed.examples) == ("onnxruntime", 1, 4, 5)


def test_precision_resolution_and_environment():
    model = _Counting()
    auto = measure_torch(model, _batches(), precision="auto", warmup=0, repeats=1).precision
    assert auto == ("bf16" if bf16_support()["native"] else "fp32")
    with pytest.raises(ConfigError, match="'fp8' is not one of"):
        measure_torch(model, _batches(), precision="fp8")
    env = environment(threads=3)
    assert env["threads"] == 3 and env["torch"] == torch.__version__
    assert set(env["bf16"]) == {"native", "onednn"}
    for key in ("transformers", "onnxruntime", "cpu", "cpu_capability", "cuda"):
        assert key in env
    with torch_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    with pytest.raises(ConfigError, match="threads must be at least 1"), torch_threads(0):
        pass
