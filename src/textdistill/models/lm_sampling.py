"""Generation from a causal LM: greedy or temperature / nucleus sampling, seeded per sequence.

One loop serves on-policy distillation (the student samples continuations of the batch's prompts),
sequence-level KD (the teacher writes responses) and the report's samples. Each sequence draws from its own
``torch.Generator`` seeded from ``(seed, key)``, so a sequence's tokens do not depend on which other
prompts share its batch, on the batch size, or on the global RNG (which the loop never touches: dropout in
the training step sees the same random stream with or without generation).

By default the prompts are left-padded (position ids count real tokens only, as HF ``generate`` does) and
each step feeds one token through the model's KV cache. ``use_cache=False`` instead recomputes the whole
right-padded batch at every step: every position keeps its true index and causal attention never sees the
padding after a row, so a row's logits are those of the row alone for any architecture, at
``O(new tokens x length)`` cost. The two agree (tested on Llama and GPT-2).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence

import torch
from torch import nn


def row_generator(seed: int, key: str) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and a string key (e.g. ``"epoch-3/batch-7/row-2"``)."""
    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def next_token_distribution(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """``(V,)`` probabilities to sample from: ``softmax(logits / temperature)`` cut to the top-p nucleus.

    The nucleus is the smallest set of most probable tokens whose mass reaches ``top_p`` (the token that
    crosses the threshold is kept), renormalised.
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # mass of the more probable tokens
    keep_sorted = before < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    probs = torch.where(keep, probs, torch.zeros_like(probs))
    return probs / probs.sum()


@torch.no_grad()
def generate(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    max_length: int,
    eos_token_id: int | None,
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    keys: Sequence[str] | None = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """The continuation of each prompt (EOS included when generated; never the prompt itself).

    Args:
        model: a transformers causal LM (``model(input_ids, attention_mask).logits``) or an
            :class:`~textdistill.models.causal_lm.HFCausalLM`; run in eval mode, its mode restored after.
        prompts: token ids of each prompt (non-empty).
        max_new_tokens: tokens to generate at most per prompt.
        max_length: prompt + continuation never exceeds this many tokens.
        eos_token_id: a sequence ends after generating it (None: only the lengths stop it).
        pad_token_id: written into padding (never attended to).
        temperature: 0 = greedy (argmax), else the sampling temperature.
        top_p: nucleus mass (1 = the whole distribution).
        seed: with ``keys``, seeds each sequence's generator.
        keys: one string per prompt naming its draw (default: its index); same seed + key = same tokens.
        use_cache: left-pad the prompts and reuse the model's KV cache (one token per step); False
            recomputes the right-padded batch at every step (no cache, no position ids: exact for any model).
    """
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token to continue")
    keys = list(keys) if keys is not None else [str(i) for i in range(len(prompts))]
    gens = [row_generator(seed, k) for k in keys] if temperature > 0 else []
    rows = [list(map(int, p)) for p in prompts]
    budget = [max(0, min(max_new_tokens, max_length - len(p))) for p in rows]
    out: list[list[int]] = [[] for _ in rows]
    live = [i for i in range(len(rows)) if budget[i] > 0]

    def pick(i: int, logits: torch.Tensor) -> bool:
        """Append row ``i``'s next token; whether it goes on."""
        last = logits.float().cpu()
        if temperature == 0:
            token = int(last.argmax())
        else:
            token = int(
                torch.multinomial(next_token_distribution(last, temperature, top_p), 1, generator=gens[i])
            )
        out[i].append(token)
        return token != eos_token_id and len(out[i]) < budget[i]

    was_training = model.training
    model.eval()
    try:
        from textdistill.models.causal_lm import HFCausalLM

        inner = model.model if isinstance(model, HFCausalLM) else model
        if live and use_cache:
            _cached_steps(inner, [rows[i] for i in live], live, out, pick, pad_token_id)
        elif live:
            _recomputed_steps(inner, rows, live, out, pick, pad_token_id)
    finally:
        model.train(was_training)
    return out


def _recomputed_steps(model, rows, live, out, pick, pad: int) -> None:
    """Every step: the whole right-padded batch of the rows still going; their last real position."""
    device = next(model.parameters()).device
    while live:
        seqs = [rows[i] + out[i] for i in live]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        live = [i for r, i in enumerate(live) if pick(i, logits[r, len(seqs[r]) - 1])]


def _cached_steps(model, seqs, live, out, pick, pad: int) -> None:
    """Left-padded prompts (position ids count real tokens only, as HF generate does), then one token per
    step through the KV cache. Finished rows keep being fed (their outputs are ignored)."""
    device = next(model.parameters()).device
    n, width = len(seqs), max(len(s) for s in seqs)
    ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s) :] = torch.tensor(s)
        mask[r, width - len(s) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    res = model(
        input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device), use_cache=True
    )
    # transformers >= 5.x calls the KV cache `cache` (argument and output); earlier, `past_key_values`
    cache_key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    active = list(range(n))
    while True:
        active = [r for r in active if pick(live[r], res.logits[r, -1])]
        if not active:
            return
        step = torch.tensor([[out[i][-1]] for i in live])
        mask = torch.cat([mask, torch.ones(n, 1, dtype=torch.long)], dim=-1)
        pos = pos[:, -1:] + 1
        res = model(
            input_ids=step.to(device),
            attention_mask=mask.to(device),
            position_ids=pos.to(device),
            use_cache=True,
            **{cache_key: getattr(res, cache_key)},
        )
