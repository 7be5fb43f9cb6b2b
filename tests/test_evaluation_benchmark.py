"""End to end: a tiny teacher, an HF student and a BiLSTM student, measured and reported (with ONNX)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertForSequenceClassification

from conftest import tiny_bert_config
from textdistill.errors import ConfigError, ModelError
from textdistill.evaluation.benchmark import model_tokenizer, run_benchmark
from textdistill.evaluation.compression import transformer_flops
from textdistill.models.bilstm import BiLSTMClassifier, BiLSTMConfig
from textdistill.models.io import count_parameters, save_model
from textdistill.models.teacher import load_tokenizer

LABELS = {0: "negative", 1: "positive"}


@pytest.fixture
def student_dirs(tmp_path, tiny_teacher_dir):
    tok = load_tokenizer(tiny_teacher_dir)
    torch.manual_seed(1)
    hf = BertForSequenceClassification(tiny_bert_config(len(tok), layers=2, num_labels=2))
    hf_dir = save_model(hf, tmp_path / "small-bert", tok, LABELS)
    lstm = BiLSTMClassifier(
        BiLSTMConfig(
            vocab_size=len(tok), num_labels=2, embedding_dim=8, lstm_hidden=6, mlp_hidden=8, id2label=LABELS
        )
    )
    lstm_dir = save_model(lstm, tmp_path / "bilstm", tok, LABELS)
    return [hf_dir, lstm_dir]


def test_run_benchmark_end_to_end(tmp_path, tiny_teacher_dir, student_dirs, sentiment_files):
    before = torch.get_num_threads()
    results = run_benchmark(
        tiny_teacher_dir,
        student_dirs,
        sentiment_files["dev"],
        out_dir=tmp_path / "bench",
        max_examples=24,
        threads=1,
        onnx=True,
        batch_size=8,
        speed_examples=16,
        latency_examples=3,
        warmup=1,
        repeats=1,
        bf16=False,
        gpu=False,
    )
    assert torch.get_num_threads() == before
    assert [m["name"] for m in results["models"]] == ["teacher", "small-bert", "bilstm"]
    assert results["task"]["examples"] == 24 and results["environment"]["threads"] == 1

    # sizes and cost
    teacher_rec, bert_rec, lstm_rec = results["models"]
    assert bert_rec["compression"]["params"] == pytest.approx(
        teacher_rec["params"]["total"] / bert_rec["params"]["total"]
    )
    assert lstm_rec["params"] == count_parameters(
        BiLSTMClassifier(
            BiLSTMConfig(vocab_size=102, num_labels=2, embedding_dim=8, lstm_hidden=6, mlp_hidden=8)
        )
    )
    assert teacher_rec["flops_per_example"] == transformer_flops(
        tiny_bert_config(102, num_labels=2), results["task"]["flops_seq_len"]
    )
    assert lstm_rec["flops_per_example"] > 0 and teacher_rec["compression"]["params"] == 1.0

    # quality / speed entries: PyTorch fp32 + ONNX fp32 + ONNX int8 per model
    entries = {(e["model"], e["runtime"], e["precision"]): e for e in results["entries"]}
    assert len(results["entries"]) == 9
    teacher = entries[("teacher", "pytorch", "fp32")]
    assert teacher["agreement"] == 1.0 and teacher["retention"] == pytest.approx(100.0)
    for model in ("teacher", "small-bert", "bilstm"):
        torch_entry = entries[(model, "pytorch", "fp32")]
        assert torch_entry["metrics"]["n"] == 24
        # the fp32 graph passed its parity check, so it scores exactly like PyTorch
        assert entries[(model, "onnxruntime", "fp32")]["metrics"] == torch_entry["metrics"]
        assert entries[(model, "onnxruntime", "int8")]["metrics"]["n"] == 24
        assert torch_entry["speed"]["threads"] == 1 and torch_entry["speed"]["latency_calls"] == 3
        assert torch_entry["speed"]["examples"] == 16
        assert results["exports"][model]["max_abs_diff"] <= 1e-4
        assert (tmp_path / "bench" / "onnx" / model / "model.int8.onnx").is_file()

    # layer CKA: teacher (4 layers + embeddings) x small-bert (2 + embeddings); none for the BiLSTM
    matrix = torch.tensor(results["cka"]["small-bert"]["matrix"])
    assert matrix.shape == (5, 3) and bool(((matrix >= 0) & (matrix <= 1 + 1e-9)).all())
    assert results["cka"]["small-bert"]["pooling"] == "tokens"
    assert results["cka"]["bilstm"]["matrix"] is None

    out = tmp_path / "bench"
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["entries"][0]["name"] == "teacher"
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| small-bert [onnxruntime int8 cpu] | onnxruntime | int8 | cpu |" in md
    assert (out / "tradeoff.png").is_file() and (out / "cka_small-bert.png").is_file()


def test_run_benchmark_rejects_bad_settings(tmp_path, tiny_teacher_dir, sentiment_files):
    with pytest.raises(ConfigError) as err:
        run_benchmark(
            tiny_teacher_dir,
            [],
            sentiment_files["dev"],
            out_dir=tmp_path,
            max_examples=0,
            threads=0,
            repeats=0,
        )
    assert len(err.value.problems) == 3
    assert "max_examples must be at least 1" in str(err.value)


def test_benchmark_cli(tmp_path, tiny_teacher_dir, student_dirs, sentiment_files, capsys):
    from textdistill.cli import main

    argv = ["benchmark", "--teacher", str(tiny_teacher_dir), str(student_dirs[1]), "--data"]
    argv += [
        str(sentiment_files["dev"]),
        "-o",
        str(tmp_path / "cli"),
        "--threads",
        "1",
        "--max-examples",
        "16",
    ]
    argv += ["--batch-size", "8", "--speed-examples", "8", "--repeats", "1", "--warmup", "0", "--no-plots"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "## Quality and speed" in printed and "| bilstm | pytorch | fp32 | cpu |" in printed
    report = json.loads((tmp_path / "cli" / "report.json").read_text(encoding="utf-8"))
    assert report["task"]["examples"] == 16 and not list((tmp_path / "cli").glob("*.png"))


def test_model_tokenizer_reads_bilstm_dirs_and_falls_back(tmp_path, tiny_teacher_dir, student_dirs):
    teacher_tok = load_tokenizer(tiny_teacher_dir)
    tok = model_tokenizer(student_dirs[1])  # BiLSTM dir: tokenizer files but no config.json
    assert tok.get_vocab() == teacher_tok.get_vocab()
    (tmp_path / "bare").mkdir()
    assert model_tokenizer(tmp_path / "bare", fallback=teacher_tok) is teacher_tok
    with pytest.raises(ModelError, match="holds no tokenizer files"):
        model_tokenizer(tmp_path / "bare")


def test_models_are_named_after_their_run_directories(tmp_path):
    from textdistill.evaluation.benchmark import _unique_names

    for run in ("teacher", "student", "other/student"):
        (tmp_path / run / "model").mkdir(parents=True)
        (tmp_path / run / "run.json").write_text("{}")
    (tmp_path / "plain" / "model").mkdir(parents=True)  # not a run directory: keeps its own name
    dirs = [tmp_path / p / "model" for p in ("teacher", "student", "other/student", "plain")]
    assert _unique_names(dirs) == ["teacher", "student", "student-2", "model"]
