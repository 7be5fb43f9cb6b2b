"""Evaluate a saved token-classification model on a tagged file (CoNLL columns or JSONL tokens/tags).

The file's tags are read in their own scheme and re-tagged in the model's scheme (told from the model's tag
names: ``E-``/``S-`` bioes, ``M-`` bmes, else iob2), so a BIOES model can be scored on IOB2 files: the
entities are the same either way (:func:`~textdistill.data.tags.convert_tags`). A tag the model cannot
output is an error naming the file and the sentence.
"""

from __future__ import annotations

from typing import Any

import torch

from textdistill.config.schema import DataConfig
from textdistill.data.labels import LabelMap


def model_scheme(names: tuple[str, ...] | list[str]) -> str:
    """The tag scheme a model's tag names belong to."""
    prefixes = {n[0] for n in names if n != "O"}
    if "M" in prefixes:
        return "bmes"
    return "bioes" if prefixes & {"E", "S"} else "iob2"


def strict_checked(mode: str, scheme: str) -> str:
    """``mode``, after checking that strict entity matching is defined for the model's tag ``scheme``.

    Raises:
        ConfigError: strict matching of a model that outputs IOB1 or BMES tags.
    """
    from textdistill.data.token_task import strict_scheme_problem
    from textdistill.errors import ConfigError

    if mode == "strict" and (problem := strict_scheme_problem(scheme, "the model outputs")):
        raise ConfigError(problem.replace("data.entity_mode=strict", "entity mode strict", 1))
    return mode


def evaluate_token_file(
    model: Any,
    tokenizer: Any,
    data: str,
    cfg: DataConfig,
    id2label: dict[int, str],
    *,
    batch_size: int = 128,
    precision: str = "auto",
    mode: str | None = None,
) -> dict[str, float]:
    """Entity metrics (:mod:`~textdistill.evaluation.seq_metrics`) of ``model`` on the tagged file ``data``,
    entities matched as ``mode`` says (default ``cfg.entity_mode``)."""
    from textdistill.data.collate import Collator
    from textdistill.data.conll import read_token_file
    from textdistill.data.samplers import make_loader
    from textdistill.data.token_encoding import TokenEncodedDataset
    from textdistill.data.token_task import check_tags, normalise_tags
    from textdistill.evaluation.seq_metrics import evaluate_token_model
    from textdistill.training.precision import autocast_dtype, resolve_precision

    result = read_token_file(
        data,
        format="auto" if cfg.format == "auto" else cfg.format,
        tag_column=cfg.tag_column,
        tokens_key=cfg.tokens_key,
        tags_key=cfg.tags_key,
        encoding=cfg.encoding,
        skip_bad_rows=cfg.skip_bad_rows,
    )
    label_map = LabelMap(tuple(id2label[i] for i in range(len(id2label))), source="model")
    scheme = model_scheme(label_map.names)
    normalise_tags(result, scheme)
    check_tags(result, label_map)
    ds = TokenEncodedDataset(result.examples, tokenizer, cfg.max_length, label_map)
    ds.tag_scheme = scheme
    ds.entity_mode = strict_checked(mode or cfg.entity_mode, scheme)
    loader = make_loader(
        ds,
        batch_size,
        shuffle=False,
        group_by_length=True,
        seed=0,
        collator=Collator.for_tokenizer(tokenizer),
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    metrics, _ = evaluate_token_model(
        model,
        loader,
        ds,
        device=device,
        autocast_dtype=autocast_dtype(resolve_precision(precision, device)),
    )
    return metrics
