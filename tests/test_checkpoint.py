"""Checkpoints in-process: contents, verification, pruning, disk-full, RNG, exact resume of the loop, cadence."""

from __future__ import annotations

import errno
import hashlib
import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from textdistill.config.loader import dump_yaml
from textdistill.config.schema import Config, TrainConfig
from textdistill.errors import ConfigError, TextDistillError
from textdistill.models.outputs import FeatureRequest, ModelOutputs
from textdistill.training import checkpoint as ck
from textdistill.training.distiller import Callback, Distiller

VOCAB, N_TRAIN, BATCH = 50, 40, 8  # 5 batches per epoch


# -- a tiny loop: embedding-bag student with dropout, an objective with a learned scale ---------------------
class TinyStudent(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.drop = nn.Dropout(0.3)  # dropout makes the result depend on the torch RNG stream
        self.out = nn.Linear(16, 2)

    def forward(self, input_ids, attention_mask, token_type_ids=None, features=None):
        h = (self.emb(input_ids) * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdim=True)
        return ModelOutputs(logits=self.out(self.drop(h)), attention_mask=attention_mask)


class ScaledCE(nn.Module):
    """Cross-entropy of logits times a learned scale (a parameter the checkpoint must carry)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def student_request(self) -> FeatureRequest:
        return FeatureRequest()

    def teacher_request(self) -> FeatureRequest:
        return FeatureRequest()

    def forward(self, student_out, teacher_out, batch, progress):
        loss = nn.functional.cross_entropy(student_out.logits * self.scale, batch["labels"])
        return loss, {"ce": loss.detach()}


def make_data(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (N_TRAIN, 6), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": (ids[:, 0] % 2)}


DATA = make_data()
DEV = make_data(1)


def loader_fn(epoch: int, start_batch: int):
    """Seeded per epoch (like data/samplers.py), skipping ``start_batch`` batches; no global RNG use."""
    order = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(1000 + epoch))
    batches = [order[i : i + BATCH] for i in range(0, N_TRAIN, BATCH)]
    return [{k: v[idx] for k, v in DATA.items()} for idx in batches[start_batch:]]


def evaluator(model: nn.Module) -> dict[str, float]:
    with torch.no_grad():
        logits = model(DEV["input_ids"], DEV["attention_mask"]).logits
    return {"loss": float(nn.functional.cross_entropy(logits, DEV["labels"]))}


class Recorder(Callback):
    """Records evaluations and keeps a running sum (a callback state a resume must restore)."""

    def __init__(self):
        self.evals: list[tuple[int, float, bool]] = []
        self.loss_sum = 0.0

    def on_step_end(self, distiller, logs):
        self.loss_sum += logs["loss"]

    def on_evaluate(self, distiller, metrics, improved):
        self.evals.append((distiller.state.step, metrics["loss"], improved))

    def state_dict(self):
        return {"loss_sum": self.loss_sum}

    def load_state_dict(self, state):
        self.loss_sum = state["loss_sum"]


class StopAt(Callback):
    """Requests a stop (what the SIGTERM handler does) right after a given step."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, distiller, logs):
        if distiller.state.step == self.step:
            distiller.request_stop(15)


def train_cfg(**kw) -> TrainConfig:
    base = dict(
        epochs=3, batch_size=BATCH, lr=1e-2, warmup_steps=2, precision="fp32", eval_every=None, log_every=1
    )
    base.update(kw)
    return TrainConfig(**base)


def make_distiller(
    tmp: Path, cfg: TrainConfig, *extra: Callback, seed: int = 0
) -> tuple[Distiller, Recorder]:
    torch.manual_seed(seed)
    rec = Recorder()
    saver = ck.CheckpointSaver(
        tmp,
        save_every=cfg.save_every,
        keep=cfg.keep_checkpoints,
        config_yaml=dump_yaml(Config(train=cfg)),
        meta={"mode": "distill"},
        append_only=["log.txt"],
    )
    d = Distiller(
        student=TinyStudent(),
        objective=ScaledCE(),
        train_cfg=cfg,
        train_loader_fn=loader_fn,
        steps_per_epoch=N_TRAIN // BATCH,
        evaluator=evaluator,
        metric="loss",
        greater_is_better=False,
        callbacks=[rec, *extra, saver],
    )
    return d, rec


def weights(d: Distiller) -> dict[str, torch.Tensor]:
    sd = {f"student.{k}": v.clone() for k, v in d.unwrapped_student().state_dict().items()}
    sd.update({f"objective.{k}": v.clone() for k, v in d.objective.state_dict().items()})
    return sd


def assert_equal_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


@pytest.fixture
def full_run(tmp_path):
    d, rec = make_distiller(tmp_path / "full", train_cfg(save_every=4, keep_checkpoints=10))
    d.fit()
    return d, rec


# -- exact resume of the loop --------------------------------------------------------------------------------
@pytest.mark.parametrize("stop_at", [3, 5, 7])  # mid-epoch, last batch of an epoch, after an epoch-end eval
def test_stop_and_resume_is_bit_identical(tmp_path, full_run, stop_at):
    full, full_rec = full_run
    run = tmp_path / "stopped"
    d1, rec1 = make_distiller(run, train_cfg(save_every=4, keep_checkpoints=10), StopAt(stop_at))
    d1.fit()
    assert d1.stop_signal == 15 and d1.state.step == stop_at
    assert (run / "checkpoints" / f"step-{stop_at}").is_dir()  # saved at the stop, off the save_every cadence
    assert (
        d1.state.last_eval_step != stop_at or stop_at == 5
    )  # the interrupted run skips the final evaluation

    # A fresh process would rebuild everything from the seed (other seed here: the checkpoint must win).
    d2, rec2 = make_distiller(run, train_cfg(save_every=4, keep_checkpoints=10), seed=123)
    ckpt = ck.latest_checkpoint(run)
    assert ckpt is not None and ckpt.step == stop_at
    ck.restore_checkpoint(d2, ckpt)
    d2.fit()
    assert_equal_weights(weights(full), weights(d2))
    assert d2.state.to_dict() == full.state.to_dict()
    assert rec2.loss_sum == full_rec.loss_sum  # callback state carried over
    assert rec1.evals + rec2.evals == full_rec.evals  # no evaluation lost or repeated
    assert d2.optimizer.state_dict()["state"].keys() == full.optimizer.state_dict()["state"].keys()
    assert d2.scheduler.get_last_lr() == full.scheduler.get_last_lr()


def test_resume_without_rng_restore_differs(tmp_path, full_run, monkeypatch):
    """The equality above is not vacuous: skipping the RNG restore changes the dropout masks and the result."""
    full, _ = full_run
    run = tmp_path / "stopped"
    make_distiller(run, train_cfg(save_every=4, keep_checkpoints=10), StopAt(3))[0].fit()
    d2, _ = make_distiller(run, train_cfg(save_every=4, keep_checkpoints=10))
    monkeypatch.setattr(ck, "set_rng_state", lambda state, log=None: torch.manual_seed(7))
    ck.restore_checkpoint(d2, ck.latest_checkpoint(run))
    d2.fit()
    a, b = weights(full), weights(d2)
    assert any(not torch.equal(a[k], b[k]) for k in a)


# -- cadence --------------------------------------------------------------------------------------------------
def saved_steps(run: Path) -> list[int]:
    return sorted(s for s, _ in ck.list_checkpoints(run))


def test_cadence_every_n_steps_plus_the_end(tmp_path):
    d, _ = make_distiller(tmp_path, train_cfg(save_every=4, keep_checkpoints=10))
    d.fit()
    assert d.state.step == 15
    assert saved_steps(tmp_path) == [4, 8, 12, 15]


def test_cadence_at_each_evaluation(tmp_path):
    d, rec = make_distiller(tmp_path, train_cfg(save_every=None, keep_checkpoints=10, eval_every=None))
    d.fit()
    assert [s for s, _, _ in rec.evals] == [5, 10, 15]  # end of each epoch
    assert saved_steps(tmp_path) == [5, 10, 15]
    d2, rec2 = make_distiller(tmp_path / "b", train_cfg(save_every=None, keep_checkpoints=10, eval_every=2))
    d2.fit()
    assert saved_steps(tmp_path / "b") == [2, 4, 6, 8, 10, 12, 14, 15]  # 15: the final evaluation


def test_keep_prunes_to_the_newest(tmp_path):
    d, _ = make_distiller(tmp_path, train_cfg(save_every=2, keep_checkpoints=2))
    d.fit()
    assert saved_steps(tmp_path) == [14, 15]
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        ck.CheckpointSaver(tmp_path, save_every=1, keep=0, config_yaml="")


# -- contents and verification --------------------------------------------------------------------------------
def test_contents_manifest_and_safe_loading(tmp_path, full_run):
    full, _ = full_run
    ckpt = ck.latest_checkpoint(tmp_path / "full")
    assert ckpt.step == 15
    names = {p.name for p in ckpt.path.iterdir()}
    assert names == {
        "student.safetensors",
        "objective.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "rng.pt",
        "trainer_state.json",
        "config.yaml",
        "manifest.json",
    }
    manifest = json.loads((ckpt.path / "manifest.json").read_text())
    assert set(manifest["files"]) == names - {"manifest.json"}
    for name, entry in manifest["files"].items():
        data = (ckpt.path / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    # everything that is not safetensors loads with weights_only=True (no pickled objects)
    for name in ("optimizer.pt", "scheduler.pt", "rng.pt"):
        torch.load(ckpt.path / name, weights_only=True)
    from safetensors.torch import load_file

    student = load_file(str(ckpt.path / "student.safetensors"))
    assert all(torch.equal(v, full.unwrapped_student().state_dict()[k]) for k, v in student.items())
    assert load_file(str(ckpt.path / "objective.safetensors"))["scale"] == full.objective.scale.detach()
    state = ckpt.trainer_state()
    assert state["state"]["step"] == 15 and state["meta"] == {"mode": "distill"}
    assert yaml.safe_load((ckpt.path / "config.yaml").read_text())["train"]["save_every"] == 4


def corrupt_truncate(p: Path) -> None:
    f = p / "optimizer.pt"
    f.write_bytes(f.read_bytes()[:-10])


def corrupt_flip(p: Path) -> None:  # same size, different bytes: only the hash can tell
    f = p / "student.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))


def corrupt_missing(p: Path) -> None:
    (p / "rng.pt").unlink()


def corrupt_manifest(p: Path) -> None:
    (p / "manifest.json").write_text('{"format": "textdistill-checkpoint", "vers')


def corrupt_no_manifest(p: Path) -> None:
    (p / "manifest.json").unlink()


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (corrupt_truncate, "optimizer.pt has"),
        (corrupt_flip, "student.safetensors does not match its sha256"),
        (corrupt_missing, "rng.pt is missing"),
        (corrupt_manifest, "unreadable manifest.json"),
        (corrupt_no_manifest, "no manifest.json"),
    ],
)
def test_corrupt_checkpoint_is_skipped_for_the_previous_one(tmp_path, full_run, capsys, corrupt, reason):
    run = tmp_path / "full"
    corrupt(run / "checkpoints" / "step-15")
    with pytest.raises(ck.CheckpointError, match=reason):
        ck.verify_checkpoint(run / "checkpoints" / "step-15")
    ckpt = ck.latest_checkpoint(run)
    assert ckpt.step == 12
    out = capsys.readouterr().out
    assert "skipping checkpoint step-15" in out and reason in out


def test_no_checkpoint_at_all(tmp_path, capsys):
    assert ck.latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints" / "step-3").mkdir(parents=True)  # an empty directory: never published by us
    assert ck.latest_checkpoint(tmp_path) is None
    assert "no manifest.json" in capsys.readouterr().out


def test_resume_skips_a_corrupt_checkpoint_and_still_matches(tmp_path, full_run):
    full, _ = full_run
    run = tmp_path / "stopped"
    cfg = train_cfg(save_every=4, keep_checkpoints=10)
    make_distiller(run, cfg, StopAt(10))[0].fit()
    corrupt_flip(run / "checkpoints" / "step-10")
    d2, _ = make_distiller(run, cfg)
    ckpt = ck.latest_checkpoint(run)
    assert ckpt.step == 8
    ck.restore_checkpoint(d2, ckpt)
    d2.fit()
    assert_equal_weights(weights(full), weights(d2))
    ck.verify_checkpoint(run / "checkpoints" / "step-15")


def test_stale_newer_checkpoints_and_leftovers_are_pruned(tmp_path):
    cfg = train_cfg(save_every=4, keep_checkpoints=2)
    d, _ = make_distiller(tmp_path, cfg, StopAt(6))
    d.fit()
    root = tmp_path / "checkpoints"
    (root / ".step-7.tmp-abc").mkdir()  # a save killed half-way
    shutil.copytree(root / "step-6", root / "step-20")  # newer than the resumed timeline
    corrupt_flip(root / "step-20")
    d2, _ = make_distiller(tmp_path, cfg)
    ck.restore_checkpoint(d2, ck.latest_checkpoint(tmp_path, log=None))
    d2.fit()
    assert sorted(p.name for p in root.iterdir()) == ["step-12", "step-15"]


# -- restoring into a different run ---------------------------------------------------------------------------
def test_restore_refuses_other_data_size(tmp_path, full_run):
    d, _ = make_distiller(tmp_path / "other", train_cfg(epochs=2))
    with pytest.raises(ck.CheckpointError, match="15 steps in total, this run has 5 and 10"):
        ck.restore_checkpoint(d, ck.latest_checkpoint(tmp_path / "full"))


def test_restore_truncates_append_only_files(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    log = run / "log.txt"
    log.write_text("line 1\nline 2\n")
    d, _ = make_distiller(run, train_cfg(save_every=2, keep_checkpoints=2, epochs=1), StopAt(2))
    d.fit()
    with log.open("a") as f:
        f.write("after the checkpoint\npartial li")
    d2, _ = make_distiller(run, train_cfg(save_every=2, keep_checkpoints=2, epochs=1))
    ck.restore_checkpoint(d2, ck.latest_checkpoint(run))
    assert log.read_text() == "line 1\nline 2\n"


# -- disk full -------------------------------------------------------------------------------------------------
def test_out_of_disk_names_dir_and_free_space_and_keeps_previous(tmp_path, monkeypatch):
    cfg = train_cfg(save_every=2, keep_checkpoints=1, epochs=1)
    d, _ = make_distiller(tmp_path, cfg, StopAt(2))
    d.fit()
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints" / "step-2").iterdir()}
    real_save = torch.save

    def full_disk_save(obj, f, *a, **kw):
        if getattr(f, "name", "").endswith("optimizer.pt"):
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full_disk_save)
    d2, _ = make_distiller(tmp_path, cfg)
    ck.restore_checkpoint(d2, ck.latest_checkpoint(tmp_path))
    with pytest.raises(ck.CheckpointError) as info:
        d2.fit()
    msg = str(info.value)
    assert isinstance(info.value, TextDistillError)
    assert f"no space left on the device holding {tmp_path / 'checkpoints'}" in msg
    assert "free now" in msg and "previous checkpoint step-2 is intact" in msg
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-2"]  # no partial left
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoints" / "step-2").iterdir()} == before
    ck.verify_checkpoint(tmp_path / "checkpoints" / "step-2")


def test_other_write_error_is_a_clear_error(tmp_path, monkeypatch):
    d, _ = make_distiller(tmp_path, train_cfg(save_every=2, epochs=1))

    def denied(*a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(ck, "_text_save", denied)
    with pytest.raises(ck.CheckpointError, match="cannot write checkpoint step-2 .*Permission denied"):
        d.fit()


# -- RNG ------------------------------------------------------------------------------------------------------
def draws() -> tuple:
    return random.random(), float(np.random.rand()), np.random.normal(), torch.rand(3).tolist()


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    np.random.normal()  # leaves a cached gaussian in numpy's legacy state
    state = ck.rng_state()
    expected = draws()
    torch.save(state, tmp_path / "rng.pt")
    draws()
    ck.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == expected


# -- config comparison ----------------------------------------------------------------------------------------
def test_config_differences_ignore_only_harmless_keys(tmp_path, full_run):
    ckpt = ck.latest_checkpoint(tmp_path / "full")
    cfg = Config(train=train_cfg(save_every=4, keep_checkpoints=10))
    harmless = replace(
        cfg,
        output_dir="elsewhere",
        overwrite=True,
        train=replace(
            cfg.train, progress=False, log_every=7, save_every=None, keep_checkpoints=1, max_bad_steps=3
        ),
    )
    ck.check_resume_config(ckpt, dump_yaml(harmless), "distill")
    changed = replace(cfg, train=replace(cfg.train, lr=3e-2, seed=1))
    with pytest.raises(ConfigError) as info:
        ck.check_resume_config(ckpt, dump_yaml(changed), "finetune")
    problems = info.value.problems
    assert problems[0] == "mode: the run was started with 'distill', resumed with 'finetune'"
    assert "train.lr: 0.01 in the checkpoint, 0.03 now" in problems
    assert "train.seed: 42 in the checkpoint, 1 now" in problems
    assert "config.yaml" in problems[-1] and "--overwrite" in problems[-1]


def test_config_differences_in_lists():
    a = {"objective": [{"name": "kd_kl", "weight": 1.0}], "data": {"labels": ["a", "b"]}}
    b = {
        "objective": [{"name": "kd_kl", "weight": 1.0}, {"name": "hidden_mse"}],
        "data": {"labels": ["b", "a"]},
    }
    diffs = ck.config_differences(a, b)
    assert "objective (number of items): 1 in the checkpoint, 2 now" in diffs
    assert "objective.1.name: '(absent)' in the checkpoint, 'hidden_mse' now" in diffs
    assert "data.labels: ['a', 'b'] in the checkpoint, ['b', 'a'] now" in diffs


# -- the metrics file across a resume ---------------------------------------------------------------------------
def metrics_run(run: Path, *extra: Callback) -> Distiller:
    from textdistill.training.callbacks import MetricsLogger

    cfg = train_cfg(save_every=None, keep_checkpoints=2, log_every=4)
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    saver = ck.CheckpointSaver(
        run, save_every=None, keep=2, config_yaml="{}\n", append_only=["metrics.jsonl"]
    )
    return Distiller(
        student=TinyStudent(),
        objective=ScaledCE(),
        train_cfg=cfg,
        train_loader_fn=loader_fn,
        steps_per_epoch=N_TRAIN // BATCH,
        evaluator=evaluator,
        metric="loss",
        greater_is_better=False,
        callbacks=[MetricsLogger(run, cfg.log_every, tensorboard=False), *extra, saver],
    )


def metric_records(run: Path) -> list[dict]:
    out = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in out:
        r.pop("time", None)
        r.pop("examples_per_s", None)
    return out


def test_metrics_file_identical_across_a_resume_mid_logging_window(tmp_path):
    full = tmp_path / "full"
    metrics_run(full).fit()
    run = tmp_path / "stopped"
    metrics_run(run, StopAt(6)).fit()  # log_every=4: stops inside the window 5..8
    d = metrics_run(run)
    ck.restore_checkpoint(d, ck.latest_checkpoint(run))
    d.fit()
    assert metric_records(run) == metric_records(full)


def test_metrics_file_has_no_duplicate_after_a_resume(tmp_path):
    """Lines written after the checkpoint are cut off, then written again once (the window-aligned part)."""
    run = tmp_path / "stopped"
    metrics_run(run, StopAt(8)).fit()  # a window boundary: nothing pending
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 9, "loss": 1.0}\n')  # as if the run had gone on past the checkpoint, then died
    d = metrics_run(run)
    ck.restore_checkpoint(d, ck.latest_checkpoint(run))
    d.fit()
    full = tmp_path / "full"
    metrics_run(full).fit()
    assert metric_records(run) == metric_records(full)


def test_preserved_rng_leaves_every_generator_where_it_was():
    from textdistill.training.checkpoint import preserved_rng

    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    expected = (torch.rand(2), random.random(), np.random.rand())
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    with preserved_rng():
        torch.rand(5)
        random.random()
        np.random.rand(4)
        # a DataLoader draws its base seed from torch's generator even without shuffling
        next(iter(torch.utils.data.DataLoader(list(range(4)), batch_size=2)))
    got = (torch.rand(2), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1] and got[2] == expected[2]
