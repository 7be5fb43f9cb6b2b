"""Generation from a causal LM: greedy or temperature / nucleus sampling, seeded per sequence.

One loop serves on-policy distillation (the student samples continuations of the batch's prompts),
sequence-level KD (the teacher writes responses) and the report's samples. Each sequence draws from its own
``torch.Generator`` seeded from ``(seed, key)``, so a sequence's tokens do not depend on which other
prompts share its batch, on the batch size, or on the global RNG (which the loop never touches: dropout in
the training step sees the same random stream with or without generation).

The loop recomputes the whole (right-padded) batch at every step instead of keeping a KV cache: with right
padding every position keeps its true index, so the next-token logits of a row are exactly those of the
row alone (causal attention never sees the padding after it), for every architecture, with no
position-id bookkeeping. That costs ``O(new tokens x length)`` forwards; fine for short continuations and
small models, and the reason ``lm.max_new_tokens`` should stay modest for large ones.
"""

from __future__ import annotations

import hashlib
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
    """
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token to continue")
    keys = list(keys) if keys is not None else [str(i) for i in range(len(prompts))]
    gens = [row_generator(seed, k) for k in keys] if temperature > 0 else []
    rows = [list(map(int, p)) for p in prompts]
    budget = [max(0, min(max_new_tokens, max_length - len(p))) for p in rows]
    out: list[list[int]] = [[] for _ in rows]
    live = [i for i in range(len(rows)) if budget[i] > 0]
    was_training = model.training
    model.eval()
    try:
        while live:
            seqs = [rows[i] + out[i] for i in live]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            device = next(model.parameters()).device
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            still = []
            for r, i in enumerate(live):
                last = logits[r, len(seqs[r]) - 1].float().cpu()
                if temperature == 0:
                    token = int(last.argmax())
                else:
                    probs = next_token_distribution(last, temperature, top_p)
                    token = int(torch.multinomial(probs, 1, generator=gens[i]))
                out[i].append(token)
                if token != eos_token_id and len(out[i]) < budget[i]:
                    still.append(i)
            live = still
    finally:
        model.train(was_training)
    return out
