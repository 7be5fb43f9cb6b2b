"""Guards of the loop: NaN/Inf steps skipped then aborted; SIGINT/SIGTERM stop gracefully, twice exits at once."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from test_checkpoint import BATCH, N_TRAIN, ScaledCE, TinyStudent, loader_fn, train_cfg
from textdistill.training import checkpoint as ck
from textdistill.training.distiller import Callback, Distiller, NonFiniteLossError
from textdistill.training.signals import TrainingInterrupted, graceful_stop, signal_name


class PoisonedCE(ScaledCE):
    """ScaledCE whose loss is replaced at chosen steps: NaN, or finite with an infinite gradient."""

    def __init__(self, bad_steps: dict[int, str]):
        super().__init__()
        self.bad_steps = bad_steps
        self.calls = 0

    def forward(self, student_out, teacher_out, batch, progress):
        self.calls += 1
        loss, terms = super().forward(student_out, teacher_out, batch, progress)
        kind = self.bad_steps.get(self.calls)
        if kind == "nan":
            loss = loss * float("nan")
        elif kind == "inf_grad":
            # sqrt'(0) = inf: the loss value stays finite (it equals the CE) but the scale's gradient is not
            loss = loss + torch.sqrt(self.scale - self.scale.detach())
        return loss, terms


def make(bad: dict[int, str], **cfg) -> Distiller:
    torch.manual_seed(0)
    return Distiller(
        student=TinyStudent(),
        objective=PoisonedCE(bad),
        train_cfg=train_cfg(**cfg),
        train_loader_fn=loader_fn,
        steps_per_epoch=N_TRAIN // BATCH,
    )


def snapshot(d: Distiller) -> dict[str, torch.Tensor]:
    out = {k: v.clone() for k, v in d.unwrapped_student().state_dict().items()}
    out["scale"] = d.objective.scale.detach().clone()
    return out


@pytest.mark.parametrize("kind", ["nan", "inf_grad"])
def test_non_finite_step_is_skipped_with_a_warning(kind, capsys):
    d = make({2: kind})
    batches = loader_fn(0, 0)
    batch = {k: v for k, v in batches[0].items()}
    d.train_step(batch)
    before, lr_before = snapshot(d), d.scheduler.get_last_lr()
    opt_before = {k: v["exp_avg"].clone() for k, v in d.optimizer.state_dict()["state"].items()}
    logs = d.train_step(batches[1])
    # nothing moved: weights, optimizer moments, lr schedule; the step still counts
    after = snapshot(d)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(opt_before[k], v["exp_avg"]) for k, v in d.optimizer.state_dict()["state"].items())
    assert d.scheduler.get_last_lr() == lr_before
    assert all(p.grad is None for p in d.unwrapped_student().parameters())  # bad gradients were dropped
    assert d.state.bad_steps == 1 and d.state.step == 2
    assert math.isnan(logs["loss"]) == (kind == "nan")
    out = capsys.readouterr().out
    assert "warning: step 2: non-finite loss or gradient" in out and "step skipped (1/10 allowed)" in out
    d.train_step(batches[2])  # a good step afterwards trains normally
    assert not torch.equal(snapshot(d)["out.weight"], after["out.weight"])


def test_abort_after_max_bad_steps():
    d = make({2: "nan", 4: "inf_grad", 5: "nan"}, max_bad_steps=3, epochs=1)
    with pytest.raises(NonFiniteLossError) as info:
        d.fit()
    assert d.state.bad_steps == 3 and d.state.step == 4  # raised inside step 5
    msg = str(info.value)
    assert "3 steps had a NaN/Inf loss or gradient" in msg and "train.max_bad_steps" in msg
    assert "train.lr" in msg and "train.precision=fp32" in msg


def test_fewer_bad_steps_than_the_limit_finish():
    d = make({1: "nan", 3: "nan"}, max_bad_steps=3, epochs=1)
    assert d.fit().step == 5
    assert d.state.bad_steps == 2


# -- signals --------------------------------------------------------------------------------------------------
def test_graceful_stop_calls_back_once_and_restores_handlers(capsys):
    seen = []
    before = signal.getsignal(signal.SIGTERM)
    with graceful_stop(seen.append):
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is before
    err = capsys.readouterr().err
    assert "SIGTERM received: finishing the current step and saving a checkpoint" in err


def test_sigint_during_fit_stops_at_the_step_boundary_with_a_checkpoint(tmp_path):
    class CtrlC(Callback):
        def on_step_end(self, distiller, logs):
            if distiller.state.step == 3:
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does, in the middle of the step's callbacks

    torch.manual_seed(0)
    saver = ck.CheckpointSaver(tmp_path, save_every=None, keep=2, config_yaml="{}\n")
    d = Distiller(
        student=TinyStudent(),
        objective=ScaledCE(),
        train_cfg=train_cfg(),
        train_loader_fn=loader_fn,
        steps_per_epoch=N_TRAIN // BATCH,
        callbacks=[CtrlC(), saver],
    )
    with graceful_stop(d.request_stop, quiet=True):
        state = d.fit()
    assert d.stop_signal == signal.SIGINT and state.step == 3
    assert ck.latest_checkpoint(tmp_path).step == 3  # save_every=None and no evaluation: saved for the stop


def test_training_interrupted_is_a_keyboard_interrupt_with_the_shell_exit_code():
    e = TrainingInterrupted(signal.SIGTERM, "stopped", "/run/checkpoints/step-3")
    assert isinstance(e, KeyboardInterrupt)
    assert e.exit_code == 143 and TrainingInterrupted(signal.SIGINT, "x").exit_code == 130
    assert signal_name(signal.SIGTERM) == "SIGTERM" and signal_name(999) == "signal 999"


def test_second_signal_exits_at_once():
    """A second signal ends the process immediately (os._exit) with 128 + signum, before the loop resumes."""
    script = textwrap.dedent(
        """
        import os, signal, time
        from textdistill.training.signals import graceful_stop
        seen = []
        with graceful_stop(seen.append):
            os.kill(os.getpid(), signal.SIGTERM)
            print("first handled:", seen, flush=True)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
            print("not reached", flush=True)
        """
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 128 + signal.SIGINT
    assert "first handled: [15]" in p.stdout and "not reached" not in p.stdout
    assert "second SIGINT: exiting now" in p.stderr


def test_cli_returns_the_signal_exit_code(monkeypatch, capsys):
    from textdistill import cli

    def interrupted(args):
        raise TrainingInterrupted(signal.SIGTERM, "stopped")

    monkeypatch.setattr(cli, "cmd_distill", interrupted)
    assert cli.main(["distill", "--resume"]) == 143
    assert "interrupted" in capsys.readouterr().err
