"""Sequence-level KD (Kim & Rush 2016): the teacher writes a response to every prompt, into a JSONL file
that a later stage trains on (``{"prompt": ..., "response": ...}``: the loss on the response only).

``textdistill generate-responses --teacher LM --prompts FILE -o OUT.jsonl`` and pipeline stages with
``mode: generate`` run :func:`generate_responses`:

* greedy (``temperature 0``, the default) or sampled (temperature, top-p), each prompt seeded on its own
  (``seed`` and its index), so the output does not depend on the batch size or on where a resume began;
* resumable: responses are appended, a batch at a time (flushed and fsynced), to ``OUT.jsonl.partial``
  next to ``OUT.jsonl.partial.meta.json`` (its fingerprint); an interrupted run continues after the last
  complete batch of the same fingerprint;
* atomic: ``OUT.jsonl`` appears, complete, by a rename; ``OUT.jsonl.meta.json`` records its fingerprint, and a
  finished file with the same fingerprint is reused without loading the teacher;
* fingerprinted: the teacher's files, the prompts file's bytes, the generation settings, the chat template
  choice and ``max_length``.

Prompts: a ``.txt`` file (one per non-empty line) or ``.jsonl`` (``prompt``, else ``text``, per line). A
prompt that leaves no room for a response within ``max_length`` is an error naming its line, before the
teacher generates anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textdistill.config.lm import LMConfig
from textdistill.errors import ConfigError, DataError

FORMAT = 1


@dataclass
class GenerateResult:
    """What :func:`generate_responses` did."""

    path: Path
    n: int
    reused: bool
    resumed_from: int
    fingerprint: str
    dev_metrics: dict[str, float] | None = None  # the pipeline's stage-result shape (no metrics here)
    test_metrics: dict[str, float] | None = None


def read_prompts(path: str | Path) -> list[tuple[str, str]]:
    """``[(where, prompt)]`` from a ``.txt`` or ``.jsonl`` prompts file.

    Raises:
        DataError: a missing file, another extension, bad JSON or a line without a string prompt/text, or
            a file with no prompt.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"prompts file {str(path)!r} does not exist")
    if p.suffix.lower() not in (".txt", ".jsonl"):
        raise DataError(f"prompts file {str(path)!r}: use a .txt (one prompt per line) or .jsonl file")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p.name}:{n}"
        if p.suffix.lower() == ".txt":
            out.append((where, line))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg}); fix or remove the line") from exc
        text = obj.get("prompt", obj.get("text")) if isinstance(obj, dict) else None
        if not isinstance(text, str):
            raise DataError(f"{where}: a prompt line needs a string 'prompt' (or 'text'), got {line[:80]!r}")
        out.append((where, text))
    if not out:
        raise DataError(f"prompts file {str(path)!r} has no prompt")
    return out


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fingerprint(components: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(components, sort_keys=True).encode()).hexdigest()[:20]


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _complete_lines(partial: Path, batch_size: int) -> int:
    """Complete batches already in ``partial`` (in lines); anything after them is cut off the file."""
    data = partial.read_bytes()
    lines = data.split(b"\n")[:-1]  # the text after the last newline is an incomplete line
    good = 0
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            break
        good += 1
    keep = (good // batch_size) * batch_size
    size = sum(len(line) + 1 for line in lines[:keep])
    with partial.open("r+b") as f:
        f.truncate(size)
    return keep


def _encode_prompts(prompts: list[tuple[str, str]], tokenizer: Any, max_length: int, chat: bool | None):
    from textdistill.data.lm_data import IGNORE_INDEX, LMExample, encode_lm_example

    out = []
    for where, text in prompts:
        enc = encode_lm_example(
            LMExample(prompt=text, response="", source=where), tokenizer, max_length, chat
        )
        out.append([i for i, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab == IGNORE_INDEX])
    return out


def generate_responses(
    teacher: str | Path,
    prompts: str | Path,
    out: str | Path,
    *,
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
    lm: LMConfig | None = None,
    seed: int = 42,
    batch_size: int = 8,
    max_length: int = 512,
    chat_template: bool | None = None,
    quiet: bool = True,
) -> GenerateResult:
    """The teacher's response to every prompt of ``prompts``, written to ``out`` (see the module docstring).

    Args:
        teacher: the causal-LM teacher's folder (with its tokenizer).
        prompts: the prompts file.
        out: the JSONL to write (``{"prompt", "response"}`` per line, in the prompts' order).
        gguf_file, trust_remote_code: how to load the teacher.
        lm: ``max_new_tokens``, ``temperature`` (0 = greedy) and ``top_p``.
        seed: seeds sampled responses (prompt ``i`` draws from ``(seed, i)``).
        batch_size: prompts generated together (and the unit of resumption).
        max_length: prompt + response tokens at most.
        chat_template: render prompts with the tokenizer's chat template (None: when it has one).

    Raises:
        ConfigError: invalid generation settings, or ``out`` is a file this command did not write.
        DataError: an unreadable prompts file or a prompt too long for ``max_length``.
        ModelError: a teacher that does not load.
    """
    from textdistill.training.teacher_cache.lm_topk import teacher_files_hash

    lm = lm or LMConfig(temperature=0.0)
    problems = lm.problems() + ([f"batch_size={batch_size!r} must be >= 1"] if batch_size < 1 else [])
    if problems:
        raise ConfigError(problems)
    out = Path(out)
    items = read_prompts(prompts)
    components = {
        "teacher": teacher_files_hash(teacher, gguf_file),
        "prompts": _file_hash(Path(prompts)),
        "max_new_tokens": lm.max_new_tokens,
        "temperature": lm.temperature,
        "top_p": lm.top_p if lm.temperature > 0 else None,
        "seed": seed if lm.temperature > 0 else None,
        "max_length": max_length,
        "chat_template": chat_template,
        "format": FORMAT,
    }
    fp = _fingerprint(components)
    meta = out.with_name(out.name + ".meta.json")
    partial_meta = out.with_name(out.name + ".partial.meta.json")
    pending = (
        out.with_name(out.name + ".partial").is_file()
        and (_read_meta(partial_meta) or {}).get("fingerprint") == fp
    )  # a run of these settings was interrupted (possibly between writing meta and the rename)
    if out.exists() and not pending:
        done = _read_meta(meta)
        if done is None:
            raise ConfigError(
                f"{str(out)!r} exists and was not written by generate-responses (no {meta.name}); choose "
                "another output path or remove the file"
            )
        if done.get("fingerprint") == fp:
            return GenerateResult(out, int(done.get("n", len(items))), True, 0, fp)
    return _generate(teacher, items, out, meta, components, fp, gguf_file, trust_remote_code, lm, seed,
                     batch_size, max_length, chat_template, quiet)  # fmt: skip


def _generate(teacher, items, out, meta, components, fp, gguf_file, trust_remote_code, lm, seed, batch_size,
              max_length, chat_template, quiet) -> GenerateResult:  # fmt: skip
    from transformers import AutoTokenizer

    from textdistill.data.lm_data import pad_token_of
    from textdistill.models.causal_lm import load_causal_lm
    from textdistill.models.lm_sampling import generate
    from textdistill.training.callbacks import write_json_atomic

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(str(teacher), trust_remote_code=trust_remote_code, **kwargs)
    encoded = _encode_prompts(items, tokenizer, max_length, chat_template)  # too-long prompts fail here
    partial = out.with_name(out.name + ".partial")
    partial_meta = out.with_name(out.name + ".partial.meta.json")
    start = 0
    if partial.is_file() and (_read_meta(partial_meta) or {}).get("fingerprint") == fp:
        start = _complete_lines(partial, batch_size)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(b"")
        write_json_atomic(partial_meta, {"fingerprint": fp, "components": components})
    model = (
        load_causal_lm(teacher, gguf_file=gguf_file, trust_remote_code=trust_remote_code)
        if start < len(items)
        else None
    )
    pad = pad_token_of(tokenizer)
    with partial.open("a", encoding="utf-8") as f:
        for b in range(start, len(items), batch_size):
            idx = range(b, min(b + batch_size, len(items)))
            conts = generate(
                model, [encoded[i] for i in idx], max_new_tokens=lm.max_new_tokens, max_length=max_length,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=pad if pad is not None else 0,
                temperature=lm.temperature, top_p=lm.top_p, seed=seed, keys=[str(i) for i in idx],
            )  # fmt: skip
            for i, cont in zip(idx, conts, strict=True):
                response = tokenizer.decode(cont, skip_special_tokens=True)
                f.write(json.dumps({"prompt": items[i][1], "response": response}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            if not quiet:
                print(f"generate-responses: {idx.stop}/{len(items)}", flush=True)
    write_json_atomic(meta, {"fingerprint": fp, "components": components, "n": len(items)})
    os.replace(partial, out)
    with contextlib.suppress(OSError):
        partial_meta.unlink()
    return GenerateResult(out, len(items), False, start, fp)


# ------------------------------------------------------------------------------- pipeline stage
def generate_stage_problems(cfg: Any) -> list[str]:
    """Every problem of a ``mode: generate`` stage's config (no weights loaded)."""
    problems = []
    if not cfg.teacher.path or not Path(cfg.teacher.path).is_dir():
        problems.append(f"teacher.path must be a local causal-LM folder, got {cfg.teacher.path!r}")
    train = cfg.data.train
    if not train:
        problems.append("data.train: the prompts file (.txt or .jsonl) is required for a generate stage")
    elif Path(train).suffix.lower() not in (".txt", ".jsonl"):
        problems.append(f"data.train: prompts file {train!r} must be .txt (one per line) or .jsonl")
    elif not Path(train).is_file():
        problems.append(f"data.train: prompts file {train!r} does not exist")
    if cfg.train.eval_batch_size < 1:
        problems.append(f"train.eval_batch_size={cfg.train.eval_batch_size!r} must be >= 1")
    return problems + cfg.lm.problems()


def run_generate_stage(cfg: Any, out: str | Path, *, quiet: bool = False) -> GenerateResult:
    """A pipeline stage: the teacher's responses to ``data.train``'s prompts, into ``out``.

    Settings: ``teacher.path`` / ``gguf_file`` / ``trust_remote_code``, ``data.max_length`` and
    ``data.chat_template``, ``lm.max_new_tokens`` / ``temperature`` (0 = greedy) / ``top_p``, ``train.seed``,
    and ``train.eval_batch_size`` prompts per batch.

    Raises:
        ConfigError: every problem of :func:`generate_stage_problems`.
    """
    problems = generate_stage_problems(cfg)
    if problems:
        raise ConfigError(problems)
    result = generate_responses(
        cfg.teacher.path,
        cfg.data.train,
        out,
        gguf_file=cfg.teacher.gguf_file,
        trust_remote_code=cfg.teacher.trust_remote_code,
        lm=cfg.lm,
        seed=cfg.train.seed,
        batch_size=cfg.train.eval_batch_size,
        max_length=cfg.data.max_length,
        chat_template=cfg.data.chat_template,
        quiet=quiet,
    )
    result.dev_metrics = {"responses": float(result.n)}
    return result
