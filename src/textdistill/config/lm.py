"""Configuration of causal-LM generation: on-policy distillation (GKD), sequence-level KD, report samples.

The ``lm`` section of the main schema. :meth:`LMConfig.problems` lists every invalid field at once; the
causal-LM runner reports them with the rest of the config's problems before any weights load.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LMConfig:
    """How causal-LM runs generate text (ignored by classifier runs)."""

    on_policy_fraction: float = 0.0
    """GKD's lambda (Agarwal et al. 2024): the fraction of training batches whose sequences the student
    samples itself (from the batch's prompts), scored by the teacher live; 0 = off-policy (the data only)."""
    max_new_tokens: int = 32
    """Tokens generated per prompt (on-policy batches, ``mode: generate`` stages, report samples); a sequence
    also stops at EOS and at ``data.max_length``."""
    temperature: float = 1.0
    """Sampling temperature of generation; 0 = greedy (argmax)."""
    top_p: float = 1.0
    """Nucleus sampling: sample from the smallest set of tokens whose probability reaches top_p (1 = all)."""
    text_prompt_fraction: float = 0.5
    """On-policy batches of plain-text rows (no prompt): the first fraction of each row's tokens is the
    prompt the student continues (at least one token)."""
    samples: int = 3
    """Held-out prompts whose greedy teacher and student continuations go into report.md and
    results.json (``samples``); 0 = none."""

    def problems(self) -> list[str]:
        """Every invalid field, each naming the key, the value and the valid range."""
        out = []

        def number(value: object) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool)

        if not number(self.on_policy_fraction) or not 0.0 <= self.on_policy_fraction <= 1.0:
            out.append(f"lm.on_policy_fraction={self.on_policy_fraction!r} must be between 0 and 1 (lambda)")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            out.append(f"lm.max_new_tokens={self.max_new_tokens!r} must be an integer >= 1")
        if not number(self.temperature) or self.temperature < 0:
            out.append(f"lm.temperature={self.temperature!r} must be >= 0 (0 = greedy)")
        if not number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            out.append(f"lm.top_p={self.top_p!r} must be in (0, 1] (1 = no nucleus truncation)")
        if not number(self.text_prompt_fraction) or not 0.0 < self.text_prompt_fraction < 1.0:
            out.append(
                f"lm.text_prompt_fraction={self.text_prompt_fraction!r} must be strictly between 0 and 1"
            )
        if not isinstance(self.samples, int) or self.samples < 0:
            out.append(f"lm.samples={self.samples!r} must be an integer >= 0")
        return out
