"""How much smaller and cheaper a student is: parameters, bytes on disk, compression ratio, FLOPs.

FLOPs are counted analytically from the model's dimensions, as ``2 x multiply-accumulates`` of its matrix
products (one multiply + one add per MAC). Embedding lookups, layer norms, softmax, activations, biases and
element-wise gates are not counted: they are a few percent of the total for these models and do not
change the comparison between teacher and students.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from textdistill.errors import ModelError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".data")
"""File endings counted as weights by :func:`size_on_disk` (ONNX external data included)."""


def size_on_disk(path: str | os.PathLike[str]) -> dict[str, int]:
    """Bytes a model directory (or a single model file) takes on disk.

    Args:
        path: a model directory (walked recursively; symbolic links are not followed) or one file.

    Returns:
        ``{"total_bytes": all files, "weights_bytes": files ending in WEIGHT_SUFFIXES}``.

    Raises:
        ModelError: the path does not exist.
    """
    p = Path(path)
    if p.is_file():
        n = p.stat().st_size
        return {"total_bytes": n, "weights_bytes": n if p.name.endswith(WEIGHT_SUFFIXES) else 0}
    if not p.is_dir():
        raise ModelError(f"cannot measure the size of {str(p)!r}: it does not exist. Pass a model directory.")
    total = weights = 0
    for root, _dirs, files in os.walk(p):
        for name in files:
            f = Path(root) / name
            if f.is_symlink():
                continue
            n = f.stat().st_size
            total += n
            if name.endswith(WEIGHT_SUFFIXES):
                weights += n
    return {"total_bytes": total, "weights_bytes": weights}


def compression_ratio(teacher_value: float, student_value: float) -> float:
    """``teacher / student`` (e.g. parameters or bytes): 7.5 means the student is 7.5x smaller.

    Raises:
        ModelError: the student value is not positive.
    """
    if student_value <= 0:
        raise ModelError(f"compression ratio needs a positive student size, got {student_value}.")
    return float(teacher_value) / float(student_value)


def transformer_flops(config: object, seq_len: int, num_labels: int | None = None) -> int:
    """FLOPs of one example of ``seq_len`` tokens through a BERT-family sequence classifier.

    With hidden size ``H``, feed-forward width ``I``, ``N`` layers, sequence length ``L``, ``C`` labels,
    and embedding width ``E`` (ALBERT/ELECTRA factorised embeddings, projected to ``H``):

    - per layer: Q, K, V and output projections ``4 L H^2`` MACs; scores ``Q K^T`` and ``P V``
      ``2 L^2 H`` MACs (summed over heads, ``heads x d_head = H``); feed-forward ``2 L H I`` MACs;
    - embedding projection ``L E H`` MACs when ``E != H``;
    - classification head ``H^2 + H C`` MACs (BERT pooler + classifier; RoBERTa/ELECTRA dense + out_proj;
      DistilBERT pre_classifier + classifier), on one token.

    ``FLOPs = 2 x (N (4 L H^2 + 2 L^2 H + 2 L H I) + [L E H] + H^2 + H C)``. Exact (it equals
    ``torch.utils.flop_counter`` with eager attention) for BERT, RoBERTa, DistilBERT, ELECTRA and
    MiniLM-style models; architectures with extra attention terms (DeBERTa's relative attention) are
    under-counted.

    Args:
        config: a transformers config (DistilBERT's ``dim``/``n_layers``/``hidden_dim`` are understood).
        seq_len: tokens per example, special tokens included.
        num_labels: classifier outputs (default: ``config.num_labels``).

    Raises:
        ModelError: the config lacks the sizes the formula needs.
    """
    hidden = getattr(config, "hidden_size", None)
    layers = getattr(config, "num_hidden_layers", None)
    inter = getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim", None)
    if hidden is None or layers is None or inter is None:
        raise ModelError(
            f"cannot count FLOPs of a {type(config).__name__}: it lacks hidden_size, num_hidden_layers or "
            "intermediate_size, so it is not a BERT-family encoder this formula covers."
        )
    c = int(num_labels if num_labels is not None else getattr(config, "num_labels", 2))
    h, n, i, seq = int(hidden), int(layers), int(inter), int(seq_len)
    emb = int(getattr(config, "embedding_size", None) or h)
    macs = n * (4 * seq * h * h + 2 * seq * seq * h + 2 * seq * h * i)
    if emb != h:
        macs += seq * emb * h
    macs += h * h + h * c
    return 2 * macs


def recurrent_flops(model: nn.Module, seq_len: int) -> int:
    """FLOPs of one example of ``seq_len`` tokens through an embedding -> RNN -> pooling -> MLP model.

    For every ``nn.LSTM`` / ``nn.GRU`` layer and direction, each time step multiplies the input (width
    ``D``: the embedding width for the first layer, ``directions x hidden`` above) and the previous state
    (width ``h``) by ``G`` gate matrices (``G = 4`` for LSTM, ``3`` for GRU): ``G h (D + h)`` MACs per
    step, plus ``h p`` for an LSTM output projection of width ``p``. Every ``nn.Linear`` is counted once
    per example (``in x out`` MACs): the models this covers (the BiLSTM student) apply their MLP to the
    pooled vector. ``FLOPs = 2 x MACs``; embedding lookups and pooling are free.

    Args:
        model: the module (e.g. :class:`~textdistill.models.bilstm.BiLSTMClassifier`).
        seq_len: tokens per example.

    Raises:
        ModelError: the model has no LSTM or GRU.
    """
    macs = 0
    found = False
    for m in model.modules():
        if isinstance(m, (nn.LSTM, nn.GRU)):
            found = True
            gates = 4 if isinstance(m, nn.LSTM) else 3
            dirs = 2 if m.bidirectional else 1
            proj = getattr(m, "proj_size", 0) or 0
            out_width = proj or m.hidden_size
            for layer in range(m.num_layers):
                d_in = m.input_size if layer == 0 else dirs * out_width
                step = gates * m.hidden_size * (d_in + out_width) + m.hidden_size * proj
                macs += dirs * seq_len * step
        elif isinstance(m, nn.Linear):
            macs += m.in_features * m.out_features
    if not found:
        raise ModelError(
            f"cannot count FLOPs of a {type(model).__name__}: it is neither a transformers encoder nor a "
            "recurrent (LSTM/GRU) model."
        )
    return 2 * macs


def flops_per_example(model: nn.Module, seq_len: int) -> int:
    """Analytic FLOPs of one example of ``seq_len`` tokens (see :func:`transformer_flops`,
    :func:`recurrent_flops`).

    Args:
        model: an HF classifier (bare, or wrapped with the transformers model at ``.model``) or a
            recurrent student.
        seq_len: tokens per example, special tokens included (e.g. the mean length of the dev set).

    Raises:
        ModelError: a model neither formula covers.
    """
    hf = getattr(model, "model", model)
    config = getattr(hf, "config", None)
    if config is not None and hasattr(config, "model_type") and hasattr(config, "num_hidden_layers"):
        return transformer_flops(config, seq_len)
    return recurrent_flops(model, seq_len)
