"""The one contract between models and losses.

A loss term receives ``(student: ModelOutputs, teacher: ModelOutputs, batch)`` and never sees HF internals
or module paths. Models fill only the features that were requested (see :class:`FeatureRequest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Feature names a model may be able to provide (ModelInfo.capabilities) and a term may need.
LOGITS = "logits"
HIDDEN_STATES = "hidden_states"  # embeddings output + every layer output
ATTENTIONS = "attentions"  # post-softmax attention probabilities
ATTENTION_SCORES = "attention_scores"  # pre-softmax scores QK^T/sqrt(d)
QKV = "qkv"  # per-layer query/key/value projections
ALL_FEATURES = frozenset({LOGITS, HIDDEN_STATES, ATTENTIONS, ATTENTION_SCORES, QKV})


@dataclass
class FeatureRequest:
    """What a forward pass must capture beyond logits.

    Layer indices are 0-based transformer layers (layer ``i`` is ``hidden_states[i + 1]``).

    Attributes:
        hidden_states: return all hidden states, embeddings first.
        attentions: layers whose attention probabilities are returned.
        attention_scores: layers whose pre-softmax attention scores are returned.
        qkv: layers whose query/key/value projections are returned.
    """

    hidden_states: bool = False
    attentions: set[int] = field(default_factory=set)
    attention_scores: set[int] = field(default_factory=set)
    qkv: set[int] = field(default_factory=set)

    def merge(self, other: FeatureRequest) -> FeatureRequest:
        """The union of two requests."""
        return FeatureRequest(
            hidden_states=self.hidden_states or other.hidden_states,
            attentions=self.attentions | other.attentions,
            attention_scores=self.attention_scores | other.attention_scores,
            qkv=self.qkv | other.qkv,
        )

    def features(self) -> set[str]:
        """Names of the features this request needs (always includes logits)."""
        out = {LOGITS}
        if self.hidden_states:
            out.add(HIDDEN_STATES)
        if self.attentions:
            out.add(ATTENTIONS)
        if self.attention_scores:
            out.add(ATTENTION_SCORES)
        if self.qkv:
            out.add(QKV)
        return out

    def is_empty(self) -> bool:
        """True when only logits are needed."""
        return self.features() == {LOGITS}


@dataclass
class TokenTopK:
    """A causal-LM teacher's next-token distributions kept as top-k (from the teacher-logit store).

    Storing all ``V`` log-probabilities per position is too large (49k floats a token for SmolLM2), so the
    store keeps the ``k`` most probable tokens and the probability mass of all others in one number. The
    LM losses compare the distributions over these ``k + 1`` buckets (see :mod:`textdistill.losses.lm`).

    Attributes:
        logprobs: ``(B, L, k)`` teacher log-probabilities (temperature 1) of the top-k tokens.
        ids: ``(B, L, k)`` their vocabulary ids (long).
        rest_logmass: ``(B, L)`` ``log(1 - sum exp(logprobs))``; ``-inf`` when ``k`` is the vocabulary.
    """

    logprobs: torch.Tensor
    ids: torch.Tensor
    rest_logmass: torch.Tensor


@dataclass
class ModelOutputs:
    """Outputs of a teacher or student forward pass.

    Attributes:
        logits: ``(B, C)`` classification logits (``C = 1`` for regression).
        hidden_states: ``num_layers + 1`` tensors of ``(B, L, H)``, embeddings output first; or None.
        attentions: layer -> ``(B, heads, L, L)`` attention probabilities; or None.
        attention_scores: layer -> ``(B, heads, L, L)`` pre-softmax scores ``QK^T / sqrt(d_head)`` with no
            mask added (losses mask with ``attention_mask``); or None.
        qkv: layer -> ``(q, k, v)``, each ``(B, L, H)`` projections before the head split; or None.
        attention_mask: ``(B, L)`` 1 for real tokens, 0 for padding.
        num_heads: attention heads per layer of the model that produced these outputs (None for BiLSTM).
        token_topk: a causal-LM teacher's top-k next-token distributions read from the teacher-logit store
            (then ``logits`` is an empty placeholder); None otherwise.
        logit_rows: ``(B, L)`` bool when a causal LM computed its next-token logits only where it is True
            (the loss positions, see :func:`textdistill.losses.lm.loss_rows`): ``logits`` is then ``(N, V)``,
            one row per True entry in row-major order. None: ``logits`` covers every position.
    """

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: dict[int, torch.Tensor] | None = None
    attention_scores: dict[int, torch.Tensor] | None = None
    qkv: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
    attention_mask: torch.Tensor | None = None
    num_heads: int | None = None
    token_topk: TokenTopK | None = None
    logit_rows: torch.Tensor | None = None

    def float(self) -> ModelOutputs:
        """The same outputs in fp32 (losses are computed in fp32 even when the forward ran under autocast)."""

        def f(t: torch.Tensor) -> torch.Tensor:
            return t.float() if t.is_floating_point() and t.dtype != torch.float32 else t

        return ModelOutputs(
            logits=f(self.logits),
            hidden_states=None if self.hidden_states is None else tuple(f(h) for h in self.hidden_states),
            attentions=None if self.attentions is None else {k: f(v) for k, v in self.attentions.items()},
            attention_scores=None
            if self.attention_scores is None
            else {k: f(v) for k, v in self.attention_scores.items()},
            qkv=None if self.qkv is None else {k: tuple(f(x) for x in v) for k, v in self.qkv.items()},
            attention_mask=self.attention_mask,
            num_heads=self.num_heads,
            token_topk=self.token_topk,
            logit_rows=self.logit_rows,
        )


@dataclass(frozen=True)
class ModelInfo:
    """Static facts about a model, known from its config before any weights load.

    Used to validate layer maps and loss terms and to size projections.

    Attributes:
        kind: ``"hf"`` for transformers encoders, ``"bilstm"`` for the BiLSTM student.
        model_type: e.g. ``"bert"``, ``"roberta"``, ``"bilstm"``.
        num_layers: transformer layers (0 for BiLSTM).
        hidden_size: width of hidden states.
        num_heads: attention heads (0 for BiLSTM).
        vocab_size: tokenizer vocabulary size.
        num_labels: classifier outputs.
        capabilities: feature names this model can provide (see ``ALL_FEATURES``).
    """

    kind: str
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    vocab_size: int
    num_labels: int
    capabilities: frozenset[str] = ALL_FEATURES


def extra_inputs(model: torch.nn.Module, batch: dict, device: torch.device | None = None) -> dict:
    """The batch entries ``model`` reads beyond ``input_ids`` / ``attention_mask`` / ``token_type_ids``
    (its ``extra_input_names``, e.g. ``case_ids`` of a BiLSTM token student with a casing embedding), as
    keyword arguments; empty for every other model. Looks through a DDP wrapper (``module``)."""
    inner = getattr(model, "module", model)
    out = {}
    for name in getattr(inner, "extra_input_names", ()):
        if name in batch:
            value = batch[name]
            out[name] = value.to(device) if device is not None and torch.is_tensor(value) else value
    return out
