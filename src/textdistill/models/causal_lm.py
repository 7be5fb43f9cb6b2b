"""Causal (decoder) language models: loading, the ModelOutputs wrapper, and students built from a teacher.

Students are plain transformers causal LMs (``LlamaForCausalLM``, ``GPT2LMHeadModel``...), saved with
``save_pretrained`` so ``pipeline("text-generation")`` and every other HF tool load them as they are:

* ``truncate``: the teacher's architecture with a chosen subset of its layers, every weight copied
  (embeddings, the chosen layers, final norm, LM head);
* ``shrink``: fewer layers, a narrower width, fewer (KV) heads, random init except the token embeddings,
  which are projected from the teacher's (PCA, :func:`~textdistill.models.students.project_embeddings`);
* ``pretrained``: any causal-LM checkpoint with the teacher's vocabulary.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from textdistill.errors import ModelError
from textdistill.models.hf import HFWrapper, info_from_config
from textdistill.models.outputs import HIDDEN_STATES, LOGITS, FeatureRequest, ModelInfo, ModelOutputs

CROSS_TOKENIZER_HINT = (
    "token-level KD needs the teacher's tokenizer: build the student from the teacher (truncate or shrink), "
    "pick a student trained with the same tokenizer, or use sequence-level KD (train the student on "
    "teacher-written responses), which works across tokenizers"
)


def causal_lm_info(config: object) -> ModelInfo:
    """Static :class:`ModelInfo` of a causal LM from its config (``num_labels`` is the vocabulary size)."""
    info = info_from_config(config, num_labels=int(config.vocab_size))
    return replace(info, kind="causal_lm", capabilities=frozenset({LOGITS, HIDDEN_STATES}))


class HFCausalLM(HFWrapper):
    """Wraps an ``AutoModelForCausalLM`` model behind the :class:`ModelOutputs` contract.

    Args:
        model: the transformers model; kept as ``.model`` (saved as is).
    """

    # Takes ``logit_rows`` (the distiller passes it when every logit term reads only the loss positions).
    accepts_logit_rows = True

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self._rows_ok: bool | None = None  # whether the head can run on chosen rows; checked at first use

    @property
    def info(self) -> ModelInfo:
        """Static facts about the model."""
        return causal_lm_info(self.config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        features: FeatureRequest | None = None,
        logit_rows: torch.Tensor | None = None,
    ) -> ModelOutputs:
        """Next-token logits ``(B, L, V)`` (position ``t`` predicts token ``t + 1``) and, if asked, hidden states.

        ``logit_rows`` (``(B, L)`` bool): compute the LM head only where it is True and return ``(N, V)``
        logits with ``logit_rows`` set (:class:`ModelOutputs`). The head's vocabulary-wide matmul, forward
        and backward, dominates a small student's step, and the rows a loss never reads (padding, prompts)
        are often half of a batch; the values are those of the full forward at the kept rows. A model whose
        head is more than a linear map of the last hidden state (e.g. logit soft-capping) fails the check at
        first use and gets full logits. ``token_type_ids`` is accepted for the shared batch format and
        ignored (decoders have no segments).
        """
        request = features or FeatureRequest()
        if request.attentions or request.attention_scores or request.qkv:
            raise ModelError(
                "attention features are not captured for causal LMs; use logit terms (lm_*) or hidden states"
            )
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "use_cache": False,
            "return_dict": True,
        }
        rows = None
        if logit_rows is not None and self._rows_supported(input_ids, attention_mask):
            rows = logit_rows.to(device=input_ids.device, dtype=torch.bool)
            out = self.model.base_model(**inputs, output_hidden_states=request.hidden_states)
            logits = self.model.get_output_embeddings()(out.last_hidden_state[rows])
        else:
            out = self.model(**inputs, output_hidden_states=request.hidden_states)
            logits = out.logits
        return ModelOutputs(
            logits=logits,
            hidden_states=tuple(out.hidden_states) if request.hidden_states else None,
            attention_mask=attention_mask,
            num_heads=int(self.config.num_attention_heads),
            logit_rows=rows,
        )

    def _rows_supported(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> bool:
        """Whether ``head(base_model(x).last_hidden_state)`` equals the model's own logits (checked once, in
        fp32 and eval mode on the first row; a mismatch falls back to full logits with a warning)."""
        if self._rows_ok is None:
            head = self.model.get_output_embeddings()
            ok = isinstance(head, nn.Linear) and self.model.base_model is not self.model
            if ok:
                was_training = self.model.training
                self.model.eval()
                try:
                    with torch.no_grad(), torch.autocast(input_ids.device.type, enabled=False):
                        x = {
                            "input_ids": input_ids[:1],
                            "attention_mask": attention_mask[:1],
                            "use_cache": False,
                        }
                        full = self.model(**x).logits.float()
                        rows = head(self.model.base_model(**x).last_hidden_state).float()
                    ok = full.shape == rows.shape and torch.allclose(full, rows, rtol=1e-4, atol=1e-4)
                finally:
                    self.model.train(was_training)
            if not ok:
                print(
                    f"textdistill: note: {type(self.model).__name__}'s logits are not a linear head over its last "
                    "hidden state; the LM head runs on every position (slower, same values)"
                )
            self._rows_ok = ok
        return self._rows_ok


def load_causal_lm(
    path: str | Path,
    *,
    gguf_file: str | None = None,
    dtype: torch.dtype = torch.float32,
    frozen: bool = True,
    trust_remote_code: bool = False,
) -> HFCausalLM:
    """Load a causal LM from a local directory (a ``save_pretrained`` folder, or one holding a GGUF file).

    Args:
        path: the directory.
        gguf_file: name of a GGUF file inside ``path`` (needs the ``gguf`` package; dequantised to ``dtype``).
        dtype: parameter dtype.
        frozen: eval mode and no gradients (a teacher); False gives a trainable model in train mode.
        trust_remote_code: allow model code shipped with the checkpoint to run (off: never executes code).

    Raises:
        ModelError: a missing directory or file, or weights transformers cannot load, with the reason.
    """
    from transformers import AutoModelForCausalLM

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(
            f"causal LM directory {str(path)!r} does not exist; point it at a saved model folder"
        )
    if gguf_file is not None and not (folder / gguf_file).is_file():
        present = sorted(p.name for p in folder.glob("*.gguf"))
        raise ModelError(
            f"GGUF file {gguf_file!r} is not in {str(folder)!r} (GGUF files there: {present or 'none'})"
        )
    if gguf_file is None and not (folder / "config.json").is_file():
        raise ModelError(
            f"{str(folder)!r} has no config.json; give a save_pretrained folder, or gguf_file for a GGUF model"
        )
    kwargs: dict[str, object] = {"dtype": dtype}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), trust_remote_code=trust_remote_code, **kwargs
        )
    except ImportError as exc:
        raise ModelError(f"cannot load {str(folder)!r}: {exc}. For GGUF files: pip install gguf") from exc
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        if gguf_file:
            from textdistill.models.gguf import GGUF_FIX

            raise ModelError(f"cannot load GGUF file {str(folder / gguf_file)!r}: {exc}; {GGUF_FIX}") from exc
        raise ModelError(f"cannot load causal LM {str(folder)!r}: {exc}") from exc
    if frozen:
        model.eval()
        model.requires_grad_(False)
    else:
        model.train()
    return HFCausalLM(model)


def check_same_vocab(teacher: ModelInfo, student: ModelInfo) -> list[str]:
    """Problems when teacher and student vocabularies differ (token-level KD compares distributions)."""
    if teacher.vocab_size != student.vocab_size:
        return [
            f"the teacher's vocabulary has {teacher.vocab_size} tokens and the student's {student.vocab_size}; "
            + CROSS_TOKENIZER_HINT
        ]
    return []


def layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder's list of layers: the one ``ModuleList`` with ``num_hidden_layers`` entries."""
    n = int(model.config.num_hidden_layers)
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if len(found) != 1:
        raise ModelError(
            f"cannot find the decoder layer list of {type(model).__name__} (candidates: "
            f"{[name for name, _ in found]}); truncate supports Llama/GPT-2-style decoders"
        )
    return found[0]


def _student_config(config: object, **changes: object) -> object:
    out = copy.deepcopy(config)
    for key, value in changes.items():
        setattr(out, key, value)
    return out


def _subset_layer_types(config: object, layers: list[int]) -> None:
    types = getattr(config, "layer_types", None)
    if isinstance(types, list | tuple) and len(types) > max(layers):
        config.layer_types = [types[i] for i in layers]


def truncate_causal_lm(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """A causal LM with the teacher's layers ``layers`` (0-based, in this order), every weight copied.

    Raises:
        ModelError: an empty, repeated or out-of-range layer list.
    """
    from transformers import AutoModelForCausalLM

    total = int(teacher.config.num_hidden_layers)
    if not layers or len(set(layers)) != len(layers) or not all(0 <= i < total for i in layers):
        raise ModelError(
            f"student.layers must list distinct teacher layers in 0..{total - 1}, got {layers!r}"
        )
    config = _student_config(teacher.config, num_hidden_layers=len(layers))
    _subset_layer_types(config, layers)
    student = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    prefix, _ = layer_list(teacher)
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.(.*)")
    position = {t: s for s, t in enumerate(layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        m = pattern.fullmatch(key)
        if m is None:
            state[key] = value.detach().clone().float()
        elif int(m.group(1)) in position:
            state[f"{prefix}.{position[int(m.group(1))]}.{m.group(2)}"] = value.detach().clone().float()
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in _tied_keys(student)]
    if missing or unexpected:
        raise ModelError(
            f"truncate could not copy every weight: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    student.train()
    return student


def _tied_keys(model: nn.Module) -> set[str]:
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return set(tied) if not isinstance(tied, dict) else set(tied)


_WIDTH_KEYS = {
    # model_type -> config attribute names of (hidden, heads, kv heads, feed-forward width)
    "gpt2": ("n_embd", "n_head", None, "n_inner"),
}
_DEFAULT_KEYS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size")


def shrink_problems(
    config: object,
    num_layers: int | None,
    hidden_size: int | None,
    num_heads: int | None,
    num_kv_heads: int | None,
) -> list[str]:
    """Every problem with shrink sizes for this teacher config (config only)."""
    problems = []
    hidden = hidden_size or int(config.hidden_size)
    heads = num_heads or int(config.num_attention_heads)
    kv_key = _WIDTH_KEYS.get(config.model_type, _DEFAULT_KEYS)[2]
    for key, value in (("num_layers", num_layers), ("hidden_size", hidden_size), ("num_heads", num_heads)):
        if value is not None and (not isinstance(value, int) or value < 1):
            problems.append(f"student.{key} must be a positive integer, got {value!r}")
    if problems:
        return problems
    if hidden % heads:
        problems.append(f"student.hidden_size={hidden} is not divisible by student.num_heads={heads}")
    if num_kv_heads is not None:
        if kv_key is None or not hasattr(config, kv_key):
            problems.append(
                f"student.num_kv_heads is not supported for model_type {config.model_type!r} (no grouped-query "
                "attention); remove it"
            )
        elif num_kv_heads < 1 or heads % num_kv_heads:
            problems.append(
                f"student.num_kv_heads={num_kv_heads} must divide student.num_heads={heads} (grouped-query "
                "attention shares each KV head among num_heads / num_kv_heads query heads)"
            )
    return problems


def shrink_causal_lm(
    teacher: nn.Module,
    num_layers: int,
    hidden_size: int | None = None,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    init_embeddings_from_teacher: bool = True,
) -> nn.Module:
    """A smaller causal LM of the teacher's family: random init, embeddings projected from the teacher's.

    Raises:
        ModelError: sizes that do not fit (see :func:`shrink_problems`).
    """
    from transformers import AutoModelForCausalLM

    from textdistill.models.students import project_embeddings

    config = teacher.config
    problems = shrink_problems(config, num_layers, hidden_size, num_heads, num_kv_heads)
    if problems:
        raise ModelError("; ".join(problems))
    keys = _WIDTH_KEYS.get(config.model_type, _DEFAULT_KEYS)
    hidden = hidden_size or int(config.hidden_size)
    heads = num_heads or int(config.num_attention_heads)
    changes: dict[str, object] = {"num_hidden_layers": num_layers, keys[0]: hidden, keys[1]: heads}
    if keys[2] is not None and hasattr(config, keys[2]):
        teacher_kv = int(getattr(config, keys[2]) or heads)
        changes[keys[2]] = num_kv_heads or max(1, heads * teacher_kv // int(config.num_attention_heads))
        if heads % changes[keys[2]]:
            changes[keys[2]] = heads
    if hasattr(config, "head_dim"):
        changes["head_dim"] = hidden // heads
    if intermediate_size is not None or hidden_size is not None:
        changes[keys[3]] = intermediate_size or 4 * hidden
    student_config = _student_config(config, **changes)
    _subset_layer_types(student_config, list(range(num_layers)))
    student = AutoModelForCausalLM.from_config(student_config, dtype=torch.float32)
    if init_embeddings_from_teacher:
        weight = teacher.get_input_embeddings().weight.detach().float()
        with torch.no_grad():
            student.get_input_embeddings().weight.copy_(project_embeddings(weight, hidden))
            if not getattr(student_config, "tie_word_embeddings", False):
                student.get_output_embeddings().weight.copy_(student.get_input_embeddings().weight)
    student.train()
    return student


def load_pretrained_student(path: str | Path, teacher_info: ModelInfo) -> nn.Module:
    """A trainable causal LM from ``path``; its vocabulary must be the teacher's.

    Raises:
        ModelError: a model that does not load, or a vocabulary mismatch (with the cross-tokenizer options).
    """
    model = load_causal_lm(path, frozen=False).model
    problems = check_same_vocab(teacher_info, causal_lm_info(model.config))
    if problems:
        raise ModelError(problems[0])
    return model


def save_causal_lm(model: nn.Module, tokenizer: object, directory: str | Path) -> Path:
    """Save a plain HF causal LM and its tokenizer (loadable by ``pipeline("text-generation")``)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    inner = model.model if isinstance(model, HFCausalLM) else model
    inner.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
