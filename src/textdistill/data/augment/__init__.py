"""Data augmentation for distillation: TinyBERT (Jiao et al. 2019) and Tang et al. (2019) rules.

Augmented examples carry ``label=None`` and ``is_original=False``: the distillation stage labels them
with the teacher's soft labels (hard labels exist only for the originals).

Example:
    >>> from textdistill.config.augment import AugmentConfig
    >>> from textdistill.data.augment.files import augment_to_file
    >>> cfg = AugmentConfig(method="tinybert", mlm="bert-base-uncased", word_vectors="glove.840B.300d.txt")
    >>> augment_to_file("train.tsv", "train_aug.tsv", cfg)  # doctest: +SKIP
"""

from textdistill.data.augment import tang, tinybert  # noqa: F401 - importing registers the methods
