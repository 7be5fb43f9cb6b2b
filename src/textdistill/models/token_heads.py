"""Sequence- or token-classification head: which transformers Auto class a checkpoint or a task needs.

A checkpoint saved by ``AutoModelForTokenClassification`` names a ``*ForTokenClassification`` architecture
in its config; teachers, students and saved students are loaded with the matching Auto class, so the
student of a token teacher is a token classifier too, and a saved student opens in
``pipeline("token-classification")``.
"""

from __future__ import annotations

from typing import Any


def is_token_config(config: Any) -> bool:
    """Whether an HF config belongs to a token-classification model (by its ``architectures``)."""
    archs = getattr(config, "architectures", None) or []
    return any(str(a).endswith("ForTokenClassification") for a in archs)


def auto_class(token: bool) -> Any:
    """``AutoModelForTokenClassification`` when ``token``, else ``AutoModelForSequenceClassification``."""
    import transformers

    return (
        transformers.AutoModelForTokenClassification
        if token
        else transformers.AutoModelForSequenceClassification
    )


def is_token_model(model: Any) -> bool:
    """Whether a model (HFClassifier, bare transformers model or BiLSTM student) labels every token."""
    inner = getattr(model, "model", model)
    config = getattr(inner, "config", None)
    if getattr(config, "pooling", None) == "none":  # BiLSTM token student
        return True
    if config is not None and type(inner).__name__.endswith("ForTokenClassification"):
        return True
    return config is not None and is_token_config(config)
