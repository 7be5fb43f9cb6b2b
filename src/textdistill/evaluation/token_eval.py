"""Evaluate a saved token-classification model on a tagged file (CoNLL columns or JSONL tokens/tags).

The file's tags are read in their own scheme and re-tagged in the model's scheme (told from the model's tag
names: ``E-``/``S-`` bioes, ``M-`` bmes, else iob2), so a BIOES model can be scored on IOB2 files: the
entities are the same either way (:func:`~textdistill.data.tags.convert_tags`). A tag the model cannot
output is an error naming the file and the sentence.
"""

from __future__ import annotations

from typing import Any

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


def read_for_model(data: Any, id2label: dict[int, str], **read_options: Any) -> tuple[Any, LabelMap]:
    """Read a tagged file (:func:`~textdistill.data.conll.read_token_file` with ``read_options``), re-tag it
    in the model's scheme and check every tag against the model's; returns the read result and the tags.

    Raises:
        DataError: unreadable file or a tag the model cannot output (file and sentence named).
    """
    from textdistill.data.conll import read_token_file
    from textdistill.data.token_task import check_tags, normalise_tags

    result = read_token_file(data, **read_options)
    label_map = LabelMap(tuple(id2label[i] for i in range(len(id2label))), source="model")
    normalise_tags(result, model_scheme(label_map.names))
    check_tags(result, label_map)
    return result, label_map


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
    from textdistill.data.token_encoding import TokenEncodedDataset
    from textdistill.evaluation.metrics import command_line_evaluation
    from textdistill.evaluation.seq_metrics import evaluate_token_model

    result, label_map = read_for_model(
        data,
        id2label,
        format=cfg.format,
        tag_column=cfg.tag_column,
        tokens_key=cfg.tokens_key,
        tags_key=cfg.tags_key,
        encoding=cfg.encoding,
        skip_bad_rows=cfg.skip_bad_rows,
    )
    ds = TokenEncodedDataset(result.examples, tokenizer, cfg.max_length, label_map)
    ds.tag_scheme = model_scheme(label_map.names)
    ds.entity_mode = strict_checked(mode or cfg.entity_mode, ds.tag_scheme)
    metrics, _ = command_line_evaluation(
        model,
        ds,
        tokenizer,
        batch_size=batch_size,
        precision=precision,
        score=evaluate_token_model,
        dataset=ds,
    )
    return metrics
