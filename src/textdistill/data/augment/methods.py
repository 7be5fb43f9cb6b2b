"""The augmentation methods by name: the registry the augmenters join and the config validates against.

Kept apart from the driver (:mod:`.core`) so that the config layer can list the methods without
importing the driver, which imports the config.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

from textdistill.registry import Registry


class Augmenter(Protocol):
    """One augmentation method over word segments."""

    def prepare(self, segments: list[list[str]]) -> None:
        """See the whole corpus once before sampling (batched model calls, corpus statistics).

        Args:
            segments: the word list of every text (both texts of a pair are separate segments).
        """

    def sample(self, segment: int, rng: random.Random) -> list[str]:
        """Draw one augmented word list of ``segments[segment]`` using only ``rng`` for randomness."""


AugmenterFactory = Callable[..., Augmenter]
"""``factory(cfg, *, tokenizer, teacher_embeddings, mlm, pos_tagger) -> Augmenter``."""

AUGMENTERS: Registry[AugmenterFactory] = Registry("augmentation method")
"""Augmentation methods by name (``none`` is built in: it returns the originals)."""


def method_names() -> list[str]:
    """Every valid ``augment.method``: ``none`` and the registered augmenters."""
    return ["none", *AUGMENTERS.names()]


__all__ = ["AUGMENTERS", "Augmenter", "AugmenterFactory", "method_names"]
