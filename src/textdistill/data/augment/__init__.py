"""Data augmentation for distillation: TinyBERT (Jiao et al. 2019) and Tang et al. (2019) rules.

Augmented examples carry ``label=None`` and ``is_original=False``: the distillation stage labels them
with the teacher's soft labels (hard labels exist only for the originals).

Example:
    >>> from textdistill.data.augment import AugmentConfig, augment_to_file
    >>> cfg = AugmentConfig(method="tinybert", mlm="bert-base-uncased", word_vectors="glove.840B.300d.txt")
    >>> augment_to_file("train.tsv", "train_aug.tsv", cfg)  # doctest: +SKIP
"""

from textdistill.config.augment import AugmentConfig
from textdistill.data.augment import tang, tinybert  # noqa: F401 - importing registers the methods
from textdistill.data.augment.cli import add_augment_parser, augment_cli, main
from textdistill.data.augment.core import ExampleLike, augment_examples
from textdistill.data.augment.files import (
    AugmentResult,
    augment_to_file,
    fingerprint_components,
    sidecar_path,
)
from textdistill.data.augment.methods import AUGMENTERS, method_names
from textdistill.data.augment.mlm import MaskedLM, load_masked_lm
from textdistill.data.augment.tang import TangAugmenter, load_nltk_tagger
from textdistill.data.augment.tinybert import TinyBertAugmenter
from textdistill.data.augment.word_vectors import WordVectors, from_embeddings, load_glove
from textdistill.data.augment.words import STOP_WORDS, basic_tokenize, is_replaceable

__all__ = [
    "AUGMENTERS",
    "STOP_WORDS",
    "AugmentConfig",
    "AugmentResult",
    "ExampleLike",
    "MaskedLM",
    "TangAugmenter",
    "TinyBertAugmenter",
    "WordVectors",
    "add_augment_parser",
    "augment_cli",
    "augment_examples",
    "augment_to_file",
    "basic_tokenize",
    "fingerprint_components",
    "from_embeddings",
    "is_replaceable",
    "load_glove",
    "load_masked_lm",
    "load_nltk_tagger",
    "main",
    "method_names",
    "sidecar_path",
]
