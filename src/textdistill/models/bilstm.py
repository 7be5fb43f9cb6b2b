"""The BiLSTM student of Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into Simple
Neural Networks" (arXiv:1903.12136): token embeddings -> bidirectional LSTM -> pooling over time -> MLP.

It reads the teacher's token ids (same tokenizer), so the same batches feed teacher and student, and it
returns only logits: loss terms that need hidden states or attention are rejected at validation time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from textdistill.data.word_shape import NUM_CASE_IDS
from textdistill.errors import ModelError
from textdistill.models.outputs import LOGITS, FeatureRequest, ModelInfo, ModelOutputs

POOLINGS = ("max", "mean", "last", "none")
"""``none``: no pooling, one prediction per token (token classification: ``logits (B, L, C)``)."""


@dataclass
class BiLSTMConfig:
    """Everything needed to rebuild a :class:`BiLSTMClassifier` (saved as JSON next to the weights).

    Attributes:
        vocab_size: rows of the embedding table (the teacher tokenizer's vocabulary).
        num_labels: classifier outputs (1 for regression).
        embedding_dim: token embedding width.
        lstm_hidden: hidden units per direction.
        lstm_layers: stacked LSTM layers.
        pooling: ``max`` | ``mean`` | ``last`` pooling over time, or ``none`` for token classification.
        mlp_hidden: width of the classifier MLP's hidden layer.
        dropout: dropout on embeddings, between LSTM layers and in the MLP.
        pad_token_id: embedding row of the padding token (kept at zero gradient).
        id2label: label names by id.
        case_embedding_dim: token classification: width of an embedding of each sub-token's casing
            (:mod:`textdistill.data.word_shape`), concatenated to the token embedding; 0 = none. The model
            then takes ``case_ids`` as an input (``extra_input_names``).
        num_case_ids: rows of the casing embedding.
    """

    vocab_size: int
    num_labels: int
    embedding_dim: int = 300
    lstm_hidden: int = 300
    lstm_layers: int = 1
    pooling: str = "max"
    mlp_hidden: int = 400
    dropout: float = 0.1
    pad_token_id: int = 0
    id2label: dict[int, str] = field(default_factory=dict)
    case_embedding_dim: int = 0
    num_case_ids: int = NUM_CASE_IDS

    def to_dict(self) -> dict:
        """JSON-ready dict (label ids become strings, as JSON keys must)."""
        d = asdict(self)
        d["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BiLSTMConfig:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["id2label"] = {int(k): v for k, v in d.get("id2label", {}).items()}
        return cls(**d)


class BiLSTMClassifier(nn.Module):
    """Embedding -> BiLSTM (packed, so padding never enters the recurrence) -> pooling -> ReLU MLP.

    Args:
        config: sizes and options, see :class:`BiLSTMConfig`.
    """

    def __init__(self, config: BiLSTMConfig):
        super().__init__()
        if config.pooling not in POOLINGS:
            raise ModelError(
                f"unknown BiLSTM pooling {config.pooling!r}; valid choices: {', '.join(POOLINGS)}."
            )
        self.config = config
        self.embeddings = nn.Embedding(
            config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id
        )
        self.case_embeddings = (
            nn.Embedding(config.num_case_ids, config.case_embedding_dim, padding_idx=0)
            if config.case_embedding_dim > 0
            else None
        )
        self.lstm = nn.LSTM(
            config.embedding_dim + config.case_embedding_dim,
            config.lstm_hidden,
            num_layers=config.lstm_layers,
            batch_first=True,
            bidirectional=True,
            # nn.LSTM applies inter-layer dropout only, and warns when there is a single layer.
            dropout=config.dropout if config.lstm_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Sequential(
            nn.Linear(2 * config.lstm_hidden, config.mlp_hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.mlp_hidden, config.num_labels),
        )

    @property
    def info(self) -> ModelInfo:
        """Static facts; a BiLSTM provides logits only."""
        return bilstm_info(self.config)

    @property
    def id2label(self) -> dict[int, str]:
        """The label map."""
        return dict(self.config.id2label)

    @property
    def extra_input_names(self) -> tuple[str, ...]:
        """Batch keys this model reads beyond ``input_ids``/``attention_mask`` (``case_ids`` with a casing
        embedding); callers pass them as keyword arguments."""
        return ("case_ids",) if self.case_embeddings is not None else ()

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding table, as on HF models."""
        return self.embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        features: FeatureRequest | None = None,
        case_ids: torch.Tensor | None = None,
    ) -> ModelOutputs:
        """Classify right-padded token sequences.

        Args:
            input_ids: ``(B, L)`` token ids of the teacher's tokenizer.
            attention_mask: ``(B, L)`` 1 for real tokens then 0 for padding (right padding).
            token_type_ids: ignored (accepted so batches for HF models fit as they are).
            features: must ask for logits only.
            case_ids: ``(B, L)`` casing ids (:mod:`textdistill.data.word_shape`); required by a model with a
                casing embedding, ignored otherwise.

        Returns:
            ModelOutputs with ``logits`` ``(B, C)`` (``(B, L, C)`` with pooling ``none``) and ``attention_mask``.

        Raises:
            ModelError: when features beyond logits are requested, the mask is not right padding, or a
                casing model gets no ``case_ids``.
        """
        if features is not None and not features.is_empty():
            extra = sorted(features.features() - {LOGITS})
            raise ModelError(
                f"the BiLSTM student provides logits only, but {extra} were requested. Use logit loss terms "
                "(kd_kl, kd_mse, ce) with student.type=bilstm."
            )
        mask = attention_mask.bool()
        lengths = mask.sum(dim=1)
        positions = torch.arange(mask.shape[1], device=mask.device)
        if not torch.equal(mask, positions[None, :] < lengths[:, None]):
            raise ModelError("the BiLSTM student needs right-padded batches (attention_mask = 1...1 0...0).")
        # pack_padded_sequence rejects empty sequences; an all-padding row is read as its first token.
        lengths = lengths.clamp(min=1)
        emb = self.embeddings(input_ids)
        if self.case_embeddings is not None:
            if case_ids is None:
                raise ModelError(
                    "this BiLSTM student reads the casing of each word (case_embedding_dim="
                    f"{self.config.case_embedding_dim}) but got no case_ids. Fix: feed it batches of "
                    "textdistill's token datasets (TokenEncodedDataset + Collator), which carry them."
                )
            emb = torch.cat([emb, self.case_embeddings(case_ids.to(input_ids.device))], dim=-1)
        emb = self.dropout(emb)
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, (h_n, _) = self.lstm(packed)
        if self.config.pooling == "none":  # token classification: the MLP reads every position
            out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=input_ids.shape[1])
            logits = self.head(self.dropout(out))
            return ModelOutputs(logits=logits, attention_mask=attention_mask, num_heads=None)
        if self.config.pooling == "last":
            # h_n is (layers * 2, B, hidden): the top layer's forward state at each sequence's own last token
            # and its backward state at the first token, already unsorted back to batch order.
            pooled = torch.cat([h_n[-2], h_n[-1]], dim=-1)
        else:
            out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=input_ids.shape[1])
            valid = (positions[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, L, 1)
            if self.config.pooling == "max":
                pooled = out.masked_fill(~valid, float("-inf")).amax(dim=1)
            else:
                pooled = (out * valid).sum(dim=1) / lengths[:, None].to(out.dtype)
        logits = self.head(self.dropout(pooled))
        return ModelOutputs(logits=logits, attention_mask=attention_mask, num_heads=None)


def bilstm_info(config: BiLSTMConfig) -> ModelInfo:
    """:class:`ModelInfo` of a BiLSTM student (capabilities: logits only)."""
    return ModelInfo(
        kind="bilstm",
        model_type="bilstm",
        num_layers=0,
        hidden_size=2 * config.lstm_hidden,
        num_heads=0,
        vocab_size=config.vocab_size,
        num_labels=config.num_labels,
        capabilities=frozenset({LOGITS}),
    )
