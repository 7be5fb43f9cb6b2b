"""Running pipelines end to end: stage hand-off, resume by fingerprint, --from; general distillation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from conftest import make_sentiment_rows, make_tokenizer, tiny_bert_config
from test_pipeline_recipe import three_stage
from textdistill.cli import main
from textdistill.errors import ConfigError
from textdistill.pipeline.fingerprint import dir_fingerprint, file_fingerprint, stage_fingerprint
from textdistill.pipeline.general import CorpusStream
from textdistill.pipeline.runner import read_state, run_pipeline


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(text for text, _ in make_sentiment_rows(40, seed=5)) + "\n", encoding="utf-8")
    return path


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def test_three_stage_pipeline_runs_resumes_reruns_and_restarts(
    tmp_path, tiny_teacher_dir, sentiment_files, corpus
):
    recipe_file = tmp_path / "three.yaml"
    recipe_file.write_text(yaml.safe_dump(three_stage()), encoding="utf-8")
    out = tmp_path / "pipe"
    params = {
        "teacher": str(tiny_teacher_dir),
        "train": str(sentiment_files["train"]),
        "dev": str(sentiment_files["dev"]),
        "corpus": str(corpus),
    }

    # 1. Everything runs; each stage starts from the previous one's model.
    first = run_pipeline(recipe_file, params, output_dir=out, quiet=True)
    assert [(s.name, s.status) for s in first.stages] == [("gd", "ran"), ("inter", "ran"), ("pred", "ran")]
    assert first.model_dir == out / "pred" / "model"
    gd_config = json.loads((out / "gd" / "model" / "config.json").read_text())
    assert gd_config["architectures"] == ["BertModel"]  # the general stage saves the encoder, no task head
    assert (gd_config["num_hidden_layers"], gd_config["hidden_size"]) == (2, 16)
    inter_cfg = yaml.safe_load((out / "inter" / "config.yaml").read_text())
    assert inter_cfg["student"] == {
        **inter_cfg["student"],
        "type": "pretrained",
        "path": str(out / "gd" / "model"),
    }
    pred_cfg = yaml.safe_load((out / "pred" / "config.yaml").read_text())
    assert pred_cfg["student"]["path"] == str(out / "inter" / "model")
    state = read_state(out)
    assert state["recipe"] == "three" and state["params"]["corpus"] == str(corpus)
    assert [state["stages"][n]["status"] for n in ("gd", "inter", "pred")] == ["finished"] * 3
    assert state["stages"]["pred"]["metrics"]["dev"] == first["pred"].metrics["dev"]
    assert set(first["pred"].metrics["dev"]) >= {"accuracy", "n"}
    fps = {n: state["stages"][n]["fingerprint"] for n in ("gd", "inter", "pred")}
    stamps = {n: _mtime(out / n / "run.json") for n in fps}

    # 2. Nothing changed: every stage is skipped, nothing is rewritten.
    second = run_pipeline(recipe_file, params, output_dir=out, quiet=True)
    assert [s.status for s in second.stages] == ["skipped"] * 3
    assert second["pred"].metrics == first["pred"].metrics  # taken from pipeline.json
    assert {n: _mtime(out / n / "run.json") for n in fps} == stamps

    # 3. One stage's config changes: it and its successors run, the stage before it does not.
    third = run_pipeline(
        recipe_file, params, output_dir=out, overrides=["stages.inter.train.lr=0.002"], quiet=True
    )
    assert [(s.status, s.reason) for s in third.stages] == [
        ("skipped", "up to date"),
        ("ran", "config or inputs changed"),
        ("ran", "config or inputs changed"),  # its upstream fingerprint changed
    ]
    state = read_state(out)
    new_fps = {n: state["stages"][n]["fingerprint"] for n in fps}
    assert new_fps["gd"] == fps["gd"] and new_fps["inter"] != fps["inter"] and new_fps["pred"] != fps["pred"]
    assert _mtime(out / "gd" / "run.json") == stamps["gd"]
    assert (
        _mtime(out / "inter" / "run.json") > stamps["inter"]
        and _mtime(out / "pred" / "run.json") > stamps["pred"]
    )
    assert yaml.safe_load((out / "inter" / "config.yaml").read_text())["train"]["lr"] == 0.002

    # 4. --from forces a restart point: earlier stages are reused as they are, it runs again.
    stamps = {n: _mtime(out / n / "run.json") for n in fps}
    fourth = run_pipeline(
        recipe_file,
        params,
        output_dir=out,
        overrides=["stages.inter.train.lr=0.002"],
        from_stage="pred",
        quiet=True,
    )
    assert [(s.name, s.status) for s in fourth.stages] == [
        ("gd", "reused"),
        ("inter", "reused"),
        ("pred", "ran"),
    ]
    assert fourth["pred"].reason == "forced by --from"
    assert (
        _mtime(out / "inter" / "run.json") == stamps["inter"]
        and _mtime(out / "pred" / "run.json") > stamps["pred"]
    )
    assert read_state(out)["stages"]["pred"]["fingerprint"] == new_fps["pred"]

    # 5. --from with the old config: inter changed since it ran, so reusing it warns; the dry run trains nothing.
    stamps = {n: _mtime(out / n / "run.json") for n in fps}
    state_stamp = _mtime(out / "pipeline.json")
    dry = run_pipeline(recipe_file, params, output_dir=out, from_stage="pred", dry_run=True, quiet=True)
    assert [s.status for s in dry.stages] == ["reused", "reused", "pending"]
    assert dry.warnings == [
        "stage 'inter' changed since it ran (config or inputs), but --from pred reuses its output as it is; "
        "run without --from to redo it"
    ]
    assert {n: _mtime(out / n / "run.json") for n in fps} == stamps
    assert _mtime(out / "pipeline.json") == state_stamp
    plan = run_pipeline(recipe_file, params, output_dir=out, dry_run=True, quiet=True)
    assert [(s.status, s.reason) for s in plan.stages] == [
        ("skipped", "up to date"),
        ("pending", "config or inputs changed"),
        ("pending", "config or inputs changed"),
    ]

    # 6. Touching a data file the task stages read is a change for them, not for the corpus stage.
    os.utime(sentiment_files["dev"], ns=(_mtime(sentiment_files["dev"]) + 10**9,) * 2)
    plan = run_pipeline(
        recipe_file,
        params,
        output_dir=out,
        overrides=["stages.inter.train.lr=0.002"],
        dry_run=True,
        quiet=True,
    )
    assert [s.status for s in plan.stages] == ["skipped", "pending", "pending"]

    # --from needs the earlier stages' outputs; a directory that is no pipeline is refused.
    with pytest.raises(ConfigError, match=r"--from pred: stage 'gd' before it has no finished output"):
        run_pipeline(recipe_file, params, output_dir=tmp_path / "fresh", from_stage="pred", quiet=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"is not empty and holds no pipeline.json"):
        run_pipeline(recipe_file, params, output_dir=tmp_path / "other", quiet=True)


@pytest.fixture
def mlm_teacher_dir(tmp_path) -> Path:
    """A pre-trained encoder without a classifier head (BertForMaskedLM) and without dropout."""
    from transformers import BertForMaskedLM

    d = tmp_path / "mlm-teacher"
    tok = make_tokenizer(d)
    torch.manual_seed(3)
    cfg = tiny_bert_config(len(tok))
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.0
    BertForMaskedLM(cfg).save_pretrained(str(d))
    return d


def test_general_stage_loss_and_saved_encoder_match_an_independent_computation(
    tmp_path, mlm_teacher_dir, corpus
):
    """The loss the loop logged at step 1 equals the objective recomputed on the first streamed batch with the
    saved encoder (a learning rate of 1e-15 leaves it unchanged): the data order, the headless teacher and the
    saved student are what the loop used."""
    from textdistill.config.loader import from_dict
    from textdistill.config.schema import Config
    from textdistill.data.collate import Collator
    from textdistill.losses.objective import Objective
    from textdistill.models.io import load_student
    from textdistill.models.teacher import load_teacher, load_tokenizer
    from textdistill.pipeline.general import run_general

    objective = [{"name": "hidden_mse"}, {"name": "attention_mse", "weight": 0.5}]
    cfg = from_dict(
        Config,
        {
            "teacher": {"path": str(mlm_teacher_dir)},
            "student": {"type": "truncate", "num_layers": 2},
            "data": {"train": str(corpus), "max_length": 12},
            "objective": objective,
            "train": {**TRAIN_ONE_STEP, "lr": 1e-15},
            "output_dir": str(tmp_path / "gd"),
        },
    )
    result = run_general(cfg, quiet=True)
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["status"] == "finished" and run["state"]["step"] == 1
    assert json.loads((result.model_dir / "config.json").read_text())["architectures"] == ["BertModel"]

    tokenizer = load_tokenizer(mlm_teacher_dir)
    stream = CorpusStream([str(corpus)], tokenizer, 12, seed=cfg.train.seed)
    items = [item for _, item in zip(range(cfg.train.batch_size), stream)]
    batch = Collator.for_tokenizer(tokenizer)(items)
    teacher = load_teacher(mlm_teacher_dir, require_classifier=False)
    student = load_student(result.model_dir)  # a fresh head on the saved encoder; no term reads logits
    obj = Objective(cfg.objective, teacher.info, student.info)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        loss, terms = obj(
            student(**inputs, features=obj.student_request()),
            teacher(**inputs, features=obj.teacher_request()),
            batch,
        )
    assert run["results"]["final_loss"] == pytest.approx(float(loss), rel=1e-6)
    assert run["results"]["final_terms"]["attention_mse"] == pytest.approx(
        float(terms["attention_mse"]), rel=1e-6
    )
    assert float(loss) == pytest.approx(
        float(terms["hidden_mse"]) + 0.5 * float(terms["attention_mse"]), rel=1e-6
    )


def test_general_stage_counts_the_corpus_for_epochs_and_rejects_an_empty_one(
    tmp_path, mlm_teacher_dir, corpus
):
    from textdistill.config.loader import from_dict
    from textdistill.config.schema import Config
    from textdistill.models.teacher import load_tokenizer
    from textdistill.pipeline.general import run_general, validate_general

    def config(train: Path, out: str) -> Config:
        return from_dict(
            Config,
            {
                "teacher": {"path": str(mlm_teacher_dir)},
                "student": {"type": "truncate", "num_layers": 1},
                "data": {"train": str(train), "max_length": 8},
                "objective": [{"name": "hidden_cos"}],
                "train": {"epochs": 2, "batch_size": 16, "precision": "fp32", "progress": False},
                "output_dir": str(tmp_path / out),
            },
        )

    windows = CorpusStream([str(corpus)], load_tokenizer(mlm_teacher_dir), 8).count()
    assert windows > 40  # lines longer than 8 tokens were split into windows
    run = json.loads((run_general(config(corpus, "gd"), quiet=True).run_dir / "run.json").read_text())
    assert run["data"]["windows_per_epoch"] == windows
    assert run["state"]["steps_per_epoch"] == -(-windows // 16)
    assert run["state"]["step"] == run["state"]["total_steps"] == 2 * -(-windows // 16)

    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"data.train: the corpus '.*empty.txt' holds no non-blank line"):
        validate_general(config(empty, "gd2"))


TRAIN_ONE_STEP = {
    "max_steps": 1,
    "batch_size": 6,
    "precision": "fp32",
    "progress": False,
    "warmup_ratio": 0.0,
}


def test_corpus_stream_windows_shuffles_and_counts(tmp_path, tiny_tokenizer):
    long_line = " ".join(["good movie"] * 20)  # 40 words -> 42 tokens with [CLS]/[SEP]
    path = tmp_path / "c.txt"
    path.write_text("bad plot\n\n" + long_line + "\nfun\n", encoding="utf-8")
    stream = CorpusStream([str(path)], tiny_tokenizer, 10, seed=1, chunk_lines=2, shuffle=False)
    items = list(stream)
    cls, sep = tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id
    assert all(
        len(it["input_ids"]) <= 10 and it["input_ids"][0] == cls and it["input_ids"][-1] == sep
        for it in items
    )
    body = [t for it in items for t in it["input_ids"][1:-1]]
    expected = [t for line in ("bad plot", long_line, "fun") for t in tiny_tokenizer(line)["input_ids"][1:-1]]
    assert body == expected  # the long line is split into consecutive windows, nothing lost
    assert len(items) == 1 + 5 + 1 == stream.count()  # 40 tokens / 8 per window = 5 windows
    assert [it["example_id"] for it in items] == list(range(7))
    assert all(it["label"] == -100 and it["is_original"] for it in items)

    shuffled = CorpusStream([str(path)], tiny_tokenizer, 10, seed=1, chunk_lines=2)
    epoch0 = [tuple(it["input_ids"]) for it in shuffled]
    shuffled.set_epoch(1)
    epoch1 = [tuple(it["input_ids"]) for it in shuffled]
    shuffled.set_epoch(0)
    assert [tuple(it["input_ids"]) for it in shuffled] == epoch0  # seeded: the same epoch, the same order
    assert sorted(epoch0) == sorted(epoch1) == sorted(tuple(it["input_ids"]) for it in items)
    # Chunks are shuffled separately: the last chunk ("fun") stays last.
    assert epoch0[-1] == epoch1[-1] == tuple(items[-1]["input_ids"])
    assert epoch0 != epoch1


def test_fingerprints(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("same text\n")
    b = tmp_path / "b.txt"
    b.write_text("same text\n")
    os.utime(b, ns=(_mtime(a),) * 2)
    assert file_fingerprint(a) == file_fingerprint(b)  # the name is not part of it
    before = file_fingerprint(a)
    os.utime(a, ns=(_mtime(a) + 1,) * 2)
    assert file_fingerprint(a) != before  # touched
    os.utime(b, ns=(_mtime(a),) * 2)
    b.write_text("same text!\n")
    os.utime(b, ns=(_mtime(a),) * 2)
    assert file_fingerprint(b) != file_fingerprint(a)  # edited, same mtime
    # Only the head is hashed: a change past it with the same size and mtime is not seen (documented).
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 64 + b"A")
    stamp = _mtime(big)
    fp = file_fingerprint(big, head_bytes=64)
    big.write_bytes(b"x" * 64 + b"B")
    os.utime(big, ns=(stamp, stamp))
    assert file_fingerprint(big, head_bytes=64) == fp and file_fingerprint(big) != fp

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    d0 = dir_fingerprint(model)
    (model / "weights.bin").write_bytes(b"\0")
    assert dir_fingerprint(model) != d0
    assert dir_fingerprint("org/hub-model") != dir_fingerprint("org/other")

    def fp_of(**changes):
        args = {
            "mode": "distill",
            "config": {"x": 1},
            "augment": None,
            "upstream": {"gd": "1"},
            "files": [a],
            "models": [model],
        }
        return stage_fingerprint(**{**args, **changes})

    base = fp_of()
    assert fp_of() == base and fp_of(files=[a, a]) == base
    assert (
        len(
            {
                base,
                fp_of(config={"x": 2}),
                fp_of(upstream={"gd": "2"}),
                fp_of(mode="finetune"),
                fp_of(augment={"m": 1}),
            }
        )
        == 5
    )


def test_cli_run_and_errors(tmp_path, tiny_teacher_dir, sentiment_files, corpus, capsys):
    recipe_file = tmp_path / "three.yaml"
    recipe_file.write_text(yaml.safe_dump(three_stage()), encoding="utf-8")
    args = [
        "run",
        str(recipe_file),
        f"teacher={tiny_teacher_dir}",
        f"train={sentiment_files['train']}",
        f"dev={sentiment_files['dev']}",
        f"corpus={corpus}",
        "stages.pred.train.lr=0.001",
        "-o",
        str(tmp_path / "o"),
        "--dry-run",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{") :])
    assert {k: v["status"] for k, v in summary["stages"].items()} == {
        "gd": "pending",
        "inter": "pending",
        "pred": "pending",
    }
    assert summary["model_dir"] == str(tmp_path / "o" / "pred" / "model")
    assert not (tmp_path / "o").exists()  # a dry run writes nothing
    without_corpus = [a for a in args if not a.startswith("corpus=")]
    assert main([*without_corpus, "--from", "nope"]) == 2
    err = capsys.readouterr().err
    assert (
        "--from: the recipe has no stage 'nope'" in err
        and "stages.inter.student: warm-starts from 'gd'" in err
    )


def test_interrupted_task_stage_resumes_instead_of_starting_over(
    tmp_path, tiny_teacher_dir, sentiment_files, monkeypatch
):
    """The pipeline hands an interrupted stage to run_training(resume=True) and keeps its run directory."""
    from textdistill.training import runner as training_runner

    data = {
        "params": {"teacher": {}},
        "defaults": {"train": {"max_steps": 2}},
        "stages": [
            {
                "name": "kd",
                "mode": "distill",
                "teacher": {"path": "${params.teacher}"},
                "student": {"type": "truncate", "num_layers": 2},
                "data": {"train": str(sentiment_files["train"]), "dev": str(sentiment_files["dev"])},
            }
        ],
    }
    recipe_file = tmp_path / "one.yaml"
    recipe_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    out, params = tmp_path / "pipe", {"teacher": str(tiny_teacher_dir)}
    calls: list[tuple[str, bool, bool]] = []

    def interrupted(cfg, mode, *, quiet=False, resume=False):
        run_dir = Path(cfg.output_dir)
        calls.append((mode, resume, (run_dir / "partial").exists()))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "run.json").write_text('{"status": "running"}')
        (run_dir / "partial").write_text("a checkpoint would be here")
        raise KeyboardInterrupt("stopped by SIGINT")

    def finishing(cfg, mode, *, quiet=False, resume=False):
        run_dir = Path(cfg.output_dir)
        calls.append((mode, resume, (run_dir / "partial").exists()))
        (run_dir / "model").mkdir(parents=True)
        (run_dir / "model" / "config.json").write_text("{}")
        return training_runner.RunResult(
            run_dir=run_dir, model_dir=run_dir / "model", dev_metrics={"accuracy": 0.5}
        )

    monkeypatch.setattr(training_runner, "run_training", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(recipe_file, params, output_dir=out, quiet=True)
    record = read_state(out)["stages"]["kd"]
    assert (record["status"], record["error"]) == ("interrupted", "KeyboardInterrupt: stopped by SIGINT")

    monkeypatch.setattr(training_runner, "run_training", finishing)
    result = run_pipeline(recipe_file, params, output_dir=out, quiet=True)
    assert (result["kd"].status, result["kd"].reason) == (
        "ran",
        "continuing its interrupted run from the last checkpoint",
    )
    assert read_state(out)["stages"]["kd"]["status"] == "finished"
    assert calls == [("distill", False, False), ("distill", True, True)]  # resumed in place, not wiped

    # A changed config cannot continue the old run: the stage starts over in a fresh directory.
    (out / "kd" / "partial").write_text("x")
    state = read_state(out)
    state["stages"]["kd"]["status"] = "failed"
    (out / "pipeline.json").write_text(json.dumps(state))
    run_pipeline(recipe_file, params, output_dir=out, overrides=["stages.kd.train.max_steps=3"], quiet=True)
    assert calls[-1] == ("distill", False, False)
