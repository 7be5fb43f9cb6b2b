"""Seeded batch samplers with exact resume, and the one place data loaders are built.

Both samplers yield *batches of indices* (``DataLoader(batch_sampler=...)``). Their order is a pure
function of ``(seed, epoch)``, so a run resumed from a checkpoint at batch ``k`` of epoch ``e`` sees exactly
the batches the uninterrupted run would have seen: ``set_epoch(e)`` and ``start_batch=k``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from textdistill.errors import ConfigError, DataError

T = TypeVar("T")
log = logging.getLogger(__name__)


def seeded_subset(items: list[T], limit: int | None, seed: int | str) -> list[T]:
    """A seeded random subset of ``limit`` items, in their original order (all when it fits)."""
    if limit is None or len(items) <= limit:
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def carve_dev(examples: list[T], fraction: float, seed: int, source: str) -> tuple[list[T], list[T]]:
    """Split off a seeded random ``fraction`` of the original examples as dev; both parts keep file order.

    Augmented examples (``is_original`` False) never go to dev (they have no label); those that follow a
    dev original in file order are its variants and are dropped, so no dev example leaks into training.

    Raises:
        ConfigError: ``fraction`` outside ``(0, 1)``. DataError: nothing would be left for training.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"data.dev_fraction must be between 0 and 1 (exclusive), got {fraction}.")
    originals = [i for i, e in enumerate(examples) if e.is_original]
    n = len(originals)
    k = max(1, round(n * fraction))
    if k >= n:
        raise DataError(
            f"{source}: cannot carve a dev set of fraction {fraction} out of {n} original training examples "
            f"and keep any for training. Fix: give a dev file (data.dev) or a smaller data.dev_fraction."
        )
    order = list(range(n))
    random.Random(f"{seed}:dev_fraction").shuffle(order)
    dev_idx = {originals[j] for j in order[:k]}
    train: list[T] = []
    dev: list[T] = []
    in_dev = False  # whether the last original seen went to dev (its variants follow it)
    for i, e in enumerate(examples):
        if e.is_original:
            in_dev = i in dev_idx
            (dev if in_dev else train).append(e)
        elif not in_dev:
            train.append(e)
    dropped = len(examples) - len(train) - len(dev)
    if dropped:
        log.info("%s: dropped %d augmented variants of dev examples from training", source, dropped)
    return train, dev


def _rng(seed: int, epoch: int) -> np.random.Generator:
    # SeedSequence needs non-negative entropy: two's complement keeps distinct int64 seeds distinct
    mask = (1 << 64) - 1
    return np.random.default_rng([seed & mask, epoch & mask])


class _EpochBatchSampler(Sampler[list[int]]):
    """Shared logic: epoch bookkeeping and the one-shot ``start_batch`` skip."""

    def __init__(self, num_examples: int, batch_size: int, seed: int, *, drop_last: bool, start_batch: int):
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}.")
        if start_batch < 0:
            raise DataError(f"start_batch must be >= 0, got {start_batch}.")
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = start_batch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next pass yields (the order depends on seed and epoch)."""
        self.epoch = epoch

    @property
    def num_batches(self) -> int:
        """Batches in a full epoch."""
        if self.drop_last:
            return self.num_examples // self.batch_size
        return -(-self.num_examples // self.batch_size)

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every batch of ``epoch`` (default: the current one), ignoring ``start_batch``."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches()
        skip = self.start_batch
        if skip > len(batches):
            raise DataError(
                f"cannot resume at batch {skip}: epoch {self.epoch} has only {len(batches)} batches. Did the "
                f"data or the batch size change since the checkpoint was written?"
            )
        # the skip applies to one pass only: the resumed epoch; later epochs are complete
        self.start_batch = 0
        return iter(batches[skip:])

    def __len__(self) -> int:
        """Batches the next pass yields (a full epoch minus a pending ``start_batch``)."""
        return max(self.num_batches - self.start_batch, 0)


class ShuffleBatchSampler(_EpochBatchSampler):
    """Plain batches: a seeded permutation per epoch (or the dataset order when ``shuffle=False``).

    Args:
        num_examples: dataset size.
        batch_size: indices per batch; the last batch may be smaller unless ``drop_last``.
        seed: base seed; the permutation of epoch ``e`` depends only on ``(seed, e)``.
        shuffle: False yields ``0..n-1`` in order (evaluation).
        drop_last: drop a final incomplete batch.
        start_batch: batches of the first pass to skip (exact resume); reset to 0 after that pass.
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        seed: int = 0,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        start_batch: int = 0,
    ):
        super().__init__(num_examples, batch_size, seed, drop_last=drop_last, start_batch=start_batch)
        self.shuffle = shuffle

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        epoch = self.epoch if epoch is None else epoch
        n, bs = self.num_examples, self.batch_size
        order = _rng(self.seed, epoch).permutation(n) if self.shuffle else np.arange(n)
        batches = [order[i : i + bs].tolist() for i in range(0, n, bs)]
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()
        return batches


class SortedBatchSampler(_EpochBatchSampler):
    """Evaluation batches of near-equal length: the indices sorted by length (ties in dataset order), cut
    into consecutive batches. Deterministic, the same every epoch; callers that need dataset order put rows
    back by example id (``evaluation.metrics.collect_logits`` does).

    Args:
        lengths: token count of every example (``EncodedDataset.lengths``).
        batch_size: indices per batch.
        drop_last: drop the final incomplete batch.
        start_batch: batches of the first pass to skip; reset to 0 after that pass.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, *, drop_last: bool = False, start_batch: int = 0
    ):
        super().__init__(len(lengths), batch_size, 0, drop_last=drop_last, start_batch=start_batch)
        self.order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        n, bs = self.num_examples, self.batch_size
        batches = [self.order[i : i + bs].tolist() for i in range(0, n, bs)]
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()
        return batches


class LengthGroupedSampler(_EpochBatchSampler):
    """Batches of similar length (less padding) in a seeded random order.

    Per epoch: a seeded permutation of all indices; split it into mega-batches of
    ``mega_batch_mult * batch_size``; sort each mega-batch by length (longest first) and cut it into
    batches; shuffle the order of all batches. Each batch therefore holds examples of similar length, while
    which examples meet, and the batch order, stay random. At most one batch (from the last mega-batch) is
    incomplete.

    Args:
        lengths: token count of every example (``EncodedDataset.lengths``).
        batch_size: indices per batch.
        seed: base seed; the order of epoch ``e`` depends only on ``(seed, e)``.
        mega_batch_mult: mega-batch size in batches (50: grouping without sorting the whole data set,
            which would make the batches deterministic in content).
        drop_last: drop the incomplete batch.
        start_batch: batches of the first pass to skip (exact resume); reset to 0 after that pass.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        *,
        mega_batch_mult: int = 50,
        drop_last: bool = False,
        start_batch: int = 0,
    ):
        super().__init__(len(lengths), batch_size, seed, drop_last=drop_last, start_batch=start_batch)
        if mega_batch_mult < 1:
            raise DataError(f"mega_batch_mult must be at least 1, got {mega_batch_mult}.")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.mega_batch_mult = mega_batch_mult

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        epoch = self.epoch if epoch is None else epoch
        rng = _rng(self.seed, epoch)
        n, bs = self.num_examples, self.batch_size
        perm = rng.permutation(n)
        mega = self.mega_batch_mult * bs
        batches: list[list[int]] = []
        for start in range(0, n, mega):
            chunk = perm[start : start + mega]
            # stable sort on the negated length: ties keep their random order
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + bs].tolist() for i in range(0, len(chunk), bs))
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()  # only the last mega-batch can end in an incomplete batch
        return [batches[i] for i in rng.permutation(len(batches))]


def _lengths(dataset: Any) -> Sequence[int] | None:
    """Token counts of the dataset's items (a ``Subset`` of a dataset with lengths included), or None."""
    lengths = getattr(dataset, "lengths", None)
    if lengths is None and isinstance(dataset, Subset):
        inner = _lengths(dataset.dataset)
        if inner is not None:
            lengths = [inner[i] for i in dataset.indices]
    return lengths


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    group_by_length: bool,
    seed: int,
    collator: Any,
    start_batch: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader over ``dataset`` with a seeded batch sampler (``loader.batch_sampler``).

    Call ``loader.batch_sampler.set_epoch(e)`` before each epoch. With ``group_by_length``, a shuffled loader
    draws length-grouped batches in a seeded random order (:class:`LengthGroupedSampler`) and an unshuffled
    one (evaluation) batches the examples sorted by length (:class:`SortedBatchSampler`: least padding;
    rows come back by example id). Without it, the dataset order.

    Args:
        dataset: an :class:`~textdistill.data.encoding.EncodedDataset` (``lengths`` is needed for grouping).
        batch_size: examples per batch.
        shuffle: seeded shuffling (training) or a fixed order (evaluation).
        group_by_length: group by length (see above).
        seed: base seed of the order.
        collator: the batch collate function (:class:`~textdistill.data.collate.Collator`).
        start_batch: batches of the first epoch to skip, for an exact resume.
        drop_last: drop an incomplete batch.
        num_workers: DataLoader worker processes (items are already tokenized: 0 is usually fastest).

    Returns:
        The loader; its ``batch_sampler`` has ``set_epoch`` and ``start_batch``.
    """
    n = len(dataset)  # type: ignore[arg-type]
    sampler: _EpochBatchSampler
    lengths = _lengths(dataset) if group_by_length else None
    if shuffle and group_by_length and lengths is None:
        raise DataError(
            f"group_by_length needs a dataset with a `lengths` property; {type(dataset).__name__} has "
            f"none. Fix: use EncodedDataset or set data.group_by_length=false."
        )
    if shuffle and group_by_length:
        sampler = LengthGroupedSampler(
            lengths, batch_size, seed, drop_last=drop_last, start_batch=start_batch
        )
    elif lengths is not None:
        sampler = SortedBatchSampler(lengths, batch_size, drop_last=drop_last, start_batch=start_batch)
    else:
        sampler = ShuffleBatchSampler(
            n, batch_size, seed, shuffle=shuffle, drop_last=drop_last, start_batch=start_batch
        )
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collator, num_workers=num_workers)
