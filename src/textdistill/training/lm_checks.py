"""Every check of a causal-LM config that needs no weights: ``textdistill config validate`` and the run's start.

On top of the problems ``lm_runner.lm_config_problems`` finds in the config alone (mode, files, student type,
terms that do not apply to causal LMs, temperature with a store), reading configs and tokenizers only:

* the teacher's config (a folder, or a GGUF file: ``teacher.path`` may name the ``.gguf`` itself);
* a ``pretrained`` student's vocabulary against the teacher's (size and tokens), with the cross-tokenizer
  options when they differ;
* ``teacher.store_topk`` within ``1..V``;
* the data: every row tokenized as the run will (a prompt that leaves no room for a response within
  ``data.max_length`` is named with its line);
* the output directory (it holds a run and neither ``--overwrite`` nor ``--resume`` was given);
* ``train.metric``: LM runs select by ``token_kl``.

All problems are reported at once (:class:`~textdistill.errors.ConfigError`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from textdistill.config.schema import Config
from textdistill.errors import ConfigError, TextDistillError

LM_METRICS = (None, "token_kl")


def with_gguf_path(cfg: Config) -> Config:
    """``teacher.path=DIR/x.gguf`` as ``teacher.path=DIR teacher.gguf_file=x.gguf`` (else ``cfg`` unchanged).

    Raises:
        ConfigError: ``teacher.gguf_file`` names another file than the ``.gguf`` path.
    """
    from textdistill.models.gguf import split_gguf_path

    if not cfg.teacher.path:
        return cfg
    try:
        path, gguf = split_gguf_path(cfg.teacher.path, cfg.teacher.gguf_file)
    except TextDistillError as exc:
        raise ConfigError([f"teacher.gguf_file: {exc}"]) from exc
    if (path, gguf) == (cfg.teacher.path, cfg.teacher.gguf_file):
        return cfg
    return replace(cfg, teacher=replace(cfg.teacher, path=path, gguf_file=gguf))


def _gguf_kwargs(cfg: Config) -> dict[str, Any]:
    return {"gguf_file": cfg.teacher.gguf_file} if cfg.teacher.gguf_file else {}


def _unreadable(cfg: Config, what: str, exc: Exception) -> str:
    if cfg.teacher.gguf_file:
        from textdistill.models.gguf import GGUF_FIX

        file = Path(cfg.teacher.path) / cfg.teacher.gguf_file
        return f"teacher.path: cannot read the {what} of GGUF file {str(file)!r} ({exc}); {GGUF_FIX}"
    return f"teacher.path: cannot read the causal-LM {what} in {cfg.teacher.path!r}: {exc}"


def teacher_lm_config(cfg: Config) -> Any:
    """The teacher's transformers config (no weights).

    Raises:
        ConfigError: it cannot be read (for a GGUF file: the file and the fix).
    """
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(
            cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code, **_gguf_kwargs(cfg)
        )
    except Exception as exc:  # OSError, ValueError, ImportError; gguf raises others on a damaged file
        raise ConfigError([_unreadable(cfg, "config", exc)]) from exc


def lm_tokenizer(cfg: Config) -> Any:
    """The teacher's tokenizer (the run's tokenizer).

    Raises:
        ConfigError: it cannot be read.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code, **_gguf_kwargs(cfg)
        )
    except Exception as exc:
        raise ConfigError([_unreadable(cfg, "tokenizer", exc)]) from exc


def vocab_problems(cfg: Config, teacher_config: Any, tokenizer: Any) -> list[str]:
    """A ``pretrained`` student whose vocabulary differs from the teacher's (size, or the tokens)."""
    from transformers import AutoConfig, AutoTokenizer

    from textdistill.models.causal_lm import CROSS_TOKENIZER_HINT

    s = cfg.student
    if s.type != "pretrained" or not s.path or not Path(s.path).is_dir():
        return []
    try:
        student = AutoConfig.from_pretrained(s.path, trust_remote_code=cfg.teacher.trust_remote_code)
    except Exception as exc:
        return [f"student.path: cannot read the causal-LM config in {s.path!r}: {exc}"]
    t_vocab, s_vocab = int(teacher_config.vocab_size), int(getattr(student, "vocab_size", -1))
    if t_vocab != s_vocab:
        return [
            f"student.path: the teacher's vocabulary has {t_vocab} tokens and the student's {s_vocab}; "
            + CROSS_TOKENIZER_HINT
        ]
    try:
        s_tok = AutoTokenizer.from_pretrained(s.path, trust_remote_code=cfg.teacher.trust_remote_code)
    except Exception:
        return []  # a student folder without a tokenizer: the run uses the teacher's
    if s_tok.get_vocab() != tokenizer.get_vocab():
        return [
            f"student.path: the student's tokenizer maps tokens to other ids than the teacher's (both have "
            f"{t_vocab} entries); " + CROSS_TOKENIZER_HINT
        ]
    return []


def data_problems(cfg: Config, tokenizer: Any) -> list[str]:
    """The training and dev files tokenized as the run will (prompts longer than ``max_length``...)."""
    from textdistill.data.lm_data import encode_lm_examples, read_lm_examples

    problems = []
    for key in ("train", "dev"):
        path = getattr(cfg.data, key)
        if not path or not Path(path).is_file():
            continue  # reported by lm_config_problems
        try:
            encode_lm_examples(read_lm_examples(path), tokenizer, cfg.data.max_length, cfg.data.chat_template)
        except TextDistillError as exc:
            problems.append(f"data.{key}: {exc}")
    return problems


def other_problems(cfg: Config, vocab: int, resume: bool) -> list[str]:
    """k within the vocabulary, the output directory, the selection metric."""
    from textdistill.config.validate import run_dir_problem
    from textdistill.training.teacher_cache.lm_topk import check_k

    problems = []
    if cfg.teacher.store_topk is not None:
        try:
            check_k(cfg.teacher.store_topk, vocab)
        except TextDistillError as exc:
            problems.append(f"teacher.store_topk: {exc}")
    p = run_dir_problem(cfg.output_dir, cfg.overwrite or resume)
    if p:
        problems.append(p + " (or --resume to continue it)")
    if cfg.train.metric not in LM_METRICS:
        problems.append(
            f"train.metric: {cfg.train.metric!r} does not apply to causal-LM runs, which keep the student "
            "with the lowest held-out token_kl; leave it unset or set token_kl"
        )
    return problems


def validate_lm_config(cfg: Config, problems: list[str], *, resume: bool = False) -> Any:
    """Raise every problem of an LM config that can be found without loading weights, together.

    Args:
        cfg: the run's config (``.gguf`` path split by :func:`with_gguf_path`, objective resolved).
        problems: those already found (``lm_runner.lm_config_problems``: mode, files, terms...).
        resume: the run continues an existing run directory (it may hold a run).

    Returns:
        The teacher's transformers config.

    Raises:
        ConfigError: every problem found.
    """
    problems = list(problems)
    if not cfg.teacher.path or not Path(cfg.teacher.path).is_dir():
        raise ConfigError(problems)  # nothing more can be read
    try:
        config = teacher_lm_config(cfg)
        tokenizer = lm_tokenizer(cfg)
    except ConfigError as exc:
        raise ConfigError(problems + exc.problems) from exc
    problems += vocab_problems(cfg, config, tokenizer)
    problems += data_problems(cfg, tokenizer)
    problems += other_problems(cfg, int(config.vocab_size), resume)
    if problems:
        raise ConfigError(problems)
    return config
