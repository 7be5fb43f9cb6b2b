"""EncodedDataset (tokenize once) and Collator (dynamic padding, masks, dtypes)."""

from __future__ import annotations

import math
import types

import pytest
import torch

from textdistill.data.collate import Collator
from textdistill.data.encoding import IGNORE_INDEX, EncodedDataset
from textdistill.data.labels import LabelMap
from textdistill.data.readers import Example
from textdistill.errors import DataError

LM = LabelMap(("negative", "positive"))


def examples() -> list[Example]:
    texts = ["good", "the movie was very boring and dull", "not bad but not great", "fun"]
    labels = ["positive", "negative", None, "positive"]
    return [Example(i, t, None, lab, is_original=i != 2) for i, (t, lab) in enumerate(zip(texts, labels))]


def test_encoded_dataset_matches_per_example_tokenization(tiny_tokenizer):
    exs = examples()
    ds = EncodedDataset(exs, tiny_tokenizer, max_length=6, label_map=LM, batch_size=3)  # 2 tokenizer calls
    assert len(ds) == 4
    for i, ex in enumerate(exs):
        ref = tiny_tokenizer(ex.text, truncation=True, max_length=6)
        item = ds[i]
        assert item["input_ids"] == ref["input_ids"]
        assert item["token_type_ids"] == ref["token_type_ids"]
        assert item["example_id"] == ex.id and item["is_original"] == ex.is_original
    assert [ds[i]["label"] for i in range(4)] == [1, 0, IGNORE_INDEX, 1]
    assert ds.lengths == [
        len(tiny_tokenizer(e.text, truncation=True, max_length=6)["input_ids"]) for e in exs
    ]
    assert max(ds.lengths) == 6  # truncated
    assert (
        ds[0]["input_ids"][0] == tiny_tokenizer.cls_token_id
        and ds[0]["input_ids"][-1] == tiny_tokenizer.sep_token_id
    )


def test_pairs_get_segment_ids(tiny_tokenizer):
    exs = [Example(0, "good film", "the plot", "positive"), Example(1, "bad", "boring", "negative")]
    ds = EncodedDataset(exs, tiny_tokenizer, max_length=16, label_map=LM)
    ref = tiny_tokenizer("good film", "the plot")
    assert ds[0]["input_ids"] == ref["input_ids"]
    assert ds[0]["token_type_ids"] == ref["token_type_ids"] and 1 in ds[0]["token_type_ids"]


def test_regression_labels_and_missing_label_nan(tiny_tokenizer):
    exs = [Example(0, "good", None, 2.5), Example(1, "bad", None, None)]
    ds = EncodedDataset(exs, tiny_tokenizer, max_length=8, regression=True)
    assert ds[0]["label"] == 2.5 and math.isnan(ds[1]["label"])


def test_encoding_errors(tiny_tokenizer):
    with pytest.raises(DataError, match="1 of 2 examples have a text pair"):
        EncodedDataset(
            [Example(0, "a", "b", "positive"), Example(1, "a", None, "positive")], tiny_tokenizer, 8, LM
        )
    with pytest.raises(DataError, match=r"example 7: label 'neutral' is not one of the known labels"):
        EncodedDataset([Example(7, "a", None, "neutral")], tiny_tokenizer, 8, LM)
    with pytest.raises(DataError, match="no label map was given"):
        EncodedDataset([Example(0, "a", None, "positive")], tiny_tokenizer, 8)


def test_collator_pads_to_longest_with_mask_and_dtypes():
    items = [
        {
            "input_ids": [2, 5, 3],
            "token_type_ids": [0, 0, 0],
            "label": 1,
            "example_id": 10,
            "is_original": True,
        },
        {
            "input_ids": [2, 5, 6, 7, 3],
            "token_type_ids": [0, 0, 0, 1, 1],
            "label": 0,
            "example_id": 4,
            "is_original": False,
        },
        {
            "input_ids": [2, 3],
            "token_type_ids": [0, 0],
            "label": IGNORE_INDEX,
            "example_id": 7,
            "is_original": True,
        },
    ]
    batch = Collator(pad_token_id=9)(items)
    assert torch.equal(batch["input_ids"], torch.tensor([[2, 5, 3, 9, 9], [2, 5, 6, 7, 3], [2, 3, 9, 9, 9]]))
    assert torch.equal(
        batch["attention_mask"], torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    )
    assert torch.equal(
        batch["token_type_ids"], torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0]])
    )
    assert torch.equal(batch["labels"], torch.tensor([1, 0, -100]))
    assert torch.equal(batch["example_ids"], torch.tensor([10, 4, 7]))
    assert torch.equal(batch["is_original"], torch.tensor([True, False, True]))
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long
    assert batch["labels"].dtype == torch.long and batch["example_ids"].dtype == torch.long
    assert batch["is_original"].dtype == torch.bool


def test_collator_regression_labels_are_float_and_pad_multiple():
    items = [
        {"input_ids": [1, 2, 3], "label": 0.5, "example_id": 0, "is_original": True},
        {"input_ids": [1], "label": 2.0, "example_id": 1, "is_original": True},
    ]
    batch = Collator(pad_token_id=0, pad_to_multiple_of=4)(items)
    assert "token_type_ids" not in batch
    assert batch["input_ids"].shape == (2, 4) and batch["attention_mask"].sum().item() == 4
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [0.5, 2.0]


def test_collate_real_dataset_and_for_tokenizer(tiny_tokenizer):
    ds = EncodedDataset(examples(), tiny_tokenizer, max_length=32, label_map=LM)
    collate = Collator.for_tokenizer(tiny_tokenizer)
    batch = collate([ds[i] for i in range(4)])
    lengths = torch.tensor(ds.lengths)
    assert batch["input_ids"].shape == (4, int(lengths.max()))
    assert torch.equal(batch["attention_mask"].sum(1), lengths)
    # every position outside the mask is padding
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tiny_tokenizer.pad_token_id).all()
    no_pad = types.SimpleNamespace(pad_token_id=None)
    with pytest.raises(DataError, match="has no padding token"):
        Collator.for_tokenizer(no_pad)


def test_tokenizer_without_token_type_ids(tiny_tokenizer):
    tiny_tokenizer.model_input_names = ["input_ids", "attention_mask"]  # like DistilBERT / RoBERTa
    ds = EncodedDataset(examples(), tiny_tokenizer, max_length=8, label_map=LM)
    assert "token_type_ids" not in ds[0]
    assert "token_type_ids" not in Collator(0)([ds[0], ds[1]])
