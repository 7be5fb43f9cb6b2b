"""Fingerprints: cheap, stable identities of a stage's inputs, so a re-run can skip what did not change.

A *file fingerprint* is ``sha256("size:mtime_ns:" + sha256(first HEAD_BYTES bytes))``. Reading only the head
keeps multi-gigabyte corpora and checkpoints cheap to check (milliseconds instead of minutes); the size and
the modification time catch edits past the head. The price is that touching a file (or copying it without
preserving times) counts as a change and re-runs the stages that read it: a false "changed" costs compute,
a false "unchanged" would silently reuse a stale model, so the check errs on the safe side.

A *directory fingerprint* (a model directory) combines the fingerprints of every file in it, by relative
path; a hub id that is not a local path is fingerprinted by its name only.

A *stage fingerprint* is the sha256 of a canonical JSON document holding the stage's resolved config (with
upstream outputs written symbolically as ``${stages.NAME.output}``, so moving the output directory does
not invalidate anything), its mode and augmentation settings, the fingerprints of the upstream stages it
reads, and the fingerprints of its data files and of the model directories it loads from outside the
pipeline.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

HEAD_BYTES = 4 * 1024 * 1024
"""Bytes of each file that are hashed (the rest is covered by size and mtime)."""

FINGERPRINT_VERSION = 1
"""Bump when the fingerprint document changes, so every stage re-runs once."""


def sha256_json(obj: Any) -> str:
    """sha256 hex digest of ``obj`` as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_fingerprint(path: str | Path, head_bytes: int = HEAD_BYTES) -> str:
    """Fingerprint of one file: size, modification time (ns) and sha256 of its first ``head_bytes``.

    Raises:
        FileNotFoundError / OSError: the file cannot be read (callers validate paths first).
    """
    p = Path(path)
    st = p.stat()
    digest = hashlib.sha256()
    with p.open("rb") as f:
        digest.update(f.read(head_bytes))
    return hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:{digest.hexdigest()}".encode()).hexdigest()


def dir_fingerprint(path: str | Path) -> str:
    """Fingerprint of a directory tree (every file by relative POSIX path), or of a path that is not local.

    A path that does not exist locally (a hub id such as ``bert-base-uncased``) is identified by its text:
    what the hub serves under a name is outside our control, and hashing it would need the network.
    """
    p = Path(path)
    if p.is_file():
        return file_fingerprint(p)
    if not p.is_dir():
        return sha256_json({"not_local": str(path)})
    files = sorted(f for f in p.rglob("*") if f.is_file())
    return sha256_json({f.relative_to(p).as_posix(): file_fingerprint(f) for f in files})


def stage_fingerprint(
    *,
    mode: str,
    config: dict[str, Any],
    augment: dict[str, Any] | None,
    upstream: dict[str, str],
    files: list[str | Path],
    models: list[str | Path],
) -> str:
    """The fingerprint of one stage.

    Args:
        mode: finetune | distill | general | generate.
        config: the stage's canonical config mapping (upstream outputs symbolic, see the module docstring).
        augment: the stage's augmentation settings, or None.
        upstream: ``{stage name: fingerprint}`` of every stage whose output this stage reads.
        files: data files it reads (each fingerprinted with :func:`file_fingerprint`).
        models: model directories (or hub ids) from outside the pipeline that it loads.
    """
    doc = {
        "version": FINGERPRINT_VERSION,
        "mode": mode,
        "config": config,
        "augment": augment,
        "upstream": dict(sorted(upstream.items())),
        "files": {str(f): file_fingerprint(f) for f in sorted(set(map(str, files)))},
        "models": {str(m): dir_fingerprint(m) for m in sorted(set(map(str, models)))},
    }
    return sha256_json(doc)
