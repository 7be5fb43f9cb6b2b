"""Where a run's teacher outputs come from: the live teacher, or a cache found (or built) under the root.

Runs and pipeline stages on the same teacher and data share ``<root>/<fingerprint>`` caches; a cache built
for more features (a TinyBERT intermediate stage) serves a later stage that needs fewer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from textdistill.config.schema import Config
from textdistill.models.outputs import FeatureRequest
from textdistill.training.distiller import LiveTeacher, TeacherSource
from textdistill.training.teacher_cache.build import _build, _Pass, _process_group, find_everywhere
from textdistill.training.teacher_cache.cached import CachedTeacher
from textdistill.training.teacher_cache.spec import (
    CacheSpec,
    cache_fingerprint,
    prepare_fingerprint,
    teacher_hidden_layers,
)
from textdistill.training.teacher_cache.store import META, CacheInvalid, TeacherCache
from textdistill.training.teacher_cache.writer import CacheTooLarge

DEFAULT_ROOT_NAME = ".textdistill-cache"


def default_cache_root(cfg: Config) -> Path:
    """``teacher.cache_dir`` when set, else ``<output_dir parent>/.textdistill-cache``.

    The root is shared by every run next to this one, so runs and pipeline stages on the same teacher and
    data find each other's caches; each cache lives in ``<root>/<fingerprint>``.
    """
    if cfg.teacher.cache_dir:
        return Path(cfg.teacher.cache_dir).expanduser()
    return Path(cfg.output_dir).expanduser().absolute().parent / DEFAULT_ROOT_NAME


def find_compatible_cache(
    root: Path, components: dict[str, Any], request: FeatureRequest, hidden_layers: Iterable[int] | None
) -> TeacherCache | None:
    """A valid cache under ``root`` built from the same teacher and data that stores a superset of
    the features (e.g. a TinyBERT intermediate stage's cache serving the prediction stage), or None."""
    if not root.is_dir():
        return None
    base = {k: v for k, v in components.items() if k != "features"}
    for meta_path in sorted(root.glob(f"*/{META}")):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            other = {k: v for k, v in meta.get("components", {}).items() if k != "features"}
            if other != base or not CacheSpec.from_dict(meta["spec"]).covers(request, hidden_layers):
                continue
            return TeacherCache.open(meta_path.parent, meta["fingerprint"])
        except (CacheInvalid, OSError, ValueError, KeyError, TypeError):
            continue
    return None


def build_teacher_source(
    cfg: Config,
    teacher: nn.Module,
    objective: nn.Module,
    datasets: list[Any],
    collator: Any,
    device: torch.device | str,
    precision: str,
    cache_root: str | Path | None = None,
    *,
    quiet: bool = False,
    distributed: bool = True,
) -> TeacherSource:
    """The teacher source of a distillation run: live, or a cache built (or reused) over ``datasets``.

    With ``teacher.cache`` false this is ``LiveTeacher(teacher, objective.teacher_request(), precision,
    device)``. With it true or null (auto), the cache lives in ``<root>/<fingerprint>`` where ``root`` is ``cache_root``,
    else ``teacher.cache_dir``, else ``<output_dir parent>/.textdistill-cache``. A cache there is reused, as
    is any cache under ``root`` from the same teacher and data that stores a superset of the features;
    otherwise one inference pass (``train.eval_batch_size`` examples per batch, at ``precision``) builds it.
    When that cache would not fit on the disk, auto falls back to the live teacher (with a note) and true
    raises :class:`CacheTooLarge` (with several processes both raise). Only the teacher ``hidden_states`` indices the objective reads are stored.

    Args:
        cfg: the run config (``teacher.*``, ``data.max_length``, ``train.eval_batch_size``, ``output_dir``).
        teacher: the loaded teacher, on ``device``.
        objective: the built objective (its ``teacher_request()`` and hidden-state layer pairs).
        datasets: every dataset the source will be asked about (the training data, augmented included);
            example ids must be unique across them.
        collator: the run's collator.
        device: the training device.
        precision: the run's resolved precision (the live teacher's autocast; the cache pass uses the same,
            so cached and live outputs agree).
        cache_root: overrides the cache root.
        quiet: print nothing.
        distributed: with an initialised ``torch.distributed`` group of several processes, the call is
            collective (every process must make it): process 0 decides whether a usable cache exists and, if
            none does, each process computes its share of it (:func:`build_teacher_cache`). False: this
            process alone.
    """
    device = torch.device(device)
    request = objective.teacher_request()
    if cfg.teacher.cache is False:
        return LiveTeacher(teacher, request, precision, device)
    hidden_layers = teacher_hidden_layers(objective) if request.hidden_states else None
    components, ex, spec, resolved = prepare_fingerprint(
        teacher,
        datasets,
        request=request,
        device=device,
        hidden_layers=hidden_layers,
        cache_dtype=cfg.teacher.cache_dtype,
        precision=precision,
        max_length=cfg.data.max_length,
        tokenizer_path=cfg.teacher.path,
    )
    fingerprint = cache_fingerprint(components)
    root = Path(cache_root).expanduser() if cache_root is not None else default_cache_root(cfg)
    rank, world = _process_group(distributed)
    quiet = quiet or rank != 0
    cache = find_everywhere(
        root / fingerprint,
        fingerprint,
        rank=rank,
        world=world,
        quiet=quiet,
        fallback=lambda: find_compatible_cache(root, components, request, spec.hidden),
    )
    if cache is None:
        try:
            dtype, batch_size = cfg.teacher.cache_dtype, cfg.train.eval_batch_size
            run = _Pass(teacher, datasets, collator, ex, spec, dtype, batch_size, device, resolved)
            cache = _build(run, components, fingerprint, root / fingerprint, quiet=quiet, world=(rank, world))
        except CacheTooLarge as e:
            if cfg.teacher.cache or world > 1:  # asked for explicitly (or collective): the error stands
                raise
            if not quiet:
                print(f"teacher cache: not used, the teacher runs live ({e})")
            return LiveTeacher(teacher, request, precision, device)
    if not quiet:
        print(f"teacher cache: using {cache.directory} ({cache.num_examples} examples, {cache.dtype})")
    return CachedTeacher(cache, request, device)
