"""Cross-tokenizer logit KD: teacher and student each read the raw text with their own tokenizer.

A student does not have to share the teacher's vocabulary: an MPNet teacher can teach a BERT-vocabulary
MiniLM, any teacher a trimmed-vocabulary student (:mod:`textdistill.models.vocab`), a BiLSTM its own
vocabulary. The training batches are the *student's* encoding; the teacher's encoding of the same examples
is kept beside it, keyed by example id (the key the teacher cache already uses), and
:class:`CrossTokenizerTeacher` hands the teacher (live or cached) the teacher-side batch of exactly the
examples in each student batch. Sentence-level terms (``kd_kl``, ``kd_soft_ce``, ``kd_mse``, ``hard_ce``)
compare per-example outputs and work unchanged; terms that match tokens, hidden states or attention maps
position by position have no meaning across two tokenizations and are refused before any weights load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from textdistill.config.schema import Config
from textdistill.errors import ConfigError, DataError
from textdistill.models.outputs import LOGITS, ModelOutputs


@dataclass
class StudentTokenization:
    """The student's tokenizer and how it relates to the teacher's.

    Attributes:
        tokenizer: what the student reads (saved with it).
        kept_ids: rows of the source embedding table the student keeps (None: no trimming).
        cross: the student's token ids differ from the teacher's (two encodings of every example).
        vocab_before: the source tokenizer's size (for messages and reports).
    """

    tokenizer: Any
    kept_ids: list[int] | None
    cross: bool
    vocab_before: int

    def apply(self, student: torch.nn.Module) -> torch.nn.Module:
        """Trim the built student's embedding table to the kept rows (a no-op without trimming)."""
        if self.kept_ids is None:
            return student
        from textdistill.models.vocab import trim_embeddings

        return trim_embeddings(student, self.kept_ids)


def same_vocab(a: Any, b: Any) -> bool:
    """Both tokenizers map every token to the same id."""
    return a.get_vocab() == b.get_vocab()


def resolve_student_tokenization(
    cfg: Config, teacher_tokenizer: Any, train_texts: list[str], *, quiet: bool = False
) -> StudentTokenization:
    """The student's tokenizer: its own (``pretrained``) or the teacher's, trimmed when ``student.vocab`` says.

    Args:
        cfg: the run config (``student.type``, ``student.path``, ``student.vocab``).
        teacher_tokenizer: the teacher's tokenizer.
        train_texts: the training text (augmentation included) whose tokens a trimmed vocabulary keeps.
    """
    from textdistill.models.teacher import load_tokenizer
    from textdistill.models.vocab import count_tokens, select_vocab, trim_tokenizer

    source = teacher_tokenizer
    if cfg.student.type == "pretrained" and cfg.student.path:
        source = load_tokenizer(cfg.student.path)
    vocab = getattr(cfg.student, "vocab", "full")
    kept = None
    tokenizer = source
    if vocab != "full":
        kept = select_vocab(source, count_tokens(source, train_texts), vocab)
        tokenizer = trim_tokenizer(source, kept)
        if not quiet:
            print(
                f"textdistill: student vocabulary trimmed to {len(kept)} of {len(source)} tokens (student.vocab={vocab})"
            )
    cross = not same_vocab(tokenizer, teacher_tokenizer)
    return StudentTokenization(tokenizer, kept, cross, len(source))


def check_sentence_level(objective: Any, student_type: str) -> None:
    """Refuse terms that need token-aligned teacher features when the tokenizations differ.

    Raises:
        ConfigError: naming every such term and the fix.
    """
    bad = [
        name
        for name, term in zip(objective.names, objective.terms)
        if term.feature_request("teacher").features() != {LOGITS}
    ]
    if bad:
        raise ConfigError(
            [
                f"objective term(s) {', '.join(bad)} match the teacher's tokens, hidden states or attention "
                f"position by position, but the student (student.type={student_type}) tokenizes the text "
                "differently (another vocabulary, or student.vocab trimming). Fix: use sentence-level terms "
                "only (kd_kl, kd_soft_ce, kd_mse, hard_ce), or a student with the teacher's tokenizer and "
                "student.vocab=full"
            ]
        )


class CrossTokenizerTeacher:
    """A teacher source for student batches whose token ids are not the teacher's.

    For each student batch it collates the teacher's encoding of the same examples (looked up by
    ``batch["example_ids"]``) and asks ``inner`` (a live teacher or a cached one, built over the teacher's
    encoding) for their outputs; only the logits are returned, in the batch's example order.

    Args:
        inner: a :class:`~textdistill.training.distiller.TeacherSource` reading teacher-tokenized batches.
        teacher_dataset: the teacher's encoding of every example the student trains on.
        collator: the teacher tokenizer's collator.
    """

    def __init__(self, inner: Any, teacher_dataset: Any, collator: Any):
        self.inner = inner
        self.dataset = teacher_dataset
        self.collator = collator
        self.position = {int(teacher_dataset[i]["example_id"]): i for i in range(len(teacher_dataset))}

    def __call__(self, batch: dict[str, torch.Tensor]) -> ModelOutputs:
        ids = batch["example_ids"].tolist()
        missing = [i for i in ids if i not in self.position]
        if missing:
            raise DataError(
                f"example ids {missing[:8]} have no teacher encoding: the student's and the teacher's datasets "
                "were built from different examples"
            )
        teacher_batch = self.collator([self.dataset[self.position[i]] for i in ids])
        device = batch["input_ids"].device
        teacher_batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in teacher_batch.items()}
        out = self.inner(teacher_batch)
        return ModelOutputs(logits=out.logits, attention_mask=batch.get("attention_mask"))


class CrossTokenizerPlan:
    """What a distillation run needs to know about the two tokenizations (the runner's one hook object).

    With ``cross`` false every method hands back what it was given: the run is the single-tokenizer run.
    With it true the teacher's encodings of the training and dev examples are built once (same example ids)
    and the teacher source is wrapped in :class:`CrossTokenizerTeacher`.
    """

    def __init__(
        self,
        tokenization: StudentTokenization,
        teacher_tokenizer: Any,
        task: Any,
        train_examples: list,
        max_length: int,
        glove: str | None = None,
    ):
        self.tokenization = tokenization
        self.glove = glove
        self.teacher_tokenizer = teacher_tokenizer
        self.task = task
        self.train_examples = train_examples
        self.max_length = max_length
        self._train: Any = None
        self._dev: Any = None
        self._collator: Any = None

    @property
    def tokenizer(self) -> Any:
        """The student's tokenizer."""
        return self.tokenization.tokenizer

    @property
    def cross(self) -> bool:
        """Teacher and student token ids differ."""
        return self.tokenization.cross

    def apply(self, student: torch.nn.Module) -> torch.nn.Module:
        """The built student with its embedding table trimmed to the kept vocabulary (if trimmed), and a
        BiLSTM's token embeddings started from GloVe (``student.glove``)."""
        student = self.tokenization.apply(student)
        if self.glove:
            from textdistill.models.glove import init_from_glove

            init_from_glove(student.embeddings, self.tokenizer, self.glove)
        return student

    def _encode(self, examples: list) -> Any:
        from textdistill.data.encoding import EncodedDataset

        t = self.task
        return EncodedDataset(
            examples, self.teacher_tokenizer, self.max_length, t.label_map, regression=t.regression
        )

    def teacher_train(self, student_ds: Any) -> Any:
        """The teacher's encoding of the training examples (``student_ds`` itself when not cross)."""
        if not self.cross:
            return student_ds
        if self._train is None:
            self._train = self._encode(self.train_examples)
        return self._train

    def teacher_dev(self, student_ds: Any) -> Any:
        """The teacher's encoding of the dev examples (``student_ds`` itself when not cross)."""
        if not self.cross:
            return student_ds
        if self._dev is None:
            self._dev = self._encode(self.task.dev)
        return self._dev

    def teacher_collator(self, collator: Any) -> Any:
        """The collator of teacher-side batches (``collator`` itself when not cross)."""
        if not self.cross:
            return collator
        if self._collator is None:
            from textdistill.data.collate import Collator

            self._collator = Collator.for_tokenizer(self.teacher_tokenizer)
        return self._collator

    def wrap_source(self, source: Any, collator: Any) -> Any:
        """The teacher source the distiller calls with student batches."""
        if not self.cross:
            return source
        return CrossTokenizerTeacher(source, self.teacher_train(None), self.teacher_collator(collator))


def example_texts(examples: list) -> list[str]:
    """Every text and text pair of ``examples``."""
    out = []
    for e in examples:
        out.append(e.text)
        if getattr(e, "text_pair", None):
            out.append(e.text_pair)
    return out


def prepare_cross_tokenizer(
    cfg: Config,
    validated: Any,
    teacher_tokenizer: Any,
    train_examples: list,
    task: Any,
    *,
    quiet: bool = False,
) -> CrossTokenizerPlan:
    """The run's :class:`CrossTokenizerPlan`; refuses token-aligned terms across tokenizations (before weights)."""
    tokenization = resolve_student_tokenization(
        cfg, teacher_tokenizer, example_texts(train_examples), quiet=quiet
    )
    if tokenization.cross:
        from textdistill.losses.objective import Objective

        check_sentence_level(
            Objective(cfg.objective, validated.teacher_info, validated.student_info), cfg.student.type
        )
        if not quiet:
            print(
                "textdistill: the student tokenizes the text itself (cross-tokenizer KD; the teacher's outputs "
                "are looked up by example id)"
            )
    glove = cfg.student.glove if cfg.student.type == "bilstm" else None
    return CrossTokenizerPlan(
        tokenization, teacher_tokenizer, task, train_examples, cfg.data.max_length, glove
    )
