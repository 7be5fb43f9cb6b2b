"""The cached teacher: a :class:`~textdistill.training.distiller.TeacherSource` reading a teacher cache.

It returns what the live teacher would (float32, padded to the batch, zeros at padding); derived features
are recomputed with the live hooks' own functions, so cached and live outputs agree at real positions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from textdistill.errors import DataError, ModelError
from textdistill.models.hooks import probs_from_scores, scores_from_qk
from textdistill.models.outputs import FeatureRequest, ModelOutputs
from textdistill.training.teacher_cache.store import TeacherCache


def _nan_placeholder(b: int, length: int, width: int, device: torch.device) -> torch.Tensor:
    """A zero-memory ``(b, length, width)`` NaN tensor standing for a hidden state the cache does not hold."""
    return torch.full((1, 1, 1), float("nan"), device=device).expand(b, length, width)


class CachedHiddenStates(tuple):
    """``hidden_states`` of a cached teacher: all ``num_layers + 1`` positions, only the cached ones real.

    Indexing a position the cache does not hold raises :class:`ModelError` (iteration yields zero-memory NaN
    placeholders there, so a consumer that bypasses indexing gets a NaN loss, never silent zeros).
    """

    cached: frozenset[int]

    def __new__(cls, items: Sequence[torch.Tensor], cached: Iterable[int]) -> CachedHiddenStates:
        obj = super().__new__(cls, items)
        obj.cached = frozenset(cached)
        return obj

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, int):
            i = index + len(self) if index < 0 else index
            if 0 <= i < len(self) and i not in self.cached:
                raise ModelError(
                    f"teacher hidden_states[{index}] is not in the teacher cache (it holds indices "
                    f"{sorted(self.cached)}): the cache was built for another layer map. Build it with this "
                    "objective (build_teacher_source does), or set teacher.cache=false."
                )
        return super().__getitem__(index)


class CachedTeacher:
    """A :class:`~textdistill.training.distiller.TeacherSource` reading a :class:`TeacherCache`.

    ``__call__(batch)`` gathers the batch's examples by ``batch["example_ids"]`` and returns float32 tensors
    on ``device``, shaped like the live teacher's (padded to the batch's length ``L``, zeros at padding):
    ``logits (B, C)``; ``hidden_states`` (``num_layers + 1`` entries of ``(B, L, H)``, the uncached ones
    unusable, see :class:`CachedHiddenStates`); ``attention_scores`` / ``attentions`` (layer ->
    ``(B, heads, L, L)``); ``qkv`` (layer -> three ``(B, L, W)``); ``attention_mask`` (the batch's) and
    ``num_heads``. Every batch is checked against the cached ``input_ids``, so a cache built from other data
    can never be read silently.

    Args:
        cache: the opened cache.
        request: the features to return (``objective.teacher_request()``); each must be cached or derivable.
        device: where the returned tensors live.

    Raises:
        ModelError: ``request`` asks for a feature the cache does not hold.
    """

    def __init__(self, cache: TeacherCache, request: FeatureRequest, device: torch.device | str):
        missing = cache.spec.missing(request)
        if missing:
            raise ModelError(
                f"the teacher cache {cache.directory} does not hold {', '.join(missing)} (it stores "
                f"{cache.spec}); build the cache with this objective's teacher_request()."
            )
        self.cache = cache
        self.request = request
        self.device = torch.device(device)

    def _tokens(self, name: str, index: np.ndarray, real: torch.Tensor) -> torch.Tensor:
        rows = self.cache.read(name, index).to(self.device).float()
        out = torch.zeros(*real.shape, rows.shape[-1], device=self.device)
        out[real] = rows
        return out

    def __call__(self, batch: dict[str, torch.Tensor]) -> ModelOutputs:
        if "example_ids" not in batch:
            raise DataError(
                "the cached teacher needs batch['example_ids'] (the cache is keyed by example id); collate "
                "with textdistill.data.collate.Collator"
            )
        cache = self.cache
        rows = cache.rows(batch["example_ids"].cpu().numpy())
        mask = batch["attention_mask"]
        real_cpu = mask.cpu().bool()
        got = real_cpu.sum(1).numpy()
        if not np.array_equal(got, cache.lengths[rows]):
            bad = int(np.flatnonzero(got != cache.lengths[rows])[0])
            raise DataError(
                self._mismatch(
                    batch, bad, f"{got[bad]} real tokens, the cache has {cache.lengths[rows][bad]}"
                )
            )
        index = cache.token_index(rows)
        if not torch.equal(cache.read("input_ids", index).long(), batch["input_ids"].cpu()[real_cpu]):
            raise DataError(self._mismatch(batch, None, "other input_ids"))
        real = real_cpu.to(self.device)
        req = self.request

        hidden = None
        if req.hidden_states:
            b, length = real.shape
            width = cache.array(f"hidden_{cache.spec.hidden[0]}").shape[-1]
            hidden = CachedHiddenStates(
                [
                    self._tokens(f"hidden_{i}", index, real)
                    if i in cache.spec.hidden
                    else _nan_placeholder(b, length, width, self.device)
                    for i in range(cache.num_layers + 1)
                ],
                cache.spec.hidden,
            )
        projections: dict[tuple[int, str], torch.Tensor] = {}

        def proj(layer: int, role: str) -> torch.Tensor:
            if (layer, role) not in projections:
                projections[layer, role] = self._tokens(f"{role}_{layer}", index, real)
            return projections[layer, role]

        mask_dev = mask.to(self.device)
        query_real = real[:, None, :, None]
        scores: dict[int, torch.Tensor] = {}
        probs: dict[int, torch.Tensor] = {}
        for layer in sorted(req.attention_scores | req.attentions):
            if layer in cache.spec.qkv:
                # The live hooks' own functions on the same Q/K: identical values at real positions.
                scores[layer] = scores_from_qk(proj(layer, "q"), proj(layer, "k"), cache.num_heads)
            elif layer in cache.spec.scores:
                scores[layer] = cache.read_maps(f"scores_{layer}", rows, real_cpu).to(self.device).float()
            if layer in req.attentions:  # probabilities only when asked for (a softmax per layer)
                if layer in scores:
                    probs[layer] = probs_from_scores(scores[layer], mask_dev) * query_real
                else:
                    probs[layer] = cache.read_maps(f"probs_{layer}", rows, real_cpu).to(self.device).float()
        if "token_logits" in cache.meta["arrays"]:
            logits = self._tokens("token_logits", index, real)
        else:
            logits = cache.read("logits", rows).to(self.device).float()
        return ModelOutputs(
            logits=logits,
            hidden_states=hidden,
            attentions={k: probs[k] for k in sorted(req.attentions)} if req.attentions else None,
            attention_scores={k: scores[k] for k in sorted(req.attention_scores)}
            if req.attention_scores
            else None,
            qkv={k: (proj(k, "q"), proj(k, "k"), proj(k, "v")) for k in sorted(req.qkv)} if req.qkv else None,
            attention_mask=mask,
            num_heads=cache.num_heads,
        )

    def _mismatch(self, batch: dict[str, torch.Tensor], row: int | None, what: str) -> str:
        ids = batch["example_ids"].tolist()
        which = f"example id {ids[row]}" if row is not None else f"one of the example ids {ids[:8]}"
        return (
            f"{which} does not match the teacher cache {self.cache.directory} ({what}): the batch comes from "
            "other data (or another tokenizer / max_length) than the cache was built from. Rebuild the "
            "cache for this data (build_teacher_source does when the fingerprint changes) or set "
            "teacher.cache=false."
        )
