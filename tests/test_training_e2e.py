"""End-to-end runs of :func:`run_training` on tiny in-process models: fine-tune a teacher, distil students
(shrink, truncate), the run directory, reloading the student (textdistill, transformers, pipeline), regression.

The teacher is fine-tuned once per module (a randomly initialised 4-layer BERT learns the tiny sentiment task
to ~1.0 dev accuracy); the students must then agree with it on dev far above chance (0.5).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from conftest import NEGATIVE, POSITIVE, make_sentiment_rows, make_tokenizer, tiny_bert_config, write_tsv
from textdistill.config.loader import load_config
from textdistill.config.schema import Config
from textdistill.training.runner import RunResult, run_training

# report=false: the end-of-run benchmark report has its own tests and would double these runs' time.
# fp32: the runs' metrics are compared with fp32 computations below (auto would pick bf16 on AMX CPUs).
COMMON = [
    "train.batch_size=16",
    "train.progress=false",
    "train.keep_checkpoints=0",
    "train.seed=0",
    "train.precision=fp32",
    "report=false",
]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    from transformers import BertForSequenceClassification

    d = tmp_path_factory.mktemp("e2e")
    tok = make_tokenizer(d / "base")
    torch.manual_seed(0)
    BertForSequenceClassification(tiny_bert_config(len(tok), num_labels=2)).save_pretrained(str(d / "base"))
    write_tsv(d / "train.tsv", make_sentiment_rows(160, seed=1))
    write_tsv(d / "dev.tsv", make_sentiment_rows(48, seed=2))
    return d


def _data(work: Path, out: str) -> list[str]:
    return [f"data.train={work / 'train.tsv'}", f"data.dev={work / 'dev.tsv'}", f"output_dir={work / out}"]


@pytest.fixture(scope="module")
def teacher(work) -> RunResult:
    cfg = load_config(
        None,
        [
            f"student.path={work / 'base'}",
            *_data(work, "teacher"),
            "train.lr=3e-3",
            "train.epochs=4",
            *COMMON,
        ],
    )
    return run_training(cfg, "finetune", quiet=True)


def _dev_logits(model_dir: Path, texts: list[str]) -> torch.Tensor:
    """Logits of a saved HF classifier, computed with plain transformers (independent of textdistill)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits


def _dev_rows(work: Path) -> list[tuple[str, str]]:
    lines = (work / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [tuple(line.split("\t")) for line in lines]  # type: ignore[misc]


def test_finetuned_teacher_learns_the_task(teacher, work):
    assert teacher.dev_metrics["accuracy"] >= 0.9
    assert teacher.dev_metrics["n"] == 48
    # The saved teacher carries the data's label names (ids in sorted order, as no label order was given).
    config = json.loads((teacher.model_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    rows = _dev_rows(work)
    pred = _dev_logits(teacher.model_dir, [t for t, _ in rows]).argmax(-1)
    gold = torch.tensor([["negative", "positive"].index(label) for _, label in rows])
    assert (pred == gold).float().mean().item() == pytest.approx(teacher.dev_metrics["accuracy"])


def _shrink_config(teacher: RunResult, work: Path, out: str, *extra: str) -> Config:
    """A 1-layer, 16-wide shrink student of the module's teacher."""
    return load_config(
        None,
        [
            f"teacher.path={teacher.model_dir}",
            *_data(work, out),
            "student.type=shrink",
            "student.num_layers=1",
            "student.hidden_size=16",
            "student.num_heads=2",
            *extra,
            *COMMON,
        ],
    )


@pytest.fixture(scope="module")
def shrink_run(teacher, work) -> tuple[RunResult, Config]:
    cfg = _shrink_config(
        teacher,
        work,
        "shrink",
        "objective=[{name: kd_kl, weight: 0.8, params: {temperature: 2.0}}, {name: hard_ce, weight: 0.2}]",
        "train.lr=3e-3",
        "train.epochs=6",
        "train.log_every=5",
    )
    return run_training(cfg, "distill", quiet=True), cfg


def test_distilled_student_agrees_with_teacher(shrink_run, teacher, work):
    result, _ = shrink_run
    rows = _dev_rows(work)
    texts = [t for t, _ in rows]
    student_pred = _dev_logits(result.model_dir, texts).argmax(-1)
    teacher_pred = _dev_logits(teacher.model_dir, texts).argmax(-1)
    agreement = (student_pred == teacher_pred).float().mean().item()
    assert agreement >= 0.85  # chance is 0.5 (balanced dev set)
    assert result.dev_metrics["accuracy"] >= 0.85
    results = json.loads((result.run_dir / "eval_results.json").read_text())
    assert results["dev_agreement_with_teacher"] == pytest.approx(agreement)
    assert results["teacher_dev"]["accuracy"] == pytest.approx(teacher.dev_metrics["accuracy"])
    assert results["parameters"]["total"] < results["teacher_parameters"]["total"]
    assert result.teacher_dev_metrics == results["teacher_dev"]


def test_run_directory_contents(shrink_run):
    result, cfg = shrink_run
    d = result.run_dir
    assert {"run.json", "config.yaml", "metrics.jsonl", "eval_results.json", "model"} <= {
        p.name for p in d.iterdir()
    }
    run = json.loads((d / "run.json").read_text())
    assert run["status"] == "finished"
    assert run["mode"] == "distill"
    assert run["state"]["step"] == run["state"]["total_steps"] == 60  # 160 rows / 16 x 6 epochs
    assert run["results"]["dev"] == result.dev_metrics
    # The resolved config (task settings inferred, see data/task_inference.py) round-trips exactly.
    from textdistill.data.task_inference import resolve_task

    resolved, _ = resolve_task(cfg, "distill")
    assert load_config(d / "config.yaml") == resolved
    assert (resolved.data.text_column, resolved.data.regression, resolved.train.metric) == (
        "sentence",
        False,
        "accuracy",
    )
    records = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in records if "loss" in r]
    eval_lines = [r for r in records if "eval/accuracy" in r]
    assert [r["step"] for r in train_lines] == list(range(5, 61, 5))  # log_every=5
    assert all(math.isfinite(r["loss"]) and "loss/kd_kl" in r and "loss/hard_ce" in r for r in train_lines)
    assert [r["step"] for r in eval_lines] == [10, 20, 30, 40, 50, 60]  # once per epoch
    best = max(eval_lines, key=lambda r: r["eval/accuracy"])
    assert result.dev_metrics["accuracy"] == pytest.approx(best["eval/accuracy"])
    results = json.loads((d / "eval_results.json").read_text())
    assert results["dev"] == result.dev_metrics
    assert results["best_step"] == result.state["best_step"]


def test_saved_student_reloads_everywhere(shrink_run, work):
    import transformers

    from textdistill.evaluation.evaluate import evaluate_dir
    from textdistill.models.io import load_student

    result, _ = shrink_run
    texts = [t for t, _ in _dev_rows(work)][:8]
    tok = transformers.AutoTokenizer.from_pretrained(str(result.model_dir))
    enc = tok(texts, padding=True, return_tensors="pt")
    ours = load_student(result.model_dir)
    with torch.no_grad():
        logits = ours(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids")).logits
    assert torch.equal(logits, _dev_logits(result.model_dir, texts))
    assert ours.info.num_layers == 1 and ours.info.hidden_size == 16
    # evaluate_dir re-scores the saved model to the run's own dev metrics.
    assert evaluate_dir(result.model_dir, work / "dev.tsv") == pytest.approx(result.dev_metrics)
    pipe = transformers.pipeline("text-classification", model=str(result.model_dir), device="cpu")
    out = pipe(["good great love", "awful bad hate"])
    assert {o["label"] for o in out} <= {"negative", "positive"}
    probs = torch.softmax(logits[:2], -1)
    expected = _dev_logits(result.model_dir, ["good great love", "awful bad hate"]).argmax(-1).tolist()
    assert [o["label"] for o in out] == [["negative", "positive"][i] for i in expected]
    assert probs.shape == (2, 2)


def test_truncate_student_starts_from_teacher_layers(teacher, work):
    from textdistill.models.io import load_student

    cfg = load_config(
        None,
        [
            f"teacher.path={teacher.model_dir}",
            *_data(work, "truncate"),
            "student.type=truncate",
            "student.num_layers=2",
            "train.lr=1e-4",
            "train.max_steps=5",
            *COMMON,
        ],
    )
    result = run_training(cfg, "distill", quiet=True)
    student = load_student(result.model_dir)
    assert student.info.num_layers == 2
    # Two of the fine-tuned teacher's four layers and its head, barely trained: already close to the teacher.
    results = json.loads((result.run_dir / "eval_results.json").read_text())
    assert results["dev_agreement_with_teacher"] >= 0.75
    assert results["parameters"]["total"] < results["teacher_parameters"]["total"]


def _regression_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Sentences scored by (#positive - #negative words): a real-valued target the text determines."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        pos, neg = rng.randint(0, 3), rng.randint(0, 3)
        words = [rng.choice(POSITIVE) for _ in range(pos)] + [rng.choice(NEGATIVE) for _ in range(neg)]
        words += ["the", "movie"]
        rng.shuffle(words)
        rows.append((" ".join(words), f"{(pos - neg) / 3:.4f}"))
    return rows


def _corr(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    return float((x * y).sum() / (x.norm() * y.norm()))


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks, tied values sharing their average rank (the gold scores have many ties)."""
    values = x.tolist()
    return torch.tensor([sum(v < w for v in values) + (sum(v == w for v in values) + 1) / 2 for w in values])


def test_regression_finetune(work):
    from textdistill.evaluation.evaluate import evaluate_dir

    write_tsv(work / "reg_train.tsv", _regression_rows(160, seed=5), header=("sentence", "score"))
    write_tsv(work / "reg_dev.tsv", _regression_rows(40, seed=6), header=("sentence", "score"))
    cfg = load_config(
        None,
        [
            f"student.path={work / 'base'}",
            f"data.train={work / 'reg_train.tsv'}",
            f"data.dev={work / 'reg_dev.tsv'}",
            "data.label_column=score",
            "data.regression=true",
            f"output_dir={work / 'regression'}",
            "train.lr=3e-3",
            "train.epochs=4",
            *COMMON,
        ],
    )
    result = run_training(cfg, "finetune", quiet=True)
    assert set(result.dev_metrics) >= {"pearson", "spearman", "mse", "n"}
    assert result.dev_metrics["n"] == 40
    assert result.dev_metrics["pearson"] > 0.8
    config = json.loads((result.model_dir / "config.json").read_text())
    assert len(config["id2label"]) == 1
    # Independent check of the metrics from the saved model's raw outputs.
    rows = (work / "reg_dev.tsv").read_text().splitlines()[1:]
    texts = [r.split("\t")[0] for r in rows]
    gold = torch.tensor([float(r.split("\t")[1]) for r in rows])
    pred = _dev_logits(result.model_dir, texts)[:, 0]
    assert result.dev_metrics["pearson"] == pytest.approx(_corr(pred, gold), abs=1e-5)
    assert result.dev_metrics["spearman"] == pytest.approx(_corr(_ranks(pred), _ranks(gold)), abs=1e-5)
    assert result.dev_metrics["mse"] == pytest.approx(float(((pred - gold) ** 2).mean()), rel=1e-4)
    # evaluate on the saved directory detects regression from the single output.
    again = evaluate_dir(
        result.model_dir, work / "reg_dev.tsv", overrides=["label_column=score"], precision="fp32"
    )
    assert again["pearson"] == pytest.approx(result.dev_metrics["pearson"], abs=1e-6)


def test_augmented_distillation_uses_teacher_labels_for_new_rows(teacher, work, monkeypatch):
    """augment.method=tang: new rows join the training set without labels (teacher soft targets only)."""
    from textdistill.data.encoding import EncodedDataset
    from textdistill.training import runner

    seen: dict[str, list] = {}
    real = runner.augmented_train

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen["examples"] = out
        return out

    monkeypatch.setattr(runner, "augmented_train", spy)
    cfg = load_config(
        None,
        [
            f"teacher.path={teacher.model_dir}",
            *_data(work, "augmented"),
            "student.type=bilstm",
            "teacher.cache=true",
            "augment.method=tang",
            "augment.n_aug=2",
            "objective=[{name: kd_kl}, {name: hard_ce, weight: 0.5}]",
            "train.max_steps=4",
            *COMMON,
        ],
    )
    result = run_training(cfg, "distill", quiet=True)
    examples = seen["examples"]
    originals = [e for e in examples if e.is_original]
    new = [e for e in examples if not e.is_original]
    assert len(originals) == 160 and len(new) > 160  # up to 2 per sentence, duplicates removed
    assert all(e.label is None for e in new) and all(e.label is not None for e in originals)
    assert len({e.id for e in examples}) == len(examples)
    # Unlabelled rows are encoded with the ignore index, so hard_ce skips them.
    ds = EncodedDataset(new[:4], load_tokenizer_for(teacher.model_dir), 32, None)
    assert all(item["label"] == -100 for item in (ds[i] for i in range(len(ds))))
    assert json.loads((result.run_dir / "run.json").read_text())["status"] == "finished"
    # The augmented set is cached next to the run (reused while its fingerprint matches).
    cached = list((work / ".textdistill-cache" / "augment").glob("*.jsonl"))
    assert len(cached) == 1


def load_tokenizer_for(model_dir):
    from textdistill.models.teacher import load_tokenizer

    return load_tokenizer(model_dir)


def test_second_run_reuses_the_teacher_dev_evaluation(shrink_run, teacher, work, capsys):
    """The teacher's dev pass is stored beside the teacher cache: a second run on the same teacher and dev
    data reads it (and reports the same teacher metrics) instead of scoring the teacher again."""
    result, _ = shrink_run
    cfg = _shrink_config(teacher, work, "shrink-again", "train.epochs=1")
    capsys.readouterr()
    again = run_training(cfg, "distill", quiet=False)
    assert "teacher evaluation: reused" in capsys.readouterr().out
    assert again.teacher_dev_metrics == result.teacher_dev_metrics
    assert list((work / ".textdistill-cache" / "eval").glob("*.npz"))
