"""A token-classification (sequence labelling) task's data in one call: read, settle the tag scheme, label map.

The counterpart of :func:`~textdistill.data.task.load_task_data` for NER-style data. Steps: read the
train/dev/test files (:mod:`textdistill.data.conll`), detect the tag scheme on train (or take
``data.tag_scheme``), repair ill-formed tags in every split (counted; see
:func:`~textdistill.data.tags.repair_tags` for why repair rather than rejection), convert to
``data.convert_tags`` (IOB1 -> IOB2 by default), resolve the tag set against the teacher, and check every
dev/test tag against it: a tag the model cannot output is an error naming the file and line.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from textdistill.config.schema import DataConfig
from textdistill.data.conll import TokenExample, TokenReadResult, is_token_file, read_token_file
from textdistill.data.labels import LabelMap, resolve_label_map
from textdistill.data.samplers import carve_dev, seeded_subset
from textdistill.data.tags import SCHEMES, detect_scheme, entity_spans, render_tags, split_tag
from textdistill.errors import ConfigError, DataError

log = logging.getLogger(__name__)

TASKS = ("auto", "sequence_classification", "token_classification", "causal_lm")
"""Values of ``data.task``."""

ENTITY_MODES = ("lenient", "strict")
"""Values of ``data.entity_mode``."""

STRICT_SCHEMES = ("iob2", "bioes")
"""Tag schemes strict entity matching is defined for (seqeval's ``IOB2`` and ``IOBES``)."""


def strict_scheme_problem(scheme: str | None, where: str) -> str | None:
    """Why strict entity matching cannot score tags of ``scheme`` (None when it can).

    Strict matching accepts a chunk only when its tags follow the scheme exactly (``B-`` then ``I-`` in IOB2,
    ``B- I- E-`` / ``S-`` in BIOES). In IOB1 a chunk normally starts with ``I-`` and ``B-`` only separates two
    adjacent chunks of one type, and BMES is a word-segmentation scheme, so "well-formed" has no agreed
    meaning there (seqeval's strict mode has no IOB1/BMES scheme either).
    """
    if scheme in STRICT_SCHEMES:
        return None
    return (
        f"data.entity_mode=strict: strict entity matching (seqeval mode='strict') is defined for IOB2 and "
        f"BIOES tags only, but {where} {scheme} tags. Fix: data.entity_mode=lenient, or re-tag the data with "
        "data.convert_tags=iob2 (or bioes) so the model predicts a scheme strict matching is defined for."
    )


def token_config_problems(d: DataConfig) -> list[str]:
    """Problems with the token-task options of ``data`` (collected with the other config checks)."""
    problems = []
    if d.task not in TASKS:
        problems.append(f"data.task: {d.task!r} is not one of {', '.join(TASKS)}")
    if d.tag_scheme not in ("auto", *SCHEMES):
        problems.append(f"data.tag_scheme: {d.tag_scheme!r} is not one of auto, {', '.join(SCHEMES)}")
    if d.convert_tags is not None and d.convert_tags not in SCHEMES:
        problems.append(f"data.convert_tags: {d.convert_tags!r} is not one of {', '.join(SCHEMES)} (or null)")
    if d.entity_mode not in ENTITY_MODES:
        problems.append(f"data.entity_mode: {d.entity_mode!r} is not one of {', '.join(ENTITY_MODES)}")
    elif d.entity_mode == "strict":
        # the scheme the model is trained on, where the options alone tell it (auto is checked after reading)
        known = d.convert_tags or (None if d.tag_scheme == "auto" else d.tag_scheme)
        known = "iob2" if known == "iob1" and d.convert_tags is None else known
        problem = strict_scheme_problem(known, "the model would be trained on") if known else None
        if problem:
            problems.append(problem)
    if d.task == "token_classification" and d.regression:
        problems.append("data.regression is true but data.task is token_classification; unset one of them")
    if d.task == "token_classification" and d.format in ("tsv", "csv", "hf"):
        problems.append(
            f"data.format={d.format} cannot hold token-level data; use conll (column files) or jsonl "
            "(tokens/tags lists), or auto"
        )
    return problems


def is_token_task(d: DataConfig) -> bool:
    """Whether ``data`` describes a token-classification task (``data.task``, else the train file's format)."""
    if d.task != "auto":
        # an unknown value goes to the token loader, whose option check names it and the choices
        return d.task not in ("sequence_classification", "causal_lm")
    if not d.train or d.format in ("tsv", "csv", "hf"):
        return False
    return is_token_file(d.train, d.format, d.tokens_key)


def _read(d: DataConfig, path: str, require_tags: bool) -> TokenReadResult:
    return read_token_file(
        path,
        format="auto" if d.format == "auto" else d.format,
        tag_column=d.tag_column,
        tokens_key=d.tokens_key,
        tags_key=d.tags_key,
        encoding=d.encoding,
        skip_bad_rows=d.skip_bad_rows,
        require_tags=require_tags,
    )


def normalise_tags(result: TokenReadResult, target: str, *, apply: bool = True) -> int:
    """Re-render every sentence's tags in ``target`` (repairing ill-formed ones); returns the tags changed.

    With ``apply=False`` the tags stay as they are and the count is of those that would change: in the data's
    own scheme, the ill-formed ones (an I- after O in IOB2...), counted for the report.
    """
    changed = 0
    for example in result.examples:
        if example.tags is None:
            continue
        fixed = render_tags(entity_spans(example.tags), len(example.tags), target)
        changed += sum(a != b for a, b in zip(example.tags, fixed))
        if apply:
            example.tags = fixed
    return changed


def check_tags(result: TokenReadResult, label_map: LabelMap) -> None:
    """Raise on the first tag the label map does not know (file and sentence line named).

    Raises:
        DataError: the tag, where it is, the known tags and the fix.
    """
    for example, line in zip(result.examples, result.lines):
        for i, tag in enumerate(example.tags or []):
            if tag not in label_map:
                raise DataError(
                    f"{result.source}, sentence starting at line {line}: tag {tag!r} (token {i}, "
                    f"{example.tokens[i]!r}) is not one of the model's tags {list(label_map.names)} (from "
                    f"{label_map.source}). The model can never predict it. Fix: correct the tag, or train with "
                    f"a tag set that has it (data.labels)."
                )


def load_token_task(
    d: DataConfig, *, teacher_id2label: dict[int, str] | None = None, seed: int = 42
) -> TokenTaskData:
    """Read a token-classification task as configured.

    ``train/dev/test`` hold :class:`~textdistill.data.conll.TokenExample` s, ``label_map`` the tags and
    ``tag_scheme`` the scheme the examples are tagged in.

    Raises:
        ConfigError: bad token options, or no dev set.
        DataError: whatever the readers reject, or a dev/test tag outside the tag set.
    """
    problems = token_config_problems(d)
    if not d.train:
        problems.append("data.train is not set. Fix: set it to the training file.")
    if d.dev and d.dev_fraction is not None:
        problems.append("data.dev and data.dev_fraction are both set. Fix: set only one.")
    if problems:
        raise ConfigError(problems)
    train_r = _read(d, str(d.train), True)
    dev_r = _read(d, d.dev, True) if d.dev else None
    test_r = _read(d, d.test, False) if d.test else None
    splits = [("train", train_r), ("dev", dev_r), ("test", test_r)]

    scheme = (
        d.tag_scheme if d.tag_scheme != "auto" else detect_scheme([e.tags or [] for e in train_r.examples])
    )
    target = d.convert_tags or ("iob2" if scheme == "iob1" else scheme)
    if d.entity_mode == "strict" and (problem := strict_scheme_problem(target, f"{d.train} gives the model")):
        raise ConfigError(problem)
    stats: dict[str, Any] = {"task": "token_classification", "tag_scheme": scheme, "trained_scheme": target}
    for name, result in splits:
        if result is None:
            continue
        repaired = normalise_tags(result, scheme, apply=False)
        changed = normalise_tags(result, target)
        stats[name] = {
            "source": result.source,
            "sentences": len(result.examples),
            "tokens": sum(len(e.tokens) for e in result.examples),
            "skipped": result.skipped,
            "skipped_reasons": dict(result.skipped_reasons),
            "repaired_tags": repaired,
            "converted_tags": changed - repaired if target != scheme else 0,
        }
        if repaired:
            log.warning(
                "%s: %d tags were ill-formed %s (e.g. I- after O) and were repaired the way conlleval reads "
                "them (the entity starts there)",
                result.source,
                repaired,
                scheme,
            )
    train_tags = [t for e in train_r.examples for t in (e.tags or [])]
    label_map = resolve_label_map(train_tags, d.labels, teacher_id2label)
    for _, result in splits[1:]:
        if result is not None:
            check_tags(result, label_map)
    types = Counter(split_tag(t)[1] for t in train_tags if t != "O" and split_tag(t)[0] in "BS")
    stats["train"]["entities"] = dict(sorted(types.items()))

    train = list(train_r.examples)
    dev = list(dev_r.examples) if dev_r is not None else []
    if d.dev_fraction is not None:
        train, dev = carve_dev(train, d.dev_fraction, seed, str(d.train))
    test = list(test_r.examples) if test_r is not None else []
    train = seeded_subset(train, d.max_train_examples, f"{seed}:train")
    dev = seeded_subset(dev, d.max_eval_examples, f"{seed}:dev")
    test = seeded_subset(test, d.max_eval_examples, f"{seed}:test")
    for name, part in (("train", train), ("dev", dev), ("test", test)):
        if name in stats:
            stats[name]["examples"] = len(part)
    return TokenTaskData(train, dev, test, label_map, stats, tag_scheme=target, entity_mode=d.entity_mode)


@dataclass
class TokenTaskData:
    """A token task's sentences, ready to encode (the attributes of
    :class:`~textdistill.data.task.TaskData`, with ``token_task`` True and ``label_map`` the tags).

    It is its own class rather than a ``TaskData`` so that ``data.task`` (which dispatches here) and this
    module do not import each other.
    """

    train: list[TokenExample]
    dev: list[TokenExample]
    test: list[TokenExample]
    label_map: LabelMap
    stats: dict[str, Any] = field(default_factory=dict)
    tag_scheme: str | None = None
    entity_mode: str = "lenient"
    regression: bool = False
    token_task: bool = True

    @property
    def num_labels(self) -> int:
        """Output width of the tagger: the number of tags."""
        return len(self.label_map)
