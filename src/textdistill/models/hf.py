"""HFClassifier: any transformers sequence classifier behind the ModelOutputs contract."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from textdistill.models.hooks import SCORE_VERIFIED_MODEL_TYPES, QKVCapture, score_support_problem
from textdistill.models.outputs import (
    ATTENTION_SCORES,
    ATTENTIONS,
    HIDDEN_STATES,
    LOGITS,
    QKV,
    FeatureRequest,
    ModelInfo,
    ModelOutputs,
)


def capabilities_from_config(config: object) -> frozenset[str]:
    """The features an HF encoder of this config can provide (config only, no weights).

    Logits and hidden states come from every model. Q/K/V need the hookable layout of the verified
    families; scores/probabilities additionally need absolute position embeddings (see ``hooks``).
    """
    caps = {LOGITS, HIDDEN_STATES}
    if getattr(config, "model_type", None) in SCORE_VERIFIED_MODEL_TYPES:
        caps.add(QKV)
        if score_support_problem(config) is None:
            caps |= {ATTENTIONS, ATTENTION_SCORES}
    return frozenset(caps)


def info_from_config(config: object, num_labels: int | None = None) -> ModelInfo:
    """Static :class:`ModelInfo` of an HF encoder from its config.

    Args:
        config: a transformers ``PretrainedConfig`` (DistilBERT's ``dim``/``n_layers``/``n_heads`` are read
            through the config's attribute aliases).
        num_labels: override of ``config.num_labels`` (a student built with a new head).
    """
    return ModelInfo(
        kind="hf",
        model_type=str(config.model_type),
        num_layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
        num_heads=int(config.num_attention_heads),
        vocab_size=int(config.vocab_size),
        num_labels=int(num_labels if num_labels is not None else config.num_labels),
        capabilities=capabilities_from_config(config),
    )


class HFWrapper(nn.Module):
    """A transformers model behind the :class:`ModelOutputs` contract, kept as ``.model`` (saved as is)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)  # a fresh nn.Module is in train mode; mirror the wrapped model instead

    @property
    def config(self):
        """The transformers config of the wrapped model."""
        return self.model.config


class HFClassifier(HFWrapper):
    """Wraps an ``AutoModelForSequenceClassification`` model (BERT, RoBERTa, XLM-R, ELECTRA, ERNIE, DistilBERT).

    Hidden states are requested from HF (``output_hidden_states``) only when asked for; attention
    probabilities, pre-softmax scores and Q/K/V come from forward hooks (:mod:`textdistill.models.hooks`),
    so they work with the default sdpa attention, in train and eval mode, and never need
    ``output_attentions`` (eager-only, post-dropout).

    Args:
        model: the transformers model; kept as ``.model`` (saved / exported as is).
    """

    def __init__(self, model: nn.Module):
        super().__init__(model)
        # DistilBERT has no segment embeddings and its forward takes no token_type_ids: drop them there.
        self._takes_token_type_ids = "token_type_ids" in inspect.signature(model.forward).parameters
        self._capture: QKVCapture | None = None

    @property
    def info(self) -> ModelInfo:
        """Static facts about the model (layers, widths, labels, capabilities)."""
        return info_from_config(self.config)

    @property
    def id2label(self) -> dict[int, str]:
        """The label map stored in the config."""
        return {int(k): v for k, v in self.config.id2label.items()}

    def _hooks(self) -> QKVCapture:
        # Discovered lazily: a model that is only asked for logits never needs a supported layout.
        if self._capture is None:
            self._capture = QKVCapture(self.model, self.config)
        return self._capture

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        features: FeatureRequest | None = None,
    ) -> ModelOutputs:
        """Run the model and collect the requested features.

        Args:
            input_ids: ``(B, L)`` token ids.
            attention_mask: ``(B, L)`` 1 for real tokens, 0 for padding.
            token_type_ids: ``(B, L)`` segment ids, or None (ignored by models without segments).
            features: what to capture beyond logits (default: logits only).

        Returns:
            ModelOutputs with ``logits`` ``(B, C)``, ``attention_mask``, ``num_heads`` and the requested
            ``hidden_states`` (``num_layers + 1`` x ``(B, L, H)``), ``attentions`` / ``attention_scores``
            (layer -> ``(B, heads, L, L)`` float32) and ``qkv`` (layer -> three ``(B, L, H)``).

        Raises:
            ModelError: when a requested feature or layer is not available for this model.
        """
        request = features or FeatureRequest()
        kwargs: dict[str, object] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "return_dict": True,
        }
        if token_type_ids is not None and self._takes_token_type_ids:
            kwargs["token_type_ids"] = token_type_ids
        if request.hidden_states:
            kwargs["output_hidden_states"] = True
        attentions = scores = qkv = None
        if request.attentions or request.attention_scores or request.qkv:
            with self._hooks().capture(request, attention_mask) as captured:
                out = self.model(**kwargs)
            attentions, scores, qkv = captured.attentions, captured.attention_scores, captured.qkv
        else:
            out = self.model(**kwargs)
        return ModelOutputs(
            logits=out.logits,
            hidden_states=tuple(out.hidden_states) if request.hidden_states else None,
            attentions=attentions,
            attention_scores=scores,
            qkv=qkv,
            attention_mask=attention_mask,
            num_heads=int(self.config.num_attention_heads),
        )
