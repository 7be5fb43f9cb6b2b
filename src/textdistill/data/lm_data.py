"""Causal-LM data: plain text or JSONL read into token ids and labels, then padded or packed into batches.

Two kinds of example:

* ``text``: every token is a target (a line of a ``.txt`` file, or a JSONL object with ``text``);
* ``prompt`` + ``response`` (JSONL): the loss is on the response only; prompt tokens get label ``-100``.
  When the tokenizer has a chat template (and ``chat_template`` is not False) the prompt is rendered as a
  user turn with the generation prompt appended, so the response follows exactly what the model will see at
  inference time.

Labels are aligned with ``input_ids`` (the HF convention); the loss shifts them (see
:func:`textdistill.losses.lm.shifted_loss_mask`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from textdistill.errors import DataError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class LMExample:
    """One example: ``text`` (all tokens are targets) or ``prompt`` + ``response`` (response tokens only)."""

    text: str | None = None
    prompt: str | None = None
    response: str | None = None
    source: str = ""


def _jsonl_example(obj: Any, where: str) -> LMExample:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if isinstance(obj.get("text"), str):
        return LMExample(text=obj["text"], source=where)
    if isinstance(obj.get("prompt"), str) and isinstance(obj.get("response"), str):
        return LMExample(prompt=obj["prompt"], response=obj["response"], source=where)
    raise DataError(
        f"{where}: a causal-LM example needs a string 'text', or string 'prompt' and 'response' "
        f"(keys found: {sorted(obj)})"
    )


def read_lm_examples(path: str | Path) -> list[LMExample]:
    """Read ``.txt`` (one example per non-empty line) or ``.jsonl`` (``text`` or ``prompt``/``response``).

    Raises:
        DataError: a missing file, another extension, bad JSON or an object without the needed keys
            (naming the line), or a file with no example.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"causal-LM data file {str(path)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise DataError(f"causal-LM data {str(path)!r}: use a .txt (one text per line) or .jsonl file")
    examples = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{p.name}:{n}"
            if suffix == ".txt":
                examples.append(LMExample(text=line.rstrip("\n"), source=where))
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg}); fix or remove the line") from exc
            examples.append(_jsonl_example(obj, where))
    if not examples:
        raise DataError(f"causal-LM data file {str(path)!r} has no example")
    return examples


def _ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _chat_prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    out = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return [int(i) for i in out]


def encode_lm_example(
    example: LMExample, tokenizer: Any, max_length: int, chat_template: bool | None = None
) -> dict[str, list[int]]:
    """``input_ids`` and aligned ``labels`` (``-100`` on prompt tokens) of one example.

    Args:
        example: the example.
        tokenizer: its tokenizer; ``eos_token_id`` (when set) ends every response and text.
        max_length: tokens per example; a text is cut there, a response is cut to fit after its prompt.
        chat_template: render prompts with the tokenizer's chat template: None uses it when the tokenizer has
            one, True requires one, False never uses it.

    Raises:
        DataError: a prompt that leaves no room for a response token, or chat_template=True without one.
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat_template and not has_template:
        raise DataError(
            "chat_template is on, but the tokenizer has no chat template; set it to null or false"
        )
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if example.text is not None:
        ids = (_ids(tokenizer, example.text, True) + eos)[:max_length]
        return {"input_ids": ids, "labels": list(ids)}
    use_template = has_template if chat_template is None else chat_template
    prompt = (
        _chat_prompt_ids(tokenizer, example.prompt) if use_template else _ids(tokenizer, example.prompt, True)
    )
    if len(prompt) >= max_length:
        raise DataError(
            f"{example.source}: the prompt is {len(prompt)} tokens, but max_length is {max_length}, which leaves "
            "no room for the response; raise data.max_length or shorten the prompt (prompts are never cut: "
            "the response would be trained on a context the model never sees)"
        )
    response = (_ids(tokenizer, example.response, False) + eos)[: max_length - len(prompt)]
    return {"input_ids": prompt + response, "labels": [IGNORE_INDEX] * len(prompt) + response}


def encode_lm_examples(
    examples: list[LMExample], tokenizer: Any, max_length: int, chat_template: bool | None = None
) -> list[dict[str, list[int]]]:
    """:func:`encode_lm_example` for every example, with ``example_id`` (the index) added."""
    if max_length < 2:
        raise DataError(f"max_length must be at least 2 for next-token prediction, got {max_length}")
    out = []
    for i, ex in enumerate(examples):
        enc = encode_lm_example(ex, tokenizer, max_length, chat_template)
        enc["example_id"] = i
        out.append(enc)
    return out


def pack_examples(encoded: list[dict[str, Any]], block: int) -> list[dict[str, Any]]:
    """Concatenate examples into rows of exactly ``block`` tokens (the last row may be shorter).

    Tokens of a later example attend to earlier ones in the same row (plain packing, as in HF's
    ``group_texts``), but no example's first token is a target, so no loss predicts across a boundary.
    """
    ids: list[int] = []
    labels: list[int] = []
    for enc in encoded:
        ids.extend(enc["input_ids"])
        labels.extend([IGNORE_INDEX] + list(enc["labels"][1:]))
    return [
        {"input_ids": ids[s : s + block], "labels": labels[s : s + block], "example_id": n}
        for n, s in enumerate(range(0, len(ids), block))
    ]


class LMCollator:
    """Right-pads ``input_ids``/``labels`` to the longest row; ``attention_mask`` marks real tokens.

    Args:
        pad_token_id: id written into padding (the tokenizer's pad, else eos, else 0; never a target).
    """

    def __init__(self, pad_token_id: int | None):
        self.pad = int(pad_token_id) if pad_token_id is not None else 0

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "example_id": torch.tensor([int(r.get("example_id", i)) for i, r in enumerate(rows)]),
        }


def pad_token_of(tokenizer: Any) -> int | None:
    """The id used for padding: ``pad_token_id``, else ``eos_token_id`` (decoders often have no pad)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
