"""The augmentation settings live in the main config schema (``textdistill.config.augment``); re-exported here."""

from textdistill.config.augment import AugmentConfig

__all__ = ["AugmentConfig"]
