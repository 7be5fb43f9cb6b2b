"""Token-classification evaluation split over 2 processes (gloo on CPU) equals one process.

Each process predicts every other dev sentence; the word logits of all sentences are gathered and the entity
metrics computed once on the whole dev set. The dev set has an odd number of sentences (the shards differ in
size), and a second evaluation repeats three sentences (same example ids), which must be counted once. The
metrics are compared with the single-process evaluation and with an independent entity count over the
predicted tags; both entity modes (lenient, strict) are checked. Then a whole token distillation run with
``--num-processes 2`` is compared with the same run in one process.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from test_token_entity_mode import f1
from token_data import TAGS, make_ner_sentences, make_token_teacher, write_conll

WORLD = 2
N_DEV = 21  # odd: shards of 11 and 10 sentences
TIMEOUT = timedelta(seconds=120)


def _make_work(d: Path) -> Path:
    make_token_teacher(d / "teacher")
    cfg_path = d / "teacher" / "config.json"  # no dropout: shards of a batch draw other masks than the batch
    cfg = json.loads(cfg_path.read_text())
    cfg["hidden_dropout_prob"] = cfg["attention_probs_dropout_prob"] = 0.0
    cfg_path.write_text(json.dumps(cfg))
    write_conll(d / "train.conll", make_ner_sentences(40, seed=1))
    write_conll(d / "dev.conll", make_ner_sentences(N_DEV, seed=2))
    return d


def _dev(work: Path, mode: str):
    from textdistill.config.schema import DataConfig
    from textdistill.data.collate import Collator
    from textdistill.data.token_encoding import encode_token_task
    from textdistill.data.token_task import load_token_task
    from textdistill.models.teacher import load_teacher, load_tokenizer

    tok = load_tokenizer(work / "teacher")
    teacher = load_teacher(work / "teacher")
    d = DataConfig(train=str(work / "train.conll"), dev=str(work / "dev.conll"), entity_mode=mode)
    task = load_token_task(d, teacher_id2label=teacher.id2label)
    _, dev, _ = encode_token_task(task, task.train, tok, 32, False)
    return teacher, dev, Collator.for_tokenizer(tok)


def _eval_scenario(work: Path, rank: int, world: int) -> dict:
    from torch.utils.data import ConcatDataset, Subset

    from textdistill.data.samplers import make_loader
    from textdistill.training.sharded_eval import evaluate_sharded

    out = {}
    for mode in ("lenient", "strict"):
        teacher, dev, collator = _dev(work, mode)

        def loader(ds, collator=collator):
            return make_loader(ds, 4, shuffle=False, group_by_length=False, seed=0, collator=collator)

        kw = {"regression": False, "rank": rank, "world": world}
        out[mode] = evaluate_sharded(teacher, dev, loader, **kw)
        repeated = ConcatDataset([dev, Subset(dev, [0, 5, 9])])
        for key in ("token_task", "examples", "word_positions", "label_map", "tag_scheme", "entity_mode"):
            setattr(repeated, key, getattr(dev, key))
        out[f"{mode}-dup"] = evaluate_sharded(teacher, repeated, loader, **kw)
    return out


def _run_scenario(work: Path, tag: str) -> dict:
    from textdistill.config.loader import load_config
    from textdistill.training.runner import run_training

    cfg = load_config(
        None,
        [
            f"teacher.path={work / 'teacher'}",
            f"data.train={work / 'train.conll'}",
            f"data.dev={work / 'dev.conll'}",
            f"output_dir={work / ('run-' + tag)}",
            f"teacher.cache_dir={work / ('cache-' + tag)}",
            "teacher.cache_dtype=fp32",
            "student.type=shrink",
            "student.num_layers=1",
            "student.hidden_size=16",
            "student.num_heads=2",
            "objective=[{name: kd_kl, params: {temperature: 2.0}}, {name: hard_ce}]",
            "train.batch_size=8",
            "train.eval_batch_size=4",
            "train.max_steps=4",
            "train.eval_every=2",
            "train.lr=3e-3",
            "train.precision=fp32",
            "train.progress=false",
            "train.seed=0",
            "report=false",
        ],
    )
    result = run_training(cfg, "distill", quiet=True)
    return {"dev": result.dev_metrics, "run_dir": str(result.run_dir)}


def _worker(rank: int, world: int, port: int, work: str) -> None:
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

    Accelerator(cpu=True, kwargs_handlers=[InitProcessGroupKwargs(timeout=TIMEOUT)])
    w = Path(work)
    out = {"eval": _eval_scenario(w, rank, world), "run": _run_scenario(w, f"cpu-{world}")}
    torch.save(out, w / f"result-rank{rank}.pt")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[dict, list[dict]]:
    import torch.multiprocessing as mp

    from textdistill.training.launch import free_port

    work = _make_work(tmp_path_factory.mktemp("dist-token"))
    mp.start_processes(
        _worker, args=(WORLD, free_port(), str(work)), nprocs=WORLD, join=True, start_method="spawn"
    )
    ranks = [torch.load(work / f"result-rank{r}.pt", weights_only=False) for r in range(WORLD)]
    single = {"eval": _eval_scenario(work, 0, 1), "run": _run_scenario(work, "cpu-1"), "work": work}
    return single, ranks


def _tags(work: Path, logits: torch.Tensor) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted tags per dev sentence from word logits in example-id order (independent of
    textdistill's scoring)."""
    from textdistill.data.conll import read_token_file

    names = sorted(TAGS)  # the tiny teacher's id2label
    gold = [e.tags for e in read_token_file(work / "dev.conll").examples]
    flat = [names[i] for i in logits.argmax(-1).tolist()]
    pred, k = [], 0
    for tags in gold:
        pred.append(flat[k : k + len(tags)])
        k += len(tags)
    assert k == len(flat)
    return gold, pred


def test_two_process_token_evaluation_equals_one_process(results):
    single, ranks = results
    for mode in ("lenient", "strict"):
        one_metrics, one_logits = single["eval"][mode]
        gold, pred = _tags(single["work"], one_logits)
        assert one_metrics["entity_f1"] == pytest.approx(f1(gold, pred, strict=mode == "strict"))
        assert one_metrics["n"] == N_DEV
        for r in ranks:
            for key in (mode, f"{mode}-dup"):  # a repeated sentence is counted once
                metrics, logits = r["eval"][key]
                assert metrics == pytest.approx(one_metrics), (mode, key)
                torch.testing.assert_close(logits, one_logits, atol=1e-5, rtol=1e-5)
    assert single["eval"]["lenient"][0]["entity_f1"] != single["eval"]["strict"][0]["entity_f1"]


def test_two_process_token_run_equals_one_process(results):
    single, ranks = results
    for r in ranks:
        assert r["run"]["dev"] == ranks[0]["run"]["dev"]
    assert ranks[0]["run"]["dev"]["n"] == single["run"]["dev"]["n"] == N_DEV
    assert ranks[0]["run"]["dev"]["entity_f1"] == pytest.approx(single["run"]["dev"]["entity_f1"], abs=1e-6)
