"""Batch samplers: determinism, coverage, length grouping, exact resume with start_batch, make_loader."""

from __future__ import annotations

import random

import pytest

from textdistill.data.collate import Collator
from textdistill.data.encoding import EncodedDataset
from textdistill.data.readers import Example
from textdistill.data.samplers import LengthGroupedSampler, ShuffleBatchSampler, make_loader
from textdistill.errors import DataError


def lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 100) for _ in range(n)]


def padding(batches: list[list[int]], lens: list[int]) -> int:
    """Pad tokens when every batch is padded to its longest member."""
    return sum(max(lens[i] for i in b) * len(b) - sum(lens[i] for i in b) for b in batches)


def samplers(n: int, bs: int, seed: int, **kw):
    return [ShuffleBatchSampler(n, bs, seed, **kw), LengthGroupedSampler(lengths(n), bs, seed, **kw)]


@pytest.mark.parametrize("kind", [0, 1])
def test_every_index_once_per_epoch_and_batch_sizes(kind):
    s = samplers(203, 8, seed=3)[kind]
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert sorted(i for b in batches for i in b) == list(range(203))
        assert sorted(len(b) for b in batches) == [3] + [8] * 25  # one incomplete batch
        assert len(s) == s.num_batches == 26


@pytest.mark.parametrize("kind", [0, 1])
def test_drop_last(kind):
    s = samplers(203, 8, seed=3, drop_last=True)[kind]
    batches = list(s)
    assert len(batches) == len(s) == 25 and all(len(b) == 8 for b in batches)
    assert len({i for b in batches for i in b}) == 200


@pytest.mark.parametrize("kind", [0, 1])
def test_order_is_a_function_of_seed_and_epoch(kind):
    a, b = samplers(120, 4, seed=7)[kind], samplers(120, 4, seed=7)[kind]
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again repeats the epoch
    b.set_epoch(3)
    assert list(a) != list(b)
    c = samplers(120, 4, seed=8)[kind]
    c.set_epoch(2)
    assert list(a) != list(c)
    assert a.epoch_batches(3) == list(b)


def test_unshuffled_is_dataset_order():
    s = ShuffleBatchSampler(10, 4, seed=1, shuffle=False)
    s.set_epoch(5)
    assert list(s) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_grouping_sorts_within_a_mega_batch():
    # with one mega-batch covering everything, batches are consecutive slices of the length-sorted order
    lens = lengths(100, seed=5)
    s = LengthGroupedSampler(lens, 10, seed=0, mega_batch_mult=50)
    batches = list(s)
    by_longest = sorted(batches, key=lambda b: -max(lens[i] for i in b))
    assert [lens[i] for b in by_longest for i in b] == sorted(lens, reverse=True)
    # ... while the order of the batches is shuffled
    assert batches != by_longest


def test_grouping_reduces_padding_vs_random_batches():
    lens = lengths(2000, seed=1)
    grouped = LengthGroupedSampler(lens, 16, seed=0)
    plain = ShuffleBatchSampler(2000, 16, seed=0)
    grouped_pad, plain_pad = padding(list(grouped), lens), padding(list(plain), lens)
    assert grouped_pad < plain_pad / 4, (grouped_pad, plain_pad)


@pytest.mark.parametrize("kind", [0, 1])
def test_start_batch_yields_the_tail_of_the_epoch_then_full_epochs(kind):
    full = samplers(150, 8, seed=11)[kind]
    full.set_epoch(4)
    epoch4 = list(full)
    full.set_epoch(5)
    epoch5 = list(full)

    resumed = samplers(150, 8, seed=11, start_batch=7)[kind]
    resumed.set_epoch(4)
    assert len(resumed) == len(epoch4) - 7
    assert list(resumed) == epoch4[7:]
    resumed.set_epoch(5)
    assert len(resumed) == len(epoch5)
    assert list(resumed) == epoch5  # the skip applies to the resumed epoch only


def test_start_batch_beyond_the_epoch_is_an_error():
    s = ShuffleBatchSampler(10, 4, seed=0, start_batch=4)
    with pytest.raises(DataError, match="cannot resume at batch 4: epoch 0 has only 3 batches"):
        list(s)
    with pytest.raises(DataError, match="batch size must be at least 1, got 0"):
        ShuffleBatchSampler(10, 0)


def _dataset(tok, n: int = 40) -> EncodedDataset:
    rng = random.Random(0)
    words = ["good", "bad", "movie", "plot", "very", "fun", "dull", "the"]
    exs = [Example(i, " ".join(rng.choices(words, k=rng.randint(1, 12))), None, None) for i in range(n)]
    return EncodedDataset(exs, tok, max_length=16)


@pytest.mark.parametrize("group", [False, True])
def test_make_loader_follows_the_sampler_and_resumes(tiny_tokenizer, group):
    ds = _dataset(tiny_tokenizer)
    collate = Collator.for_tokenizer(tiny_tokenizer)
    loader = make_loader(ds, 6, shuffle=True, group_by_length=group, seed=2, collator=collate)
    assert isinstance(loader.batch_sampler, LengthGroupedSampler if group else ShuffleBatchSampler)
    loader.batch_sampler.set_epoch(1)
    ids = [b["example_ids"].tolist() for b in loader]
    assert ids == loader.batch_sampler.epoch_batches(1)  # example ids == dataset indices here

    resumed = make_loader(ds, 6, shuffle=True, group_by_length=group, seed=2, collator=collate, start_batch=3)
    resumed.batch_sampler.set_epoch(1)
    assert len(resumed) == len(ids) - 3
    assert [b["example_ids"].tolist() for b in resumed] == ids[3:]


def test_make_loader_eval_keeps_order_or_sorts_by_length(tiny_tokenizer):
    from torch.utils.data import Subset

    ds = _dataset(tiny_tokenizer, n=10)
    loader = make_loader(ds, 4, shuffle=False, group_by_length=False, seed=0, collator=Collator(0))
    assert [b["example_ids"].tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]

    # grouped evaluation: every index once, in batches of ascending length (ties in dataset order)
    lengths = ds.lengths
    expected = sorted(range(10), key=lambda i: (lengths[i], i))
    sorted_loader = make_loader(ds, 4, shuffle=False, group_by_length=True, seed=0, collator=Collator(0))
    got = [b["example_ids"].tolist() for b in sorted_loader]
    assert got == [expected[0:4], expected[4:8], expected[8:10]]
    assert len({lengths[i] for i in range(10)}) > 1  # the test data has lengths to sort
    # a Subset (one process's shard in distributed evaluation) is sorted through its dataset's lengths
    shard = Subset(ds, [9, 3, 5, 0])
    order = sorted(range(4), key=lambda j: (lengths[shard.indices[j]], j))
    shard_loader = make_loader(shard, 2, shuffle=False, group_by_length=True, seed=0, collator=Collator(0))
    assert [b["example_ids"].tolist() for b in shard_loader] == [
        [shard.indices[j] for j in order[0:2]],
        [shard.indices[j] for j in order[2:4]],
    ]
    with pytest.raises(DataError, match="group_by_length needs a dataset with a `lengths` property"):
        make_loader(list(range(5)), 2, shuffle=True, group_by_length=True, seed=0, collator=Collator(0))
