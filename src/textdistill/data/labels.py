"""Label maps: class names <-> ids, resolved once and checked against the teacher's map.

Distillation compares the teacher's and the student's logits index by index, so id ``i`` must mean the same
class for both. :func:`resolve_label_map` picks the order (explicit config, else the teacher's named map,
else the sorted train labels) and refuses any map that disagrees with the teacher's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from textdistill.data.readers import ReadResult
from textdistill.errors import DataError

_HF_DEFAULT_NAME = re.compile(r"LABEL_(\d+)")


@dataclass(frozen=True)
class LabelMap:
    """An ordered list of class names; a name's position is its id.

    Attributes:
        names: class names in id order.
        source: where the order came from: ``config``, ``teacher`` or ``train`` (for reports).
    """

    names: tuple[str, ...]
    source: str = field(default="train", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        dup = sorted({n for n in self.names if self.names.count(n) > 1})
        if dup:
            raise DataError(f"label map {list(self.names)} repeats {dup}; every class name must be unique.")
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.names)})

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def id(self, name: str) -> int:
        """The id of class ``name`` (KeyError when unknown: labels are checked before encoding)."""
        return self._index[name]  # type: ignore[attr-defined]

    def name(self, idx: int) -> str:
        """The class name of id ``idx``."""
        return self.names[idx]

    def to_id2label(self) -> dict[int, str]:
        """``{id: name}``, the form HF model configs store."""
        return dict(enumerate(self.names))


def _ordered_names(id2label: Mapping[int, str] | Mapping[str, str]) -> list[str]:
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise DataError(
            f"teacher id2label {dict(id2label)} has non-integer ids; expected ids 0..n-1."
        ) from None
    if sorted(by_id) != list(range(len(by_id))):
        raise DataError(
            f"teacher id2label {dict(sorted(by_id.items()))} does not have the ids 0..{len(by_id) - 1}; "
            f"fix the teacher's config.json (id2label/label2id)."
        )
    return [by_id[i] for i in range(len(by_id))]


def is_int_label(label: str) -> bool:
    """True for the canonical spelling of an integer (``"0"``, ``"-1"``; not ``"01"`` or ``"1.0"``)."""
    try:
        return str(int(label)) == label
    except ValueError:
        return False


def sort_labels(labels: Iterable[str]) -> list[str]:
    """Unique labels, sorted numerically when all are integers (``"2" < "10"``), else as strings."""
    unique = set(labels)
    if unique and all(is_int_label(x) for x in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def is_named(id2label: Mapping[int, str] | Mapping[str, str]) -> bool:
    """False when every name is HF's placeholder ``LABEL_<i>`` (the checkpoint never named its classes)."""
    return not all(_HF_DEFAULT_NAME.fullmatch(str(v)) for v in id2label.values())


def _show(names: Iterable[str]) -> str:
    return str(dict(enumerate(names)))


def _mismatch(teacher: list[str], ours: list[str], ours_from: str, fix: str) -> DataError:
    return DataError(
        f"label map mismatch: the teacher's id2label is {_show(teacher)} but {ours_from} give "
        f"{_show(ours)}. The student must use the teacher's ids class by class. Fix: {fix}"
    )


def _rename_fix(teacher: list[str], ours: list[str]) -> str:
    """The fix for data labels that are not the named teacher's labels."""
    if sorted(ours) == sorted(teacher):
        return f"same names in another order; set data.labels to {teacher} (the teacher's id order)."
    if sorted(x.lower() for x in ours) == sorted(x.lower() for x in teacher):
        return f"the names differ only in case; relabel the data or set data.labels to {teacher}."
    if all(is_int_label(x) for x in ours):
        mapping = ", ".join(f"{i} -> {name}" for i, name in enumerate(teacher))
        return (
            f"if the data's integer labels are the teacher's ids, replace them by the teacher's names "
            f"({mapping}); otherwise distil from a teacher trained on these labels."
        )
    return (
        f"relabel the data with the teacher's class names {teacher}, or distil from a teacher trained on "
        f"these labels."
    )


def resolve_label_map(
    train_labels: Iterable[str],
    configured: list[str] | None,
    teacher_id2label: Mapping[int, str] | None,
) -> LabelMap:
    """Decide the class order (ids) and check it against the teacher.

    Order of precedence:

    1. ``configured`` (``data.labels``): ids follow it.
    2. The teacher's ``id2label`` when it is a named map. HF's placeholder names ``LABEL_0..`` count as
       unnamed: then integer train labels are taken as ids (they must lie in ``0..n-1``) and string labels
       are sorted.
    3. The train labels, sorted (numerically when they are all integers).

    Checks: with a teacher, the map has the teacher's number of classes, and a named teacher's names in
    its id order; every train label is in the map.

    Args:
        train_labels: the label of every training example (strings).
        configured: ``data.labels`` or None.
        teacher_id2label: the teacher config's ``id2label`` or None (no teacher yet).

    Returns:
        The label map; ``source`` says which rule chose it.

    Raises:
        DataError: a mismatch with the teacher (both maps shown) or train labels outside the map.
    """
    labels = [str(x) for x in train_labels]
    present = sort_labels(labels)
    teacher = None if teacher_id2label is None else _ordered_names(teacher_id2label)
    named = teacher is not None and is_named(teacher_id2label or {})

    if configured is not None:
        names = [str(x) for x in configured]
        if not names:
            raise DataError("data.labels is an empty list. Fix: list the class names, or leave it unset.")
        label_map = LabelMap(tuple(names), source="config")
        ours_from = "data.labels"
    elif named and teacher is not None:
        label_map = LabelMap(tuple(teacher), source="teacher")
        ours_from = "the teacher"
    elif teacher is not None and present and all(is_int_label(x) for x in present):
        # unnamed teacher + integer labels: the integers are the teacher's ids
        out_of_range = [x for x in present if not 0 <= int(x) < len(teacher)]
        if out_of_range:
            raise _mismatch(
                teacher,
                present,
                "the integer train labels (taken as ids)",
                f"integer labels must be ids 0..{len(teacher) - 1} of the teacher; found {out_of_range}. "
                f"Relabel the data, or set data.labels to the class names in the teacher's id order.",
            )
        label_map = LabelMap(tuple(str(i) for i in range(len(teacher))), source="train")
        ours_from = "the train labels"
    else:
        label_map = LabelMap(tuple(present), source="train")
        ours_from = "the sorted train labels"

    if teacher is not None and len(teacher) == 1 and configured is None:
        raise DataError(
            f"the model has one output (id2label {_show(teacher)}): it is a regression model, but the labels "
            f"are read as {len(present)} classes. Fix: set data.regression=true (--regression for benchmark "
            f"and export), or use a classifier fine-tuned on these classes."
        )
    if teacher is not None:
        ours = list(label_map.names)
        if len(ours) != len(teacher):
            raise _mismatch(
                teacher,
                ours,
                ours_from,
                f"the teacher has {len(teacher)} classes and the data {len(ours)}. Use a teacher fine-tuned "
                f"on this task, or set data.labels to {len(teacher)} class names in the teacher's id order.",
            )
        if named and ours != teacher:
            raise _mismatch(teacher, ours, ours_from, _rename_fix(teacher, ours))

    unknown = [x for x in present if x not in label_map]
    if unknown and label_map.source == "teacher" and teacher is not None:
        raise _mismatch(teacher, present, "the train labels", _rename_fix(teacher, present))
    if unknown:
        teacher_part = f" (teacher id2label {_show(teacher)})" if teacher is not None else ""
        raise DataError(
            f"train labels {unknown} are not in the label map {_show(label_map.names)} from "
            f"{ours_from}{teacher_part}. Fix: relabel the data, or set data.labels to include every class."
        )
    return label_map


def check_labels(result: ReadResult, label_map: LabelMap) -> None:
    """Raise on the first example whose label is not in ``label_map`` (``None`` labels pass).

    Raises:
        DataError: naming the file, the line, the label and the known labels.
    """
    for example, line in zip(result.examples, result.lines):
        label = example.label
        if label is not None and label not in label_map:
            unit = "row" if result.source.startswith("hf:") else "line"
            hint = ""
            if _is_number(label) and all(_is_number(n) for n in label_map.names):
                hint = (
                    " The labels are numbers: if they are scores (a regression task), set "
                    "data.regression=true."
                )
            raise DataError(
                f"{result.source}, {unit} {line}: label {label!r} is not one of the known labels "
                f"{_short_list(label_map.names)} (from {label_map.source}). Fix: correct the label, or add it "
                f"to data.labels if the model really has that class.{hint}"
            )


def _is_number(text: object) -> bool:
    try:
        float(str(text))
    except ValueError:
        return False
    return True


def _short_list(names: tuple[str, ...], limit: int = 20) -> str:
    """The class names as a list, cut after ``limit`` (a regression file read as classes has hundreds)."""
    if len(names) <= limit:
        return str(list(names))
    return "[" + ", ".join(repr(n) for n in names[:limit]) + f", ... ({len(names)} labels in all)]"
