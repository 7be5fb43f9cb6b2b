"""The report of a causal-LM run: held-out metrics before/after and sample generations, as Markdown.

Samples: ``lm.samples`` held-out rows chosen with ``Random(train.seed)`` (so the same rows every run of a
seed), each row's prompt (a prompt + response row: its prompt; a text row: its first
``lm.text_prompt_fraction`` of tokens) continued greedily by the teacher and by the student, up to
``lm.max_new_tokens`` tokens (greedy: deterministic, comparable between runs).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from textdistill.config.lm import LMConfig

_METRICS = ("student_ppl", "teacher_ppl", "token_kl", "top1_agreement", "tokens")


def sample_prompts(
    rows: list[dict[str, Any]], lm: LMConfig, seed: int
) -> tuple[list[list[int]], list[list[int]]]:
    """``(prompts, references)``: token ids of ``lm.samples`` held-out rows chosen with ``Random(seed)``."""
    from textdistill.training.lm_on_policy import prompt_length

    if not rows or lm.samples <= 0:
        return [], []
    chosen = sorted(random.Random(seed).sample(range(len(rows)), min(lm.samples, len(rows))))
    prompts, references = [], []
    for i in chosen:
        ids, labels = rows[i]["input_ids"], rows[i]["labels"]
        k = prompt_length(labels, len(ids), lm.text_prompt_fraction)
        prompts.append(list(ids[:k]))
        references.append(list(ids[k:]))
    return prompts, references


def greedy_continuations(
    model: Any, tokenizer: Any, prompts: list[list[int]], lm: LMConfig, max_length: int
) -> list[list[int]]:
    """Greedy continuations (up to ``lm.max_new_tokens`` tokens, EOS, or ``max_length``)."""
    from textdistill.data.lm_data import pad_token_of
    from textdistill.models.lm_sampling import generate

    if not prompts:
        return []
    pad = pad_token_of(tokenizer)
    return generate(
        model,
        prompts,
        max_new_tokens=lm.max_new_tokens,
        max_length=max_length,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad if pad is not None else 0,
        temperature=0.0,
    )


def format_samples(
    tokenizer: Any,
    prompts: list[list[int]],
    references: list[list[int]],
    teacher: list[list[int]],
    student: list[list[int]],
) -> list[dict[str, str]]:
    """``[{"prompt", "teacher", "student", "reference"}]`` as text (special tokens dropped)."""

    def text(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    return [
        {"prompt": text(p), "teacher": text(t), "student": text(s), "reference": text(r)}
        for p, r, t, s in zip(prompts, references, teacher, student, strict=True)
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip() or "(empty)"


def render_lm_report(details: dict[str, Any]) -> str:
    """Markdown: the metrics table (before / after training) and the samples."""
    before, after = details.get("dev_before") or {}, details.get("dev") or {}
    lines = [
        "# Causal-LM distillation report",
        "",
        f"Steps: {details.get('steps')}; on-policy batches: {details.get('on_policy_batches', 0)}; "
        f"training time {details.get('train_s')} s; peak RSS {details.get('peak_rss_mb')} MB; teacher in "
        f"memory during training: {details.get('teacher_in_memory_during_training')}.",
        "",
        "## Held-out metrics",
        "",
        "| metric | before | after |",
        "| --- | --- | --- |",
    ]
    for key in _METRICS:
        if key in before or key in after:
            fmt = (lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)) if key != "tokens" else str
            lines.append(f"| {key} | {fmt(before.get(key, '-'))} | {fmt(after.get(key, '-'))} |")
    samples = details.get("samples") or []
    if samples:
        lines += ["", "## Samples (greedy, held-out prompts)", ""]
        for n, s in enumerate(samples, start=1):
            lines += [
                f"### Sample {n}",
                "",
                "| | text |",
                "| --- | --- |",
                f"| prompt | {_cell(s['prompt'])} |",
                f"| teacher | {_cell(s['teacher'])} |",
                f"| student | {_cell(s['student'])} |",
                f"| reference | {_cell(s['reference'])} |",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


def write_lm_report(path: str | Path, details: dict[str, Any]) -> Path:
    """Write :func:`render_lm_report` to ``path``."""
    out = Path(path)
    out.write_text(render_lm_report(details), encoding="utf-8")
    return out
