"""On-policy distillation of causal LMs (GKD: Agarwal et al. 2024, "On-Policy Distillation of Language
Models: Learning from Self-Generated Mistakes").

With ``lm.on_policy_fraction = lambda``, each training batch is, with probability lambda, replaced by
sequences the *current* student samples: the batch's prompts (a prompt + response row: its prompt; a
plain-text row: its first ``lm.text_prompt_fraction`` of tokens) continued by up to ``lm.max_new_tokens``
sampled tokens. The loss covers the generated tokens only (prompt and padding carry label -100), and the
teacher scores those sequences live: a teacher-logit store covers the data's tokens, never the student's
samples, so on-policy batches load the teacher (once, at the first such batch) while off-policy batches keep
reading the store.

Determinism: whether batch ``b`` of epoch ``e`` is on-policy is drawn from ``Random(f"{seed}-on-policy-{e}-{b}")``
and each sampled row from its own generator (:func:`~textdistill.models.lm_sampling.row_generator`), so a run
is reproducible under ``train.seed`` and the global RNG is never touched. With lambda = 0 nothing is drawn
and the batches are exactly the off-policy ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import torch

from textdistill.config.lm import LMConfig
from textdistill.data.lm_data import IGNORE_INDEX
from textdistill.models.outputs import ModelOutputs

ON_POLICY_KEY = "on_policy"


def prompt_length(labels: list[int], n_tokens: int, text_prompt_fraction: float) -> int:
    """Tokens of a row that form its prompt.

    A prompt + response row starts with its prompt's ``-100`` labels; a plain-text row (every token a
    target) gives its first ``round(fraction * n)`` tokens, at least 1 and at most ``n - 1`` (when n > 1).
    """
    k = 0
    while k < n_tokens and labels[k] == IGNORE_INDEX:
        k += 1
    if k > 0:
        return min(k, n_tokens)
    return max(1, min(n_tokens - 1, round(text_prompt_fraction * n_tokens)))


def batch_prompts(batch: dict[str, torch.Tensor], text_prompt_fraction: float) -> list[list[int]]:
    """The prompt of every row of a collated (right-padded) batch."""
    out = []
    for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], strict=True):
        n = int(mask.sum())
        k = prompt_length(labels[:n].tolist(), n, text_prompt_fraction)
        out.append(ids[:k].tolist())
    return out


def on_policy_rows(
    prompts: list[list[int]], continuations: list[list[int]], example_ids: list[int]
) -> list[dict[str, Any]]:
    """Rows for :class:`~textdistill.data.lm_data.LMCollator`: prompt + continuation, loss on the continuation."""
    return [
        {"input_ids": p + c, "labels": [IGNORE_INDEX] * len(p) + c, "example_id": e}
        for p, c, e in zip(prompts, continuations, example_ids, strict=True)
    ]


def is_on_policy_batch(seed: int, epoch: int, index: int, fraction: float) -> bool:
    """Whether batch ``index`` of ``epoch`` is on-policy (no draw at all for fraction 0 or 1)."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    return random.Random(f"{seed}-on-policy-{epoch}-{index}").random() < fraction


class OnPolicyBatches:
    """Wraps a seeded loader function ``(epoch, start) -> batches``, replacing a fraction of its batches.

    Args:
        base: the off-policy loader function (collated batches, in the seeded order).
        student: the model being trained (sampled from as it is at that step: the loop asks for the next
            batch after the previous optimizer step).
        collate: the collator that pads the generated rows.
        lm: the generation settings (fraction, max_new_tokens, temperature, top_p, text prompt fraction).
        seed: ``train.seed``.
        max_length: ``data.max_length`` (prompt + continuation).
        eos_token_id, pad_token_id: the tokenizer's.
    """

    def __init__(
        self,
        base: Callable[[int, int], Iterable[dict[str, torch.Tensor]]],
        student: torch.nn.Module,
        collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
        lm: LMConfig,
        *,
        seed: int,
        max_length: int,
        eos_token_id: int | None,
        pad_token_id: int,
    ):
        self.base, self.student, self.collate, self.lm = base, student, collate, lm
        self.seed, self.max_length = seed, max_length
        self.eos, self.pad = eos_token_id, pad_token_id
        self.sampled_batches = 0

    def __call__(self, epoch: int, start: int) -> Iterable[dict[str, torch.Tensor]]:
        for index, batch in enumerate(self.base(epoch, start), start=start):
            if is_on_policy_batch(self.seed, epoch, index, self.lm.on_policy_fraction):
                yield self.sample(batch, f"e{epoch}/b{index}")
            else:
                yield batch

    def sample(self, batch: dict[str, torch.Tensor], key: str) -> dict[str, torch.Tensor]:
        """The batch's prompts continued by the student; ``on_policy`` marks every row."""
        from textdistill.models.lm_sampling import generate

        prompts = batch_prompts(batch, self.lm.text_prompt_fraction)
        continuations = generate(
            self.student,
            prompts,
            max_new_tokens=self.lm.max_new_tokens,
            max_length=self.max_length,
            eos_token_id=self.eos,
            pad_token_id=self.pad,
            temperature=self.lm.temperature,
            top_p=self.lm.top_p,
            seed=self.seed,
            keys=[f"{key}/r{r}" for r in range(len(prompts))],
        )
        ids = batch["example_id"].tolist()
        out = self.collate(on_policy_rows(prompts, continuations, ids))
        out[ON_POLICY_KEY] = torch.ones(len(prompts), dtype=torch.bool)
        self.sampled_batches += 1
        return out


class OnPolicyTeacher:
    """A teacher source that scores on-policy batches live and the others with ``off_policy``.

    Args:
        off_policy: the teacher source of data batches (a store reader or a live teacher).
        load_live: builds the live teacher source; called once, at the first on-policy batch.
    """

    def __init__(self, off_policy: Callable[[dict], ModelOutputs], load_live: Callable[[], Any]):
        self.off_policy = off_policy
        self.load_live = load_live
        self.live: Any | None = None

    def __call__(self, batch: dict[str, torch.Tensor]) -> ModelOutputs:
        flag = batch.get(ON_POLICY_KEY)
        if flag is None or not bool(flag.any()):
            return self.off_policy(batch)
        if self.live is None:
            self.live = self.load_live()
        return self.live(batch)


def on_policy_problems(cfg: Any) -> list[str]:
    """Problems of the ``lm`` section for a causal-LM distillation config (settings and combinations)."""
    problems = cfg.lm.problems()
    if not problems and cfg.lm.on_policy_fraction > 0 and cfg.data.packing:
        problems.append(
            "lm.on_policy_fraction > 0 with data.packing=true: on-policy batches continue each example's "
            "prompt, but packed rows mix several examples with no prompt of their own; set data.packing=false "
            "(or lm.on_policy_fraction=0)"
        )
    return problems
