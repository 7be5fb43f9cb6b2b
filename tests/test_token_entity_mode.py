"""data.entity_mode (lenient | strict): validation, and the training, evaluate and benchmark numbers it selects,
checked against an independent decoding of the predicted tags."""

from __future__ import annotations

import json

import pytest
import torch

from test_token_training import ner  # noqa: F401 (fixture)
from textdistill.cli import main
from textdistill.config.schema import (
    Config,
    DataConfig,
    LossTermConfig,
    StudentConfig,
    TrainConfig,
)
from textdistill.data.token_task import load_token_task, token_config_problems
from textdistill.errors import ConfigError
from textdistill.training.runner import run_training


def spans(tags: list[str], strict: bool) -> set[tuple[str, int, int]]:
    """Entities of IOB2 tags, written independently of textdistill: lenient (conlleval: any I- whose type
    differs from the running entity, or that follows O, starts one) or strict (only B- starts one, and
    only I- of the same type continues it)."""
    out, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, t = tag.partition("-")
        continues = prefix == "I" and kind == t and start is not None
        if not continues and start is not None:
            out.add((kind, start, i))
            start = kind = None
        if prefix == "B" or (prefix == "I" and not continues and not strict):
            start, kind = i, t
    return out


def f1(gold: list[list[str]], pred: list[list[str]], strict: bool) -> float:
    g = [(k, *s) for k, tags in enumerate(gold) for s in spans(tags, strict)]
    p = [(k, *s) for k, tags in enumerate(pred) for s in spans(tags, strict)]
    right = len(set(g) & set(p))
    return 2 * right / (len(g) + len(p)) if g or p else 0.0


def test_independent_decoder_agrees_with_a_hand_case():
    gold = [["B-PER", "I-PER", "O"]]
    pred = [["I-PER", "I-PER", "O"]]  # ill-formed start: lenient reads PER(0, 2), strict reads nothing
    assert f1(gold, pred, strict=False) == 1.0 and f1(gold, pred, strict=True) == 0.0


def _cfg(ner, out, mode: str) -> Config:  # noqa: F811
    return Config(
        student=StudentConfig(type="pretrained", path=str(ner["teacher"])),
        data=DataConfig(train=str(ner["train"]), dev=str(ner["dev"]), entity_mode=mode),
        objective=[LossTermConfig(name="hard_ce")],
        train=TrainConfig(max_steps=1, batch_size=8, eval_every=1, progress=False, precision="fp32"),
        output_dir=str(out),
    )


def _predicted_tags(model_dir, dev_path) -> tuple[list[list[str]], list[list[str]]]:
    from textdistill.data.conll import read_token_file
    from textdistill.models.io import load_student
    from textdistill.models.teacher import load_tokenizer

    model, tok = load_student(model_dir), load_tokenizer(model_dir)
    gold, pred = [], []
    for ex in read_token_file(dev_path).examples:
        enc = tok(ex.tokens, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            ids = model(enc["input_ids"], enc["attention_mask"]).logits[0].argmax(-1).tolist()
        words = enc.word_ids()
        firsts = [i for i, w in enumerate(words) if w is not None and (i == 0 or words[i - 1] != w)]
        gold.append(ex.tags)
        pred.append([model.id2label[ids[i]] for i in firsts])
    return gold, pred


def test_strict_and_lenient_runs_report_their_own_entity_f1(ner, tmp_path):  # noqa: F811
    res = {m: run_training(_cfg(ner, tmp_path / m, m), "finetune", quiet=True) for m in ("lenient", "strict")}
    gold, pred = _predicted_tags(res["strict"].model_dir, ner["dev"])
    assert _predicted_tags(res["lenient"].model_dir, ner["dev"])[1] == pred  # same seed, same model
    lenient, strict = f1(gold, pred, strict=False), f1(gold, pred, strict=True)
    assert lenient != strict  # the near-random model predicts ill-formed chunks (I- after O)
    for mode, expected in (("lenient", lenient), ("strict", strict)):
        ev = json.loads((tmp_path / mode / "eval_results.json").read_text())
        assert ev["entity_mode"] == mode
        assert ev["dev"]["entity_f1"] == pytest.approx(expected)
        logged = [json.loads(x) for x in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
        assert [r["eval/entity_f1"] for r in logged if "eval/entity_f1" in r] == [pytest.approx(expected)]

    from textdistill.evaluation.benchmark import run_benchmark
    from textdistill.evaluation.evaluate import evaluate_dir

    model_dir = res["strict"].model_dir
    strict_ev = evaluate_dir(model_dir, ner["dev"], overrides=["entity_mode=strict"], precision="fp32")
    assert strict_ev["entity_f1"] == pytest.approx(strict)
    assert evaluate_dir(model_dir, ner["dev"], precision="fp32")["entity_f1"] == pytest.approx(lenient)
    for mode, expected in (("lenient", lenient), ("strict", strict)):
        out = run_benchmark(
            model_dir, [], ner["dev"], out_dir=tmp_path / f"b-{mode}", speed=False, cka=False, plots=False,
            bf16=False, gpu=False, entity_mode=mode,
        )  # fmt: skip
        assert out["task"]["entity_mode"] == mode
        assert (
            f"metric **entity_f1** ({mode} entity matching)"
            in (tmp_path / f"b-{mode}" / "report.md").read_text()
        )
        assert out["entries"][0]["metrics"]["entity_f1"] == pytest.approx(expected)


def test_strict_is_refused_where_it_has_no_meaning(tmp_path):
    assert token_config_problems(DataConfig(entity_mode="exact")) == [
        "data.entity_mode: 'exact' is not one of lenient, strict"
    ]
    assert token_config_problems(DataConfig(entity_mode="strict", tag_scheme="iob1")) == []  # -> iob2
    for bad in (
        dict(tag_scheme="bmes"),
        dict(convert_tags="iob1"),
        dict(tag_scheme="iob2", convert_tags="bmes"),
    ):
        (msg,) = token_config_problems(DataConfig(entity_mode="strict", **bad))
        assert "defined for IOB2 and BIOES tags only" in msg and "data.entity_mode=lenient" in msg
    # a detected scheme (tag_scheme auto) is checked once the file is read
    zh = tmp_path / "zh.txt"
    zh.write_text("北 B-LOC\n京 M-LOC\n市 E-LOC\n我 S-PER\n\n上 B-LOC\n海 E-LOC\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="gives the model bmes tags"):
        load_token_task(DataConfig(train=str(zh), dev=str(zh), entity_mode="strict"))
    assert load_token_task(DataConfig(train=str(zh), dev=str(zh), entity_mode="strict", convert_tags="bioes"))


def test_config_validate_names_a_bad_entity_mode(capsys, tmp_path, ner):  # noqa: F811
    argv = [
        "config",
        "validate",
        "--mode",
        "finetune",
        "--train",
        str(ner["train"]),
        "--dev",
        str(ner["dev"]),
    ]
    argv += [f"student.path={ner['teacher']}", "-o", str(tmp_path / "run")]
    capsys.readouterr()
    assert main([*argv, "data.entity_mode=strict", "data.tag_scheme=bmes"]) != 0
    err = capsys.readouterr().err
    assert "defined for IOB2 and BIOES tags only" in err and "Traceback" not in err
    assert main([*argv, "data.entity_mode=strict"]) == 0
    assert not (tmp_path / "run").exists()
