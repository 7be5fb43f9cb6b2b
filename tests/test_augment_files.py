"""augment_to_file: output format, atomic write, fingerprint cache hit/miss, CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from conftest import make_sentiment_rows, make_tokenizer, tiny_bert_config, write_tsv
from textdistill.config.augment import AugmentConfig
from textdistill.data.augment import tinybert as tinybert_module
from textdistill.data.augment.cli import config_from_args, main, register
from textdistill.data.augment.files import augment_to_file, sidecar_path
from textdistill.data.augment.mlm import MaskedLM
from textdistill.data.readers import Example, read_examples
from textdistill.errors import ConfigError


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory) -> Path:
    """A saved tiny BertForMaskedLM with its tokenizer (what augment.mlm points at)."""
    from transformers import BertForMaskedLM

    d = tmp_path_factory.mktemp("mlm")
    tok = make_tokenizer(d)
    torch.manual_seed(0)
    BertForMaskedLM(tiny_bert_config(len(tok), layers=1)).save_pretrained(str(d))
    return d


@pytest.fixture
def train_tsv(tmp_path) -> Path:
    return write_tsv(tmp_path / "train.tsv", make_sentiment_rows(12, seed=4))


@pytest.fixture
def load_counter(monkeypatch):
    """Counts masked-LM loads and forward passes of the tinybert augmenter."""
    counts = {"loads": 0, "forwards": 0}
    real_load = tinybert_module.load_masked_lm
    real_forward = MaskedLM._forward_top_k

    def load(path, **kw):
        counts["loads"] += 1
        return real_load(path, **kw)

    def forward(self, batch, k):
        counts["forwards"] += 1
        return real_forward(self, batch, k)

    monkeypatch.setattr(tinybert_module, "load_masked_lm", load)
    monkeypatch.setattr(MaskedLM, "_forward_top_k", forward)
    return counts


def tiny_cfg(mlm_dir: Path, **kw) -> AugmentConfig:
    return AugmentConfig(**{"method": "tinybert", "n_aug": 3, "mlm": str(mlm_dir), "max_length": 64, **kw})


def test_tsv_output_columns_labels_and_roundtrip(train_tsv, tmp_path, mlm_dir):
    out = tmp_path / "aug" / "train_aug.tsv"
    res = augment_to_file(train_tsv, out, tiny_cfg(mlm_dir))
    assert not res.reused and res.path == out and res.n_original == 12 and res.n_augmented > 12
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id\tsentence\tlabel\tis_original"
    rows = [line.split("\t") for line in lines[1:]]
    originals = read_examples(train_tsv).examples
    assert [r[1:] for r in rows if r[3] == "true"] == [[e.text, e.label, "true"] for e in originals]
    assert all(r[2] == "" for r in rows if r[3] == "false")  # new rows: no hard label
    assert len(rows) == res.n_original + res.n_augmented
    back = read_examples(out, require_labels=False).examples
    assert [e.text for e in back] == [r[1] for r in rows]
    assert sum(e.label is None for e in back) == res.n_augmented
    meta = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert meta["fingerprint"] == res.fingerprint and meta["n_augmented"] == res.n_augmented
    assert sorted(p.name for p in out.parent.iterdir()) == ["train_aug.tsv", "train_aug.tsv.meta.json"]


def test_jsonl_output_of_pairs(tmp_path):
    examples = [Example(0, "good movie", "the plot was great", "yes"), Example(1, "bad film", "dull", None)]
    out = tmp_path / "pairs.jsonl"
    cfg = AugmentConfig(method="tang", n_aug=4, p_mask=0.5, p_pos=0.0)
    res = augment_to_file(examples, out, cfg, text_column="q", text_pair_column="a", label_column="y")
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert records[0] == {
        "id": 0,
        "q": "good movie",
        "a": "the plot was great",
        "y": "yes",
        "is_original": True,
    }
    new = [r for r in records if not r["is_original"]]
    assert len(new) == res.n_augmented > 0 and all(r["y"] is None and r["a"] for r in new)


def test_cache_hit_loads_no_model_and_miss_on_any_change(train_tsv, tmp_path, mlm_dir, load_counter):
    out = tmp_path / "train_aug.tsv"
    first = augment_to_file(train_tsv, out, tiny_cfg(mlm_dir))
    assert load_counter["loads"] == 1 and not first.reused
    forwards = load_counter["forwards"]
    assert forwards >= 1
    before = out.read_bytes()

    again = augment_to_file(train_tsv, out, tiny_cfg(mlm_dir, batch_size=5))  # batch size: same output
    assert again.reused and again.fingerprint == first.fingerprint
    assert load_counter["loads"] == 1 and load_counter["forwards"] == forwards and out.read_bytes() == before

    changed = augment_to_file(train_tsv, out, tiny_cfg(mlm_dir, p_t=0.5))
    assert not changed.reused and changed.fingerprint != first.fingerprint and load_counter["loads"] == 2

    write_tsv(train_tsv, make_sentiment_rows(12, seed=5))  # new input data
    data_changed = augment_to_file(train_tsv, out, tiny_cfg(mlm_dir, p_t=0.5))
    assert not data_changed.reused and data_changed.fingerprint != changed.fingerprint

    assert augment_to_file(train_tsv, out, tiny_cfg(mlm_dir, p_t=0.5)).reused
    out.write_text(out.read_text(encoding="utf-8") + "9999\tx\t\tfalse\n", encoding="utf-8")  # edited by hand
    assert not augment_to_file(train_tsv, out, tiny_cfg(mlm_dir, p_t=0.5)).reused
    assert not augment_to_file(train_tsv, out, tiny_cfg(mlm_dir, p_t=0.5), force=True).reused


def test_changed_model_weights_change_the_fingerprint(train_tsv, tmp_path, mlm_dir, load_counter):
    from transformers import BertForMaskedLM

    other = tmp_path / "mlm2"
    tok = make_tokenizer(other)
    out = tmp_path / "aug.jsonl"
    torch.manual_seed(0)
    BertForMaskedLM(tiny_bert_config(len(tok), layers=1)).save_pretrained(str(other))
    a = augment_to_file(train_tsv, out, tiny_cfg(other))
    assert augment_to_file(train_tsv, out, tiny_cfg(other)).reused
    torch.manual_seed(1)
    BertForMaskedLM(tiny_bert_config(len(tok), layers=1)).save_pretrained(str(other))  # retrained in place
    b = augment_to_file(train_tsv, out, tiny_cfg(other))
    assert not b.reused and a.fingerprint != b.fingerprint


def test_word_vector_file_is_part_of_the_fingerprint(train_tsv, tmp_path, mlm_dir):
    vectors = tmp_path / "glove.txt"
    vectors.write_text("film 1 0\nmovie 0.9 0.1\n", encoding="utf-8")
    out = tmp_path / "aug.tsv"
    a = augment_to_file(train_tsv, out, tiny_cfg(mlm_dir, word_vectors=str(vectors)))
    vectors.write_text("film 1 0\nmovie 0.1 0.9\n", encoding="utf-8")
    b = augment_to_file(train_tsv, out, tiny_cfg(mlm_dir, word_vectors=str(vectors)))
    assert not b.reused and a.fingerprint != b.fingerprint


def test_cache_dir_is_used_without_an_output_path(train_tsv, tmp_path):
    cfg = AugmentConfig(method="tang", n_aug=2, p_pos=0.0, cache_dir=str(tmp_path / "cache"))
    res = augment_to_file(train_tsv, None, cfg)
    assert res.path == tmp_path / "cache" / f"augment-{res.fingerprint[:16]}.jsonl" and res.path.is_file()
    assert augment_to_file(train_tsv, None, cfg).reused
    with pytest.raises(ConfigError, match="no output path and augment.cache_dir is not set"):
        augment_to_file(train_tsv, None, dataclasses.replace(cfg, cache_dir=None))


def test_bad_output_extension_and_bad_config_are_reported(train_tsv, tmp_path):
    with pytest.raises(ConfigError, match=r"extension '\.csv'; valid: \.tsv, \.jsonl"):
        augment_to_file(train_tsv, tmp_path / "x.csv", AugmentConfig(method="tang", p_pos=0.0))
    with pytest.raises(ConfigError) as err:
        augment_to_file(train_tsv, tmp_path / "x.tsv", AugmentConfig(method="tinybret", p_t=1.5, n_aug=0))
    text = str(err.value)
    assert "3 configuration problems" in text and "Did you mean 'tinybert'?" in text
    assert "augment.p_t=1.5 must be a probability" in text and "augment.n_aug=0" in text


def test_cli_runs_then_reuses(train_tsv, tmp_path, capsys):
    out = tmp_path / "cli_aug.tsv"
    argv = [
        "--data",
        str(train_tsv),
        "--out",
        str(out),
        "--method",
        "tang",
        "--n-aug",
        "3",
        "--pos-tagger",
        "none",
    ]
    assert main(argv) == 0
    assert "written in" in capsys.readouterr().out and out.is_file()
    assert main(argv) == 0
    assert "reused (fingerprint matches)" in capsys.readouterr().out
    assert main([*argv[:-2], "--p-mask", "2"]) == 2
    assert "augment.p_mask=2.0 must be a probability" in capsys.readouterr().err


def test_cli_tinybert_with_teacher_embeddings(train_tsv, tmp_path, mlm_dir, tiny_teacher_dir, capsys):
    out = tmp_path / "tb.jsonl"
    argv = [
        "--data",
        str(train_tsv),
        "--out",
        str(out),
        "--mlm",
        str(mlm_dir),
        "--teacher",
        str(tiny_teacher_dir),
    ]
    assert main([*argv, "--n-aug", "2", "--max-length", "64"]) == 0
    meta = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    teacher_files = meta["components"]["word_vectors"]["teacher_embeddings"]["files"]
    assert "config.json" in teacher_files and "vocab.txt" in teacher_files
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sum(not r["is_original"] for r in records) == meta["n_augmented"] > 0


def test_subparser_flags_cover_every_config_field():
    root = argparse.ArgumentParser(prog="textdistill")
    sub = root.add_subparsers(dest="command")
    register(sub)
    args = root.parse_args(["augment", "--data", "d.tsv", "--method", "tang", "--ngram-range", "2", "3"])
    assert args.func.__name__ == "augment_cli"
    cfg = config_from_args(args)
    assert cfg == AugmentConfig(method="tang", ngram_range=(2, 3))
    flags = {a.dest for a in sub.choices["augment"]._actions}
    assert {f.name for f in dataclasses.fields(AugmentConfig)} <= flags
