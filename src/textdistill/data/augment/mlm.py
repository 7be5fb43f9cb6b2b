"""A masked language model for TinyBERT augmentation: loading and batched top-K prediction.

TinyBERT's reference script runs one forward pass per (sentence, word). Here every masked input of the
whole corpus is gathered first (:class:`MaskedQuery`), identical inputs are predicted once, inputs are
sorted by length so that padded batches waste little, and the vocabulary projection is computed only at
the masked position (a hook on the encoder keeps just that hidden state): for BERT-base over SST-2 the
full projection at every position would cost about as much as the encoder itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from textdistill.errors import ModelError

logger = logging.getLogger(__name__)


class MaskedQuery(NamedTuple):
    """One masked-LM input.

    Attributes:
        input_ids: token ids, special tokens included, shape ``[L]``.
        token_type_ids: segment ids, shape ``[L]``.
        mask_pos: index of the masked token in ``input_ids``.
    """

    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...]
    mask_pos: int


@dataclass
class MaskedLM:
    """A masked-LM model with its tokenizer.

    Attributes:
        model: an HF ``*ForMaskedLM`` module (put in eval mode by :func:`load_masked_lm`).
        tokenizer: its WordPiece tokenizer.
        name: the path or hub id it came from (for messages and fingerprints).
        missing_head: parameters of the MLM head that the checkpoint did not hold (randomly initialised).
        calls: forward passes run so far (for tests and benchmarks).
    """

    model: Any
    tokenizer: Any
    name: str = "in-process"
    missing_head: list[str] = field(default_factory=list)
    calls: int = 0

    @property
    def max_positions(self) -> int | None:
        """``max_position_embeddings`` of the model config, when it has one."""
        value = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        return int(value) if isinstance(value, int) else None

    def top_k(self, queries: Sequence[MaskedQuery], k: int, *, batch_size: int = 32) -> list[list[int]]:
        """The ``k`` most probable token ids at the masked position of each query, best first.

        Queries are run in padded batches of ``batch_size`` (sorted by length; identical queries once);
        the result does not depend on ``batch_size`` beyond floating-point rounding of the padded matmuls.

        Args:
            queries: masked inputs; ``input_ids`` longer than the model's positions are the caller's bug.
            k: candidates per query (capped at the vocabulary size).
            batch_size: inputs per forward pass.

        Returns:
            One list of ``k`` token ids per query, in query order.
        """
        unique: dict[MaskedQuery, int] = {}
        for q in queries:
            unique.setdefault(q, len(unique))
        distinct = list(unique)
        results: list[list[int]] = [[] for _ in distinct]
        order = sorted(range(len(distinct)), key=lambda i: len(distinct[i].input_ids))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            top = self._forward_top_k([distinct[i] for i in chunk], k)
            for i, ids in zip(chunk, top):
                results[i] = ids
        return [results[unique[q]] for q in queries]

    def _forward_top_k(self, batch: list[MaskedQuery], k: int) -> list[list[int]]:
        """One padded forward pass; ``[B]`` lists of top-``k`` ids at each query's masked position."""
        device = _device_of(self.model)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        length = max(len(q.input_ids) for q in batch)
        ids = torch.full((len(batch), length), pad, dtype=torch.long)
        types = torch.zeros((len(batch), length), dtype=torch.long)
        attention = torch.zeros((len(batch), length), dtype=torch.long)
        for row, q in enumerate(batch):
            n = len(q.input_ids)
            ids[row, :n] = torch.tensor(q.input_ids)
            types[row, :n] = torch.tensor(q.token_type_ids)
            attention[row, :n] = 1  # padding is masked out, so a padded row predicts as if alone
        positions = torch.tensor([q.mask_pos for q in batch], dtype=torch.long, device=device)
        inputs = {"input_ids": ids.to(device), "attention_mask": attention.to(device)}
        if _accepts_token_types(self.model):
            inputs["token_type_ids"] = types.to(device)
        base = getattr(self.model, "base_model", None)
        handle = None
        if base is not None and base is not self.model:
            handle = base.register_forward_hook(_keep_positions(positions))
        try:
            with torch.inference_mode():
                logits = self.model(**inputs).logits
        finally:
            if handle is not None:
                handle.remove()
        self.calls += 1
        if logits.shape[1] == 1:  # the hook worked: the head ran on the masked positions only
            rows = logits[:, 0]
        else:  # a model whose head does not read the encoder output as expected: pick after the fact
            rows = logits[torch.arange(len(batch), device=logits.device), positions]
        k = min(k, rows.shape[-1])
        return rows.float().topk(k, dim=-1).indices.tolist()


def _keep_positions(positions: torch.Tensor) -> Any:
    """Forward hook for the encoder: keep only the hidden state at each row's masked position.

    The head then maps ``[B, 1, H]`` instead of ``[B, L, H]`` to the vocabulary.
    """

    def hook(module: Any, args: Any, output: Any) -> Any:
        hidden = output[0]
        if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
            return output
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), positions].unsqueeze(1)
        if isinstance(output, tuple):
            return (picked, *output[1:])
        output["last_hidden_state"] = picked  # a ModelOutput: item and attribute are updated together
        return output

    return hook


def _device_of(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _accepts_token_types(model: Any) -> bool:
    """Whether the model takes ``token_type_ids`` (BERT does; DistilBERT and RoBERTa-style models do not)."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    types = getattr(getattr(model, "config", None), "type_vocab_size", 2)
    return "token_type_ids" in params and (not isinstance(types, int) or types > 1)


def is_wordpiece(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` marks word continuations with ``##`` (BERT-family WordPiece)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = getattr(backend, "model", None)
    if model is not None:
        return type(model).__name__ == "WordPiece"
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    return any(t.startswith("##") for t in vocab)


def check_masked_lm(mlm: MaskedLM) -> None:
    """Reject a tokenizer TinyBERT's candidate rules cannot use.

    Raises:
        ModelError: no mask token, or not a WordPiece tokenizer (the ``##`` continuation convention decides
            single- vs multi-piece words and filters continuation candidates).
    """
    tok = mlm.tokenizer
    if getattr(tok, "mask_token_id", None) is None:
        raise ModelError(
            f"the masked LM {mlm.name!r} has a tokenizer without a mask token, so it cannot predict masked "
            f"words. Fix: set augment.mlm to a masked-LM checkpoint such as bert-base-uncased."
        )
    if not is_wordpiece(tok):
        raise ModelError(
            f"the masked LM {mlm.name!r} uses a {type(tok).__name__} that is not WordPiece; TinyBERT "
            f"augmentation relies on WordPiece's '##' continuation pieces to tell single-piece words (masked "
            f"LM) from multi-piece words (word vectors). Fix: use a BERT-family masked LM (BERT, DistilBERT, "
            f"ELECTRA generator, MiniLM with an MLM head)."
        )
    for attr in ("cls_token_id", "sep_token_id"):
        if getattr(tok, attr, None) is None:
            raise ModelError(
                f"the masked LM {mlm.name!r} has a tokenizer without {attr.split('_')[0].upper()} token; "
                f"TinyBERT's input is [CLS] masked [SEP] original [SEP]. Fix: use a BERT-family masked LM."
            )


def load_masked_lm(path: str, *, allow_missing_head: bool = False, device: str | None = None) -> MaskedLM:
    """Load an HF masked-LM checkpoint and its tokenizer (local directory or hub id).

    Args:
        path: directory written by ``save_pretrained`` or a hub id.
        allow_missing_head: accept a checkpoint whose MLM head is missing (e.g. a sentence-embedding
            ``BertModel``); its predictions are then random, so only timing measurements make sense.
        device: where to run it (default: CUDA when available, else CPU).

    Returns:
        The model in eval mode with its tokenizer.

    Raises:
        ModelError: the path does not load, the tokenizer is not WordPiece, or the MLM head was not in the
            checkpoint (unless ``allow_missing_head``).
    """
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    local = Path(path).expanduser()
    if (local.is_absolute() or str(path).startswith(".")) and not local.is_dir():
        raise ModelError(
            f"augment.mlm={path!r}: no such directory. Fix: point it at a saved masked-LM checkpoint "
            f"(config.json + weights + tokenizer files) or a hub id like bert-base-uncased."
        )
    source = str(local) if local.is_dir() else str(path)
    try:
        # explicit False: code shipped in the folder never runs, and transformers never prompts about it
        model, info = AutoModelForMaskedLM.from_pretrained(
            source, output_loading_info=True, trust_remote_code=False
        )
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(
            f"cannot load the masked LM augment.mlm={path!r}: {type(err).__name__}: {err}. Fix: point it at "
            f"a local masked-LM checkpoint directory with its tokenizer files (this machine may be offline, "
            f"so hub ids work only when already cached)."
        ) from None
    prefix = getattr(model, "base_model_prefix", "")
    missing = sorted(k for k in info.get("missing_keys", ()) if not (prefix and k.startswith(prefix + ".")))
    mlm = MaskedLM(model=model.eval(), tokenizer=tokenizer, name=str(path), missing_head=missing)
    check_masked_lm(mlm)
    if missing:
        message = (
            f"the masked LM {path!r} has no trained MLM head: {', '.join(missing)} were not in the "
            f"checkpoint and are randomly initialised, so its word predictions are random"
        )
        if not allow_missing_head:
            raise ModelError(
                message + ". Fix: set augment.mlm to a checkpoint saved with its MLM head (e.g. "
                "bert-base-uncased); a bare encoder (BertModel, sentence-embedding models) cannot fill masks."
            )
        logger.warning("%s; only its speed is meaningful.", message)
    target = device or ("cuda" if torch.cuda.is_available() else "cpu")
    mlm.model.to(target)
    return mlm
