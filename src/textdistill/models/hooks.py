"""Capture per-layer Q/K/V projections and attention maps with forward hooks, without editing model code.

Why hooks instead of ``output_attentions=True``:

* HF returns attention probabilities only from the eager attention path (sdpa/flash kernels never
  materialise them), so asking for them would force the slow implementation for every forward;
* in train mode HF's returned probabilities are taken *after* attention dropout, which is noise a
  distillation target should not contain;
* HF never returns the pre-softmax scores that TinyBERT-style losses match, nor the Q/K/V projections that
  MiniLMv2 relates.

So we hook the query/key/value ``nn.Linear`` modules of the requested layers (their outputs are the same
under every attention implementation, in train and eval mode), and recompute what the attention kernel
computes from them::

    scores = Q K^T / sqrt(d_head)                      # (B, heads, L, L), no mask added
    probs  = softmax(scores + additive_mask, dim=-1)   # pre-dropout, padded keys get probability 0

This is only valid for models whose attention is exactly this function of the Q/K projections. Models
that add relative position terms to the scores (``position_embedding_type`` other than ``absolute``) or
rotate Q/K (RoFormer) are refused for score/probability features with the reason; Q/K/V capture itself
is a plain read of linear outputs and works for every supported layout.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from textdistill.errors import ModelError
from textdistill.models.outputs import FeatureRequest

# ``<layer list>.<i>.attention.<self.>?<proj>``: BERT, RoBERTa, XLM-R, ELECTRA, ERNIE, CamemBERT,
# Data2VecText (``attention.self.query``) and DistilBERT (``attention.q_lin``). The layer index sits right
# before ``attention`` so that decoder cross-attention (``crossattention.self.query``) never matches.
_QKV_PATTERN = re.compile(
    r"^(?P<prefix>.+)\.(?P<idx>\d+)\.attention\.(?:self\.)?(?P<proj>query|key|value|q_lin|k_lin|v_lin)$"
)
_PROJ_ROLE = {"query": "q", "q_lin": "q", "key": "k", "k_lin": "k", "value": "v", "v_lin": "v"}

# Model types whose self-attention is exactly softmax(QK^T/sqrt(d_head) + mask) of the hooked projections
# (checked against HF's eager ``output_attentions`` in tests/test_models_hf.py). Types outside this set
# still get Q/K/V capture when their module layout matches, but not scores/probabilities.
SCORE_VERIFIED_MODEL_TYPES = frozenset(
    {
        "bert",
        "camembert",
        "data2vec-text",
        "distilbert",
        "electra",
        "ernie",
        "megatron-bert",
        "rembert",
        "roberta",
        "xlm-roberta",
        "xlm-roberta-xl",
    }
)

# Known reasons a matching layout still cannot give scores; shown in the error message.
_SCORE_REFUSALS = {
    "roformer": "RoFormer rotates Q and K with rotary position embeddings inside the attention",
}


@dataclass
class LayerProjections:
    """The query/key/value linear modules of one transformer layer.

    Attributes:
        query: module whose output is ``Q`` of shape ``(B, L, H)``.
        key: module whose output is ``K`` of shape ``(B, L, H)``.
        value: module whose output is ``V`` of shape ``(B, L, H)``.
    """

    query: nn.Module
    key: nn.Module
    value: nn.Module


def find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Locate the encoder's list of transformer layers by module structure.

    Args:
        model: a transformers encoder (with or without a task head).

    Returns:
        ``(dotted_name, module_list)``, e.g. ``("bert.encoder.layer", ModuleList)``.

    Raises:
        ModelError: when no (or more than one) layer list with BERT/DistilBERT-style attention is found.
    """
    prefixes: set[str] = set()
    for name, _ in model.named_modules():
        m = _QKV_PATTERN.match(name)
        if m:
            prefixes.add(m.group("prefix"))
    if len(prefixes) != 1:
        raise ModelError(_unsupported_message(model, found=sorted(prefixes)))
    prefix = prefixes.pop()
    layers = model.get_submodule(prefix)
    if not isinstance(layers, nn.ModuleList):
        raise ModelError(_unsupported_message(model, found=[prefix]))
    return prefix, layers


def discover_projections(model: nn.Module) -> list[LayerProjections]:
    """Find the query/key/value projections of every transformer layer, in layer order.

    Discovery is by module name: ``<layers>.<i>.attention.self.{query,key,value}`` (BERT family) or
    ``<layers>.<i>.attention.{q_lin,k_lin,v_lin}`` (DistilBERT).

    Args:
        model: a transformers encoder (with or without a task head).

    Returns:
        One :class:`LayerProjections` per layer, index ``i`` = 0-based layer ``i``.

    Raises:
        ModelError: when the model's family is not supported (names the family and the supported ones).
    """
    prefix, layers = find_layer_list(model)
    expected = getattr(getattr(model, "config", None), "num_hidden_layers", len(layers))
    if len(layers) != expected:
        # ALBERT-style weight sharing: one module runs for several layers, so a hook cannot tell them apart.
        raise ModelError(
            _unsupported_message(model, found=[f"{prefix} with {len(layers)} modules for {expected} layers"])
        )
    found: dict[int, dict[str, nn.Module]] = {}
    for name, module in model.named_modules():
        m = _QKV_PATTERN.match(name)
        if m and m.group("prefix") == prefix:
            found.setdefault(int(m.group("idx")), {})[_PROJ_ROLE[m.group("proj")]] = module
    out = []
    for i in range(len(layers)):
        roles = found.get(i, {})
        if set(roles) != {"q", "k", "v"}:
            raise ModelError(_unsupported_message(model, found=[f"{prefix}.{i} with {sorted(roles)}"]))
        out.append(LayerProjections(query=roles["q"], key=roles["k"], value=roles["v"]))
    return out


def _unsupported_message(model: nn.Module, found: list[str]) -> str:
    config = getattr(model, "config", None)
    family = getattr(config, "model_type", type(model).__name__)
    return (
        f"cannot capture Q/K/V or attention features of model family {family!r}: expected one list of "
        "layers with 'attention.self.query/key/value' (BERT, RoBERTa, XLM-R, ELECTRA, ERNIE) or "
        f"'attention.q_lin/k_lin/v_lin' (DistilBERT) modules, found {found or 'none'}. Use only logit and "
        "hidden-state loss terms with this model, or a supported model family."
    )


def score_support_problem(config: object) -> str | None:
    """Why attention scores/probabilities cannot be recomputed from Q/K for this config (None: they can).

    Args:
        config: a transformers config (only ``model_type`` and ``position_embedding_type`` are read).
    """
    model_type = getattr(config, "model_type", None)
    pos = getattr(config, "position_embedding_type", None) or "absolute"
    if pos != "absolute":
        return (
            f"model type {model_type!r} has position_embedding_type={pos!r}: relative position terms are "
            "added to the attention scores inside the attention module, so QK^T/sqrt(d_head) computed from "
            "the hooked projections would not be the model's scores (and transformers 5 no longer "
            "implements relative positions for this family). Use a model with absolute positions, or drop "
            "the attention-score/probability loss terms"
        )
    if model_type not in SCORE_VERIFIED_MODEL_TYPES:
        reason = _SCORE_REFUSALS.get(
            model_type,
            f"model type {model_type!r} is not known to compute plain softmax(QK^T/sqrt(d_head)) attention",
        )
        return (
            f"{reason}; attention scores/probabilities are supported for "
            f"{', '.join(sorted(SCORE_VERIFIED_MODEL_TYPES))}. Drop the attention-score/probability loss terms "
            "or use a supported model family"
        )
    return None


def scores_from_qk(query: torch.Tensor, key: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Pre-softmax scores ``Q K^T / sqrt(d_head)`` per head (Vaswani et al. 2017), with no mask added.

    Computed in float32: scores feed MSE losses whose squared differences would lose precision in bf16.

    Args:
        query: ``(B, L, H)`` query projections (before the head split).
        key: ``(B, L, H)`` key projections.
        num_heads: attention heads; ``H`` must be divisible by it.

    Returns:
        ``(B, num_heads, L, L)`` float32.
    """
    b, length, width = query.shape
    d_head = width // num_heads
    q = query.float().view(b, length, num_heads, d_head).transpose(1, 2)
    k = key.float().view(b, key.shape[1], num_heads, d_head).transpose(1, 2)
    return torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d_head)


def probs_from_scores(scores: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """``softmax(scores + m)`` over keys, ``m`` = float32's minimum at padded keys and 0 elsewhere.

    As HF's eager attention does (pre-dropout); float32, since a softmax over bf16 scores is coarse.

    Args:
        scores: ``(B, heads, L, L)`` float32 pre-softmax scores.
        attention_mask: ``(B, L)`` 1 for real tokens, 0 for padding; None means no padding.
    """
    if attention_mask is None:
        return scores.softmax(dim=-1)
    additive = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    return (scores + additive).softmax(dim=-1)


@dataclass
class CapturedFeatures:
    """What one hooked forward pass produced (layer -> tensor dicts, or None when not requested)."""

    attentions: dict[int, torch.Tensor] | None = None
    attention_scores: dict[int, torch.Tensor] | None = None
    qkv: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
    _raw: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)


class QKVCapture:
    """Forward hooks on the query/key/value projections of a model's layers.

    Discovery happens once (at construction); hooks exist only inside :meth:`capture`, only on the requested
    layers, and are removed when it exits, also on error.

    Example:
        >>> capture = QKVCapture(model, model.config)
        >>> with capture.capture(request, attention_mask) as feats:
        ...     logits = model(input_ids, attention_mask=attention_mask).logits
        >>> feats.attentions[3].shape  # (B, heads, L, L)
    """

    def __init__(self, model: nn.Module, config: object):
        self.config = config
        self.num_heads = int(config.num_attention_heads)
        self.layers = discover_projections(model)

    @property
    def num_layers(self) -> int:
        """Number of hookable transformer layers."""
        return len(self.layers)

    def check(self, request: FeatureRequest) -> None:
        """Raise ModelError if ``request`` asks for layers or features this model cannot give."""
        wanted = request.attentions | request.attention_scores | request.qkv
        bad = sorted(i for i in wanted if not 0 <= i < self.num_layers)
        if bad:
            raise ModelError(
                f"requested attention/Q/K/V features of layers {bad}, but the "
                f"{getattr(self.config, 'model_type', 'model')} has {self.num_layers} layers: valid 0-based "
                f"layers are 0..{self.num_layers - 1}. Fix the layer map of the loss term."
            )
        if request.attentions or request.attention_scores:
            problem = score_support_problem(self.config)
            if problem:
                raise ModelError(f"cannot compute attention scores/probabilities: {problem}.")

    @contextmanager
    def capture(
        self, request: FeatureRequest, attention_mask: torch.Tensor | None
    ) -> Iterator[CapturedFeatures]:
        """Hook the requested layers for the duration of the ``with`` block.

        After the block, the yielded :class:`CapturedFeatures` holds ``attentions`` / ``attention_scores``
        (``(B, heads, L, L)`` float32) and ``qkv`` (``(B, L, H)`` each, model dtype, still in the autograd
        graph) for the requested layers.

        Args:
            request: which layers / features to capture.
            attention_mask: ``(B, L)`` mask of the forward pass (used for the probabilities).
        """
        self.check(request)
        out = CapturedFeatures()
        need_qk = request.attentions | request.attention_scores | request.qkv
        handles = []
        try:
            for i in sorted(need_qk):
                proj = self.layers[i]
                roles = [("q", proj.query), ("k", proj.key)]
                if i in request.qkv:
                    roles.append(("v", proj.value))
                for role, module in roles:
                    handles.append(module.register_forward_hook(self._hook(out._raw, i, role)))
            yield out
        finally:
            for h in handles:
                h.remove()
        self._finish(out, request, attention_mask)

    @staticmethod
    def _hook(store: dict[int, dict[str, torch.Tensor]], layer: int, role: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            slot = store.setdefault(layer, {})
            if role in slot:
                # A projection that runs twice per forward is shared between layers (or re-entered):
                # the captured tensor would silently belong to the wrong layer.
                raise ModelError(f"the {role!r} projection of layer {layer} ran twice in one forward pass")
            slot[role] = output

        return hook

    def _finish(
        self, out: CapturedFeatures, request: FeatureRequest, attention_mask: torch.Tensor | None
    ) -> None:
        raw = out._raw
        missing = sorted((request.attentions | request.attention_scores | request.qkv) - set(raw))
        if missing:
            # A hooked module that never ran means the forward took a path we did not expect.
            raise ModelError(f"the forward pass never ran the Q/K projections of layers {missing}")
        if request.attentions or request.attention_scores:
            out.attentions = {} if request.attentions else None
            out.attention_scores = {} if request.attention_scores else None
            for i in sorted(request.attentions | request.attention_scores):
                scores = scores_from_qk(raw[i]["q"], raw[i]["k"], self.num_heads)
                if out.attentions is not None and i in request.attentions:
                    # Only when asked for: a softmax over (B, heads, L, L) per layer is not free.
                    out.attentions[i] = probs_from_scores(scores, attention_mask)
                if out.attention_scores is not None and i in request.attention_scores:
                    out.attention_scores[i] = scores
        if request.qkv:
            out.qkv = {i: (raw[i]["q"], raw[i]["k"], raw[i]["v"]) for i in sorted(request.qkv)}
        out._raw = {}
