"""Student builders, chosen by ``student.type``: pretrained | truncate | shrink | bilstm.

Each builder answers three questions, in the order a run asks them:

* ``validate(cfg, teacher_info) -> list[str]``: every problem with the student options, config-only;
* ``info(cfg, teacher_info, num_labels) -> ModelInfo``: the student's shape and capabilities, config-only,
  so layer maps and loss terms are checked before any weights load;
* ``build(cfg, teacher, num_labels, id2label) -> nn.Module``: the student itself (``HFClassifier`` or
  ``BiLSTMClassifier``), in train mode with gradients on.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from textdistill.config.schema import StudentConfig
from textdistill.errors import ConfigError, ModelError
from textdistill.models.bilstm import POOLINGS, BiLSTMClassifier, BiLSTMConfig, bilstm_info
from textdistill.models.hf import HFClassifier
from textdistill.models.hooks import find_layer_list
from textdistill.models.outputs import ModelInfo
from textdistill.registry import Registry


class StudentBuilder(Protocol):
    """What every registered student type provides (``info`` and ``build`` are called with options that
    ``validate`` accepted: :func:`student_info` and :func:`build_student` check first)."""

    def validate(self, cfg: StudentConfig, teacher_info: ModelInfo) -> list[str]:
        """Every problem with ``cfg`` for this teacher, one line each (empty: valid)."""
        ...

    def info(self, cfg: StudentConfig, teacher_info: ModelInfo, num_labels: int) -> ModelInfo:
        """The student's :class:`ModelInfo` from configs only."""
        ...

    def build(
        self, cfg: StudentConfig, teacher: HFClassifier, num_labels: int, id2label: dict[int, str] | None
    ) -> nn.Module:
        """Create the student."""
        ...


STUDENTS: Registry[StudentBuilder] = Registry("student type")

# Options that only some builders read: setting them for another type is almost surely a mistake.
_TYPE_SPECIFIC = {
    "path": ("pretrained",),
    "num_layers": ("truncate", "shrink"),
    "layers": ("truncate",),
    "hidden_size": ("shrink",),
    "num_heads": ("shrink",),
    "intermediate_size": ("shrink",),
    "glove": ("bilstm",),
}


def _unused_options(cfg: StudentConfig) -> list[str]:
    problems = []
    for key, types in _TYPE_SPECIFIC.items():
        value = getattr(cfg, key)
        if value is not None and cfg.type not in types:
            problems.append(
                f"student.{key}={value!r} has no effect with student.type={cfg.type!r} (used by: "
                f"{', '.join(types)}); remove it or change student.type"
            )
    return problems


def _positive(cfg: StudentConfig, key: str) -> list[str]:
    value = getattr(cfg, key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        return [f"student.{key} must be a positive integer, got {value!r}"]
    return []


def _labels(num_labels: int, id2label: dict[int, str] | None) -> dict[int, str]:
    if id2label is None:
        return {i: f"LABEL_{i}" for i in range(num_labels)}
    if sorted(id2label) != list(range(num_labels)):
        raise ModelError(f"id2label must map ids 0..{num_labels - 1} to names, got ids {sorted(id2label)}")
    return {int(k): str(v) for k, v in id2label.items()}


def _set_labels(config: object, num_labels: int, id2label: dict[int, str] | None) -> None:
    labels = _labels(num_labels, id2label)
    config.id2label = labels
    config.label2id = {v: k for k, v in labels.items()}


def evenly_spread_layers(teacher_layers: int, num_layers: int) -> list[int]:
    """``num_layers`` 0-based teacher layers spread evenly, the last layer always included.

    Layer ``i`` of the student copies teacher layer ``floor((i + 1) * T / n) - 1``: for T=12, n=6 that is
    1, 3, 5, 7, 9, 11; for T=12, n=4 it is 2, 5, 8, 11. The last teacher layer is kept because it is the one
    the classifier head was trained on.
    """
    return [(i + 1) * teacher_layers // num_layers - 1 for i in range(num_layers)]


def project_embeddings(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """Map a ``(V, D)`` embedding table to width ``dim``, keeping as much of its geometry as possible.

    * ``dim == D``: an exact copy.
    * ``dim < D``: PCA. Centre the rows, project onto the top-``dim`` principal directions (eigenvectors of
      the ``D x D`` scatter matrix, i.e. the right singular vectors of the centred table): the best rank-``dim``
      approximation of the inner products between tokens.
    * ``dim > D``: multiply by a random ``(D, dim)`` matrix with orthonormal rows, which preserves all inner
      products exactly (uses the global torch RNG, so it follows the run's seed).

    The result of a projection is rescaled to the teacher table's element standard deviation, so the
    layers after it see inputs of the usual scale.

    Args:
        weight: ``(V, D)`` teacher embedding table.
        dim: student embedding width.

    Returns:
        ``(V, dim)`` float32 table.
    """
    w = weight.detach().to(torch.float64)
    width = w.shape[1]
    if dim == width:
        return w.to(torch.float32).clone()
    if dim < width:
        centred = w - w.mean(dim=0, keepdim=True)
        # eigh on the small D x D scatter matrix instead of an SVD of the V x D table: same directions,
        # far less memory for 30k-250k token vocabularies. Eigenvalues come in ascending order.
        # One thread: a threaded LAPACK eigh of this small matrix can spin for seconds on a busy CPU
        # (measured: 5 s with 2 threads vs 0.04 s with 1 for D = 384).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _, vectors = torch.linalg.eigh(centred.T @ centred)
        finally:
            torch.set_num_threads(threads)
        out = centred @ vectors[:, -dim:].flip(-1)
    else:
        q, _ = torch.linalg.qr(torch.randn(dim, width, dtype=torch.float64))  # (dim, D), orthonormal columns
        out = w @ q.T
    out = out * (w.std(correction=0) / out.std(correction=0).clamp_min(1e-12))
    return out.to(torch.float32)


# --------------------------------------------------------------------------------------------- pretrained
class PretrainedBuilder:
    """Any HF model directory (``student.path``) with a sequence-classification head of ``num_labels``.

    A head whose size differs from ``num_labels`` (or a checkpoint without a head) is freshly initialised.
    """

    def validate(self, cfg: StudentConfig, teacher_info: ModelInfo) -> list[str]:
        if not cfg.path:
            return [
                "student.path is required for student.type='pretrained': set it to a model directory or hub id"
            ]
        from textdistill.models.teacher import model_info

        try:
            model_info(cfg.path)
        except ModelError as exc:
            return [f"student.path: {exc}"]
        return []

    def info(self, cfg: StudentConfig, teacher_info: ModelInfo, num_labels: int) -> ModelInfo:
        from textdistill.models.teacher import model_info

        return model_info(str(cfg.path), num_labels=num_labels)

    def build(
        self, cfg: StudentConfig, teacher: HFClassifier, num_labels: int, id2label: dict[int, str] | None
    ) -> nn.Module:
        from textdistill.models.token_heads import is_token_config

        # the head follows the teacher: a token teacher gets a token student
        token = teacher is not None and is_token_config(teacher.config)
        return build_pretrained(cfg, num_labels, id2label, token=token)


def build_pretrained(
    cfg: StudentConfig, num_labels: int, id2label: dict[int, str] | None, *, token: bool = False
) -> HFClassifier:
    """``student.path`` with a new (or resized) sequence- or, with ``token``, token-classification head."""
    from textdistill.models.teacher import resolve_model_path
    from textdistill.models.token_heads import auto_class

    labels = _labels(num_labels, id2label)
    model = auto_class(token).from_pretrained(
        resolve_model_path(str(cfg.path), "student"),
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        # a checkpoint fine-tuned on another label set keeps its body and gets a new head
        ignore_mismatched_sizes=True,
        dtype=torch.float32,
        trust_remote_code=False,  # explicit: never run (or prompt about) code from the student's folder
    )
    model.train()
    return HFClassifier(model)


# ----------------------------------------------------------------------------------------------- truncate
class TruncateBuilder:
    """DistilBERT-style initialisation (Sanh et al. 2019): keep a subset of the teacher's layers.

    The student is the teacher's architecture with ``len(layers)`` layers; embeddings, the chosen layers, the
    pooler and the classifier head are exact copies of the teacher's weights. When ``num_labels`` differs
    from the teacher's, the classifier's output layer is newly initialised instead.
    """

    def _layers(self, cfg: StudentConfig, teacher_layers: int) -> list[int]:
        if cfg.layers is not None:
            return list(cfg.layers)
        return evenly_spread_layers(teacher_layers, int(cfg.num_layers))

    def validate(self, cfg: StudentConfig, teacher_info: ModelInfo) -> list[str]:
        if teacher_info.kind != "hf":
            return [
                f"student.type='truncate' copies transformer layers, but the teacher is a {teacher_info.kind}"
            ]
        total = teacher_info.num_layers
        valid = f"valid 0-based teacher layers are 0..{total - 1}"
        problems = _positive(cfg, "num_layers")
        if cfg.layers is None and cfg.num_layers is None:
            problems.append(
                "student.type='truncate' needs student.num_layers (evenly spread layers) or student.layers "
                f"(0-based teacher layers, {valid})"
            )
        if cfg.num_layers is not None and not problems and cfg.num_layers > total:
            problems.append(f"student.num_layers={cfg.num_layers} exceeds the teacher's {total} layers")
        if cfg.layers is not None:
            layers = cfg.layers
            if not isinstance(layers, list) or not layers or not all(type(i) is int for i in layers):
                problems.append(
                    f"student.layers must be a non-empty list of integers ({valid}), got {layers!r}"
                )
                return problems
            bad = [i for i in layers if not 0 <= i < total]
            if bad:
                problems.append(f"student.layers {bad} out of range: the teacher has {total} layers, {valid}")
            if len(set(layers)) != len(layers):
                problems.append(f"student.layers {layers} repeats a layer; list each teacher layer once")
            elif layers != sorted(layers):
                problems.append(
                    f"student.layers {layers} must be in increasing order (e.g. {sorted(layers)})"
                )
            if cfg.num_layers is not None and cfg.num_layers != len(layers):
                problems.append(
                    f"student.num_layers={cfg.num_layers} disagrees with student.layers {layers} "
                    f"({len(layers)} layers); set only one of them"
                )
        return problems

    def info(self, cfg: StudentConfig, teacher_info: ModelInfo, num_labels: int) -> ModelInfo:
        return replace(
            teacher_info, num_layers=len(self._layers(cfg, teacher_info.num_layers)), num_labels=num_labels
        )

    def build(
        self, cfg: StudentConfig, teacher: HFClassifier, num_labels: int, id2label: dict[int, str] | None
    ) -> nn.Module:
        layers = self._layers(cfg, teacher.info.num_layers)
        config = copy.deepcopy(teacher.config)
        config.num_hidden_layers = len(layers)  # DistilBERT maps this alias onto n_layers
        _set_labels(config, num_labels, id2label)
        student = type(teacher.model)(config)

        prefix, _ = find_layer_list(teacher.model)
        source = teacher.model.state_dict()
        target = student.state_dict()
        head = f"{prefix}."
        for key, value in target.items():
            src_key = key
            if key.startswith(head):
                j, rest = key[len(head) :].split(".", 1)
                src_key = f"{head}{layers[int(j)]}.{rest}"
            src = source[src_key]
            if src.shape != value.shape:
                if num_labels == teacher.info.num_labels:
                    raise ModelError(
                        f"cannot copy {src_key} {tuple(src.shape)} into {key} {tuple(value.shape)}"
                    )
                continue  # the label count changed: keep the freshly initialised output layer
            target[key] = src.detach().clone()
        student.load_state_dict(target, strict=True)
        student.train()
        return HFClassifier(student)


# ------------------------------------------------------------------------------------------------- shrink
def shrink_sizes(cfg: StudentConfig, teacher_info: ModelInfo) -> tuple[int, int, int, int]:
    """``(num_layers, hidden_size, num_heads, intermediate_size)`` of a shrunk student.

    Defaults: the teacher's layers and width; the teacher's head count when it divides the width, else
    ``max(1, hidden_size // 64)`` (64-wide heads, as in BERT); an intermediate size of ``4 * hidden_size``.
    """
    layers = cfg.num_layers if cfg.num_layers is not None else teacher_info.num_layers
    hidden = cfg.hidden_size if cfg.hidden_size is not None else teacher_info.hidden_size
    if cfg.num_heads is not None:
        heads = cfg.num_heads
    elif teacher_info.num_heads and hidden % teacher_info.num_heads == 0:
        heads = teacher_info.num_heads
    else:
        heads = max(1, hidden // 64)
    intermediate = cfg.intermediate_size if cfg.intermediate_size is not None else 4 * hidden
    return layers, hidden, heads, intermediate


class ShrinkBuilder:
    """The teacher's architecture with fewer/narrower layers, randomly initialised.

    With ``init_embeddings_from_teacher`` the word embeddings start from the teacher's, projected by PCA
    (:func:`project_embeddings`) when the widths differ; everything else is the family's default init.
    """

    def validate(self, cfg: StudentConfig, teacher_info: ModelInfo) -> list[str]:
        if teacher_info.kind != "hf":
            return [
                f"student.type='shrink' rebuilds the teacher's architecture, but the teacher is a {teacher_info.kind}"
            ]
        problems = []
        for key in ("num_layers", "hidden_size", "num_heads", "intermediate_size"):
            problems += _positive(cfg, key)
        if problems:
            return problems
        _, hidden, heads, _ = shrink_sizes(cfg, teacher_info)
        if hidden % heads:
            problems.append(
                f"student.hidden_size={hidden} is not divisible by student.num_heads={heads}; pick heads that "
                f"divide the width (e.g. {', '.join(str(h) for h in _divisors(hidden)[-4:])})"
            )
        return problems

    def info(self, cfg: StudentConfig, teacher_info: ModelInfo, num_labels: int) -> ModelInfo:
        layers, hidden, heads, _ = shrink_sizes(cfg, teacher_info)
        return replace(
            teacher_info, num_layers=layers, hidden_size=hidden, num_heads=heads, num_labels=num_labels
        )

    def build(
        self, cfg: StudentConfig, teacher: HFClassifier, num_labels: int, id2label: dict[int, str] | None
    ) -> nn.Module:
        layers, hidden, heads, intermediate = shrink_sizes(cfg, teacher.info)
        config = copy.deepcopy(teacher.config)
        # Attribute aliases map these names onto DistilBERT's n_layers / dim / n_heads.
        config.num_hidden_layers = layers
        config.hidden_size = hidden
        config.num_attention_heads = heads
        # DistilBERT calls the feed-forward width hidden_dim; the BERT family intermediate_size.
        setattr(
            config,
            "intermediate_size" if hasattr(config, "intermediate_size") else "hidden_dim",
            intermediate,
        )
        _set_labels(config, num_labels, id2label)
        student = type(teacher.model)(config)
        if cfg.init_embeddings_from_teacher:
            target = student.get_input_embeddings().weight
            with torch.no_grad():
                target.copy_(project_embeddings(teacher.model.get_input_embeddings().weight, target.shape[1]))
        student.train()
        return HFClassifier(student)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# ------------------------------------------------------------------------------------------------- bilstm
class BiLSTMBuilder:
    """The BiLSTM student of Tang et al. 2019 over the teacher's tokenizer (see ``models/bilstm.py``)."""

    def validate(self, cfg: StudentConfig, teacher_info: ModelInfo) -> list[str]:
        problems = []
        for key in ("embedding_dim", "lstm_hidden", "lstm_layers", "mlp_hidden"):
            problems += _positive(cfg, key)
        if cfg.pooling not in POOLINGS:
            problems.append(f"student.pooling={cfg.pooling!r} is not one of {', '.join(POOLINGS)}")
        if (
            isinstance(cfg.dropout, bool)
            or not isinstance(cfg.dropout, (int, float))
            or not 0 <= cfg.dropout < 1
        ):
            problems.append(f"student.dropout must be a probability in [0, 1), got {cfg.dropout!r}")
        dim = cfg.case_embedding_dim
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            problems.append(f"student.case_embedding_dim must be an integer >= 0 (0 = none), got {dim!r}")
        return problems

    def _config(
        self, cfg: StudentConfig, vocab_size: int, num_labels: int, id2label: dict[int, str] | None, pad: int
    ) -> BiLSTMConfig:
        return BiLSTMConfig(
            vocab_size=vocab_size,
            num_labels=num_labels,
            embedding_dim=cfg.embedding_dim,
            lstm_hidden=cfg.lstm_hidden,
            lstm_layers=cfg.lstm_layers,
            pooling=cfg.pooling,
            mlp_hidden=cfg.mlp_hidden,
            dropout=float(cfg.dropout),
            pad_token_id=pad,
            id2label=_labels(num_labels, id2label),
            case_embedding_dim=cfg.case_embedding_dim,
        )

    def info(self, cfg: StudentConfig, teacher_info: ModelInfo, num_labels: int) -> ModelInfo:
        return bilstm_info(self._config(cfg, teacher_info.vocab_size, num_labels, None, 0))

    def build(
        self, cfg: StudentConfig, teacher: HFClassifier, num_labels: int, id2label: dict[int, str] | None
    ) -> nn.Module:
        teacher_emb = teacher.model.get_input_embeddings().weight
        pad = getattr(teacher.config, "pad_token_id", None)
        config = self._config(cfg, teacher_emb.shape[0], num_labels, id2label, 0 if pad is None else int(pad))
        from textdistill.models.token_heads import is_token_config

        if is_token_config(teacher.config):
            config.pooling = "none"  # a token teacher: one prediction per token
        elif config.case_embedding_dim:
            raise ModelError(
                f"student.case_embedding_dim={config.case_embedding_dim} needs a token-classification task "
                "(the casing of each word comes with token datasets). Fix: set it to 0 for sentence tasks."
            )
        student = BiLSTMClassifier(config)
        if cfg.init_embeddings_from_teacher:
            with torch.no_grad():
                student.embeddings.weight.copy_(project_embeddings(teacher_emb, config.embedding_dim))
        student.train()
        return student


for _name, _builder in (
    ("pretrained", PretrainedBuilder()),
    ("truncate", TruncateBuilder()),
    ("shrink", ShrinkBuilder()),
    ("bilstm", BiLSTMBuilder()),
):
    STUDENTS.register(_name)(_builder)


def validate_student(cfg: StudentConfig, teacher_info: ModelInfo) -> list[str]:
    """Every problem with the student options (unknown type, options of another type, bad values)."""
    if cfg.type not in STUDENTS:
        return [f"student.type: {STUDENTS.unknown_message(cfg.type)}"]
    from textdistill.models.vocab import vocab_problems

    problems = vocab_problems(getattr(cfg, "vocab", "full"))
    if getattr(cfg, "glove", None) and not Path(cfg.glove).expanduser().is_file():
        problems.append(f"student.glove: {cfg.glove!r} does not exist; run `textdistill provision glove`")
    return _unused_options(cfg) + problems + STUDENTS.get(cfg.type).validate(cfg, teacher_info)


def _checked_builder(cfg: StudentConfig, teacher_info: ModelInfo) -> StudentBuilder:
    """The builder of ``cfg.type``; raises ConfigError listing every problem with the options."""
    problems = validate_student(cfg, teacher_info)
    if problems:
        raise ConfigError(problems)
    return STUDENTS.get(cfg.type)


def student_info(cfg: StudentConfig, teacher_info: ModelInfo, num_labels: int) -> ModelInfo:
    """The student's :class:`ModelInfo` from configs only; raises ConfigError listing every problem."""
    return _checked_builder(cfg, teacher_info).info(cfg, teacher_info, num_labels)


def build_student(
    cfg: StudentConfig, teacher: HFClassifier, num_labels: int, id2label: dict[int, str] | None = None
) -> nn.Module:
    """Validate the options and build the student (train mode, gradients on)."""
    return _checked_builder(cfg, teacher.info).build(cfg, teacher, num_labels, id2label)
