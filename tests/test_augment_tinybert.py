"""TinyBERT augmentation: routing, candidates against an independent computation, batching, statistics."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tokenizer, tiny_bert_config
from textdistill.config.augment import AugmentConfig
from textdistill.data.augment.core import augment_examples
from textdistill.data.augment.mlm import MaskedLM, MaskedQuery, load_masked_lm
from textdistill.data.augment.tinybert import TinyBertAugmenter
from textdistill.data.augment.word_vectors import from_embeddings, load_glove
from textdistill.data.augment.words import basic_tokenize
from textdistill.data.readers import Example
from textdistill.errors import ConfigError, DataError, ModelError

# Vectors for the multi-piece words of the tiny vocab ("movies" = movie ##s, "goodness" = good ##n ##e ##s ##s,
# "actors" = actor ##s) and some neighbours; "zzzs" has no vector.
GLOVE = {
    "movies": [1.0, 0.0, 0.0],
    "films": [0.9, 0.1, 0.0],
    "pictures": [0.7, 0.3, 0.1],
    "goodness": [0.0, 1.0, 0.0],
    "kindness": [0.1, 0.9, 0.1],
    "actors": [0.2, 0.2, 1.0],
    "stars": [0.1, 0.3, 0.9],
    "plots": [0.5, 0.5, 0.5],
}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def mlm(tok) -> MaskedLM:
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_bert_config(len(tok), layers=2)).eval()
    return MaskedLM(model=model, tokenizer=tok, name="tiny")


@pytest.fixture(scope="module")
def glove_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("glove") / "vectors.txt"
    path.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in GLOVE.items()), encoding="utf-8")
    return path


def cosine_neighbours(word: str, k: int) -> list[str]:
    """Independent reference: rank GloVe words by cosine with numpy."""
    q = np.array(GLOVE[word]) / np.linalg.norm(GLOVE[word])
    sims = {w: float(np.dot(q, np.array(v) / np.linalg.norm(v))) for w, v in GLOVE.items() if w != word}
    return sorted(sims, key=lambda w: -sims[w])[:k]


def reference_mlm_options(mlm: MaskedLM, words: list[str], j: int, k: int) -> list[str]:
    """One unbatched forward over the full logits, [CLS] masked [SEP] original [SEP] as in the paper's code."""
    tok = mlm.tokenizer
    flat = [i for w in words for i in tok(w, add_special_tokens=False)["input_ids"]]
    pos = sum(len(tok(w, add_special_tokens=False)["input_ids"]) for w in words[:j])
    masked = list(flat)
    masked[pos] = tok.mask_token_id
    ids = [tok.cls_token_id, *masked, tok.sep_token_id, *flat, tok.sep_token_id]
    types = [0] * (len(masked) + 2) + [1] * (len(flat) + 1)
    with torch.no_grad():
        logits = mlm.model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types])).logits
    top = torch.argsort(logits[0, pos + 1], descending=True)[:k].tolist()
    tokens = tok.convert_ids_to_tokens(top)
    return [t for t in tokens if t and not t.startswith("##") and t not in tok.all_special_tokens]


def prepared(mlm, glove_file, sentences, **cfg_kw) -> TinyBertAugmenter:
    kw = {"max_length": 64, "word_vectors": str(glove_file), **cfg_kw}
    cfg = AugmentConfig(method="tinybert", **kw).validate(mlm_given=True)
    aug = TinyBertAugmenter(cfg, mlm=mlm)
    aug.prepare([basic_tokenize(s) for s in sentences])
    return aug


def test_routing_single_piece_to_mlm_multi_piece_to_vectors(mlm, glove_file):
    sentence = "the movies were good , goodness ! zzzs actor 42"
    aug = prepared(mlm, glove_file, [sentence], top_k=3)
    words = basic_tokenize(sentence)
    by_word = {c.word: c for c in aug.candidates[0]}
    # stop words ("the", "were"), punctuation and digits get no candidates at all
    assert set(by_word) == {"movies", "good", "goodness", "zzzs", "actor"}
    assert by_word["movies"].route == by_word["goodness"].route == by_word["zzzs"].route == "vectors"
    assert by_word["good"].route == by_word["actor"].route == "mlm"
    assert by_word["movies"].options == cosine_neighbours("movies", 3) == ["films", "pictures", "plots"]
    assert by_word["goodness"].options == cosine_neighbours("goodness", 3)
    assert by_word["zzzs"].options == ["zzzs"]  # no vector: the word keeps its text
    for w in ("good", "actor"):
        expected = reference_mlm_options(mlm, words, words.index(w), 3)
        assert by_word[w].options == (expected or [w])


def test_mlm_candidates_match_unbatched_reference_over_a_corpus(mlm, glove_file):
    sentences = ["good movie and a great plot", "the actor was dull but fun", "bad story , awful film"]
    aug = prepared(mlm, glove_file, sentences, top_k=15)
    checked = 0
    for s, sentence in enumerate(sentences):
        words = basic_tokenize(sentence)
        for cand in aug.candidates[s]:
            assert cand.route == "mlm"
            expected = reference_mlm_options(mlm, words, cand.index, 15)
            assert cand.options == (expected or [cand.word])
            assert not any(o.startswith("##") for o in cand.options)
            checked += 1
    assert checked == 11  # every non-stop alphabetic word


def test_batching_gives_the_same_result_as_one_input_per_forward(mlm, glove_file):
    rows = [
        "good movie and a great plot",
        "the actor was dull but fun",
        "bad story , awful film",
        "nice film",
    ]
    examples = [Example(i, t, None, "positive") for i, t in enumerate(rows * 3)]  # repeats are predicted once
    outs = {}
    for bs in (1, 4, 64):
        mlm.calls = 0
        cfg = AugmentConfig(
            method="tinybert", n_aug=6, batch_size=bs, max_length=64, word_vectors=str(glove_file), seed=3
        )
        outs[bs] = augment_examples(examples, cfg, tokenizer=mlm.tokenizer, mlm=mlm)
        distinct = 13  # distinct (sentence, masked word) inputs of the four sentences
        assert mlm.calls == math.ceil(distinct / bs)
    assert outs[1] == outs[4] == outs[64]
    assert sum(not e.is_original for e in outs[1]) > 0


def test_padded_batches_rank_the_whole_vocabulary_like_single_full_logit_passes(mlm):
    tok = mlm.tokenizer
    vocab = tok.get_vocab()
    words = [
        vocab[w]
        for w in [
            "good",
            "movie",
            "and",
            "a",
            "great",
            "plot",
            "but",
            "the",
            "actor",
            "was",
            "dull",
            "and",
            "boring",
        ]
    ]
    short_ids = [tok.cls_token_id, tok.mask_token_id, tok.sep_token_id, words[0], tok.sep_token_id]
    long_ids = [
        tok.cls_token_id,
        *words[:4],
        tok.mask_token_id,
        *words[5:],
        tok.sep_token_id,
        *words,
        tok.sep_token_id,
    ]
    queries = [
        MaskedQuery(tuple(short_ids), (0, 0, 0, 1, 1), 1),
        MaskedQuery(tuple(long_ids), tuple([0] * 15 + [1] * 14), 5),
    ]
    size = mlm.model.config.vocab_size
    batched = mlm.top_k(queries, size, batch_size=2)  # the short input is padded by 24 tokens
    assert batched == mlm.top_k(queries, size, batch_size=1)
    for q, ranking in zip(queries, batched):  # the full model, every position projected, no hook
        with torch.no_grad():
            logits = mlm.model(
                input_ids=torch.tensor([q.input_ids]), token_type_ids=torch.tensor([q.token_type_ids])
            ).logits
        assert ranking == logits[0, q.mask_pos].topk(size).indices.tolist()


def test_replacement_rate_is_p_t(mlm, glove_file):
    sentences = [
        "good movie and a great plot , awful film with dull actor",
        "movies of goodness and nice fun",
    ]
    p_t = 0.4
    aug = prepared(mlm, glove_file, sentences, p_t=p_t, top_k=5)
    rng = random.Random(0)
    changed = 0
    expected = 0.0
    draws = 2000
    for s in range(len(sentences)):
        for _ in range(draws):
            new = aug.sample(s, rng)
            changed += sum(new[c.index] != c.word for c in aug.candidates[s])
        # a replacement changes the word unless the drawn option is the word itself
        expected += draws * sum(
            p_t * sum(o != c.word for o in c.options) / len(c.options) for c in aug.candidates[s]
        )
    n_trials = draws * sum(len(c) for c in aug.candidates)
    sigma = math.sqrt(n_trials * 0.25)
    assert abs(changed - expected) < 4 * sigma
    # and when no option equals the word (vector route), the change rate is p_t itself
    vec = [(s, c) for s in range(len(sentences)) for c in aug.candidates[s] if c.route == "vectors"]
    assert vec and all(c.word not in c.options for _, c in vec)
    hits = sum(aug.sample(s, rng)[c.index] != c.word for _ in range(3000) for s, c in vec)
    n = 3000 * len(vec)
    assert abs(hits / n - p_t) < 4 * math.sqrt(p_t * (1 - p_t) / n)


def test_n_aug_new_examples_per_input_with_stable_ids(mlm, glove_file):
    rows = [
        "movies goodness actors movies goodness actors",
        "goodness actors movies goodness movies actors",
    ]
    examples = [Example(i, t, None, "positive") for i, t in enumerate(rows)]
    cfg = AugmentConfig(method="tinybert", n_aug=5, p_t=0.5, max_length=64, word_vectors=str(glove_file))
    out = augment_examples(examples, cfg, tokenizer=mlm.tokenizer, mlm=mlm)
    # 6 vector words with 3-4 options each: 6^... distinct variants, duplicates are (seeded) absent here
    assert [e.is_original for e in out] == [True] + [False] * 5 + [True] + [False] * 5
    offset = 2
    assert [e.id for e in out] == [0, *range(offset, offset + 5), 1, *range(offset + 5, offset + 10)]
    assert all(e.label is None for e in out if not e.is_original)
    assert [e.label for e in out if e.is_original] == ["positive", "positive"]


def test_p_t_zero_and_duplicates_are_dropped(mlm, glove_file):
    ex = [Example(0, "movies", None, "x")]  # one word with 3 options: at most 3 distinct new texts
    cfg = AugmentConfig(method="tinybert", n_aug=40, top_k=3, max_length=64, word_vectors=str(glove_file))
    out = augment_examples(ex, cfg, tokenizer=mlm.tokenizer, mlm=mlm)
    assert sorted(e.text for e in out[1:]) == ["films", "pictures", "plots"]
    cfg.p_t = 0.0
    assert augment_examples(ex, cfg, tokenizer=mlm.tokenizer, mlm=mlm) == ex  # only unchanged copies: dropped


def test_deterministic_under_seed_and_independent_of_other_examples(mlm, glove_file):
    rows = ["good movie and a great plot", "the actor was dull but fun", "bad story , awful film"]
    examples = [Example(i, t, None, "negative") for i, t in enumerate(rows)]
    cfg = AugmentConfig(method="tinybert", n_aug=8, max_length=64, word_vectors=str(glove_file), seed=7)
    a = augment_examples(examples, cfg, tokenizer=mlm.tokenizer, mlm=mlm)
    b = augment_examples(examples, cfg, tokenizer=mlm.tokenizer, mlm=mlm)
    assert a == b
    cfg.seed = 8
    c = augment_examples(examples, cfg, tokenizer=mlm.tokenizer, mlm=mlm)
    assert [e.text for e in a] != [e.text for e in c]
    cfg.seed = 7
    alone = augment_examples(examples[1:2], cfg, tokenizer=mlm.tokenizer, mlm=mlm)
    assert [e.text for e in alone] == [
        e.text for e in a if e.id == 1 or (not e.is_original and 11 <= e.id < 19)
    ]


def test_sentence_pairs_augment_both_sides(mlm, glove_file):
    ex = [Example(3, "movies and goodness", "actors of movies", "entailment")]
    cfg = AugmentConfig(method="tinybert", n_aug=20, max_length=64, word_vectors=str(glove_file))
    out = augment_examples(ex, cfg, tokenizer=mlm.tokenizer, mlm=mlm)
    new = out[1:]
    assert len(new) >= 10 and all(e.text_pair is not None and e.label is None for e in new)
    assert len({(e.text, e.text_pair) for e in new}) == len(new)
    assert ("movies and goodness", "actors of movies") not in {(e.text, e.text_pair) for e in new}
    allowed_a = [
        {"movies", *cosine_neighbours("movies", 15)},
        {"and"},
        {"goodness", *cosine_neighbours("goodness", 15)},
    ]
    allowed_b = [
        {"actors", *cosine_neighbours("actors", 15)},
        {"of"},
        {"movies", *cosine_neighbours("movies", 15)},
    ]
    for e in new:
        assert all(w in ok for w, ok in zip(e.text.split(), allowed_a, strict=True))
        assert all(w in ok for w, ok in zip(e.text_pair.split(), allowed_b, strict=True))
    # each side varies on its own: some pairs change the first text only, some the second only
    assert any(e.text == "movies and goodness" for e in new) and any(
        e.text_pair == "actors of movies" for e in new
    )
    assert any(e.text != "movies and goodness" and e.text_pair != "actors of movies" for e in new)


def test_words_past_max_length_keep_their_text(mlm, glove_file):
    sentence = "good movie great plot fun film nice story"  # 8 single-piece words: mask positions 1..8
    aug = prepared(mlm, glove_file, [sentence], max_length=8)
    assert [c.route for c in aug.candidates[0]] == ["mlm"] * 7 + ["truncated"]
    assert aug.candidates[0][-1].options == ["story"]
    assert [c.route for c in prepared(mlm, glove_file, [sentence]).candidates[0]] == ["mlm"] * 8


def test_teacher_embedding_substitute_matches_mean_of_pieces_cosine(tok):
    torch.manual_seed(1)
    emb = torch.randn(len(tok), 8)
    vectors = from_embeddings(emb, tok)
    vocab = tok.get_vocab()
    assert "good" in vectors.words and "##s" not in vectors.words and "[CLS]" not in vectors.words
    assert "." not in vectors.words
    got = vectors.nearest(["movies"], 4)["movies"]
    pieces = tok("movies", add_special_tokens=False)["input_ids"]
    q = emb[pieces].mean(0).numpy()
    words = [w for w in vectors.words if w != "movies"]
    rows = np.stack([emb[vocab[w]].numpy() for w in words])
    sims = rows @ q / (np.linalg.norm(rows, axis=1) * np.linalg.norm(q))
    assert got == [words[i] for i in np.argsort(-sims)[:4]]


def test_teacher_embeddings_are_used_when_no_glove_file(mlm, tok):
    emb = torch.zeros(len(tok), 3)
    vocab = tok.get_vocab()
    emb[vocab["film"]] = torch.tensor([0.5, 0.5, 0.0])  # "movies" = movie + ##s: closest to "movie"
    emb[vocab["movie"]] = torch.tensor([1.0, 0.1, 0.0])
    emb[vocab["##s"]] = torch.tensor([0.9, 0.0, 0.1])
    emb[vocab["story"]] = torch.tensor([0.0, 1.0, 0.0])
    cfg = AugmentConfig(method="tinybert", top_k=1, max_length=64).validate(mlm_given=True)
    aug = TinyBertAugmenter(cfg, mlm=mlm, tokenizer=tok, teacher_embeddings=emb)
    aug.prepare([["movies"]])
    assert aug.candidates[0][0].options == ["movie"]  # nearest whole word of mean(movie, ##s)


def test_glove_reader_skips_header_and_rejects_bad_lines(tmp_path):
    good = tmp_path / "w2v.txt"
    good.write_text("3 2\nfilm 1 0\n<unk> 0.5 0.5\nmovie 0.9 0.1\nzero 0 0\n", encoding="utf-8")
    vec = load_glove(good)
    assert vec.words == ["film", "movie"]
    assert torch.allclose(vec.matrix.norm(dim=1), torch.ones(2))
    assert load_glove(good, max_words=1).words == ["film"]
    bad = tmp_path / "bad.txt"
    bad.write_text("film 1 0\nmovie 0.9 x\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.txt, line 2: non-numeric"):
        load_glove(bad)
    short = tmp_path / "short.txt"
    short.write_text("film 1 0\nmovie 0.9\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2: 1 values, but the first vector has 2"):
        load_glove(short)
    with pytest.raises(DataError, match="file not found"):
        load_glove(tmp_path / "missing.txt")


def test_config_without_mlm_is_rejected():
    with pytest.raises(ConfigError, match=r"augment.mlm is not set but augment.method=tinybert"):
        augment_examples([Example(0, "good movie")], AugmentConfig(method="tinybert"), tokenizer=None)


def test_checkpoint_without_mlm_head_is_rejected_unless_allowed(tmp_path, tok):
    from transformers import BertForMaskedLM, BertModel

    d = tmp_path / "encoder"
    BertModel(tiny_bert_config(len(tok), layers=1)).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    with pytest.raises(ModelError, match=r"no trained MLM head: cls\.predictions\.bias"):
        load_masked_lm(str(d))
    loaded = load_masked_lm(str(d), allow_missing_head=True)
    assert loaded.missing_head and all(k.startswith("cls.") for k in loaded.missing_head)
    full = tmp_path / "mlm"
    BertForMaskedLM(tiny_bert_config(len(tok), layers=1)).save_pretrained(str(full))
    tok.save_pretrained(str(full))
    assert load_masked_lm(str(full)).missing_head == []
    with pytest.raises(ModelError, match="no such directory"):
        load_masked_lm(str(tmp_path / "nope"))
