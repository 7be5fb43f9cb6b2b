"""Data-parallel training over 2 processes equals 1 process (CPU processes with gloo; NCCL where 2 GPUs exist).

One spawn of 2 worker processes (``torch.multiprocessing``, the environment ``torchrun`` / ``accelerate
launch`` would set) runs every distributed scenario; the test process runs the same scenarios alone and the
tests compare:

* ``run_training`` (distil, logit KD + hard CE, teacher cache on, ``grad_accum=2``, 45 training examples in
  global batches of 8 so the last batch splits 2 + 3): same final student weights (fp32, atol 1e-5), same
  logged global losses, same dev metrics on every rank, a run directory written once (by the main process);
* the teacher-cache pass split over 2 processes writes the same arrays as one process (bit for bit: the
  batches are the same);
* distributed evaluation on a dev set of 47 examples (not divisible by 2) gives the single-process metrics,
  and counts an example that appears twice in the data once;
* every rank takes the same decisions: early stopping driven by an evaluator that disagrees between ranks,
  and a stop request seen by one rank only.

Dropout is 0 in the tiny models: a dropout mask drawn for a global batch of 8 differs from the masks drawn
for two shards of 4 (the same RNG stream, other shapes), so with dropout the runs agree only statistically.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_sentiment_rows, make_tokenizer, tiny_bert_config, write_tsv

WORLD = 2
N_TRAIN = 45  # 5 batches of 8 and one of 5 (shards 2 + 3)
N_DEV = 47  # not divisible by WORLD
TIMEOUT = timedelta(seconds=120)  # a collective that never completes fails instead of hanging the suite


# ----------------------------------------------------------------------------------------- scenarios
def _make_work(d: Path) -> Path:
    """Teacher (4 layers, no dropout), tokenizer, train/dev TSVs."""
    from transformers import BertForSequenceClassification

    tok = make_tokenizer(d / "teacher")
    torch.manual_seed(0)
    cfg = tiny_bert_config(len(tok), num_labels=2)
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.0
    cfg.id2label, cfg.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    BertForSequenceClassification(cfg).save_pretrained(str(d / "teacher"))
    write_tsv(d / "train.tsv", make_sentiment_rows(N_TRAIN, seed=1))
    write_tsv(d / "dev.tsv", make_sentiment_rows(N_DEV, seed=2))
    return d


def _datasets(work: Path):
    from textdistill.data.collate import Collator
    from textdistill.data.encoding import EncodedDataset
    from textdistill.data.labels import LabelMap
    from textdistill.data.readers import read_examples
    from textdistill.models.teacher import load_teacher, load_tokenizer

    tok = load_tokenizer(work / "teacher")
    labels = LabelMap(("negative", "positive"))
    train, dev = (
        EncodedDataset(read_examples(work / f"{name}.tsv").examples, tok, 32, labels)
        for name in ("train", "dev")
    )
    return load_teacher(work / "teacher"), train, dev, Collator.for_tokenizer(tok)


def _cache_scenario(work: Path, directory: Path) -> str:
    """Build a cache holding every kind of array (logits, hidden states, Q/K/V, scores, probabilities)."""
    from textdistill.models.outputs import FeatureRequest
    from textdistill.training.teacher_cache.build import build_teacher_cache

    teacher, train, _, collator = _datasets(work)
    request = FeatureRequest(hidden_states=True, attentions={0}, attention_scores={1}, qkv={2})
    cache = build_teacher_cache(
        teacher,
        [train],
        collator,
        directory=directory,
        request=request,
        cache_dtype="fp32",
        batch_size=4,  # 12 batches: cut between processes at a batch boundary
        precision="fp32",
        quiet=True,
    )
    return str(cache.directory)


def _eval_scenario(work: Path, rank: int, world: int) -> dict:
    """The teacher on the dev set, and on the dev set with three examples repeated (same ids)."""
    from torch.utils.data import ConcatDataset, Subset

    from textdistill.data.samplers import make_loader
    from textdistill.training.runner import evaluate_sharded

    teacher, _, dev, collator = _datasets(work)

    def loader(ds):
        return make_loader(ds, 8, shuffle=False, group_by_length=True, seed=0, collator=collator)

    kw = {"regression": False, "rank": rank, "world": world}
    metrics, logits = evaluate_sharded(teacher, dev, loader, **kw)
    repeated = ConcatDataset([dev, Subset(dev, [0, 5, 9])])
    dup_metrics, dup_logits = evaluate_sharded(teacher, repeated, loader, **kw)
    return {"metrics": metrics, "logits": logits, "dup_metrics": dup_metrics, "dup_logits": dup_logits}


def _run_scenario(work: Path, tag: str) -> dict:
    from textdistill.config.loader import load_config
    from textdistill.training.runner import run_training

    cfg = load_config(
        None,
        [
            f"teacher.path={work / 'teacher'}",
            f"data.train={work / 'train.tsv'}",
            f"data.dev={work / 'dev.tsv'}",
            f"output_dir={work / ('run-' + tag)}",
            f"teacher.cache_dir={work / ('cache-run-' + tag)}",
            "teacher.cache=true",
            "teacher.cache_dtype=fp32",
            "student.type=shrink",
            "student.num_layers=1",
            "student.hidden_size=16",
            "student.num_heads=2",
            "objective=[{name: kd_kl, weight: 0.7, params: {temperature: 2.0}}, {name: hard_ce, weight: 0.3}]",
            "train.batch_size=8",
            "train.grad_accum=2",
            "train.eval_batch_size=8",
            "train.epochs=2",
            "train.lr=3e-3",
            "train.warmup_steps=1",
            "train.precision=fp32",
            "train.metric=last",
            "train.log_every=1",
            "train.keep_checkpoints=1",
            "train.progress=false",
            "train.seed=0",
            "report=false",
        ],
    )
    result = run_training(cfg, "distill", quiet=True)
    return {
        "run_dir": str(result.run_dir),
        "cache_root": cfg.teacher.cache_dir,
        "dev": result.dev_metrics,
        "state": result.state,
    }


def _decision_scenario(rank: int) -> dict:
    """Early stopping with an evaluator that disagrees between ranks; a stop request on rank 1 only."""
    from transformers import BertForSequenceClassification

    from textdistill.config.schema import LossTermConfig, TrainConfig
    from textdistill.losses.objective import Objective
    from textdistill.models.hf import HFClassifier
    from textdistill.training.distiller import Callback, Distiller

    torch.manual_seed(0)
    cfg = tiny_bert_config(40, layers=1, hidden=8, heads=2)
    student = HFClassifier(BertForSequenceClassification(cfg))
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "input_ids": torch.randint(5, 40, (4, 6), generator=g),
            "attention_mask": torch.ones(4, 6, dtype=torch.long),
            "labels": torch.randint(0, 2, (4,), generator=g),
        }
        for _ in range(6)
    ]
    # Rank 0's accuracy never improves after the first evaluation; rank 1's always does. Rank 0 decides.
    scores = iter(range(100))

    def evaluator(model) -> dict[str, float]:
        return {"accuracy": 0.5 if rank == 0 else float(next(scores))}

    class StopOn(Callback):
        """Requests a stop (what the SIGTERM handler does) on one rank after step 2."""

        def __init__(self, stop_rank: int | None):
            self.stop_rank = stop_rank

        def on_step_end(self, distiller, logs):
            if rank == self.stop_rank and distiller.state.step == 2:
                distiller.request_stop(15)

    out = {}
    for name, patience, stop_rank in (("early", 2, None), ("signal", None, 1)):
        d = Distiller(
            student=student,
            objective=Objective([LossTermConfig(name="hard_ce")], None, student.info),
            train_cfg=TrainConfig(
                batch_size=4,
                max_steps=12,
                eval_every=1,
                early_stopping_patience=patience,
                precision="fp32",
                progress=False,
            ),
            train_loader_fn=lambda epoch, start: batches[start:],
            steps_per_epoch=len(batches),
            evaluator=evaluator,
            callbacks=[StopOn(stop_rank)],
        )
        state = d.fit()
        out[name] = {"step": state.step, "stop_signal": d.stop_signal, "should_stop": state.should_stop}
    return out


def _resume_scenario(rank: int, work: Path) -> dict:
    """Stop at step 3 and resume, with dropout, against an uninterrupted run (issue #19: per-rank RNG).

    Global batches of 5 split 3 + 2, so the two processes draw different numbers of dropout values and
    their RNG streams part after the first step: only per-rank RNG states in the checkpoint replay both.
    The control resumes every rank from process 0's RNG state (what checkpoints held before).
    """
    from transformers import BertForSequenceClassification

    from textdistill.config.loader import dump_yaml
    from textdistill.config.schema import Config, LossTermConfig, TrainConfig
    from textdistill.losses.objective import Objective
    from textdistill.models.hf import HFClassifier
    from textdistill.training import checkpoint as ck
    from textdistill.training.distiller import Callback, Distiller

    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "input_ids": torch.randint(5, 40, (5, 6), generator=g),
            "attention_mask": torch.ones(5, 6, dtype=torch.long),
            "labels": torch.randint(0, 2, (5,), generator=g),
        }
        for _ in range(4)
    ]

    class StopAt3(Callback):
        def on_step_end(self, distiller, logs):
            if distiller.state.step == 3:
                distiller.request_stop(15)

    def run(run_dir: Path, seed: int, *extra: Callback, restore: bool = False) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        cfg = tiny_bert_config(40, layers=1, hidden=8, heads=2)
        cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.3
        student = HFClassifier(BertForSequenceClassification(cfg))
        train = TrainConfig(
            batch_size=5, epochs=2, lr=1e-2, precision="fp32", progress=False, eval_every=None
        )
        saver = ck.CheckpointSaver(
            run_dir, save_every=None, keep=2, config_yaml=dump_yaml(Config(train=train))
        )
        d = Distiller(
            student=student,
            objective=Objective([LossTermConfig(name="hard_ce")], None, student.info),
            train_cfg=train,
            train_loader_fn=lambda epoch, start: batches[start:],
            steps_per_epoch=len(batches),
            callbacks=[*extra, saver],
        )
        if restore:
            ck.restore_checkpoint(d, ck.latest_checkpoint(run_dir, log=None), log=None)
        d.fit()
        return {k: v.detach().clone() for k, v in d.unwrapped_student().state_dict().items()}

    base = work / f"resume-rank-rng-{rank}"  # each rank its own directories: only rank 0 writes a run's
    shared = work / "resume-rank-rng"
    full = run(base / "full", 0)
    run(shared / "stopped", 0, StopAt3())
    resumed = run(shared / "stopped", 123, restore=True)
    run(shared / "control", 0, StopAt3())
    real = ck.RANK_RNG
    ck.RANK_RNG = "absent-{rank}.pt"  # every rank falls back to process 0's state
    try:
        control = run(shared / "control", 123, restore=True)
    finally:
        ck.RANK_RNG = real
    return {"full": full, "resumed": resumed, "control": control}


def _worker(rank: int, world: int, port: int, work: str, device: str) -> None:
    """One of ``world`` processes: the environment torchrun sets, then every scenario."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    # The process group (gloo on CPU, NCCL on GPUs) every later Accelerator of this process shares.
    Accelerator(cpu=device == "cpu", kwargs_handlers=[InitProcessGroupKwargs(timeout=TIMEOUT)])
    w = Path(work)
    out = {
        "cache": _cache_scenario(w, w / f"cache-{device}-{world}"),
        "eval": _eval_scenario(w, rank, world),
        "run": _run_scenario(w, f"{device}-{world}"),
    }
    if device == "cpu":
        out["decisions"] = _decision_scenario(rank)
        out["resume"] = _resume_scenario(rank, w)
    torch.save(out, w / f"result-{device}-rank{rank}.pt")


def _spawn(work: Path, device: str) -> list[dict]:
    import torch.multiprocessing as mp

    from textdistill.training.launch import free_port

    mp.start_processes(
        _worker, args=(WORLD, free_port(), str(work), device), nprocs=WORLD, join=True, start_method="spawn"
    )
    return [torch.load(work / f"result-{device}-rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _single(work: Path, device: str) -> dict:
    """The scenarios in this process alone (no process group)."""
    return {
        "cache": _cache_scenario(work, work / f"cache-{device}-1"),
        "eval": _eval_scenario(work, 0, 1),
        "run": _run_scenario(work, f"{device}-1"),
    }


@pytest.fixture(scope="module")
def cpu_results(tmp_path_factory) -> tuple[dict, list[dict]]:
    work = _make_work(tmp_path_factory.mktemp("dist"))
    ranks = _spawn(work, "cpu")
    return _single(work, "cpu"), ranks


# ------------------------------------------------------------------------------------------------ tests
def _student_weights(run_dir: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "model" / "model.safetensors"))


def _train_logs(run_dir: str) -> list[dict]:
    """The training lines of metrics.jsonl without the timings."""
    lines = Path(run_dir, "metrics.jsonl").read_text().splitlines()
    drop = ("examples_per_s", "time")
    return [{k: v for k, v in r.items() if k not in drop} for r in map(json.loads, lines) if "loss" in r]


def _check_training(single: dict, ranks: list[dict], atol: float) -> None:
    one, two = single["run"], ranks[0]["run"]
    w1, w2 = _student_weights(one["run_dir"]), _student_weights(two["run_dir"])
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=atol, rtol=1e-4, msg=k)
    # The logged losses are the global batch's (reduced over the ranks), step for step. AdamW barely sees a
    # constant scale of the gradient, so the weights alone would miss a mis-scaled shard: the pre-clipping
    # gradient norm would not; the lr shows the schedule steps once per global batch.
    l1, l2 = _train_logs(one["run_dir"]), _train_logs(two["run_dir"])
    assert [r["step"] for r in l2] == [r["step"] for r in l1] == list(range(1, 13))  # one writer
    assert l1[0].keys() == l2[0].keys() >= {"loss", "loss/kd_kl", "loss/hard_ce", "grad_norm", "lr"}
    for a, b in zip(l1, l2, strict=True):
        assert b["lr"] == a["lr"]
        for key in ("loss", "loss/kd_kl", "loss/hard_ce", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), (a["step"], key)
    assert l1[-1]["loss"] < l1[0]["loss"]  # it trained
    # Every rank ends in the same state with the same metrics; the dev set is counted exactly once.
    for r in ranks:
        assert r["run"]["state"] == two["state"]
        assert r["run"]["dev"] == two["dev"]
    assert two["dev"]["n"] == one["dev"]["n"] == N_DEV
    assert two["dev"]["accuracy"] == pytest.approx(one["dev"]["accuracy"])
    assert two["state"] == one["state"]
    run = json.loads(Path(two["run_dir"], "run.json").read_text())
    assert run["status"] == "finished" and run["num_processes"] == WORLD
    # The run's teacher cache was built by both processes and equals the single-process run's.
    (meta2,) = Path(two["cache_root"]).glob("*/meta.json")
    (meta1,) = Path(one["cache_root"]).glob("*/meta.json")
    assert json.loads(meta2.read_text())["build_processes"] == WORLD
    assert "build_processes" not in json.loads(meta1.read_text())
    _check_same_cache(meta1.parent, meta2.parent)


def _check_same_cache(one: Path, two: Path) -> None:
    from textdistill.training.teacher_cache.store import TeacherCache

    c1, c2 = TeacherCache.open(one), TeacherCache.open(two)
    assert c1.fingerprint == c2.fingerprint
    assert np.array_equal(c1.ids, c2.ids) and np.array_equal(c1.lengths, c2.lengths)
    assert c1.meta["arrays"] == c2.meta["arrays"]
    for name in c1.meta["arrays"]:
        assert np.array_equal(np.asarray(c1.array(name)), np.asarray(c2.array(name))), name


def test_two_processes_train_the_same_student_as_one(cpu_results):
    single, ranks = cpu_results
    _check_training(single, ranks, atol=1e-5)


def test_distributed_cache_pass_equals_single_process_cache(cpu_results):
    single, ranks = cpu_results
    assert ranks[0]["cache"] == ranks[1]["cache"]  # both opened the one published directory
    two = Path(ranks[0]["cache"])
    meta = json.loads((two / "meta.json").read_text())
    assert meta["build_processes"] == WORLD and meta["num_examples"] == N_TRAIN
    assert {"logits", "hidden_0", "q_2", "scores_1", "probs_0", "input_ids"} <= set(meta["arrays"])
    assert not [p for p in two.parent.iterdir() if p.name.startswith(".")]  # no temporary directory left
    _check_same_cache(Path(single["cache"]), two)


def test_distributed_evaluation_counts_every_example_once(cpu_results):
    single, ranks = cpu_results
    one = single["eval"]
    assert one["metrics"]["n"] == N_DEV
    for r in ranks:
        ev = r["eval"]
        assert ev["metrics"]["n"] == N_DEV
        assert ev["metrics"] == pytest.approx(one["metrics"])
        torch.testing.assert_close(ev["logits"], one["logits"], atol=1e-5, rtol=1e-5)
        # Repeated ids are gathered once: the metrics of the dev set itself.
        assert ev["dup_metrics"] == pytest.approx(one["metrics"])
        torch.testing.assert_close(ev["dup_logits"], one["logits"], atol=1e-5, rtol=1e-5)
    # Whereas one process scores what it is given (the repeated rows too): the check above can fail.
    assert one["dup_metrics"]["n"] == N_DEV + 3


def test_every_rank_takes_the_same_decisions(cpu_results):
    _, ranks = cpu_results
    early = [r["decisions"]["early"] for r in ranks]
    # Rank 0's metric stops improving after the first evaluation: with patience 2 both stop at step 3.
    assert early[0] == early[1] == {"step": 3, "stop_signal": None, "should_stop": True}
    signal_stop = [r["decisions"]["signal"] for r in ranks]
    # Rank 1 alone asked to stop after step 2: both stop there, with the same signal.
    assert signal_stop[0] == signal_stop[1] == {"step": 2, "stop_signal": 15, "should_stop": False}


def test_multi_process_resume_with_dropout_is_bit_exact(cpu_results):
    """Per-rank RNG states in the checkpoint: a 2-process run stopped at step 3 and resumed (rebuilt with
    another seed) ends with exactly the uninterrupted run's weights; resuming every rank from process 0's
    RNG state (the control) does not."""
    _, ranks = cpu_results
    for r in ranks:
        full, resumed, control = r["resume"]["full"], r["resume"]["resumed"], r["resume"]["control"]
        assert all(torch.equal(full[k], resumed[k]) for k in full)
        assert any(not torch.equal(full[k], control[k]) for k in full)


def test_shard_rows_cuts_at_batch_boundaries_and_balances_work():
    from textdistill.training.teacher_cache.build import shard_rows

    lengths = np.array([2] * 8 + [4] * 8 + [8] * 8 + [16] * 8)  # ascending, as in a build
    ranges = shard_rows(lengths, 4, 2)
    assert ranges[0][0] == 0 and ranges[-1][1] == 32 and ranges[0][1] == ranges[1][0]
    assert all(s % 4 == 0 for s, _ in ranges)
    # Work = rows * longest per batch: 8+8+16+16+32+32+64+64 = 240; the cut nearest 120 is after 6 batches.
    assert ranges == [(0, 24), (24, 32)]
    # Fewer batches than processes: some processes get no rows, the rows are still covered once.
    few = shard_rows(lengths[:5], 4, 3)
    assert few[0][0] == 0 and few[-1][1] == 5
    assert all(a[1] == b[0] for a, b in zip(few, few[1:], strict=False))
    assert sorted(e - s for s, e in few) == [0, 1, 4]


def test_shard_batch_covers_the_global_batch():
    from textdistill.training.distiller import shard_batch

    batch = {"input_ids": torch.arange(10).view(5, 2), "labels": torch.arange(5), "name": "x"}
    parts = [shard_batch(batch, r, 2) for r in range(2)]
    assert [p["labels"].tolist() for p in parts] == [[0, 1], [2, 3, 4]]
    assert parts[1]["name"] == "x"
    assert [shard_batch(batch, r, 8)["labels"].tolist() for r in range(8)].count([]) == 3


def test_num_processes_relaunches_through_accelerate(monkeypatch):
    from textdistill.errors import ConfigError
    from textdistill.training.launch import launch_command, launch_processes

    cmd = launch_command(["distill", "-c", "x.yaml", "--num-processes", "2"], 2, port=1234)
    i = cmd.index("accelerate.commands.launch")
    assert cmd[i + 1 : i + 4] == ["--multi_gpu", "--num_processes", "2"]
    assert cmd[cmd.index("--main_process_port") + 1] == "1234"
    assert cmd[cmd.index("--mixed_precision") + 1] == "no"
    assert cmd[-7:] == ["-m", "textdistill", "distill", "-c", "x.yaml", "--num-processes", "2"]
    # A launched process trains itself; a mismatch with the launcher is refused.
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launch_processes(["distill"], 2) is None
    with pytest.raises(ConfigError, match="started as one of 2 processes"):
        launch_processes(["distill"], 4)
    monkeypatch.delenv("WORLD_SIZE")
    assert launch_processes(["distill"], 1) is None
    with pytest.raises(ConfigError, match="at least 1, got 0"):
        launch_processes(["distill"], 0)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs (NCCL)")
def test_two_gpus_with_nccl_train_the_same_student_as_one(tmp_path):
    work = _make_work(tmp_path)
    ranks = _spawn(work, "cuda")
    single = _single(work, "cuda")
    # GPU reductions are not bit-reproducible across shapes: a looser tolerance than on CPU.
    _check_training(single, ranks, atol=1e-4)
