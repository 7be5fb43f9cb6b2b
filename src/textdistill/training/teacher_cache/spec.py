"""What a teacher cache holds and what names it: the stored layout and the fingerprint.

The fingerprint (:func:`cache_fingerprint` of :func:`prepare_fingerprint`'s components) is a SHA-256 over the
teacher's weights and config, the tokenizer files, ``max_length``, every distinct example's encoded inputs,
the stored features, the storage dtype and the compute precision (see the package docstring for why each).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from textdistill.errors import ConfigError, DataError, ModelError
from textdistill.models.outputs import HIDDEN_STATES, FeatureRequest
from textdistill.training.precision import resolve_precision

FORMAT_VERSION = 1
CACHE_DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_TOKENIZER_FILE_PREFIXES = (
    "tokenizer",
    "vocab",
    "merges",
    "special_tokens",
    "added_tokens",
    "spiece",
    "sentencepiece",
)


@dataclass(frozen=True)
class CacheSpec:
    """What a cache stores (not what it can give: see :meth:`covers`).

    Attributes:
        hidden: indices into ``hidden_states`` (0 = embeddings) stored per token.
        qkv: 0-based layers whose Q/K/V projections are stored (their scores/probabilities are derived).
        scores: 0-based layers whose pre-softmax score maps are stored (their probabilities are derived).
        probs: 0-based layers whose attention-probability maps are stored.
    """

    hidden: tuple[int, ...] = ()
    qkv: tuple[int, ...] = ()
    scores: tuple[int, ...] = ()
    probs: tuple[int, ...] = ()

    @classmethod
    def from_request(
        cls, request: FeatureRequest, num_layers: int, hidden_layers: Iterable[int] | None = None
    ) -> CacheSpec:
        """The smallest layout that can answer ``request``.

        Args:
            request: what the consumer will ask for.
            num_layers: transformer layers of the teacher (``hidden_states`` has ``num_layers + 1`` entries).
            hidden_layers: the ``hidden_states`` indices actually read (see :func:`teacher_hidden_layers`);
                None stores all of them when ``request.hidden_states`` is set.

        Raises:
            ModelError: a hidden index or layer outside the teacher.
        """
        hidden: tuple[int, ...] = ()
        if request.hidden_states:
            wanted = range(num_layers + 1) if hidden_layers is None else hidden_layers
            hidden = tuple(sorted(set(wanted)))
            bad = [i for i in hidden if not 0 <= i <= num_layers]
            if bad:
                raise ModelError(
                    f"teacher cache: hidden_states indices {bad} do not exist; the teacher has {num_layers} "
                    f"layers, so valid indices are 0..{num_layers} (0 = embeddings). Fix the layer map."
                )
        layers = request.qkv | request.attention_scores | request.attentions
        bad = sorted(i for i in layers if not 0 <= i < num_layers)
        if bad:
            raise ModelError(
                f"teacher cache: attention/Q/K/V features of layers {bad} requested, but the teacher has "
                f"{num_layers} layers (valid 0-based layers: 0..{num_layers - 1}). Fix the layer map."
            )
        qkv = tuple(sorted(request.qkv))
        scores = tuple(sorted(request.attention_scores - request.qkv))
        probs = tuple(sorted(request.attentions - request.qkv - request.attention_scores))
        return cls(hidden=hidden, qkv=qkv, scores=scores, probs=probs)

    def request(self) -> FeatureRequest:
        """The teacher forward request that captures exactly what is stored."""
        return FeatureRequest(
            hidden_states=bool(self.hidden),
            attentions=set(self.probs),
            attention_scores=set(self.scores),
            qkv=set(self.qkv),
        )

    def missing(self, request: FeatureRequest, hidden_layers: Iterable[int] | None = None) -> list[str]:
        """What of ``request`` this layout cannot give (empty when it covers it)."""
        out = []
        if request.hidden_states:
            need = set(hidden_layers) if hidden_layers is not None else None
            if not self.hidden:
                out.append("hidden_states")
            elif need is not None and need - set(self.hidden):
                out.append(f"hidden_states{sorted(need - set(self.hidden))}")
        qkv, scores = set(self.qkv), set(self.scores)
        if request.qkv - qkv:
            out.append(f"qkv of layers {sorted(request.qkv - qkv)}")
        if request.attention_scores - qkv - scores:
            out.append(f"attention_scores of layers {sorted(request.attention_scores - qkv - scores)}")
        if request.attentions - qkv - scores - set(self.probs):
            out.append(f"attentions of layers {sorted(request.attentions - qkv - scores - set(self.probs))}")
        return out

    def covers(self, request: FeatureRequest, hidden_layers: Iterable[int] | None = None) -> bool:
        """True when every feature of ``request`` can be read (or derived) from this layout."""
        return not self.missing(request, hidden_layers)

    def to_dict(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CacheSpec:
        return cls(**{k: tuple(int(x) for x in d.get(k, ())) for k in ("hidden", "qkv", "scores", "probs")})


def teacher_hidden_layers(objective: nn.Module) -> set[int] | None:
    """The teacher ``hidden_states`` indices an objective reads (None: it needs all of them).

    Hidden-state terms expose their matched ``(student, teacher)`` index pairs as ``pairs``; a term that
    needs hidden states without saying which gets all of them (safe, only larger).

    Args:
        objective: an :class:`~textdistill.losses.objective.Objective` (anything with ``terms``).
    """
    wanted: set[int] = set()
    for term in getattr(objective, "terms", ()):
        if not getattr(term, "needs_teacher", True) or HIDDEN_STATES not in getattr(term, "needs", ()):
            continue
        pairs = getattr(term, "pairs", None)
        if pairs is None:
            return None
        wanted |= {int(t) for _, t in pairs}
    return wanted


@dataclass
class _Examples:
    """The distinct examples of several datasets, in build order (by length, then id)."""

    ids: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (N,) int64
    sources: list[tuple[int, int]]  # (dataset index, item index) per row
    data_hash: str
    max_length: int | None


def _collect_examples(datasets: Sequence[Any]) -> _Examples:
    """Deduplicate the examples of ``datasets`` by id and hash their encoded inputs.

    Raises:
        DataError: no examples, an item without ``example_id``, or one id with two different inputs.
    """
    first: dict[int, tuple[int, int]] = {}
    for d, ds in enumerate(datasets):
        for i in range(len(ds)):
            item = ds[i]
            if "example_id" not in item:
                raise DataError(
                    f"dataset {d} item {i} has no 'example_id'; the teacher cache is keyed by example id. "
                    "Use textdistill.data.encoding.EncodedDataset (it adds the ids)."
                )
            eid = int(item["example_id"])
            if eid in first:
                d0, i0 = first[eid]
                other = datasets[d0][i0]
                if _inputs(other) != _inputs(item):
                    raise DataError(
                        f"example id {eid} appears twice with different inputs (dataset {d0} item {i0} and "
                        f"dataset {d} item {i}); the teacher cache is keyed by example id, so ids must be "
                        "unique across the cached datasets. Cache only the training data (train + augmented "
                        "examples, whose ids are fresh), or renumber the examples."
                    )
                continue
            first[eid] = (d, i)
    if not first:
        raise DataError("teacher cache: the datasets hold no examples; nothing to cache")
    ids = np.fromiter(first.keys(), dtype=np.int64, count=len(first))
    by_id = np.sort(ids)
    h = hashlib.sha256()
    lengths_by_id = np.empty(len(by_id), dtype=np.int64)
    for k, eid in enumerate(by_id.tolist()):
        d, i = first[eid]
        input_ids, types = _inputs(datasets[d][i])
        lengths_by_id[k] = len(input_ids)
        # Lengths and a presence flag separate the fields, so no two different inputs hash alike.
        h.update(np.array([eid, len(input_ids), types is not None], dtype=np.int64).tobytes())
        h.update(np.asarray(input_ids, dtype=np.int64).tobytes())
        if types is not None:
            h.update(np.asarray(types, dtype=np.int64).tobytes())
    order = np.lexsort((by_id, lengths_by_id))  # by length, ties by id: batches with little padding
    max_lengths = {getattr(ds, "max_length", None) for ds in datasets}
    max_lengths.discard(None)
    return _Examples(
        ids=by_id[order],
        lengths=lengths_by_id[order],
        sources=[first[int(e)] for e in by_id[order]],
        data_hash=h.hexdigest(),
        max_length=max(max_lengths) if max_lengths else None,
    )


def _inputs(item: dict[str, Any]) -> tuple[list[int], list[int] | None]:
    types = item.get("token_type_ids")
    return list(item["input_ids"]), None if types is None else list(types)


# --------------------------------------------------------------------------------------- fingerprint
def weights_hash(model: nn.Module) -> str:
    """SHA-256 of a model's ``state_dict``: every tensor's name, dtype, shape and bytes, plus its config.

    The config is included (minus ``_name_or_path`` and ``transformers_version``, which do not change the
    outputs) because it holds settings the weights do not, e.g. ``layer_norm_eps`` or ``hidden_act``.
    """
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        d = {k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    return h.hexdigest()


def tokenizer_hash(path: str | Path | None) -> str | None:
    """SHA-256 of the tokenizer files in a local model directory (None for a hub id or no path).

    Files whose names start with ``tokenizer``, ``vocab``, ``merges``, ``special_tokens``, ``added_tokens``,
    ``spiece`` or ``sentencepiece`` are hashed (name and bytes). The data hash covers the tokenization of
    the cached examples anyway; this also separates caches of tokenizers that differ elsewhere.
    """
    if path is None or not Path(path).is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(Path(path).iterdir()):
        if f.is_file() and f.name.lower().startswith(_TOKENIZER_FILE_PREFIXES):
            h.update(f.name.encode() + b"\0")
            h.update(f.read_bytes())
    return h.hexdigest()


def cache_fingerprint(components: dict[str, Any]) -> str:
    """The fingerprint of a cache: 20 hex digits of SHA-256 over its (JSON) components."""
    return hashlib.sha256(json.dumps(components, sort_keys=True).encode()).hexdigest()[:20]


def _num_layers(teacher: nn.Module) -> int:
    info = getattr(teacher, "info", None)
    if info is not None:
        return int(info.num_layers)
    config = getattr(teacher, "config", None)
    if config is not None and hasattr(config, "num_hidden_layers"):
        return int(config.num_hidden_layers)
    raise ModelError(
        f"teacher cache: cannot tell how many layers the teacher ({type(teacher).__name__}) has; it needs an "
        "`info` (ModelInfo) or a transformers `config`. Wrap it in textdistill.models.hf.HFClassifier."
    )


def prepare_fingerprint(
    teacher: nn.Module,
    datasets: Sequence[Any],
    *,
    request: FeatureRequest,
    device: torch.device | str,
    hidden_layers: Iterable[int] | None = None,
    cache_dtype: str = "fp16",
    precision: str = "auto",
    max_length: int | None = None,
    tokenizer_path: str | Path | None = None,
) -> tuple[dict[str, Any], _Examples, CacheSpec, str]:
    """Fingerprint components of a cache (no teacher forward): see the module docstring for what they cover.

    Returns:
        ``(components, examples, spec, resolved_precision)``; :func:`cache_fingerprint` of the components
        names the cache.
    """
    if cache_dtype not in CACHE_DTYPES:
        raise ConfigError(
            f"teacher.cache_dtype: {cache_dtype!r} is not one of {', '.join(CACHE_DTYPES)}; fp16 halves the "
            "disk size of fp32 with ~3 significant digits, bf16 keeps fp32's range with ~2"
        )
    resolved = resolve_precision(precision, device)
    spec = CacheSpec.from_request(request, _num_layers(teacher), hidden_layers)
    ex = _collect_examples(datasets)
    components = {
        "format": FORMAT_VERSION,
        "teacher_weights": weights_hash(teacher),
        "tokenizer": tokenizer_hash(tokenizer_path),
        "max_length": max_length if max_length is not None else ex.max_length,
        "data": ex.data_hash,
        "num_examples": len(ex.ids),
        "features": spec.to_dict(),
        "cache_dtype": cache_dtype,
        "precision": resolved,
    }
    return components, ex, spec, resolved
