"""Kill-and-resume harness: a run killed at random points and resumed ends bit-identical to an uninterrupted one.

Every run is a real ``textdistill distill`` (``cli.main``) in a child process. Children are forked from a
``multiprocessing`` fork server that imported torch/transformers/textdistill once, so each run costs its
training time only. Kills are delivered by the child to itself at a chosen point (after a given step, or
inside a checkpoint save), which is the same as an external SIGKILL arriving at that moment but
reproducible. The kill points are drawn from a seeded RNG (``TEXTDISTILL_RESUME_SEED``, default 0) and
printed, so a failure can be replayed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import re
import shlex
import signal
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_sentiment_rows, make_tokenizer, tiny_bert_config, write_tsv

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and the fork server")

STEPS_PER_EPOCH = 6  # 96 training rows / batch 16
TOTAL = 12  # 2 epochs
SAVE_EVERY = 3
PRELOAD = [
    "textdistill.cli",
    "textdistill.training.runner",
    "textdistill.training.checkpoint",
    "textdistill.data.task",
    "textdistill.data.encoding",
    "textdistill.data.collate",
    "textdistill.data.samplers",
    "textdistill.losses.objective",
    "textdistill.models.students",
    "textdistill.models.teacher",
    "textdistill.models.io",
    "textdistill.evaluation.metrics",
    "transformers.models.bert.modeling_bert",
    "accelerate",
]


# -- the child ---------------------------------------------------------------------------------------------
def _child(argv: list[str], log: str, kill: tuple[str, int] | None) -> None:
    """Run ``textdistill <argv>`` with output to ``log``; ``kill`` arms a self-inflicted interruption."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    torch.set_num_threads(1)  # every run alike (and the box is shared)
    if kill is not None:
        _arm(*kill)
    from textdistill.cli import main

    sys.exit(main(argv))


def _arm(kind: str, step: int) -> None:
    import textdistill.training.checkpoint as ck
    from textdistill.training.distiller import Distiller

    me = os.getpid()
    train_step = Distiller.train_step

    def after_step(sig: int):
        def patched(self, batch):
            logs = train_step(self, batch)
            if self.state.step == step:
                os.kill(me, sig)
            return logs

        return patched

    if kind == "sigkill_after_step":  # dies before the step's metrics line and boundary
        Distiller.train_step = after_step(signal.SIGKILL)
    elif kind == "sigterm_after_step":  # graceful: checkpoint at the boundary, exit 143
        Distiller.train_step = after_step(signal.SIGTERM)
    elif kind == "sigkill_in_save":  # dies with a half-written temporary checkpoint directory
        text_save = ck._text_save

        def patched_text_save(text, path):
            text_save(text, path)
            if path.name == ck.TRAINER_STATE and path.parent.name.startswith(f".step-{step}.tmp-"):
                os.kill(me, signal.SIGKILL)

        ck._text_save = patched_text_save
    elif kind == "sigterm_twice_in_save":  # graceful stop, then a second SIGTERM while it saves
        Distiller.train_step = after_step(signal.SIGTERM)
        torch_save = ck._torch_save

        def patched_torch_save(obj, path):
            torch_save(obj, path)
            if path.name == "optimizer.pt" and path.parent.name.startswith(f".step-{step}.tmp-"):
                os.kill(me, signal.SIGTERM)

        ck._torch_save = patched_torch_save
    else:  # pragma: no cover
        raise ValueError(kind)


# -- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("resume")
    teacher = d / "teacher"
    tok = make_tokenizer(teacher)
    torch.manual_seed(0)
    from transformers import BertForSequenceClassification

    cfg = tiny_bert_config(len(tok), num_labels=2)
    cfg.id2label = {0: "negative", 1: "positive"}
    cfg.label2id = {"negative": 0, "positive": 1}
    BertForSequenceClassification(cfg).save_pretrained(str(teacher))
    write_tsv(d / "train.tsv", make_sentiment_rows(96, seed=1))
    write_tsv(d / "dev.tsv", make_sentiment_rows(32, seed=2))
    return d


@pytest.fixture(scope="module")
def ctx():
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _argv(work: Path, run_dir: Path, resume: bool = False) -> list[str]:
    argv = [
        "distill",
        "--teacher",
        str(work / "teacher"),
        "--train",
        str(work / "train.tsv"),
        "--dev",
        str(work / "dev.tsv"),
        "--output-dir",
        str(run_dir),
        "student.type=truncate",
        "student.num_layers=2",
        "train.epochs=2",
        "train.batch_size=16",
        "train.lr=1e-3",
        "train.precision=fp32",
        f"train.save_every={SAVE_EVERY}",
        "train.keep_checkpoints=2",
        "train.log_every=1",
        "train.progress=false",
    ]
    return argv + (["--resume"] if resume else [])


def _run(ctx, argv: list[str], log: Path, kill: tuple[str, int] | None = None) -> int:
    p = ctx.Process(target=_child, args=(argv, str(log), kill))
    p.start()
    p.join(300)
    if p.is_alive():
        p.kill()
        p.join()
        pytest.fail(f"run {argv} hung; log:\n{log.read_text()}")
    return p.exitcode


@pytest.fixture(scope="module")
def baseline(ctx, work) -> Path:
    run_dir = work / "baseline"
    code = _run(ctx, _argv(work, run_dir), work / "baseline.log")
    assert code == 0, (work / "baseline.log").read_text()
    return run_dir


# -- comparison ----------------------------------------------------------------------------------------------
def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"{len(different)} tensors differ between {a} and {b}, e.g. {different[:3]}"


def _metric_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for rec in lines:  # wall-clock fields legitimately differ
        rec.pop("time", None)
        rec.pop("examples_per_s", None)
    return lines


def assert_same_run(expected: Path, got: Path) -> None:
    """Bit-identical student weights (final and best), identical metrics and evaluation results."""
    last = f"checkpoints/step-{TOTAL}/student.safetensors"
    _assert_same_tensors(expected / last, got / last)
    _assert_same_tensors(expected / "model" / "model.safetensors", got / "model" / "model.safetensors")
    assert json.loads((got / "eval_results.json").read_text()) == json.loads(
        (expected / "eval_results.json").read_text()
    )
    assert _metric_lines(got) == _metric_lines(expected)  # no duplicated or missing line either
    run_a, run_b = (json.loads((d / "run.json").read_text()) for d in (expected, got))
    assert run_b["status"] == "finished"
    assert run_b["state"] == run_a["state"]


def test_baseline_is_sensitive_to_every_step(baseline, work):
    """The comparison can fail: the weights change at every checkpoint, and dropout is active."""
    a = _tensors(baseline / f"checkpoints/step-{TOTAL - SAVE_EVERY}/student.safetensors")
    b = _tensors(baseline / f"checkpoints/step-{TOTAL}/student.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    config = json.loads((baseline / "model" / "config.json").read_text())
    assert config["hidden_dropout_prob"] > 0
    steps = [r["step"] for r in _metric_lines(baseline) if "loss" in r]
    assert steps == list(range(1, TOTAL + 1))
    evals = [r["step"] for r in _metric_lines(baseline) if "eval/accuracy" in r]
    assert evals == [STEPS_PER_EPOCH, TOTAL]  # one evaluation per epoch: the best model is chosen among them


def test_killed_runs_resume_bit_identical(ctx, work, baseline):
    rng = random.Random(int(os.environ.get("TEXTDISTILL_RESUME_SEED", "0")))
    a = rng.randint(1, 7)  # SIGKILL right after this step
    r1 = SAVE_EVERY * ((a - 1) // SAVE_EVERY)  # newest checkpoint the kill leaves
    c = rng.choice([s for s in range(SAVE_EVERY, TOTAL, SAVE_EVERY) if s > r1])  # SIGKILL inside this save
    r2 = c - SAVE_EVERY
    d = rng.randint(r2 + 1, TOTAL - 1)  # SIGTERM, then a second SIGTERM inside the save it triggers
    print(f"kill points: sigkill after step {a}, sigkill in save of step {c}, double sigterm at step {d}")
    run_dir = work / "chain"
    log = work / "chain.log"

    assert _run(ctx, _argv(work, run_dir), log, ("sigkill_after_step", a)) == -signal.SIGKILL
    assert _run(ctx, _argv(work, run_dir, True), log, ("sigkill_in_save", c)) == -signal.SIGKILL
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(f".step-{c}.tmp-")]
    assert leftovers, "the kill inside the save should leave the temporary directory behind"
    assert not (run_dir / "checkpoints" / f"step-{c}").exists()
    assert _run(ctx, _argv(work, run_dir, True), log, ("sigterm_twice_in_save", d)) == 128 + signal.SIGTERM
    assert "second SIGTERM: exiting now" in log.read_text()
    assert not (run_dir / "checkpoints" / f"step-{d}").exists()
    assert [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(f".step-{d}.tmp-")]

    # Corrupt the newest checkpoint (truncate the weights): the resume must skip it and use the one before.
    from textdistill.training.checkpoint import list_checkpoints

    ckpts = list_checkpoints(run_dir)
    corrupted = None
    if len(ckpts) == 2:
        corrupted = ckpts[0][1]
        weights = corrupted / "student.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])
    before = len(log.read_text())
    assert _run(ctx, _argv(work, run_dir, True), log) == 0, log.read_text()
    text = log.read_text()
    last = re.findall(r"resuming from \S+ \(step (\d+)\)", text[before:])
    resumes = json.loads((run_dir / "run.json").read_text()).get("resumes", [])
    assert [r["from_step"] for r in resumes[-1:]] == [int(s) for s in last]  # run.json records the resume
    if corrupted is not None:
        assert f"skipping checkpoint {corrupted.name}: " in text and "has " in text
    if r1 == 0:
        assert "no usable checkpoint" in text  # killed before the first checkpoint: starts over
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]  # leftovers pruned
    assert_same_run(baseline, run_dir)


def test_sigterm_stops_gracefully_and_resumes_with_the_printed_command(ctx, work, baseline):
    rng = random.Random(int(os.environ.get("TEXTDISTILL_RESUME_SEED", "0")) + 1)
    e = rng.randint(1, TOTAL - 1)
    print(f"SIGTERM after step {e}")
    run_dir = work / "graceful"
    log = work / "graceful.log"
    assert _run(ctx, _argv(work, run_dir), log, ("sigterm_after_step", e)) == 128 + signal.SIGTERM
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "interrupted" and run["signal"] == "SIGTERM"
    assert run["state"]["step"] == e
    assert run["checkpoint"] == str(run_dir / "checkpoints" / f"step-{e}")
    text = log.read_text()
    assert f"stopped by SIGTERM after step {e} of {TOTAL}" in text
    command = text.split("resume with:\n", 1)[1].splitlines()[0].strip()
    assert command == run["resume_command"]
    cd, _, cli = command.partition(" && ")
    assert shlex.split(cd) == ["cd", os.getcwd()]
    argv = shlex.split(cli)
    assert argv[0] == "textdistill" and argv[-1] == "--resume"
    assert _run(ctx, argv[1:], log) == 0, log.read_text()
    assert f"resuming from {run_dir / 'checkpoints' / f'step-{e}'}" in log.read_text()
    assert_same_run(baseline, run_dir)


def test_resume_of_a_finished_run_is_refused(ctx, work, baseline):
    log = work / "finished.log"
    assert _run(ctx, _argv(work, baseline, True), log) == 2
    assert "already finished, there is nothing to resume" in log.read_text()
