"""Fail-safe under faults (issue #20): code in a model folder, full or read-only disks, permission errors,
infinite settings, poisoned pickles, huge inputs, signals outside the loop, a resume that starts over,
leftovers. Each test reproduces the fault and checks: no code ran, a short message naming the problem and
the fix, a non-zero exit where the CLI is involved, and the previous checkpoint and student intact.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_sentiment_rows, make_tokenizer, tiny_bert_config, write_tsv
from test_checkpoint import StopAt, make_distiller, train_cfg
from textdistill.config.loader import load_config, resolve_config
from textdistill.config.validate import non_finite_problems, validate_config, writable_problem
from textdistill.errors import ConfigError, DataError, ModelError, RunDirError
from textdistill.training import checkpoint as ck
from textdistill.training.runner import run_training

SRC = Path(__file__).resolve().parents[1] / "src"


# -- a tiny distillation run ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    from transformers import BertForSequenceClassification

    d = tmp_path_factory.mktemp("faults")
    tok = make_tokenizer(d / "teacher")
    torch.manual_seed(0)
    cfg = tiny_bert_config(len(tok), num_labels=2)
    cfg.id2label, cfg.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    BertForSequenceClassification(cfg).save_pretrained(str(d / "teacher"))
    write_tsv(d / "train.tsv", make_sentiment_rows(32, seed=1))
    write_tsv(d / "dev.tsv", make_sentiment_rows(16, seed=2))
    return d


def run_cfg(work: Path, out: Path, *extra: str):
    """4 steps (2 epochs of 2 batches), a checkpoint every 2, a 1-layer shrink student, no report."""
    return load_config(
        None,
        [
            f"teacher.path={work / 'teacher'}",
            f"data.train={work / 'train.tsv'}",
            f"data.dev={work / 'dev.tsv'}",
            f"output_dir={out}",
            "student.type=shrink",
            "student.num_layers=1",
            "student.hidden_size=16",
            "student.num_heads=2",
            "train.batch_size=16",
            "train.epochs=2",
            "train.save_every=2",
            "train.progress=false",
            "train.precision=fp32",
            "teacher.cache=false",
            "report=false",
            *extra,
        ],
    )


def files_of(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# -- 1. code from a model directory -----------------------------------------------------------------------
def make_remote_code_model(d: Path, marker: Path) -> Path:
    """A model folder whose config maps to a module of its own that writes ``marker`` when imported."""
    from transformers import BertForSequenceClassification

    tok = make_tokenizer(d)
    BertForSequenceClassification(tiny_bert_config(len(tok), num_labels=2)).save_pretrained(str(d))
    config = json.loads((d / "config.json").read_text())
    config["model_type"] = "evilbert"  # no such class in transformers: only the folder's code could load it
    config["auto_map"] = {
        "AutoConfig": "evil.EvilConfig",
        "AutoModelForSequenceClassification": "evil.EvilModel",
    }
    (d / "config.json").write_text(json.dumps(config))
    (d / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import BertConfig, BertForSequenceClassification\n"
        "class EvilConfig(BertConfig):\n    model_type = 'evilbert'\n"
        "class EvilModel(BertForSequenceClassification):\n    config_class = EvilConfig\n"
    )
    return d


def test_evaluate_never_runs_a_model_folders_code_even_with_y_on_stdin(tmp_path):
    marker = tmp_path / "MARKER"
    model = make_remote_code_model(tmp_path / "model", marker)
    write_tsv(tmp_path / "dev.tsv", make_sentiment_rows(8))
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "textdistill.cli",
            "evaluate",
            "--model",
            str(model),
            "--data",
            str(tmp_path / "dev.tsv"),
        ],
        input="y\ny\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    assert not marker.exists()
    assert "[y/N]" not in proc.stdout + proc.stderr  # never asked
    assert "never runs a model folder's code" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_from_pretrained_in_the_package_passes_trust_remote_code():
    """AST scan: a new ``from_pretrained`` call without the keyword would let transformers prompt again."""
    import ast

    missing = []
    for path in sorted((SRC / "textdistill").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_pretrained"
                and not any(k.arg == "trust_remote_code" for k in node.keywords)
            ):
                missing.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert missing == []


# -- 2. disk full inside torch.save's RuntimeError ----------------------------------------------------------
def test_enospc_wrapped_in_torch_runtime_error_is_reported_as_disk_full(tmp_path, monkeypatch):
    cfg = train_cfg(save_every=2, keep_checkpoints=1, epochs=1)
    d, _ = make_distiller(tmp_path, cfg, StopAt(2))
    d.fit()
    before = files_of(tmp_path / "checkpoints" / "step-2")
    real_save = torch.save

    class FullDisk:
        """A file whose writes fail with ENOSPC after 100 bytes, as on a full tmpfs."""

        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            self.n += len(b)
            if self.n > 100:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

    def save(obj, f, *a, **kw):
        if getattr(f, "name", "").endswith("optimizer.pt"):
            return real_save(obj, FullDisk(f), *a, **kw)
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    # the fault as torch raises it: a RuntimeError whose context is the OSError
    probe = (tmp_path / "probe.optimizer.pt").open("wb")
    with probe, pytest.raises(RuntimeError, match="unexpected pos|write") as raw:
        torch.save({"x": torch.zeros(1000)}, probe)
    assert isinstance(raw.value.__context__, OSError)

    d2, _ = make_distiller(tmp_path, cfg)
    ck.restore_checkpoint(d2, ck.latest_checkpoint(tmp_path))
    with pytest.raises(ck.CheckpointError) as info:
        d2.fit()
    msg = str(info.value)
    assert msg.startswith(f"no space left on the device holding {tmp_path / 'checkpoints'}")
    assert "previous checkpoint step-2 is intact" in msg and "enforce fail" not in msg
    assert files_of(tmp_path / "checkpoints" / "step-2") == before
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-2"]


# -- 3. the failure handler keeps the good message ----------------------------------------------------------
def test_read_only_mid_run_reports_the_checkpoint_error_not_the_run_json_one(work, tmp_path, monkeypatch):
    from textdistill.training import callbacks

    out = tmp_path / "run"
    read_only = {"on": False}
    real_text_save, real_json = ck._text_save, callbacks.write_json_atomic

    def text_save(text, path):
        if ck.checkpoints_dir(out) in path.parents and "step-4" in path.parent.name:
            read_only["on"] = True  # from now on the whole directory is read-only
        if read_only["on"]:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_text_save(text, path)

    def write_json(path, data):
        if read_only["on"]:
            raise OSError(errno.EROFS, "Read-only file system", str(path) + ".tmp-1")
        return real_json(path, data)

    monkeypatch.setattr(ck, "_text_save", text_save)
    monkeypatch.setattr(callbacks, "write_json_atomic", write_json)
    monkeypatch.setattr("textdistill.training.runner.write_json_atomic", write_json)
    with pytest.raises(ck.CheckpointError) as info:
        run_training(run_cfg(work, out), "distill", quiet=True)
    msg = str(info.value)
    assert "cannot write checkpoint step-4" in msg and "previous checkpoint step-2 is intact" in msg
    assert "resume with: cd " in msg
    ck.verify_checkpoint(out / "checkpoints" / "step-2")


# -- 4. permissions ------------------------------------------------------------------------------------------
def test_validation_reports_unwritable_output_and_cache_dirs(work, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and real_access(p, mode, **kw))
    cfg = run_cfg(work, locked / "run", f"teacher.cache_dir={locked / 'cache'}", "teacher.cache=true")
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, "distill")
    problems = info.value.problems
    assert any(p.startswith("output_dir: ") and "is not writable by this user" in p for p in problems)
    assert any(
        p.startswith("teacher.cache_dir: ") and "choose a directory you can write" in p for p in problems
    )
    assert writable_problem("output_dir", tmp_path / "fine" / "run") is None


def test_unwritable_output_dir_is_a_clear_cli_error(work, tmp_path, monkeypatch, capsys):
    from textdistill import cli

    out = tmp_path / "theirs" / "run"
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **kw):
        if self == out or self == out.parent:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    code = cli.main(
        [
            "distill",
            "--teacher",
            str(work / "teacher"),
            "--train",
            str(work / "train.tsv"),
            "--dev",
            str(work / "dev.tsv"),
            "-o",
            str(out),
            "report=false",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("textdistill: error: output_dir: cannot write") and "permission denied" in err
    assert "Traceback" not in err


# -- 5. infinite settings -----------------------------------------------------------------------------------
def test_non_finite_settings_are_refused_with_the_key(work, tmp_path):
    cfg = run_cfg(
        work, tmp_path / "r", "train.lr=.inf", "train.max_grad_norm=.inf", "train.weight_decay=.nan"
    )
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, "distill")
    text = "\n".join(info.value.problems)
    for key, value in (("train.lr", "inf"), ("train.max_grad_norm", "inf"), ("train.weight_decay", "nan")):
        assert f"{key}: must be a finite number, got {value}" in text
    assert non_finite_problems(run_cfg(work, tmp_path / "r")) == []
    assert not (tmp_path / "r").exists()


def test_non_finite_weights_stop_the_run_before_anything_is_saved(tmp_path):
    cfg = train_cfg(save_every=1, keep_checkpoints=5, epochs=1)
    d, _ = make_distiller(tmp_path, cfg, StopAt(2))
    d.fit()
    before = files_of(tmp_path / "checkpoints")
    # an infinite weight decay that validation would refuse: finite loss and gradients, infinite weights
    d2, _ = make_distiller(
        tmp_path, train_cfg(save_every=1, keep_checkpoints=5, epochs=1, weight_decay=float("inf"))
    )
    from textdistill.training.distiller import NonFiniteLossError

    with pytest.raises(
        NonFiniteLossError, match=r"step 1: the optimizer step made the student's weights NaN/Inf"
    ):
        d2.fit()
    assert files_of(tmp_path / "checkpoints") == before  # no checkpoint of the poisoned step


# -- 6. pickles -----------------------------------------------------------------------------------------------
class Marker:
    """Unpickling this writes a file: the proof that code ran."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def rewrite_manifest(ckpt_dir: Path) -> None:
    """Make a tampered file match its manifest (so only the pickle check can catch it)."""
    manifest = json.loads((ckpt_dir / "manifest.json").read_text())
    for name in manifest["files"]:
        data = (ckpt_dir / name).read_bytes()
        manifest["files"][name] = {"sha256": ck.sha256_file(ckpt_dir / name), "bytes": len(data)}
    (ckpt_dir / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng.pt"])
def test_poisoned_pickle_in_a_checkpoint_is_refused_and_the_previous_one_used(tmp_path, capsys, name):
    d, _ = make_distiller(tmp_path, train_cfg(save_every=2, keep_checkpoints=3, epochs=1), StopAt(4))
    d.fit()
    marker = tmp_path / "MARKER"
    torch.save({"state": Marker(str(marker))}, tmp_path / "checkpoints" / "step-4" / name)
    rewrite_manifest(tmp_path / "checkpoints" / "step-4")
    ckpt = ck.latest_checkpoint(tmp_path)
    assert ckpt.step == 2 and not marker.exists()
    out = capsys.readouterr().out
    assert f"skipping checkpoint step-4: refused to load {tmp_path / 'checkpoints' / 'step-4' / name}" in out
    assert "could run code" in out and "weights_only=False" not in out


def test_pickle_bin_model_is_refused_without_running_it(tmp_path, capsys):
    from transformers import BertForSequenceClassification

    from textdistill.models.io import load_student

    d = tmp_path / "model"
    tok = make_tokenizer(d)
    BertForSequenceClassification(tiny_bert_config(len(tok), num_labels=2)).save_pretrained(str(d))
    (d / "model.safetensors").unlink()
    marker = tmp_path / "MARKER"
    with (d / "pytorch_model.bin").open("wb") as f:
        pickle.dump({"bert.embeddings.word_embeddings.weight": Marker(str(marker))}, f)
    with pytest.raises(ModelError) as info:
        load_student(d)
    assert not marker.exists()
    assert "refused to load" in str(info.value) and "weights_only=False" not in str(info.value)


# -- 7. echoed values are capped -----------------------------------------------------------------------------
def test_huge_inputs_give_short_messages(tmp_path):
    from textdistill.data.readers import read_examples

    (tmp_path / "h.tsv").write_text("x" * 5_000_000 + "\tlabel\nhello\t1\n")
    (tmp_path / "w.tsv").write_text("\t".join(f"col{i}" for i in range(30_000)) + "\nhello\n")
    for name in ("h.tsv", "w.tsv"):
        with pytest.raises(DataError) as info:
            read_examples(tmp_path / name)
        assert "'sentence' not found" in str(info.value) and len(str(info.value)) < 1000
    with pytest.raises(ConfigError) as info:
        resolve_config({}, ["train.lr=a" + "9" * 200_000])
    assert "train.lr" in str(info.value) and len(str(info.value)) < 1000
    with pytest.raises(ConfigError) as info:
        resolve_config({}, ["train.epochz=" + "a" * 200_000, "b" * 200_000 + "=1"])
    assert len(str(info.value)) < 2000


# -- 8. stranded state ----------------------------------------------------------------------------------------
def test_sigterm_outside_the_loop_records_interrupted_with_the_resume_command(work, tmp_path, monkeypatch):
    out = tmp_path / "run"
    from textdistill.training.teacher_cache import source as teacher_cache

    real_build = teacher_cache.build_teacher_source

    def build(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)  # lands during the teacher-cache phase, before the loop
        return real_build(*a, **kw)

    monkeypatch.setattr(teacher_cache, "build_teacher_source", build)
    with pytest.raises(KeyboardInterrupt) as info:
        run_training(run_cfg(work, out), "distill", quiet=True)
    assert info.value.exit_code == 143
    assert "stopped by SIGTERM; resume with:" in str(info.value)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "interrupted" and run["signal"] == "SIGTERM"
    assert run["resume_command"].endswith("--resume")
    assert not (out / ".textdistill.lock").exists()  # the lock went with the run


def test_kill_while_writing_the_report_keeps_the_run_resumable(work, tmp_path, monkeypatch):
    from textdistill.training import runner

    out = tmp_path / "run"

    def killed(cfg, run_dir, quiet=False):
        raise KeyboardInterrupt("killed while writing the report")

    monkeypatch.setattr(runner, "write_run_report", killed)
    with pytest.raises(KeyboardInterrupt):
        run_training(run_cfg(work, out, "report=true"), "distill", quiet=True)
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"  # never "finished"
    written = []
    monkeypatch.setattr(runner, "write_run_report", lambda cfg, run_dir, quiet=False: written.append(run_dir))
    result = run_training(run_cfg(work, out, "report=true"), "distill", quiet=True, resume=True)
    assert written == [out] and json.loads((out / "run.json").read_text())["status"] == "finished"
    assert result.state["step"] == 4


def test_second_signal_message_has_the_resume_command(monkeypatch, capsys):
    from textdistill.training import signals

    exits = []
    monkeypatch.setattr(signals.os, "_exit", lambda code: exits.append(code))
    signals._exit_now(signal.SIGTERM, "cd /x && textdistill distill --config /x/config.yaml --resume")
    assert exits == [143]
    assert "second SIGTERM: exiting now; resume with:\n  cd /x && textdistill" in capsys.readouterr().err


# -- 9. a resume that starts over keeps the student ----------------------------------------------------------
def test_resume_with_only_bad_checkpoints_moves_the_student_aside(work, tmp_path, capsys):
    out = tmp_path / "run"
    run_training(run_cfg(work, out), "distill", quiet=True)
    student = files_of(out / "model")
    run = json.loads((out / "run.json").read_text())
    run["status"] = "interrupted"  # as if killed during the final evaluation
    (out / "run.json").write_text(json.dumps(run))
    for _, p in ck.list_checkpoints(out):
        (p / "manifest.json").unlink()
    run_training(run_cfg(work, out), "distill", quiet=True, resume=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.previous-")]
    assert len(aside) == 1 and files_of(aside[0] / "model") == student
    assert f"moved to {aside[0]}" in capsys.readouterr().out


# -- 10. leftovers --------------------------------------------------------------------------------------------
def test_metrics_jsonl_writes_null_for_non_finite_numbers(tmp_path):
    from textdistill.training.callbacks import append_jsonl

    append_jsonl(tmp_path / "m.jsonl", {"step": 1, "loss": float("nan"), "grad_norm": float("inf")})
    line = (tmp_path / "m.jsonl").read_text()
    assert json.loads(line, parse_constant=lambda c: pytest.fail(c)) == {
        "step": 1,
        "loss": None,
        "grad_norm": None,
    }


def test_nul_byte_in_text_is_a_row_error(tmp_path):
    from textdistill.data.readers import read_examples

    (tmp_path / "n.tsv").write_text("sentence\tlabel\nhel\x00lo\tpositive\nfine\tnegative\n")
    with pytest.raises(DataError, match=r"line 2: text column 'sentence' holds a NUL byte .* character 3"):
        read_examples(tmp_path / "n.tsv")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_dead_processes_are_removed(tmp_path):
    from textdistill.training.faults import new_partial_dir, remove_stale_temporaries

    dead, live = dead_pid(), os.getpid()
    (tmp_path / f".eval_results.json.tmp-{dead}").write_text("{")
    (tmp_path / f".run.json.tmp-{live}").write_text("{")  # a live writer's: kept
    (tmp_path / ".model.tmp-abc123").mkdir()
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f".eval_results.json.tmp-{dead}", ".model.tmp-abc123"])
    cache = tmp_path / "cache" / "abc"
    cache.parent.mkdir()
    (cache.parent / f".abc.partial-{dead}-xyz").mkdir()
    (cache.parent / f".abc.partial-{live}-keep").mkdir()
    tmp = new_partial_dir(cache)
    names = sorted(p.name for p in cache.parent.iterdir())
    assert (
        f".abc.partial-{dead}-xyz" not in names and f".abc.partial-{live}-keep" in names and tmp.name in names
    )


def test_published_directories_follow_the_umask(tmp_path):
    from transformers import BertForSequenceClassification

    from textdistill.models.io import save_model

    old = os.umask(0o022)
    try:
        d, _ = make_distiller(tmp_path, train_cfg(save_every=2, epochs=1), StopAt(2))
        d.fit()
        save_model(BertForSequenceClassification(tiny_bert_config(50, num_labels=2)), tmp_path / "model")
    finally:
        os.umask(old)
    assert (tmp_path / "checkpoints" / "step-2").stat().st_mode & 0o777 == 0o755  # mkdtemp alone: 0700
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755


# -- #19: one process per run directory ---------------------------------------------------------------------
def test_a_second_process_cannot_write_a_locked_run_dir(work, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from textdistill.training.run_lock import RunLock; "
            f"RunLock({str(out)!r}).acquire(); print('locked', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError) as info:
            run_training(run_cfg(work, out), "distill", quiet=True, resume=True)
        assert f"in use by another textdistill run: process {holder.pid} on " in str(info.value)
        assert f"kill -TERM {holder.pid}" in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "run.json").exists()  # nothing written by the refused process


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    import socket

    from textdistill.training.run_lock import RunLock

    out = tmp_path / "run"
    out.mkdir()
    pid = dead_pid()
    (out / ".textdistill.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    with RunLock(out):
        assert json.loads((out / ".textdistill.lock").read_text())["pid"] == os.getpid()
    assert f"taking over the lock of process {pid}" in capsys.readouterr().out
    assert not (out / ".textdistill.lock").exists()


def test_tensorboard_events_of_replayed_steps_are_purged_on_resume(tmp_path, monkeypatch):
    """TensorBoard's purge_step hides the events at or after it in the earlier files: the resumed writer
    must open with the first replayed step (tensorboard itself is not installed here: a recording stub)."""
    import types

    opened = []

    class Writer:
        def __init__(self, log_dir, purge_step=None):
            opened.append(purge_step)

        def add_scalar(self, *a):
            pass

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    from textdistill.training.callbacks import MetricsLogger

    cfg = train_cfg(save_every=2, epochs=1)
    d, _ = make_distiller(tmp_path, cfg, MetricsLogger(tmp_path, 1), StopAt(2))
    d.fit()
    d2, _ = make_distiller(tmp_path, cfg, MetricsLogger(tmp_path, 1))
    ck.restore_checkpoint(d2, ck.latest_checkpoint(tmp_path))
    d2.fit()
    assert opened == [None, 3]


def test_a_refused_resume_leaves_the_earlier_runs_record_alone(work, tmp_path):
    """A resume refused before it writes anything (here: a changed setting) must not rewrite the run.json of
    the run it refused, even though that record says "running" (its process was SIGKILLed)."""
    out = tmp_path / "run"
    run_training(run_cfg(work, out, "train.max_steps=2"), "distill", quiet=True)
    run = json.loads((out / "run.json").read_text())
    run["status"] = "running"
    (out / "run.json").write_text(json.dumps(run))
    before = (out / "run.json").read_bytes()
    with pytest.raises(ConfigError, match="train.lr"):
        run_training(
            run_cfg(work, out, "train.max_steps=2", "train.lr=1e-3"), "distill", quiet=True, resume=True
        )
    assert (out / "run.json").read_bytes() == before
