"""Held-out metrics of a causal-LM student against its teacher: perplexities, token KL, top-1 agreement.

All are pooled over the loss positions of the held-out rows (position ``t`` counts when
``labels[t + 1] != -100``), the usual definition of perplexity:

* ``student_ppl = exp(sum -log q(x_{t+1}) / N)`` and ``teacher_ppl`` likewise with ``p``;
* ``token_kl = sum KL(p_t || q_t) / N``, the forward KL to the teacher (with a top-k store: over the k + 1
  buckets, a lower bound of the full KL; exact at k = V);
* ``top1_agreement``: the fraction of positions where the student's most probable token is the teacher's.

The teacher is a live :class:`~textdistill.models.causal_lm.HFCausalLM` or a teacher-logit store; with the
store, the teacher's perplexity comes from its stored target log-probabilities (exact at any k).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from textdistill.losses.lm import kl, shifted_loss_mask, topk_buckets


def _teacher_side(teacher: Any, batch: dict[str, torch.Tensor], log_q: torch.Tensor, targets: torch.Tensor):
    """``(log p at the target, per-position KL(p || q), teacher top-1 id)``, each ``(B, L - 1)``."""
    from textdistill.training.teacher_cache.lm_topk import StoredLMTeacher, lookup_targets

    if isinstance(teacher, StoredLMTeacher):
        out = teacher(batch)
        t = out.token_topk
        cut = type(t)(t.logprobs[:, :-1], t.ids[:, :-1], t.rest_logmass[:, :-1])
        log_p, log_qb = topk_buckets(log_q, cut)
        target_logp = lookup_targets(teacher.store, batch)[:, :-1]
        return target_logp, kl(log_p, log_qb), t.ids[:, :-1, 0]
    out = teacher(batch["input_ids"], batch["attention_mask"])
    log_p = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
    return log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1), kl(log_p, log_q), log_p.argmax(-1)


@torch.no_grad()
def evaluate_lm(
    student: torch.nn.Module, teacher: Any, batches: list[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """``student_ppl``, ``teacher_ppl``, ``token_kl``, ``top1_agreement`` and ``tokens`` over ``batches``.

    Args:
        student: an :class:`~textdistill.models.causal_lm.HFCausalLM`.
        teacher: a live HFCausalLM, a :class:`StoredLMTeacher` built for these rows, or None (student only).
        batches: collated held-out batches (``input_ids``, ``attention_mask``, ``labels``, ``example_id``).
    """
    was_training = student.training
    student.eval()
    sums = {"student_nll": 0.0, "teacher_nll": 0.0, "kl": 0.0, "agree": 0.0}
    n = 0
    device = next(student.parameters()).device
    for batch in batches:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        ids = batch["input_ids"]
        mask = shifted_loss_mask(batch, ids.shape[0], ids.shape[1], ids.device)
        logits = student(ids, batch["attention_mask"]).logits[:, :-1].float()
        log_q = torch.log_softmax(logits, dim=-1)
        targets = torch.where(mask, batch["labels"][:, 1:], 0)
        s_nll = -log_q.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        sums["student_nll"] += float(s_nll[mask].sum())
        n += int(mask.sum())
        if teacher is not None:
            t_logp, per_kl, t_top = _teacher_side(teacher, batch, log_q, targets)
            sums["teacher_nll"] += float(-t_logp[mask].sum())
            sums["kl"] += float(per_kl[mask].sum())
            sums["agree"] += float((log_q.argmax(-1) == t_top)[mask].sum())
    student.train(was_training)
    n = max(n, 1)
    out = {"student_ppl": math.exp(sums["student_nll"] / n), "tokens": float(n)}
    if teacher is not None:
        out.update(
            teacher_ppl=math.exp(sums["teacher_nll"] / n),
            token_kl=sums["kl"] / n,
            top1_agreement=sums["agree"] / n,
        )
    return out
