"""Task inference: what a labelled task is, read from its data file and its model, before any weights load.

A new user should not have to guess options. From the train file's header and labels (and the teacher's
config) this module decides, once, for every entry point (finetune, distill, evaluate, benchmark, export,
``config validate``, recipes):

- the **columns**: the text column, and for sentence-pair tasks the second text column, from common names
  (``sentence1/sentence2``, ``question/sentence``, ``premise/hypothesis``, ``text_a/text_b``,
  ``question1/question2``); the label column from ``label``, ``labels``, ``score``, ``gold_label``...;
- the **kind**: regression when every label is a number and there are many distinct values (more than
  :data:`REGRESSION_MIN_DISTINCT`) or a value that is not an integer, or when the model has one output;
  else classification;
- the **metric**, the one used for best-checkpoint selection, ``eval_results.json``, the report and
  retention: Pearson for regression; MCC for acceptability (CoLA-like); F1 of class id 1 for binary
  paraphrase / duplicate tasks (MRPC / QQP-like); macro-F1 for :data:`MANY_CLASSES` classes or more;
  accuracy otherwise;
- the **logit term** of the default objective: ``kd_kl`` for classification, ``kd_mse`` for regression;
- the **learning rate** by student kind (:func:`default_lr`).

Every inference yields to an explicit config value (``data.text_column``, ``data.text_pair_column``,
``data.label_column``, ``data.regression``, ``train.metric``, ``objective``, ``train.lr``); what was inferred
is printed in one line (:meth:`TaskSpec.describe`) at the start of every command.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from textdistill.config.schema import Config, DataConfig, LossTermConfig, TrainConfig
from textdistill.errors import ConfigError, DataError

PAIR_COLUMNS: tuple[tuple[str, str], ...] = (
    ("sentence1", "sentence2"),
    ("question", "sentence"),
    ("premise", "hypothesis"),
    ("text_a", "text_b"),
    ("question1", "question2"),
    ("sentence_a", "sentence_b"),
    ("text1", "text2"),
)
"""Column pairs recognised as a sentence-pair task, in order of preference."""
TEXT_COLUMNS = ("sentence", "text", "content", "review", "comment", "document", "tweet")
"""Column names recognised as the text of a single-sentence task, in order of preference."""
LABEL_COLUMNS = ("label", "labels", "score", "gold_label", "target", "class", "sentiment", "y")
"""Column names recognised as the label, in order of preference."""
REGRESSION_MIN_DISTINCT = 10
"""Integer-valued labels with more distinct values than this are a regression target (scores 1..5 with 5
values stay 5 classes)."""
MANY_CLASSES = 5
"""From this many classes on, the selection metric is macro-F1 (accuracy hides the small classes)."""
ACCEPTABILITY_HINTS = ("cola", "acceptab", "grammatical")
PARAPHRASE_HINTS = ("mrpc", "qqp", "paraphrase", "duplicate", "equivalen")
RANDOM_INIT_STUDENTS = ("shrink", "bilstm")
"""Student kinds whose weights start (mostly) random: they need a larger learning rate."""
LR_PRETRAINED = 5e-5
LR_RANDOM_INIT = 5e-4
_DEFAULT_OBJECTIVE = [LossTermConfig(name="kd_kl")]


@dataclass(frozen=True)
class TaskSpec:
    """What a task is, as every entry point uses it.

    Attributes:
        kind: ``classification`` or ``regression``.
        text_column: column of the text (or the first text of a pair).
        text_pair_column: column of the second text, or None for single-sentence tasks.
        label_column: column of the label.
        num_labels: classifier outputs (1 for regression; None when not known, e.g. no labels read).
        labels: class names in id order when known (classification).
        metric: the task metric (selection, eval_results, report, retention).
        logit_term: the logit loss term of the default objective (``kd_kl`` or ``kd_mse``; ``hard_ce`` for
            fine-tuning; empty outside training).
        inferred: what was inferred rather than configured (``columns``, ``label column``, ``kind``,
            ``metric``, ``logit term``, ``lr``), with the reason for the kind.
        lr: the learning rate the run uses (None outside training).
    """

    kind: str
    text_column: str
    text_pair_column: str | None
    label_column: str
    num_labels: int | None
    labels: tuple[str, ...] | None
    metric: str
    logit_term: str
    inferred: tuple[str, ...] = ()
    lr: float | None = None

    @property
    def regression(self) -> bool:
        """True for a real-valued target."""
        return self.kind == "regression"

    @property
    def pair(self) -> bool:
        """True for a sentence-pair task."""
        return self.text_pair_column is not None

    def describe(self) -> str:
        """One line for the start of every command, e.g. ``task: sentence-pair regression, columns
        sentence1 + sentence2 -> score, metric pearson, logit term kd_mse [inferred: columns, kind]``."""
        shape = "sentence-pair" if self.pair else "single-sentence"
        if self.kind == "token_classification":
            parts = ["task: token classification (a tag per word)", f"metric {self.metric}"]
            parts += [f"logit term {self.logit_term}"] if self.logit_term else []
            parts += [f"lr {self.lr:g}"] if self.lr is not None else []
            return ", ".join(parts) + (f" [inferred: {'; '.join(self.inferred)}]" if self.inferred else "")
        if self.regression:
            what = "regression"
        elif self.num_labels is not None:
            what = f"{self.num_labels}-class classification"
        else:
            what = "classification"
        cols = self.text_column + (f" + {self.text_pair_column}" if self.pair else "")
        parts = [f"task: {shape} {what}, columns {cols} -> {self.label_column}", f"metric {self.metric}"]
        if self.metric == "f1" and self.labels and len(self.labels) == 2:
            parts[-1] += f" (positive class {self.labels[1]!r})"
        if self.logit_term:  # empty outside training (evaluate, benchmark, export)
            parts.append(f"logit term {self.logit_term}")
        if self.lr is not None:
            parts.append(f"lr {self.lr:g}")
        line = ", ".join(parts)
        if self.inferred:
            line += f" [inferred: {'; '.join(self.inferred)}]"
        return line

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (run.json, eval_results.json, report.json): every field but ``lr``."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lr"}
        return {
            **d,
            "labels": None if self.labels is None else list(self.labels),
            "inferred": list(self.inferred),
        }


# -- reading the file's header and labels -------------------------------------------------------------------


def peek_columns(path: str | Path, format: str = "auto", encoding: str = "utf-8") -> list[str]:
    """The column names of a TSV/CSV file's header, or the keys of a JSONL file's first record.

    Raises:
        DataError: unreadable file or unknown format (the readers' messages).
    """
    from textdistill.data.readers import _open, detect_format

    fmt = detect_format(path, format)
    try:
        with _open(Path(path), encoding, "" if fmt == "csv" else "\n") as f:
            if fmt == "jsonl":
                for line in f:
                    if line.strip():
                        try:
                            record = json.loads(line)
                        except ValueError:
                            return []
                        return [str(k) for k in record] if isinstance(record, dict) else []
                return []
            if fmt == "csv":
                row = next(csv.reader(f), None)
                return [c.lstrip("\ufeff") for c in row or []]
            first = f.readline().rstrip("\n").rstrip("\r").lstrip("\ufeff")
            return first.split("\t") if first else []
    except UnicodeError:
        return []  # the reader reports the encoding problem with its line number


def infer_columns(
    columns: Sequence[str],
    *,
    text_column: str | None,
    text_pair_column: str | None,
    label_column: str | None,
    source: str,
    require_label: bool = True,
) -> tuple[str, str | None, str, list[str]]:
    """Choose the text, pair and label columns: configured ones win, else common names.

    A configured text column turns off pair inference (``text_pair_column`` stays as configured).

    Returns:
        ``(text, pair, label, inferred)`` where ``inferred`` names what was guessed.

    Raises:
        DataError: no text or label column can be found; lists the columns found and both settings.
    """
    present = set(columns)
    inferred: list[str] = []
    text, pair = text_column, text_pair_column
    if text is None:
        found = next(((a, b) for a, b in PAIR_COLUMNS if a in present and b in present), None)
        if found is not None and pair is None:
            text, pair = found
            inferred.append("pair columns")
        else:
            text = next((c for c in TEXT_COLUMNS if c in present), None)
            if text is None and found is not None:
                text = found[0]
            if text is None:
                raise DataError(
                    f"{source}: no text column found among the columns {', '.join(map(repr, columns))}. "
                    f"Fix: set data.text_column to the text column (and data.text_pair_column to the second "
                    f"text for a sentence-pair task); recognised names: {', '.join(TEXT_COLUMNS)} and the "
                    f"pairs {', '.join(a + '/' + b for a, b in PAIR_COLUMNS)}."
                )
            if text != "sentence":
                inferred.append("text column")
    label = label_column
    if label is None:
        label = next((c for c in LABEL_COLUMNS if c in present and c not in (text, pair)), None)
        if label is None:
            if require_label:
                raise DataError(
                    f"{source}: no label column found among the columns {', '.join(map(repr, columns))}. "
                    f"Fix: set data.label_column to the label column; recognised names: "
                    f"{', '.join(LABEL_COLUMNS)}."
                )
            label = "label"
        elif label != "label":
            inferred.append("label column")
    return text, pair, label, inferred


def _number(label: str) -> float | None:
    try:
        value = float(label)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def looks_like_regression(labels: Iterable[str]) -> tuple[bool, str]:
    """Whether string labels are a real-valued target, and why (for the task line).

    Regression: every label is a finite number, and either some value is not an integer (``2.615``) or
    there are more than :data:`REGRESSION_MIN_DISTINCT` distinct values. ``4``, ``4.0`` and ``4.000`` are
    one value.
    """
    values = []
    for label in labels:
        v = _number(str(label).strip())
        if v is None:
            return False, ""
        values.append(v)
    if not values:
        return False, ""
    distinct = len(set(values))
    if any(v != int(v) for v in values):
        return True, f"numeric labels with fractions, {distinct} distinct values"
    if distinct > REGRESSION_MIN_DISTINCT:
        return True, f"{distinct} distinct numeric labels"
    return False, ""


def choose_metric(
    *, regression: bool, num_labels: int | None, labels: Sequence[str] | None, names: Iterable[str]
) -> str:
    """The metric a paper would report for this task (see the module docstring).

    Args:
        regression: real-valued target.
        num_labels: number of classes.
        labels: class names (checked for acceptability / paraphrase names).
        names: other names that identify the task: data and model paths.
    """
    if regression:
        return "pearson"
    text = " ".join([*(str(n).lower() for n in names), *(str(x).lower() for x in labels or ())])
    if any(h in text for h in ACCEPTABILITY_HINTS):
        return "mcc"
    if num_labels == 2 and any(h in text for h in PARAPHRASE_HINTS):
        return "f1"
    if num_labels is not None and num_labels >= MANY_CLASSES:
        return "macro_f1"
    return "accuracy"


def default_lr(mode: str, student_type: str) -> float:
    """``train.lr`` when unset: 5e-4 for students that start from random weights (``shrink``, ``bilstm``),
    5e-5 for pretrained weights (fine-tuning, ``pretrained`` and ``truncate`` students)."""
    return LR_RANDOM_INIT if mode == "distill" and student_type in RANDOM_INIT_STUDENTS else LR_PRETRAINED


# -- the whole task of a run --------------------------------------------------------------------------------


def teacher_id2label(cfg: Config, mode: str) -> dict[int, str] | None:
    """The teacher's id2label from its config.json (None without a teacher or when it cannot be read:
    validation reports that)."""
    if mode != "distill" or not cfg.teacher.path:
        return None
    try:
        return model_id2label(cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code)
    except Exception:  # noqa: BLE001 - validation names the problem with the teacher
        return None


def _train_labels(d: DataConfig, text: str, pair: str | None, label: str) -> list[str]:
    from textdistill.data.readers import read_examples

    result = read_examples(
        str(d.train),
        format=d.format,
        text_column=text,
        text_pair_column=pair,
        label_column=label,
        encoding=d.encoding,
        skip_bad_rows=True,  # bad rows are the reader's business later; inference only needs labels
        regression=False,
        require_labels=False,
    )
    return [str(e.label) for e in result.examples if e.label is not None]


def infer_data(
    d: DataConfig, teacher_id2label: Mapping[int, str] | None = None
) -> tuple[DataConfig, TaskSpec]:
    """Fill the unset task settings of a data section from its train file and the teacher.

    Returns:
        The data section with ``text_column``, ``label_column`` and ``regression`` set, and the task (its
        metric and logit term still the defaults of the kind; :func:`resolve_task` adds the rest).

    Raises:
        ConfigError / DataError: contradictory settings, or no column can be found.
    """
    inferred: list[str] = []
    teacher_outputs = len(teacher_id2label) if teacher_id2label is not None else None
    if d.format == "hf" or not d.train or not Path(str(d.train)).is_file():
        # an HF dataset (or a missing file, reported by validation): no header to read
        text, pair = d.text_column or "sentence", d.text_pair_column
        label = d.label_column or "label"
        regression = d.regression if d.regression is not None else teacher_outputs == 1
        if d.regression is None and teacher_outputs == 1:
            inferred.append("kind (teacher has 1 output)")
        labels = None
    else:
        columns = peek_columns(str(d.train), d.format, d.encoding)
        text, pair, label, guessed = infer_columns(
            columns,
            text_column=d.text_column,
            text_pair_column=d.text_pair_column,
            label_column=d.label_column,
            source=str(d.train),
        )
        inferred += guessed
        regression = d.regression
        labels = None
        if regression is None:
            if d.labels is not None:
                regression = False
            elif teacher_outputs is not None:
                regression = teacher_outputs == 1
                if regression:
                    inferred.append("kind (teacher has 1 output)")
            else:
                train_labels = _train_labels(d, text, pair, label) if label in columns else []
                regression, why = looks_like_regression(train_labels)
                if regression:
                    inferred.append(f"kind ({why})")
        if not regression and d.labels is None and teacher_outputs is None and label in columns:
            from textdistill.data.labels import sort_labels

            # the classes (for the metric and the task line); the task loader reads them again, checked
            labels = tuple(sort_labels(_train_labels(d, text, pair, label))) or None
    if regression and d.labels is not None:
        raise ConfigError("data.labels is set but data.regression is true. Fix: unset one of them.")
    if d.labels is not None:
        labels = tuple(str(x) for x in d.labels)
    elif teacher_id2label is not None and not regression:
        from textdistill.data.labels import is_named

        if is_named(teacher_id2label):
            labels = tuple(teacher_id2label[i] for i in sorted(teacher_id2label))
    num_labels = 1 if regression else (len(labels) if labels else teacher_outputs)
    resolved = replace(d, text_column=text, text_pair_column=pair, label_column=label, regression=regression)
    spec = TaskSpec(
        kind="regression" if regression else "classification",
        text_column=text,
        text_pair_column=pair,
        label_column=label,
        num_labels=num_labels,
        labels=labels,
        metric="pearson" if regression else "accuracy",
        logit_term="kd_mse" if regression else "kd_kl",
        inferred=tuple(inferred),
    )
    return resolved, spec


def is_default_objective(objective: Sequence[LossTermConfig]) -> bool:
    """True when ``objective`` is the schema's default (one ``kd_kl`` term, weight 1, no params)."""
    return list(objective) == _DEFAULT_OBJECTIVE


def resolve_task(cfg: Config, mode: str = "distill") -> tuple[Config, TaskSpec]:
    """The run's config with every task inference applied, and the task.

    Reads the train file's header and labels and the teacher's ``config.json`` (no weights). Settings left
    unset are filled: data columns and ``data.regression``; ``train.metric`` (the task metric);
    ``train.lr`` (:func:`default_lr`); and a default objective (one ``kd_kl`` term) becomes the task's
    logit term (``kd_mse`` for regression; fine-tuning trains with ``hard_ce``).

    Raises:
        ConfigError / DataError: a setting contradicts the data, or no column can be found.
    """
    from textdistill.data.token_task import is_token_task

    if is_token_task(cfg.data):
        return _resolve_token_task(cfg, mode)
    d, spec = infer_data(cfg.data, teacher_id2label(cfg, mode))
    inferred = list(spec.inferred)
    names = [
        str(x) for x in (cfg.data.train, cfg.data.dev, cfg.teacher.path if mode == "distill" else None) if x
    ]
    metric = choose_metric(
        regression=spec.regression, num_labels=spec.num_labels, labels=spec.labels, names=names
    )
    train: TrainConfig = cfg.train
    if train.metric is None:
        if metric != "accuracy" and not spec.regression:
            inferred.append(f"metric {metric}")
        train = replace(train, metric=metric)
    elif train.metric != "last":
        metric = train.metric
    if metric == "f1" and spec.num_labels is not None and spec.num_labels != 2:
        raise ConfigError(
            f"train.metric: f1 is the F1 of the positive class (id 1) of a binary task, but this task has "
            f"{spec.num_labels} classes. Fix: use macro_f1."
        )
    train = _with_default_lr(train, mode, cfg.student.type, inferred)
    objective = cfg.objective
    if is_default_objective(objective):
        term = "hard_ce" if mode == "finetune" else spec.logit_term
        objective = [LossTermConfig(name=term)]
        if term == "kd_mse":
            inferred.append("logit term")
    spec = replace(spec, metric=metric, inferred=tuple(inferred), lr=train.lr)
    if mode == "finetune":
        spec = replace(spec, logit_term="hard_ce")
    return replace(cfg, data=d, train=train, objective=objective), spec


def _with_default_lr(train: TrainConfig, mode: str, student_type: str, inferred: list[str]) -> TrainConfig:
    """``train`` with the student kind's default lr when it has none (noted in ``inferred`` unless it is
    the pretrained default)."""
    if train.lr is not None:
        return train
    lr = default_lr(mode, student_type)
    if lr != LR_PRETRAINED:
        inferred.append(f"lr for a {student_type} student")
    return replace(train, lr=lr)


def _resolve_token_task(cfg: Config, mode: str) -> tuple[Config, TaskSpec]:
    """Token classification (NER, data/token_task.py reads the tags): metric entity F1 and the lr by
    student kind when unset; fine-tuning trains with ``hard_ce``, distillation keeps the per-token
    ``kd_kl`` default."""
    inferred: list[str] = []
    train: TrainConfig = cfg.train
    if train.metric is None:
        train = replace(train, metric="entity_f1")
    train = _with_default_lr(train, mode, cfg.student.type, inferred)
    objective = cfg.objective
    term = "hard_ce" if mode == "finetune" else "kd_kl"
    if mode == "finetune" and is_default_objective(objective):
        objective = [LossTermConfig(name=term)]
    spec = TaskSpec(
        kind="token_classification",
        text_column=cfg.data.tokens_key,
        text_pair_column=None,
        label_column=cfg.data.tags_key,
        num_labels=None,
        labels=None,
        metric=str(train.metric),
        logit_term=term if is_default_objective(cfg.objective) else "",
        inferred=tuple(inferred),
        lr=train.lr,
    )
    return replace(cfg, train=train, objective=objective), spec


def model_id2label(model_dir: str | Path, *, trust_remote_code: bool = False) -> dict[int, str]:
    """A saved model's ``id2label`` from its config (HF ``config.json`` or a BiLSTM's), no weights read.

    Raises:
        ModelError: no readable config in the directory.
    """
    from textdistill.models.io import BILSTM_CONFIG
    from textdistill.models.teacher import _load_config

    bilstm = Path(model_dir) / BILSTM_CONFIG
    if bilstm.is_file() and not (Path(model_dir) / "config.json").is_file():
        meta = json.loads(bilstm.read_text(encoding="utf-8"))
        raw = (meta.get("config") or {}).get("id2label") or {}
    else:
        raw = getattr(_load_config(model_dir, "model", trust_remote_code), "id2label", None) or {}
    return {int(k): str(v) for k, v in dict(raw).items()}


def eval_task(
    data_path: str | Path,
    id2label: Mapping[int, str],
    *,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    format: str = "auto",
    encoding: str = "utf-8",
    regression: bool | None = None,
    labels: Sequence[str] | None = None,
    names: Iterable[str] = (),
    metric: str | None = None,
) -> TaskSpec:
    """The task of a saved model on a labelled file (evaluate, benchmark, export).

    The kind comes from the model: one output is regression (``regression`` overrides it). Columns are
    inferred from the file's header as for training; the metric from the names (model and data paths,
    class names) and the class count, unless ``metric`` is given.

    Raises:
        DataError: no text or label column can be found.
    """
    from textdistill.data.conll import is_token_file

    if format in ("auto", "conll", "jsonl") and is_token_file(data_path, format):  # tagged words (NER)
        return TaskSpec(
            kind="token_classification",
            text_column="tokens",
            text_pair_column=None,
            label_column="tags",
            num_labels=len(id2label),
            labels=tuple(id2label[i] for i in sorted(id2label)),
            metric=metric or "entity_f1",
            logit_term="",
        )
    columns = peek_columns(data_path, format, encoding)
    text, pair, label, inferred = infer_columns(
        columns,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        source=str(data_path),
    )
    if regression is None:
        regression = len(id2label) == 1 and not labels
        if regression:
            inferred.append("kind (model has 1 output)")
    names_list = [str(data_path), *(str(n) for n in names)]
    class_names = None if regression else tuple(labels or (id2label[i] for i in sorted(id2label)))
    chosen = metric or choose_metric(
        regression=regression,
        num_labels=None if regression else len(class_names or ()),
        labels=class_names,
        names=names_list,
    )
    return TaskSpec(
        kind="regression" if regression else "classification",
        text_column=text,
        text_pair_column=pair,
        label_column=label,
        num_labels=1 if regression else len(class_names or ()),
        labels=class_names,
        metric=chosen,
        logit_term="",
        inferred=tuple(inferred),
    )
