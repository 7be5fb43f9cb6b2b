"""Augment a data file once: atomic TSV/JSONL output, fingerprinted and reused while nothing changed.

The *fingerprint* is the sha256 of a canonical JSON document of everything the output depends on: the
input examples (ids, texts, labels), the method and its parameters, the tokenizer's vocabulary and casing,
the masked LM (sha256 of every file of a local checkpoint directory, the id of a hub model, the weights of
an in-process model), the word vectors (file sha256) or the teacher embeddings (tensor sha256), the POS
tagger, the output columns and an algorithm version. ``batch_size`` and ``cache_dir`` are left out: they
do not change the output. The sidecar ``<out>.meta.json`` records the fingerprint, its components and the
sha256 of the written file; a later call with the same fingerprint and an intact file returns at once
without loading any model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textdistill.config.augment import AugmentConfig
from textdistill.data.augment.core import ExampleLike, augment_examples
from textdistill.data.augment.words import tokenizer_lowercases
from textdistill.errors import ConfigError, DataError, ModelError

logger = logging.getLogger(__name__)

ALGORITHM_VERSION = 1
"""Bump when a code change alters augmented outputs, so that old caches are recomputed."""

_OUT_FORMATS = {".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_PARAMS = {
    "none": (),
    "tinybert": ("n_aug", "p_t", "top_k", "seed", "max_length"),
    "tang": ("n_aug", "p_mask", "p_pos", "p_ng", "ngram_range", "seed"),
}


@dataclass
class AugmentResult:
    """What :func:`augment_to_file` did.

    Attributes:
        path: the augmented file.
        sidecar: its ``.meta.json`` (fingerprint, components, counts).
        fingerprint: sha256 hex digest identifying the output.
        reused: True when an existing file with this fingerprint was returned without recomputing.
        n_original: original examples in the file.
        n_augmented: new examples in the file.
        seconds: wall time of this call.
    """

    path: Path
    sidecar: Path
    fingerprint: str
    reused: bool
    n_original: int
    n_augmented: int
    seconds: float


def sidecar_path(out_path: str | os.PathLike[str]) -> Path:
    """The fingerprint sidecar of an augmented file: ``<out>.meta.json``."""
    p = Path(out_path)
    return p.with_name(p.name + ".meta.json")


def augment_to_file(
    data: str | os.PathLike[str] | Sequence[ExampleLike],
    out_path: str | os.PathLike[str] | None,
    cfg: AugmentConfig,
    *,
    tokenizer: Any | str | None = None,
    teacher_embeddings: Any | str | None = None,
    mlm: Any | None = None,
    pos_tagger: Any = "nltk",
    text_column: str = "sentence",
    text_pair_column: str | None = None,
    label_column: str = "label",
    format: str = "auto",
    regression: bool = False,
    force: bool = False,
) -> AugmentResult:
    """Augment a data file (or examples) into a TSV/JSONL file, reusing it while the fingerprint matches.

    Args:
        data: a TSV/CSV/JSONL file (read with ``textdistill.data.readers.read_examples``, labels optional)
            or the examples themselves.
        out_path: ``.tsv`` or ``.jsonl`` output; None: ``<cfg.cache_dir>/augment-<fingerprint[:16]>.jsonl``.
        cfg: augmentation settings.
        tokenizer: the teacher's tokenizer, or a directory/hub id to load it from (see
            :func:`~textdistill.data.augment.core.augment_examples`).
        teacher_embeddings: ``[vocab, H]`` tensor, or a model directory whose input embeddings are loaded
            only when augmentation actually runs (its files are fingerprinted instead).
        mlm: an in-process masked LM (default: ``cfg.mlm`` is loaded only when augmentation runs).
        pos_tagger: as in ``augment_examples``; resolved before fingerprinting (the tagger used is part of
            the fingerprint).
        text_column: column of the text (input and output).
        text_pair_column: column of the second text, or None.
        label_column: column of the label; augmented rows leave it empty (TSV) or null (JSONL).
        format: input format, ``auto`` by extension.
        regression: parse labels as floats when reading.
        force: recompute even when the fingerprint matches.

    Returns:
        Where the file is, its fingerprint, and whether it was reused.

    Raises:
        ConfigError: bad settings or output path. DataError: unreadable input. ModelError: unusable models.
    """
    started = time.perf_counter()
    cfg.validate(mlm_given=mlm is not None)
    examples = _load_examples(data, text_column, text_pair_column, label_column, format, regression)
    if cfg.method != "tinybert":
        mlm, teacher_embeddings = None, None  # unused: keep them out of the fingerprint and unloaded
    if tokenizer is None and isinstance(teacher_embeddings, (str, os.PathLike)):
        tokenizer = teacher_embeddings  # the teacher's directory holds the tokenizer its embeddings belong to
    tok = _resolve_tokenizer(tokenizer, cfg)
    tagger: Any = None
    if cfg.method == "tang" and cfg.p_pos > 0:
        from textdistill.data.augment.tang import resolve_pos_tagger

        tagger = resolve_pos_tagger(pos_tagger)
    columns = {"text": text_column, "text_pair": text_pair_column, "label": label_column}
    components = fingerprint_components(
        examples, cfg, tokenizer=tok, teacher_embeddings=teacher_embeddings, mlm=mlm, pos_tagger=tagger
    )
    components["columns"] = columns
    fingerprint = _sha256_json(components)
    out, fmt = _output_path(out_path, cfg, fingerprint)
    meta_path = sidecar_path(out)
    cached = None if force else _cached(out, meta_path, fingerprint)
    if cached is not None:
        logger.info("augment: reusing %s (fingerprint %s matches)", out, fingerprint[:12])
        return AugmentResult(
            out, meta_path, fingerprint, True, cached["n_original"], cached["n_augmented"], _since(started)
        )
    if isinstance(teacher_embeddings, (str, os.PathLike)):
        teacher_embeddings = _load_input_embeddings(teacher_embeddings)
    rows = augment_examples(
        examples, cfg, tokenizer=tok, teacher_embeddings=teacher_embeddings, mlm=mlm, pos_tagger=tagger
    )
    n_orig = sum(1 for r in rows if r.is_original)
    text = _render(rows, fmt, columns)
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(out, text.encode("utf-8"))
    meta = {
        "fingerprint": fingerprint,
        "output_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "n_original": n_orig,
        "n_augmented": len(rows) - n_orig,
        "format": fmt,
        "config": _jsonable(dataclasses.asdict(cfg)),
        "components": components,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _atomic_write(meta_path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    logger.info("augment: wrote %s (%d originals, %d new)", out, n_orig, len(rows) - n_orig)
    return AugmentResult(out, meta_path, fingerprint, False, n_orig, len(rows) - n_orig, _since(started))


def _output_path(
    out_path: str | os.PathLike[str] | None, cfg: AugmentConfig, fingerprint: str
) -> tuple[Path, str]:
    """The output file (given, or named by the fingerprint under ``augment.cache_dir``) and its format."""
    if out_path is None:
        if not cfg.cache_dir:
            raise ConfigError(
                "augment: no output path and augment.cache_dir is not set. Fix: pass an output file (--out "
                "train_aug.tsv) or set augment.cache_dir."
            )
        out = Path(cfg.cache_dir) / f"augment-{fingerprint[:16]}.jsonl"
    else:
        out = Path(out_path)
    fmt = _OUT_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"augment output {str(out)!r} has extension {out.suffix or '(none)'!r}; valid: .tsv, .jsonl. "
            f"Fix: name the output e.g. train_aug.tsv or train_aug.jsonl."
        )
    return out, fmt


def fingerprint_components(
    examples: Sequence[ExampleLike],
    cfg: AugmentConfig,
    *,
    tokenizer: Any | None,
    teacher_embeddings: Any | str | None = None,
    mlm: Any | None = None,
    pos_tagger: Any = None,
) -> dict[str, Any]:
    """Everything an augmented output depends on, as a JSON-able dict (hashed by :func:`augment_to_file`).

    Models are identified without loading them where possible (file hashes of local directories).
    """
    data = hashlib.sha256()
    for ex in examples:
        row = [ex.id, ex.text, ex.text_pair, ex.label, bool(getattr(ex, "is_original", True))]
        data.update(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    parts: dict[str, Any] = {
        "algorithm_version": ALGORITHM_VERSION,
        "method": cfg.method,
        "params": {k: _jsonable(getattr(cfg, k)) for k in _PARAMS.get(cfg.method, ())},
        "data_sha256": data.hexdigest(),
        "n_examples": len(examples),
    }
    if cfg.method == "none":
        return parts
    parts["tokenizer"] = _tokenizer_id(tokenizer)
    if cfg.method == "tinybert":
        parts["mlm"] = _model_id(mlm if mlm is not None else cfg.mlm)
        if cfg.word_vectors:
            parts["word_vectors"] = {
                "path": str(cfg.word_vectors),
                "sha256": _file_sha256(Path(cfg.word_vectors)),
            }
        elif teacher_embeddings is not None:
            parts["word_vectors"] = {"teacher_embeddings": _model_id(teacher_embeddings)}
        else:
            parts["word_vectors"] = {"mlm_embeddings": True}
    if cfg.method == "tang":
        from textdistill.data.augment.tang import tagger_name

        parts["pos_tagger"] = tagger_name(pos_tagger) if cfg.p_pos > 0 else "unused"
        parts["mask_token"] = getattr(tokenizer, "mask_token", None) or "[MASK]"
    return parts


def _load_examples(
    data: Any,
    text_column: str,
    text_pair_column: str | None,
    label_column: str,
    format: str,
    regression: bool,
) -> list[Any]:
    if isinstance(data, (str, os.PathLike)):
        from textdistill.data.readers import read_examples

        return read_examples(
            data,
            format=format,
            text_column=text_column,
            text_pair_column=text_pair_column,
            label_column=label_column,
            regression=regression,
            require_labels=False,
        ).examples
    examples = list(data)
    for ex in examples:
        if not isinstance(ex, ExampleLike):
            raise DataError(
                f"augment: expected examples with id, text, text_pair, label and is_original attributes, got "
                f"{type(ex).__name__}. Fix: pass textdistill.data.readers.Example objects or a data file."
            )
    return examples


def _resolve_tokenizer(tokenizer: Any | str | None, cfg: AugmentConfig) -> Any | None:
    """Load a tokenizer given by path; default to the masked LM's for tinybert (cheap, no weights)."""
    source = tokenizer if isinstance(tokenizer, (str, os.PathLike)) else None
    if tokenizer is None and cfg.method == "tinybert" and cfg.mlm:
        source = cfg.mlm
    if source is None:
        return tokenizer
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source), trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelError(
            f"cannot load a tokenizer from {str(source)!r}: {type(err).__name__}: {err}. Fix: point it at a "
            f"model directory with tokenizer files (vocab.txt / tokenizer.json)."
        ) from None


def _tokenizer_id(tokenizer: Any | None) -> Any:
    if tokenizer is None:
        return None
    vocab = sorted(tokenizer.get_vocab().items())
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()
    return {"vocab_sha256": digest, "lowercase": tokenizer_lowercases(tokenizer)}


def _model_id(model: Any) -> Any:
    """A model's identity: file hashes of a local directory, the id of a hub model, or weight hashes."""
    if model is None:
        return None
    if isinstance(model, (str, os.PathLike)):
        p = Path(model).expanduser()
        if p.is_dir():
            files = sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and not any(x.startswith(".") for x in f.relative_to(p).parts)
            )
            return {"dir": str(model), "files": {str(f.relative_to(p)): _file_sha256(f) for f in files}}
        return {"hub_id": str(model)}  # offline: the id (and the locally cached snapshot) is all we know
    import torch

    if isinstance(model, torch.Tensor):
        return {"tensor_sha256": _tensor_sha256(model), "shape": list(model.shape)}
    net = getattr(model, "model", model)  # a MaskedLM wrapper or a bare module
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode() + _tensor_sha256(tensor).encode())
    return {"name": getattr(model, "name", type(net).__name__), "weights_sha256": digest.hexdigest()}


def _tensor_sha256(t: Any) -> str:
    import torch

    data = t.detach().cpu().contiguous()
    if data.dtype == torch.bfloat16:
        data = data.float()
    return hashlib.sha256(data.numpy().tobytes()).hexdigest()


_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) within the process (weights are large)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found. Fix: check the path.")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASH_MEMO[key] = h.hexdigest()
    return _HASH_MEMO[key]


def _cached(out: Path, meta_path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The sidecar of a reusable output, or None (missing, other fingerprint, or the file was changed)."""
    if not out.is_file() or not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("fingerprint") != fingerprint:
        logger.info("augment: %s is stale (fingerprint changed): recomputing", out)
        return None
    if meta.get("output_sha256") != _file_sha256(out):
        logger.info("augment: %s was modified since it was written: recomputing", out)
        return None
    return meta


def _render(rows: Sequence[Any], fmt: str, columns: dict[str, str | None]) -> str:
    text_col, pair_col, label_col = columns["text"], columns["text_pair"], columns["label"]
    names = ["id", text_col, *([pair_col] if pair_col else []), label_col, "is_original"]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"augment: output columns {names} collide (id and is_original are written by augmentation). "
            f"Fix: rename the text/label columns."
        )
    lines: list[str] = []
    if fmt == "tsv":
        lines.append("\t".join(names))  # type: ignore[arg-type]
    for r in rows:
        values: list[Any] = [r.id, r.text, *([r.text_pair] if pair_col else []), r.label, bool(r.is_original)]
        if fmt == "jsonl":
            lines.append(json.dumps(dict(zip(names, values)), ensure_ascii=False))
            continue
        fields = []
        for v in values:
            s = "" if v is None else ("true" if v is True else "false" if v is False else str(v))
            if "\t" in s or "\n" in s or "\r" in s:
                raise DataError(
                    f"augment: example {r.id} holds a tab or line break ({s[:60]!r}), which a TSV file cannot "
                    f"store (no quoting). Fix: write a .jsonl output instead."
                )
            fields.append(s)
        lines.append("\t".join(fields))
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over it (no torn files)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_input_embeddings(path: str | os.PathLike[str]) -> Any:
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(str(path), trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelError(
            f"cannot load the teacher {str(path)!r} for its input embeddings: {type(err).__name__}: {err}. "
            f"Fix: point it at a saved model directory, or set augment.word_vectors to a GloVe file."
        ) from None
    return model.get_input_embeddings().weight.detach()


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _since(start: float) -> float:
    return time.perf_counter() - start
