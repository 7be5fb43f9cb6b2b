"""Entity-level metrics against hand-computed values (seqeval's documented examples and conventions)."""

from __future__ import annotations

import pytest
import torch

from textdistill.errors import DataError
from textdistill.evaluation.seq_metrics import entity_report, flat_metrics, word_tags


def test_seqeval_readme_example():
    gold = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    r = entity_report(gold, pred)
    # gold {MISC 3-5, PER 0-1}, pred {MISC 2-5, PER 0-1}: 1 of 2 right each way
    assert (r["precision"], r["recall"], r["f1"]) == (0.5, 0.5, 0.5)
    assert r["token_accuracy"] == pytest.approx(8 / 10)
    assert r["per_type"]["MISC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}


def test_lenient_versus_strict_iob2():
    gold, pred = [["B-NP", "I-NP", "O"]], [["I-NP", "I-NP", "O"]]
    assert entity_report(gold, pred)["f1"] == 1.0  # conlleval: the I- run is an entity
    strict = entity_report(gold, pred, mode="strict", scheme="iob2")
    assert (strict["precision"], strict["recall"], strict["f1"]) == (0.0, 0.0, 0.0)


def test_strict_bioes_hand_computed():
    gold = [["S-PER", "B-LOC", "E-LOC", "O"]]
    pred = [["S-PER", "B-LOC", "I-LOC", "O"]]
    assert entity_report(gold, pred)["f1"] == 1.0
    strict = entity_report(gold, pred, mode="strict", scheme="bioes")
    # pred keeps only PER: P = 1/1, R = 1/2, F1 = 2 * 1 * 0.5 / 1.5
    assert strict["precision"] == 1.0 and strict["recall"] == 0.5
    assert strict["f1"] == pytest.approx(2 / 3)


def test_micro_average_and_per_type_counts():
    gold = [["B-PER", "O", "B-LOC", "I-LOC"], ["B-ORG", "B-PER"]]
    pred = [["B-PER", "O", "B-LOC", "O"], ["B-ORG", "B-LOC"]]
    r = entity_report(gold, pred)
    # gold: PER, LOC(2-3), ORG, PER ; pred: PER, LOC(2-2), ORG, LOC ; correct: PER(0), ORG
    assert (r["n_gold"], r["n_pred"], r["n_correct"]) == (4, 4, 2)
    assert r["f1"] == 0.5
    assert r["per_type"]["PER"]["recall"] == 0.5 and r["per_type"]["PER"]["precision"] == 1.0
    assert r["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    flat = flat_metrics(r, 2)
    assert flat["entity_f1"] == 0.5 and flat["f1_ORG"] == 1.0 and flat["n"] == 2
    assert flat["token_accuracy"] == pytest.approx(4 / 6)


def test_no_entities_gives_zero_not_nan():
    r = entity_report([["O", "O"]], [["O", "O"]])
    assert (r["precision"], r["recall"], r["f1"], r["token_accuracy"]) == (0.0, 0.0, 0.0, 1.0)


def test_bad_input_messages():
    with pytest.raises(DataError, match="1 predicted sentences for 2 gold"):
        entity_report([["O"], ["O"]], [["O"]])
    with pytest.raises(DataError, match="sentence 0: 1 predicted tags for 2 gold"):
        entity_report([["O", "O"]], [["O"]])
    with pytest.raises(DataError, match="needs scheme iob2 or bioes"):
        entity_report([["O"]], [["O"]], mode="strict")


def test_word_tags_fill_truncated_words_with_o():
    logits = torch.tensor([[0.0, 5.0], [5.0, 0.0]])  # two words that have positions
    assert word_tags(logits, [1, 2, -1], ["O", "B-PER"]) == ["B-PER", "O", "O"]
