"""General distillation: intermediate-layer distillation on an unlabelled plain-text corpus.

TinyBERT's general distillation (Jiao et al. 2020, Sec. 3.3), MiniLM / MiniLMv2's task-agnostic stage
(Wang et al. 2020, 2021), DistilBERT's cosine loss (Sanh et al. 2019) and ERNIE-Tiny's general-enhanced
distillation (Su et al. 2021) all train a student to mimic a teacher's internals on raw text, with no labels
and no task head. This module runs that with the ordinary :class:`~textdistill.training.distiller.Distiller`
loop:

* the corpus (``data.train``: a file, a directory, or several comma-separated) is streamed with
  :func:`~textdistill.data.corpus.iter_plain_text`, one sentence or document per line, and tokenized in
  chunks of :data:`CHUNK_LINES` lines inside an ``IterableDataset``; a line longer than ``data.max_length``
  tokens becomes several consecutive windows (fast tokenizers), so long documents are used whole;
* shuffling is per chunk (a seeded permutation of the chunk's windows, different every epoch): a corpus
  larger than memory cannot be shuffled globally, so shuffle the file once beforehand if its lines are
  ordered (e.g. by source);
* only intermediate-layer terms (hidden states, attention, relations) are allowed: logit terms need a task
  head and hard labels do not exist here, so they are rejected before anything loads;
* the teacher may be a pre-trained encoder without a classifier (e.g. a ``BertForMaskedLM`` or ``BertModel``
  checkpoint: general distillation, GD) or a fine-tuned classifier (general-enhanced distillation, GED). It
  is loaded through the sequence-classification class; a checkpoint without a head gets a placeholder head
  that no allowed term ever reads;
* the student is saved without a task head (its base encoder, e.g. a ``BertModel``), so a later stage that
  warm-starts from it (``student: {from: <this stage>}``) gets a freshly initialised classifier for its
  own label set.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from textdistill.config.schema import Config
from textdistill.errors import ConfigError, TextDistillError
from textdistill.models.outputs import LOGITS, ModelInfo
from textdistill.training.distiller import Callback

if TYPE_CHECKING:
    from textdistill.training.runner import RunResult

CHUNK_LINES = 2048
"""Lines tokenized per tokenizer call (and shuffled together): large enough for the fast tokenizer to
parallelise, small enough to keep memory flat whatever the corpus size."""


def corpus_paths(train: str | None) -> list[str]:
    """The corpus paths of ``data.train``: one path, or several separated by commas."""
    if not train:
        return []
    return [p.strip() for p in str(train).split(",") if p.strip()]


def logit_terms() -> list[str]:
    """Registered loss terms that read logits (or labels): unusable without a task head."""
    from textdistill.losses import LOSSES

    return [n for n in LOSSES.names() if LOGITS in LOSSES.get(n).needs]


class CorpusStream(IterableDataset):
    """Tokenized windows of a plain-text corpus, streamed; items as :class:`~textdistill.data.collate.Collator`
    expects (``input_ids``, ``token_type_ids`` when the tokenizer makes them, ``label`` = -100 (none),
    ``example_id``, ``is_original``).

    Args:
        paths: corpus files or directories (see :func:`~textdistill.data.corpus.corpus_files`).
        tokenizer: the teacher's tokenizer.
        max_length: tokens per window, special tokens included.
        seed: base seed of the per-chunk shuffles; epoch ``e``, chunk ``c`` use ``(seed, e, c)``.
        encoding: text encoding of the files.
        chunk_lines: lines tokenized (and shuffled) together.
        shuffle: permute each chunk's windows (off: corpus order, e.g. for counting).
    """

    def __init__(
        self,
        paths: list[str],
        tokenizer: Any,
        max_length: int,
        *,
        seed: int = 42,
        encoding: str = "utf-8",
        chunk_lines: int = CHUNK_LINES,
        shuffle: bool = True,
    ):
        super().__init__()
        self.paths = list(paths)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.seed = seed
        self.encoding = encoding
        self.chunk_lines = chunk_lines
        self.shuffle = shuffle
        self.epoch = 0
        self._token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        # Only fast (Rust) tokenizers return overflow windows in a batch; slow ones truncate.
        self._windows = bool(getattr(tokenizer, "is_fast", False))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle the next pass uses."""
        self.epoch = epoch

    def _chunks(self) -> Iterator[list[str]]:
        from textdistill.data.corpus import iter_plain_text

        lines = iter_plain_text(self.paths, encoding=self.encoding)
        while chunk := list(itertools.islice(lines, self.chunk_lines)):
            yield chunk

    def _encode(self, lines: list[str]) -> dict[str, list[list[int]]]:
        return self.tokenizer(
            lines,
            truncation=True,
            max_length=self.max_length,
            return_overflowing_tokens=self._windows,
            return_attention_mask=False,  # the collator derives it from the lengths
            return_token_type_ids=self._token_types,
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        example_id = 0
        for c, lines in enumerate(self._chunks()):
            enc = self._encode(lines)
            ids = enc["input_ids"]
            order = range(len(ids))
            if self.shuffle:
                order = np.random.default_rng([self.seed & (2**63 - 1), self.epoch, c]).permutation(len(ids))
            for i in order:
                item: dict[str, Any] = {
                    "input_ids": list(ids[i]),
                    "label": -100,  # no label: ignored by every loss that could read one
                    "example_id": example_id,
                    "is_original": True,
                }
                if self._token_types:
                    item["token_type_ids"] = list(enc["token_type_ids"][i])
                example_id += 1
                yield item

    def count(self) -> int:
        """Windows in one pass over the corpus (tokenizes everything once; nothing is kept)."""
        return sum(len(self._encode(lines)["input_ids"]) for lines in self._chunks())


def validate_general(cfg: Config) -> tuple[ModelInfo | None, ModelInfo | None]:
    """Check a general-distillation config without loading weights; every problem at once.

    Checks the training values, the corpus paths, the teacher's config (a classifier head is not
    required), the student options, and the objective: logit terms are rejected, the others are checked
    against the real layer counts as in :func:`~textdistill.config.validate.validate_config`.

    Returns:
        The teacher's and the student's static info.

    Raises:
        ConfigError: every problem found.
    """
    from textdistill.config.validate import train_value_problems
    from textdistill.data.corpus import corpus_files, iter_plain_text
    from textdistill.losses.objective import validate_objective
    from textdistill.models.students import student_info
    from textdistill.models.teacher import model_info

    problems = train_value_problems(cfg)
    paths = corpus_paths(cfg.data.train)
    if not paths:
        problems.append(
            "data.train: no corpus given; set it to a plain-text file or directory (one sentence or "
            "document per line; several paths separated by commas)"
        )
    else:
        try:
            corpus_files(paths)
            # An empty corpus would leave the loop waiting forever for a first batch; reading one line is cheap.
            if next(iter_plain_text(paths, encoding=cfg.data.encoding), None) is None:
                problems.append(
                    f"data.train: the corpus {cfg.data.train!r} holds no non-blank line; fill it or fix the path"
                )
        except TextDistillError as e:
            problems.append(f"data.train: {e}")
    from textdistill.config.validate import run_dir_problem

    p = run_dir_problem(cfg.output_dir, cfg.overwrite)
    if p:
        problems.append(p)
    if cfg.teacher.cache:
        problems.append(
            "teacher.cache: the corpus is streamed, so teacher outputs are computed live; set teacher.cache=false"
        )
    banned = set(logit_terms())
    for i, term in enumerate(cfg.objective):
        if getattr(term, "name", None) in banned:
            problems.append(
                f"objective.{i} ({term.name}): general distillation has no labels and no task head, so terms "
                f"on logits ({', '.join(sorted(banned))}) cannot be used; use intermediate-layer terms "
                "(e.g. embedding_mse, hidden_mse, hidden_cos, attention_mse, minilm, minilmv2) and put logit "
                "terms in a later task stage (mode: distill)"
            )
    teacher_info = s_info = None
    if not cfg.teacher.path:
        problems.append(
            "teacher.path: no teacher given; set teacher.path=DIR (a pre-trained or fine-tuned encoder)"
        )
    else:
        try:
            teacher_info = model_info(cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code)
        except TextDistillError as e:
            problems.append(f"teacher.path: {e}")
    if teacher_info is not None:
        try:  # every problem with the student options at once
            s_info = student_info(cfg.student, teacher_info, teacher_info.num_labels)
        except TextDistillError as e:
            problems.extend(getattr(e, "problems", [str(e)]))
    if s_info is not None:
        kept = [t for t in cfg.objective if getattr(t, "name", None) not in banned]
        if kept or not cfg.objective:
            problems.extend(validate_objective(kept, teacher_info, s_info))
    if problems:
        raise ConfigError(problems)
    return teacher_info, s_info


class _LastLogs(Callback):
    """Keeps the last step's logs (the final loss goes into run.json)."""

    def __init__(self) -> None:
        self.logs: dict[str, float] = {}

    def on_step_end(self, distiller: Any, logs: dict[str, float]) -> None:
        self.logs = dict(logs)


def _corpus_stream(cfg: Config, tokenizer: Any) -> tuple[CorpusStream, int | None, int]:
    """The corpus as a stream of token windows, its windows per epoch (None with ``max_steps``) and the
    optimizer steps per epoch."""
    stream = CorpusStream(
        corpus_paths(cfg.data.train),
        tokenizer,
        cfg.data.max_length,
        seed=cfg.train.seed,
        encoding=cfg.data.encoding,
    )
    if cfg.train.max_steps is not None:
        # Only epochs need the corpus size; with max_steps the stream simply restarts when it ends.
        return stream, None, cfg.train.max_steps
    windows = stream.count()
    return stream, windows, math.ceil(windows / cfg.train.batch_size)


def _start_run_dir(
    cfg: Config, started: float, paths: list[Path], windows: int | None, *, quiet: bool
) -> tuple[Path, dict[str, Any]]:
    """Create the run directory (validation refused one that is not ours to replace); run.json, config.yaml."""
    from textdistill.config.loader import dump_yaml
    from textdistill.data.corpus import corpus_files
    from textdistill.training.callbacks import write_json_atomic
    from textdistill.training.run_dir import environment, prepare_run_dir

    run_dir = prepare_run_dir(cfg)
    run_json: dict[str, Any] = {
        "status": "running",
        "mode": "general",
        "started": started,
        "environment": environment(),
        "data": {"corpus_files": [str(f) for f in corpus_files(paths)], "windows_per_epoch": windows},
    }
    write_json_atomic(run_dir / "run.json", run_json)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg), encoding="utf-8")
    if not quiet:
        print(f"textdistill general: run directory {run_dir}")
    return run_dir, run_json


def run_general(cfg: Config, *, quiet: bool = False) -> RunResult:
    """Run general distillation as configured and write a run directory (``run.json``, ``config.yaml``,
    ``metrics.jsonl``, ``model/``: the student's encoder without a task head, with the teacher's tokenizer).

    Args:
        cfg: the resolved config; ``data.train`` is the corpus, ``data.dev``/``test`` are not used.
        quiet: no progress bar or messages.

    Returns:
        A :class:`~textdistill.training.runner.RunResult` (``dev_metrics`` is empty: there is no task).

    Raises:
        ConfigError: before any weights load (see :func:`validate_general`). DataError: unreadable corpus.
    """
    from accelerate import Accelerator

    from textdistill.data.collate import Collator
    from textdistill.losses.objective import Objective
    from textdistill.models.io import count_parameters, save_model
    from textdistill.models.students import build_student
    from textdistill.models.teacher import load_teacher, load_tokenizer
    from textdistill.training.callbacks import MetricsLogger, ProgressBar, write_json_atomic
    from textdistill.training.distiller import Distiller, LiveTeacher
    from textdistill.training.precision import resolve_precision
    from textdistill.training.runner import RunResult, set_seed

    started = time.time()
    teacher_info, _ = validate_general(cfg)
    set_seed(cfg.train.seed)
    tokenizer = load_tokenizer(cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code)
    collator = Collator.for_tokenizer(tokenizer)
    stream, windows, steps_per_epoch = _corpus_stream(cfg, tokenizer)

    teacher = load_teacher(
        cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code, require_classifier=False
    )
    student = build_student(cfg.student, teacher, teacher.info.num_labels, teacher.id2label)
    objective = Objective(cfg.objective, teacher_info, student.info)

    run_dir, run_json = _start_run_dir(cfg, started, stream.paths, windows, quiet=quiet)
    model_dir = run_dir / "model"

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    precision = resolve_precision(cfg.train.precision, device)

    def loader_fn(epoch: int, start_batch: int) -> Iterable[dict[str, torch.Tensor]]:
        stream.set_epoch(epoch)
        # num_workers=0: an IterableDataset read by several workers would yield every line once per worker.
        loader = DataLoader(stream, batch_size=cfg.train.batch_size, collate_fn=collator, num_workers=0)
        return itertools.islice(loader, start_batch, None)

    teacher.to(device)
    last = _LastLogs()
    distiller = Distiller(
        student=student,
        objective=objective,
        train_cfg=cfg.train,
        train_loader_fn=loader_fn,
        steps_per_epoch=steps_per_epoch,
        teacher=LiveTeacher(teacher, objective.teacher_request(), precision, device),
        evaluator=None,
        callbacks=[
            MetricsLogger(run_dir, cfg.train.log_every),
            ProgressBar("general", enabled=cfg.train.progress and not quiet),
            last,
        ],
        accelerator=accelerator,
    )
    try:
        state = distiller.fit()
        trained = distiller.unwrapped_student()
        # The encoder only: the placeholder head was never trained, a later stage brings its own.
        encoder = getattr(trained.model, "base_model", trained.model)
        save_model(encoder, model_dir, tokenizer)
    except BaseException as e:
        run_json.update(status="failed", error=f"{type(e).__name__}: {e}", ended=time.time())
        write_json_atomic(run_dir / "run.json", run_json)
        raise
    results = {
        "final_loss": last.logs.get("loss"),
        "final_terms": {k[5:]: v for k, v in last.logs.items() if k.startswith("loss/")},
        "parameters": count_parameters(encoder),
    }
    run_json.update(
        status="finished",
        ended=time.time(),
        seconds=round(time.time() - started, 1),
        precision=precision,
        state=state.to_dict(),
        results=results,
    )
    write_json_atomic(run_dir / "run.json", run_json)
    return RunResult(run_dir=run_dir, model_dir=model_dir, dev_metrics={}, state=state.to_dict())
