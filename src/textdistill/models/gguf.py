"""GGUF causal LMs: dequantise a ``.gguf`` file into a plain Hugging Face folder, and accept a ``.gguf`` path.

transformers reads GGUF files (``from_pretrained(folder, gguf_file=NAME)``, with the ``gguf`` package),
dequantising every tensor to fp32, but the model it returns is marked as GGUF-quantised and refuses
``save_pretrained``. :func:`gguf_to_hf` copies the dequantised weights onto a fresh model of the same config
(without the quantisation marker) and saves it with the GGUF's tokenizer, so later runs load the plain folder
in a second instead of dequantising again. :func:`split_gguf_path` lets ``teacher.path`` name a ``.gguf``
file directly (``teacher.path=models/x.gguf`` is ``teacher.path=models teacher.gguf_file=x.gguf``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from textdistill.errors import ModelError

GGUF_FIX = (
    "check that the file is a complete GGUF causal LM (re-download or re-install it, e.g. "
    "`textdistill provision smollm2`), that the `gguf` package is installed (pip install gguf), and that "
    "transformers supports its architecture"
)


def split_gguf_path(path: str | Path, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``(folder, gguf_file)`` for a ``teacher.path`` that may name a ``.gguf`` file itself.

    A path ending in ``.gguf`` becomes its parent folder and file name (``gguf_file``, if also given, must
    be the same name); any other path is returned unchanged.

    Raises:
        ModelError: ``gguf_file`` names a different file than the ``.gguf`` path.
    """
    p = Path(path)
    if p.suffix.lower() != ".gguf":
        return str(path), gguf_file
    if gguf_file not in (None, p.name):
        raise ModelError(
            f"teacher.path names the GGUF file {p.name!r} but teacher.gguf_file is {gguf_file!r}; "
            "set only one of them"
        )
    return str(p.parent), p.name


def load_gguf(gguf_path: str | Path) -> tuple[torch.nn.Module, Any]:
    """The dequantised fp32 model and tokenizer of a GGUF file.

    Raises:
        ModelError: a missing file, or one transformers cannot read, naming the file and the fix.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_path).expanduser()
    if not path.is_file():
        raise ModelError(f"GGUF file {str(path)!r} does not exist; {GGUF_FIX}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(path.parent), gguf_file=path.name, trust_remote_code=False
        )
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32, trust_remote_code=False
        )
    except ImportError as exc:
        raise ModelError(f"cannot read GGUF file {str(path)!r}: {exc}; pip install gguf") from exc
    except Exception as exc:  # gguf raises ValueError / KeyError / struct and numpy errors on bad files
        raise ModelError(
            f"cannot load GGUF file {str(path)!r} ({type(exc).__name__}: {str(exc)[:300]}); {GGUF_FIX}"
        ) from exc
    return model, tokenizer


def plain_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The same weights on a fresh model whose config has no GGUF quantisation marker (so it can be saved)."""
    from transformers import AutoModelForCausalLM

    values = model.config.to_dict()
    values.pop("quantization_config", None)
    config = type(model.config).from_dict(values)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.eval()
    return plain


def greedy_text(model: torch.nn.Module, tokenizer: Any, prompt: str, new_tokens: int = 8) -> str:
    """The greedy continuation of ``prompt`` (the provisioning check that the weights make sense)."""
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(
            **ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def gguf_to_hf(
    gguf_path: str | Path,
    out: str | Path,
    *,
    prompt: str = "The capital of France is",
    new_tokens: int = 8,
) -> dict[str, Any]:
    """Dequantise ``gguf_path`` into a plain HF folder ``out`` (model + tokenizer) and check the result.

    The saved folder is reloaded and its logits on ``prompt`` must equal the GGUF model's exactly.

    Returns:
        ``parameters``, ``model_type``, ``num_layers``, ``vocab_size``, the greedy continuation of
        ``prompt`` (``generation``), ``max_abs_logit_diff`` (saved vs GGUF, 0.0) and ``load_s``.

    Raises:
        ModelError: an unreadable GGUF (naming the file and the fix), or a saved folder that differs.
    """
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    model, tokenizer = load_gguf(gguf_path)
    load_s = time.perf_counter() - t0
    plain = plain_copy(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    reloaded = AutoModelForCausalLM.from_pretrained(
        str(out), dtype=torch.float32, trust_remote_code=False
    ).eval()
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        diff = (reloaded(**ids).logits - model(**ids).logits).abs().max().item()
    if diff != 0.0:
        raise ModelError(
            f"the HF folder written from {str(gguf_path)!r} differs from the GGUF model by {diff:.2e}: "
            "nothing was kept"
        )
    return {
        "model_type": str(plain.config.model_type),
        "parameters": sum(p.numel() for p in plain.parameters()),
        "num_layers": int(plain.config.num_hidden_layers),
        "vocab_size": int(plain.config.vocab_size),
        "generation_prompt": prompt,
        "generation": greedy_text(reloaded, tokenizer, prompt, new_tokens),
        "max_abs_logit_diff": diff,
        "load_s": round(load_s, 1),
    }
