"""The tokenization plan of a token-classification run: one tokenizer for teacher and student.

Per-token KD compares teacher and student sub-token by sub-token, so a student that reads the text with
another tokenizer (a pretrained student of another family, ``student.vocab`` trimming) is refused here,
before any weights load; otherwise the run gets the single-tokenizer
:class:`~textdistill.training.cross_tokenizer.CrossTokenizerPlan` (whose methods hand back what they get).
"""

from __future__ import annotations

from typing import Any

from textdistill.data.conll import TokenExample
from textdistill.errors import ConfigError


def token_tokenization_plan(cfg: Any, teacher_tokenizer: Any, examples: list[TokenExample]) -> Any:
    """The run's (single-tokenizer) :class:`~textdistill.training.cross_tokenizer.CrossTokenizerPlan` for a
    token task; refuses a student that tokenizes differently from the teacher (another vocabulary,
    ``student.vocab`` trimming): per-token KD compares the two models sub-token by sub-token, so both must
    read the same sub-tokens.

    Raises:
        ConfigError: naming the student and the fix.
    """
    from textdistill.training.cross_tokenizer import CrossTokenizerPlan, resolve_student_tokenization

    texts = [" ".join(e.tokens) for e in examples]
    tokenization = resolve_student_tokenization(cfg, teacher_tokenizer, texts, quiet=True)
    if tokenization.cross:
        raise ConfigError(
            f"student.type={cfg.student.type} (student.vocab={getattr(cfg.student, 'vocab', 'full')}) tokenizes "
            "the text differently from the teacher, but token-classification KD compares the two models "
            "sub-token by sub-token. Fix: use a student with the teacher's tokenizer and student.vocab=full "
            "(truncate, shrink, bilstm, or a pretrained student of the teacher's family)."
        )
    glove = getattr(cfg.student, "glove", None) if cfg.student.type == "bilstm" else None
    return CrossTokenizerPlan(tokenization, teacher_tokenizer, None, examples, cfg.data.max_length, glove)
