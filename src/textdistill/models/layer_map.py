"""Which student layer learns from which teacher layer.

Index conventions (the one place they are defined; every loss term uses them through :class:`LayerMap`):

* **Hidden-state indices** index ``ModelOutputs.hidden_states``: ``0`` is the embedding output and ``i``
  (``1..num_layers``) the output of transformer layer ``i``. A hidden pair ``(s, t)`` matches
  ``student.hidden_states[s]`` with ``teacher.hidden_states[t]``.
* **Attention layers** are 1-based transformer layers (``1..num_layers``; the embeddings have no attention).
  ``ModelOutputs.attentions`` / ``attention_scores`` / ``qkv`` and :class:`FeatureRequest` are keyed by the
  0-based layer, so an attention pair ``(s, t)`` reads ``student.attentions[s - 1]`` and
  ``teacher.attentions[t - 1]``; :attr:`LayerMap.attention_keys` gives those 0-based keys.
* Config values (``LayerMapConfig.pairs``, ``teacher_layer``) use the same 1-based numbering, ``0`` being
  the embeddings.

Strategies (``S`` student layers, ``T`` teacher layers):

* ``uniform`` (TinyBERT, Jiao et al. 2020, with ``k = T / S`` an integer): hidden states ``0 <-> 0`` and
  student layer ``i <-> `` teacher layer ``i * k``; attention student layer ``i <->`` teacher layer ``i * k``.
  TinyBERT's code writes the attention mapping 0-based as ``i * k + k - 1`` for ``i = 0..S-1``, which is
  1-based ``(i + 1) * k``: the same teacher layers as the hidden mapping.
* ``every_k`` (Patient-KD "skip", Sun et al. 2019): as ``uniform`` with a configured ``k`` (default
  ``T // S``) and only ``S * k <= T`` required, so e.g. 12 -> 5 with ``k = 2`` matches teacher 2, 4, .., 10.
* ``last`` (MiniLM, Wang et al. 2020; DistilBERT's cosine loss): the last student layer with the last
  teacher layer, or with ``teacher_layer`` (MiniLMv2 distils an upper-middle teacher layer of large
  teachers). One hidden pair and one attention pair.
* ``explicit``: the configured ``pairs``. Pairs involving the embeddings (``0``) are used by hidden-state
  terms only.
"""

from __future__ import annotations

from dataclasses import dataclass

from textdistill.config.schema import LayerMapConfig
from textdistill.errors import ConfigError

STRATEGIES = ("uniform", "every_k", "last", "explicit")


@dataclass(frozen=True)
class LayerMap:
    """A resolved layer matching between a student and a teacher.

    Attributes:
        strategy: the strategy that produced it (see the module docstring).
        student_layers: transformer layers of the student.
        teacher_layers: transformer layers of the teacher.
        hidden_pairs: ``(student, teacher)`` indices into ``hidden_states`` (0 = embeddings).
        attention_pairs: ``(student, teacher)`` 1-based transformer layers (never 0).
    """

    strategy: str
    student_layers: int
    teacher_layers: int
    hidden_pairs: tuple[tuple[int, int], ...]
    attention_pairs: tuple[tuple[int, int], ...]

    @property
    def attention_keys(self) -> tuple[tuple[int, int], ...]:
        """Attention pairs as 0-based keys of ``ModelOutputs.attentions`` / ``attention_scores`` / ``qkv``."""
        return tuple((s - 1, t - 1) for s, t in self.attention_pairs)

    def layer_pairs(self) -> tuple[tuple[int, int], ...]:
        """Hidden pairs that match two transformer layers (the embedding output excluded on both sides)."""
        return tuple((s, t) for s, t in self.hidden_pairs if s > 0 and t > 0)

    def describe(self) -> str:
        """A one-line human-readable summary, e.g. ``uniform: hidden 0<-0 1<-3 2<-6; attention 1<-3 2<-6``."""
        hidden = " ".join(f"{s}<-{t}" for s, t in self.hidden_pairs) or "none"
        att = " ".join(f"{s}<-{t}" for s, t in self.attention_pairs) or "none"
        return (
            f"{self.strategy}: hidden {hidden}; attention {att} (student<-teacher, 1-based, 0 = embeddings)"
        )


def _even_pairs(student_layers: int, teacher_layers: int) -> list[list[int]]:
    """An evenly spread explicit mapping (rounded), offered as a fix when ``uniform`` does not divide."""
    return [[0, 0]] + [
        [i, max(1, round(i * teacher_layers / student_layers))] for i in range(1, student_layers + 1)
    ]


def _int_or_none(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def validate(
    cfg: LayerMapConfig | None,
    student_layers: int,
    teacher_layers: int,
    *,
    default_strategy: str = "uniform",
    key: str = "layer_map",
) -> list[str]:
    """Every problem with a layer map for these layer counts (empty when :func:`build_layer_map` succeeds).

    Args:
        cfg: the configured layer map, or None for ``default_strategy`` with its defaults.
        student_layers: transformer layers of the student.
        teacher_layers: transformer layers of the teacher.
        default_strategy: strategy used when ``cfg`` is None (the loss term's default).
        key: config key prefix for the messages, e.g. ``objective.2.layer_map``.

    Returns:
        One message per problem, naming the key, the value received and the valid range.
    """
    cfg = cfg if cfg is not None else LayerMapConfig(strategy=default_strategy)
    strategy = cfg.strategy or default_strategy
    problems: list[str] = []
    if strategy not in STRATEGIES:
        return [f"{key}.strategy: {strategy!r} is unknown; valid strategies: {', '.join(STRATEGIES)}"]
    if student_layers < 1:
        return [
            f"{key}: the student has no transformer layers ({student_layers}), so it cannot be matched "
            "layer by layer; use a transformer student or drop this term"
        ]
    if teacher_layers < 1:
        return [f"{key}: the teacher has no transformer layers ({teacher_layers}); drop this term"]
    # Options that only one strategy reads are rejected elsewhere rather than silently ignored.
    if cfg.k is not None and strategy != "every_k":
        problems.append(f"{key}.k: only strategy every_k uses k (strategy is {strategy!r}); remove k")
    if cfg.pairs is not None and strategy != "explicit":
        problems.append(
            f"{key}.pairs: only strategy explicit uses pairs (strategy is {strategy!r}); remove pairs"
        )
    if cfg.teacher_layer is not None and strategy != "last":
        problems.append(
            f"{key}.teacher_layer: only strategy last uses teacher_layer (strategy is {strategy!r}); "
            "set strategy: last or remove teacher_layer"
        )

    if strategy == "uniform":
        if student_layers > teacher_layers:
            problems.append(
                f"{key}: strategy uniform maps each student layer to a distinct teacher layer, but the student "
                f"has more layers ({student_layers}) than the teacher ({teacher_layers}); use explicit pairs"
            )
        elif teacher_layers % student_layers:
            problems.append(
                f"{key}: strategy uniform needs the teacher's layer count ({teacher_layers}) to be a multiple "
                f"of the student's ({student_layers}); use strategy every_k (k={teacher_layers // student_layers}"
                f" matches teacher layers {teacher_layers // student_layers}..."
                f"{student_layers * (teacher_layers // student_layers)}) or explicit pairs, e.g. "
                f"{_even_pairs(student_layers, teacher_layers)}"
            )
    elif strategy == "every_k":
        k = cfg.k if cfg.k is not None else teacher_layers // student_layers
        if not _int_or_none(cfg.k):
            problems.append(f"{key}.k: expected an integer, got {cfg.k!r}")
        elif student_layers > teacher_layers:
            problems.append(
                f"{key}: the student has more layers ({student_layers}) than the teacher ({teacher_layers}), "
                "so every_k cannot give each student layer its own teacher layer; use explicit pairs"
            )
        elif k < 1 or student_layers * k > teacher_layers:
            problems.append(
                f"{key}.k: {k} does not fit: student layer {student_layers} would match teacher layer "
                f"{student_layers * k}, but the teacher has {teacher_layers} layers; valid k: "
                f"1..{teacher_layers // student_layers}"
            )
    elif strategy == "last":
        t = cfg.teacher_layer
        if not _int_or_none(t):
            problems.append(f"{key}.teacher_layer: expected an integer, got {t!r}")
        elif t is not None and not 1 <= t <= teacher_layers:
            problems.append(
                f"{key}.teacher_layer: {t} is out of range; the teacher has {teacher_layers} layers, "
                f"valid: 1..{teacher_layers} (1-based)"
            )
    else:  # explicit
        problems.extend(_explicit_problems(cfg.pairs, student_layers, teacher_layers, key))
    return problems


def _explicit_problems(pairs: object, student_layers: int, teacher_layers: int, key: str) -> list[str]:
    if not pairs:
        return [
            f"{key}.pairs: strategy explicit needs pairs, e.g. [[0, 0], [1, 3], [2, 6]] (student, teacher)"
        ]
    if not isinstance(pairs, list | tuple):
        return [f"{key}.pairs: expected a list of [student_layer, teacher_layer] pairs, got {pairs!r}"]
    problems = []
    for i, pair in enumerate(pairs):
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair)
        ):
            problems.append(
                f"{key}.pairs.{i}: expected [student_layer, teacher_layer] integers, got {pair!r}"
            )
            continue
        s, t = pair
        if not 0 <= s <= student_layers:
            problems.append(
                f"{key}.pairs.{i}: student layer {s} is out of range; valid: 0..{student_layers} "
                "(1-based layers, 0 = embeddings)"
            )
        if not 0 <= t <= teacher_layers:
            problems.append(
                f"{key}.pairs.{i}: teacher layer {t} is out of range; valid: 0..{teacher_layers} "
                "(1-based layers, 0 = embeddings)"
            )
    seen = [tuple(p) for p in pairs if isinstance(p, list | tuple)]
    dups = sorted({p for p in seen if seen.count(p) > 1})
    if dups:
        problems.append(f"{key}.pairs: duplicate pairs {[list(p) for p in dups]}; list each pair once")
    return problems


def build_layer_map(
    cfg: LayerMapConfig | None,
    student_layers: int,
    teacher_layers: int,
    *,
    default_strategy: str = "uniform",
    key: str = "layer_map",
) -> LayerMap:
    """Resolve a layer-map config against real layer counts.

    Args:
        cfg: the configured layer map, or None for ``default_strategy`` with its defaults.
        student_layers: transformer layers of the student.
        teacher_layers: transformer layers of the teacher.
        default_strategy: strategy used when ``cfg`` is None.
        key: config key prefix for error messages.

    Returns:
        The :class:`LayerMap`.

    Raises:
        ConfigError: every problem :func:`validate` finds.

    Example:
        >>> build_layer_map(None, 4, 12).hidden_pairs
        ((0, 0), (1, 3), (2, 6), (3, 9), (4, 12))
    """
    problems = validate(cfg, student_layers, teacher_layers, default_strategy=default_strategy, key=key)
    if problems:
        raise ConfigError(problems)
    cfg = cfg if cfg is not None else LayerMapConfig(strategy=default_strategy)
    strategy = cfg.strategy or default_strategy
    s_n, t_n = student_layers, teacher_layers
    if strategy in ("uniform", "every_k"):
        k = t_n // s_n if strategy == "uniform" or cfg.k is None else cfg.k
        layers = tuple((i, i * k) for i in range(1, s_n + 1))
        return LayerMap(strategy, s_n, t_n, ((0, 0),) + layers, layers)
    if strategy == "last":
        pair = ((s_n, cfg.teacher_layer if cfg.teacher_layer is not None else t_n),)
        return LayerMap(strategy, s_n, t_n, pair, pair)
    pairs = tuple((int(s), int(t)) for s, t in cfg.pairs or ())
    return LayerMap(strategy, s_n, t_n, pairs, tuple((s, t) for s, t in pairs if s > 0 and t > 0))
