"""Causal-LM data: readers, prompt masking, chat templates, padding, packing, bad input."""

from __future__ import annotations

import json

import pytest

from lm_fixtures import make_lm_tokenizer
from textdistill.data.lm_data import (
    LMCollator,
    LMExample,
    encode_lm_example,
    encode_lm_examples,
    pack_examples,
    pad_token_of,
    read_lm_examples,
)
from textdistill.errors import DataError


def test_readers(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("the cat sat\n\n a dog ran \n")
    assert [e.text for e in read_lm_examples(txt)] == ["the cat sat", " a dog ran "]
    jl = tmp_path / "a.jsonl"
    jl.write_text(json.dumps({"text": "hello"}) + "\n" + json.dumps({"prompt": "p", "response": "r"}) + "\n")
    got = read_lm_examples(jl)
    assert got[0] == LMExample(text="hello", source="a.jsonl:1")
    assert (got[1].prompt, got[1].response) == ("p", "r")
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "ok"}\n{"prompt": "only"}\n')
    with pytest.raises(DataError, match=r"b.jsonl:2: .*'prompt' and 'response'"):
        read_lm_examples(bad)
    bad.write_text("{not json\n")
    with pytest.raises(DataError, match="b.jsonl:1: not valid JSON"):
        read_lm_examples(bad)
    with pytest.raises(DataError, match=".txt .* or .jsonl"):
        read_lm_examples(_touch(tmp_path / "x.csv"))


def _touch(p):
    p.write_text("x\n")
    return p


def test_text_and_prompt_response_labels():
    tok = make_lm_tokenizer()
    v = tok.get_vocab()
    enc = encode_lm_example(LMExample(text="the cat sat"), tok, 16)
    assert enc["input_ids"] == [1, v["the"], v["cat"], v["sat"], 2]
    assert enc["labels"] == enc["input_ids"]
    enc = encode_lm_example(LMExample(prompt="what did the cat say", response="yes"), tok, 16)
    assert enc["input_ids"] == [1, v["what"], v["did"], v["the"], v["cat"], v["say"], v["yes"], 2]
    assert enc["labels"] == [-100] * 6 + [v["yes"], 2]
    # a response is cut to fit after its prompt
    enc = encode_lm_example(LMExample(prompt="the cat", response="sat on the mat"), tok, 5)
    assert enc["labels"] == [-100, -100, -100, v["sat"], v["on"]]


def test_chat_template_renders_the_prompt_as_a_user_turn():
    tok = make_lm_tokenizer(chat=True)
    v = tok.get_vocab()
    enc = encode_lm_example(LMExample(prompt="hello", response="yes"), tok, 16)
    assert enc["input_ids"] == [v["<|user|>"], v["hello"], v["<|assistant|>"], v["yes"], 2]
    assert enc["labels"] == [-100, -100, -100, v["yes"], 2]
    plain = encode_lm_example(LMExample(prompt="hello", response="yes"), tok, 16, chat_template=False)
    assert plain["input_ids"] == [1, v["hello"], v["yes"], 2]
    with pytest.raises(DataError, match="has no chat template"):
        encode_lm_example(
            LMExample(prompt="hello", response="yes"), make_lm_tokenizer(), 16, chat_template=True
        )


def test_prompt_longer_than_max_length_is_an_error():
    tok = make_lm_tokenizer()
    with pytest.raises(DataError, match=r"q.jsonl:3: the prompt is 5 tokens, but max_length is 5"):
        encode_lm_example(LMExample(prompt="the cat sat on", response="yes", source="q.jsonl:3"), tok, 5)
    with pytest.raises(DataError, match="at least 2"):
        encode_lm_examples([LMExample(text="a")], tok, 1)


def test_collator_pads_right_and_masks_labels():
    tok = make_lm_tokenizer()
    enc = encode_lm_examples([LMExample(text="the cat"), LMExample(prompt="a", response="dog ran")], tok, 16)
    batch = LMCollator(pad_token_of(tok))(enc)
    assert batch["input_ids"].tolist()[0] == enc[0]["input_ids"] + [0]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist()[0][-1] == -100
    assert batch["labels"].tolist()[1][:2] == [-100, -100]
    assert batch["example_id"].tolist() == [0, 1]


def test_packing_concatenates_and_never_predicts_across_examples():
    tok = make_lm_tokenizer()
    enc = encode_lm_examples(
        [LMExample(text="the cat sat"), LMExample(text="a dog"), LMExample(text="yes")], tok, 16
    )
    rows = pack_examples(enc, 4)
    flat = [i for r in rows for i in r["input_ids"]]
    assert flat == [i for e in enc for i in e["input_ids"]]
    assert [len(r["input_ids"]) for r in rows] == [4, 4, 4]
    labels = [x for r in rows for x in r["labels"]]
    starts = [0, 5, 9]  # first token of each example: not a target
    assert all(labels[s] == -100 for s in starts)
    assert sum(x != -100 for x in labels) == len(flat) - 3
