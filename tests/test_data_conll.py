"""Token-level readers (CoNLL columns, JSONL, Chinese character files) and the token task loader."""

from __future__ import annotations

import json

import pytest

from textdistill.config.schema import DataConfig
from textdistill.data.conll import is_token_file, read_token_file
from textdistill.data.task import load_task_data
from textdistill.errors import ConfigError, DataError

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_conll_space_columns_docstart_and_last_column(tmp_path):
    r = read_token_file(write(tmp_path, "a.conll", CONLL))
    assert [e.tokens for e in r.examples] == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert [e.tags for e in r.examples] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    assert r.lines == [3, 7]  # the first token line of each sentence
    assert [e.id for e in r.examples] == [0, 1]


def test_conll_tab_columns_and_tag_column_choice(tmp_path):
    text = "EU\tNNP\tB-NP\tB-ORG\nrejects\tVBZ\tB-VP\tO\n"
    p = write(tmp_path, "a.txt", text)
    assert read_token_file(p).examples[0].tags == ["B-ORG", "O"]
    assert read_token_file(p, tag_column=2).examples[0].tags == ["B-NP", "B-VP"]  # the chunk column
    with pytest.raises(DataError, match="data.tag_column=0 does not name a tag column"):
        read_token_file(p, tag_column=0)


def test_chinese_character_file_bmes(tmp_path):
    text = "我 O\n爱 O\n北 B-LOC\n京 M-LOC\n市 E-LOC\n\n上 B-LOC\n海 E-LOC\n"
    p = write(tmp_path, "zh.bmes", text)
    r = read_token_file(p)
    assert r.examples[0].tokens == ["我", "爱", "北", "京", "市"]
    assert r.examples[1].tags == ["B-LOC", "E-LOC"]
    task = load_task_data(DataConfig(train=str(p), dev=str(p)))
    assert task.token_task and task.tag_scheme == "bmes"
    assert task.stats["train"]["entities"] == {"LOC": 2}


def test_jsonl_tokens_and_tags(tmp_path):
    rows = [
        {"tokens": ["Paris", "is", "nice"], "tags": ["B-LOC", "O", "O"]},
        {"tokens": ["Bob"], "tags": ["B-PER"]},
    ]
    p = write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    assert is_token_file(p)
    r = read_token_file(p)
    assert [e.tags for e in r.examples] == [["B-LOC", "O", "O"], ["B-PER"]]
    unlabelled = write(tmp_path, "u.jsonl", json.dumps({"tokens": ["Bob"]}) + "\n")
    assert read_token_file(unlabelled, require_tags=False).examples[0].tags is None
    with pytest.raises(DataError, match="key 'tags' .* is missing"):
        read_token_file(unlabelled)


def test_text_jsonl_is_not_a_token_file(tmp_path):
    p = write(tmp_path, "a.jsonl", json.dumps({"sentence": "hi", "label": "x"}) + "\n")
    assert not is_token_file(p)


def test_token_and_tag_counts_differ_on_a_line(tmp_path):
    p = write(tmp_path, "bad.conll", "EU NNP B-ORG\nrejects O\n\nok NN O\n")
    with pytest.raises(DataError, match=r"bad.conll, line 2: 2 columns, but .*\(line 1\) has 3"):
        read_token_file(p)
    r = read_token_file(p, skip_bad_rows=True)  # the whole sentence is skipped and counted
    assert [e.tokens for e in r.examples] == [["ok"]]
    assert r.skipped == 1 and r.skipped_reasons == {"wrong_column_count": 1}


def test_jsonl_length_mismatch_and_empty_sentence(tmp_path):
    p = write(tmp_path, "a.jsonl", json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n")
    with pytest.raises(DataError, match="line 1: 2 tokens but 1 tags"):
        read_token_file(p)
    e = write(tmp_path, "e.jsonl", json.dumps({"tokens": [], "tags": []}) + "\n")
    with pytest.raises(DataError, match="line 1: the sentence has no tokens"):
        read_token_file(e)


def test_mixed_tab_and_space_columns_always_raise(tmp_path):
    p = write(tmp_path, "mix.conll", "EU B-ORG\nrejects\tO\n")
    for skip in (False, True):
        with pytest.raises(DataError, match="line 2: columns separated by tabs, but line 1 uses spaces"):
            read_token_file(p, skip_bad_rows=skip)


def test_malformed_tag_names_the_column_fix(tmp_path):
    p = write(tmp_path, "a.conll", "EU PERSON\n")
    with pytest.raises(DataError, match="tag 'PERSON' of token 0 .* data.tag_column"):
        read_token_file(p)


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match="no sentences found"):
        read_token_file(write(tmp_path, "e.conll", "\n\n"))


def _conll(sentences):
    return "\n\n".join("\n".join(f"{w} {t}" for w, t in zip(*s)) for s in sentences) + "\n"


def test_task_unknown_dev_tag_is_an_error(tmp_path):
    train = write(tmp_path, "train.conll", _conll([(["Bob", "ran"], ["B-PER", "O"])]))
    dev = write(tmp_path, "dev.conll", _conll([(["Paris"], ["B-LOC"])]))
    with pytest.raises(
        DataError, match=r"dev.conll, sentence starting at line 1: tag 'B-LOC' .* never predict"
    ):
        load_task_data(DataConfig(train=str(train), dev=str(dev)))


def test_task_repairs_i_after_o_and_counts_it(tmp_path):
    train = write(
        tmp_path, "train.conll", _conll([(["x", "Bob", "Lee"], ["O", "I-PER", "I-PER"]), (["Al"], ["B-PER"])])
    )
    task = load_task_data(DataConfig(train=str(train), dev=str(train)))
    assert task.tag_scheme == "iob2"
    assert task.train[0].tags == ["O", "B-PER", "I-PER"]
    assert task.stats["train"]["repaired_tags"] == 1


def test_task_iob1_becomes_iob2_and_convert_tags(tmp_path):
    train = write(tmp_path, "train.conll", _conll([(["Bob", "Lee", "Al"], ["I-PER", "I-PER", "B-PER"])]))
    task = load_task_data(DataConfig(train=str(train), dev=str(train)))
    assert (task.stats["tag_scheme"], task.tag_scheme) == ("iob1", "iob2")
    assert task.train[0].tags == ["B-PER", "I-PER", "B-PER"]
    bioes = load_task_data(DataConfig(train=str(train), dev=str(train), convert_tags="bioes"))
    assert bioes.train[0].tags == ["B-PER", "E-PER", "S-PER"]
    assert bioes.label_map.names == ("B-PER", "E-PER", "S-PER")


def test_task_option_problems(tmp_path):
    train = write(tmp_path, "train.conll", _conll([(["Bob"], ["B-PER"])]))
    with pytest.raises(ConfigError, match="data.tag_scheme: 'bilou'"):
        load_task_data(DataConfig(train=str(train), dev=str(train), tag_scheme="bilou"))
    with pytest.raises(ConfigError, match="data.task: 'ner'"):
        load_task_data(DataConfig(train=str(train), dev=str(train), task="ner"))
