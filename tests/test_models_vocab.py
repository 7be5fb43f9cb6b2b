"""Vocabulary trimming: kept tokens, the trimmed tokenizer, identical logits, the trim-vocab command."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from conftest import write_tsv
from textdistill.errors import ConfigError, DataError

KEPT_TEXT = ["the movie was good", "the film was not good", "a very bad plot"]
KEPT_ROWS = [(t, "positive") for t in KEPT_TEXT]


def _logits(model_dir, texts):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits


def test_select_vocab_auto_cap_and_file(tmp_path, tiny_tokenizer):
    from textdistill.models.vocab import count_tokens, select_vocab, special_ids

    counts = count_tokens(tiny_tokenizer, ["good good good bad bad the", ""])
    ids = {w: tiny_tokenizer.convert_tokens_to_ids(w) for w in ("good", "bad", "the")}
    assert counts == Counter({ids["good"]: 3, ids["bad"]: 2, ids["the"]: 1})
    specials = special_ids(tiny_tokenizer)
    assert specials == sorted(
        tiny_tokenizer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    )
    assert select_vocab(tiny_tokenizer, counts, "auto") == sorted(specials + list(ids.values()))
    # a cap keeps the most frequent: good (3) and bad (2), not the (1)
    assert select_vocab(tiny_tokenizer, counts, 2) == sorted(specials + [ids["good"], ids["bad"]])
    assert select_vocab(tiny_tokenizer, counts, "2") == select_vocab(tiny_tokenizer, counts, 2)
    f = tmp_path / "tokens.txt"
    f.write_text("the\n##ing\n", encoding="utf-8")
    assert select_vocab(tiny_tokenizer, counts, str(f)) == sorted(
        specials + [ids["the"], tiny_tokenizer.convert_tokens_to_ids("##ing")]
    )
    f.write_text("the\nzebra\n", encoding="utf-8")
    with pytest.raises(DataError, match="not in the tokenizer's vocabulary.*zebra"):
        select_vocab(tiny_tokenizer, counts, str(f))
    with pytest.raises(DataError, match="yields no tokens"):
        select_vocab(tiny_tokenizer, Counter(), "auto")


def test_vocab_problems_names_the_choices(tmp_path):
    from textdistill.models.vocab import vocab_problems

    assert vocab_problems("full") == vocab_problems("auto") == vocab_problems(500) == []
    assert "positive integer" in vocab_problems(0)[0]
    assert "existing file" in vocab_problems(str(tmp_path / "nope.txt"))[0]


def test_trimmed_model_gives_the_same_logits_and_loads_everywhere(tmp_path, tiny_teacher_dir):
    from transformers import AutoTokenizer, pipeline

    from textdistill.models.vocab import trim_model_dir

    data = write_tsv(tmp_path / "train.tsv", KEPT_ROWS)
    out = tmp_path / "trimmed"
    info = trim_model_dir(tiny_teacher_dir, [data], out)
    full_tok = AutoTokenizer.from_pretrained(str(tiny_teacher_dir))
    tok = AutoTokenizer.from_pretrained(str(out))
    words = {w for t in KEPT_TEXT for w in t.split()}
    assert info["vocab_before"] == len(full_tok) and info["vocab_after"] == len(tok) == len(words) + 5
    hidden = 32
    before, after = info["parameters_before"], info["parameters_after"]
    assert before["total"] - after["total"] == (len(full_tok) - len(tok)) * hidden
    assert before["non_embedding"] == after["non_embedding"]
    # same pieces, same logits, on text made of kept tokens (other order, other batch)
    texts = ["a good film", "the plot was very bad", "not good"]
    for t in texts:
        assert tok.convert_ids_to_tokens(tok(t)["input_ids"]) == full_tok.convert_ids_to_tokens(
            full_tok(t)["input_ids"]
        )
    assert torch.allclose(_logits(out, texts), _logits(tiny_teacher_dir, texts), atol=1e-5, rtol=0)
    # a word whose pieces were dropped becomes [UNK]; the normaliser (lower-casing) is the same
    assert tok.convert_ids_to_tokens(tok("THE awful movie")["input_ids"]) == [
        "[CLS]",
        "the",
        "[UNK]",
        "movie",
        "[SEP]",
    ]
    clf = pipeline("text-classification", model=str(out))
    assert clf("the movie was good")[0]["label"] in ("negative", "positive")


def test_trimmed_model_exports_to_onnx(tmp_path, tiny_teacher_dir):
    pytest.importorskip("onnxruntime")
    from textdistill.export.onnx import export_dir
    from textdistill.models.vocab import trim_model_dir

    rows = [(t, "positive" if "good" in t else "negative") for t in KEPT_TEXT * 4]
    data = write_tsv(tmp_path / "train.tsv", rows)
    trim_model_dir(tiny_teacher_dir, [data], tmp_path / "trimmed")
    result = export_dir(tmp_path / "trimmed", tmp_path / "onnx", data, quantize_int8=False)
    assert result.to_dict()["max_abs_diff"] <= 1e-4


def test_bilstm_trimming_keeps_logits(tmp_path, tiny_tokenizer):
    from textdistill.models.bilstm import BiLSTMClassifier, BiLSTMConfig
    from textdistill.models.vocab import count_tokens, select_vocab, trim_embeddings, trim_tokenizer

    torch.manual_seed(0)
    model = BiLSTMClassifier(
        BiLSTMConfig(
            vocab_size=len(tiny_tokenizer), num_labels=2, embedding_dim=8, lstm_hidden=6, mlp_hidden=5
        )
    ).eval()
    kept = select_vocab(tiny_tokenizer, count_tokens(tiny_tokenizer, KEPT_TEXT), "auto")
    new_tok = trim_tokenizer(tiny_tokenizer, kept)
    full_enc = tiny_tokenizer(KEPT_TEXT, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(input_ids=full_enc["input_ids"], attention_mask=full_enc["attention_mask"]).logits
    trim_embeddings(model, kept)
    enc = new_tok(KEPT_TEXT, padding=True, return_tensors="pt")
    with torch.no_grad():
        got = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    assert model.embeddings.num_embeddings == len(kept)
    assert torch.allclose(got, ref, atol=1e-6, rtol=0)


def test_bad_input_is_refused_and_nothing_is_written(tmp_path, tiny_teacher_dir, capsys):
    from textdistill.cli import main

    out = tmp_path / "out"
    code = main(
        ["trim-vocab", str(tiny_teacher_dir), "--data", str(tmp_path / "missing.tsv"), "-o", str(out)]
    )
    assert code == 2 and "do not exist" in capsys.readouterr().err and not out.exists()
    empty = tmp_path / "empty.tsv"
    empty.write_text("sentence\tlabel\n\tpositive\n", encoding="utf-8")
    code = main(["trim-vocab", str(tiny_teacher_dir), "--data", str(empty), "-o", str(out)])
    assert code == 2 and not out.exists()
    code = main(["trim-vocab", str(tiny_teacher_dir), "--data", str(empty), "-o", str(out), "--vocab", "0"])
    assert code == 2 and "positive integer" in capsys.readouterr().err and not out.exists()


def test_trim_vocab_cli_takes_several_data_files(tmp_path, tiny_teacher_dir, capsys):
    from textdistill.cli import main

    a = write_tsv(tmp_path / "a.tsv", [("good movie", "positive")])
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps({"sentence": "bad film", "label": "negative"}) + "\n", encoding="utf-8")
    assert (
        main(
            [
                "trim-vocab",
                str(tiny_teacher_dir),
                "--data",
                str(a),
                "--data",
                str(b),
                "-o",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["vocab_after"] == 4 + 5  # good movie bad film + 5 specials


def test_config_error_type_for_bad_vocab(tmp_path, tiny_teacher_dir):
    from textdistill.models.vocab import trim_model_dir

    with pytest.raises(ConfigError):
        trim_model_dir(tiny_teacher_dir, [], tmp_path / "o", vocab=-3)
