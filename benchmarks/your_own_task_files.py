"""Write the five small task files that docs/your-own-task.md walks through (train 300 / dev 150 rows each).

    python benchmarks/your_own_task_files.py --sst2 ../shared/data/sst2 --qnli ../shared/data/qnli -o /tmp/yot

- ``sst2-{train,dev}.tsv``: single sentence, ``sentence`` / ``label`` (0/1), slices of GLUE SST-2;
- ``qnli-{train,dev}.tsv``: sentence pair, ``question`` / ``sentence`` / ``label`` (entailment /
  not_entailment), two disjoint slices of the QNLI dev set (the only labelled QNLI split stored here);
- ``sim-{train,dev}.tsv``: sentence-pair regression, ``sentence1`` / ``sentence2`` / ``score``: a QNLI
  question with its own sentence or a random other one, scored 5 x the word-overlap Jaccard of the two
  (a computable similarity in 0..5, not human judgements);
- ``qtype-{train,dev}.tsv``: many classes, ``text`` / ``label``: a QNLI question and its question word (what,
  who, how, when, which, where, why: 7 classes);
- ``zh-{train,dev}.tsv``: non-English, ``text`` / ``label`` (正面 / 负面): Chinese review sentences built from
  templates (subject + positive or negative predicate).
"""

from __future__ import annotations

import argparse
import random
import re
from pathlib import Path

TRAIN, DEV = 300, 150
WH = ("what", "who", "when", "where", "how", "which", "why")
SUBJECTS = [
    "这部电影",
    "这家餐厅",
    "这本书",
    "这里的服务",
    "演员的表演",
    "这款手机",
    "这次旅行",
    "酒店的房间",
    "这首歌",
    "老师的课",
]
POSITIVE = [
    "非常好",
    "很精彩",
    "让人喜欢",
    "值得推荐",
    "超出了我的期待",
    "真的很棒",
    "令人满意",
    "让我很开心",
]
NEGATIVE = [
    "太差了",
    "很无聊",
    "令人失望",
    "不值得一看",
    "让我很生气",
    "完全是浪费时间",
    "质量很差",
    "一点也不好",
]
OPENERS = ["", "总的来说", "说实话", "我觉得", "朋友们都说", "第二次来了，"]


def _rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")


def _split(out: Path, name: str, header: list[str], rows: list[list[str]]) -> None:
    _write(out / f"{name}-train.tsv", header, rows[:TRAIN])
    _write(out / f"{name}-dev.tsv", header, rows[TRAIN : TRAIN + DEV])


def _jaccard_score(a: str, b: str) -> float:
    ta, tb = (set(re.findall(r"[a-z0-9]+", s.lower())) for s in (a, b))
    return 5 * len(ta & tb) / max(1, len(ta | tb))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sst2", type=Path, required=True, help="folder with GLUE SST-2 train.tsv / dev.tsv")
    p.add_argument("--qnli", type=Path, required=True, help="folder with GLUE QNLI dev.tsv")
    p.add_argument("-o", "--out", type=Path, required=True)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    train = _rows(args.sst2 / "train.tsv")
    rng.shuffle(train)
    _write(args.out / "sst2-train.tsv", ["sentence", "label"], train[:TRAIN])
    _write(args.out / "sst2-dev.tsv", ["sentence", "label"], _rows(args.sst2 / "dev.tsv")[:DEV])
    qnli = _rows(args.qnli / "dev.tsv")
    rng.shuffle(qnli)
    _write(args.out / "qnli-train.tsv", ["question", "sentence", "label"], qnli[:TRAIN])
    _write(args.out / "qnli-dev.tsv", ["question", "sentence", "label"], qnli[800 : 800 + DEV])
    sim = []
    for i, (question, sentence, _) in enumerate(qnli[:1100]):
        other = sentence if i % 2 == 0 else qnli[rng.randrange(len(qnli))][1]
        sim.append([question, other, f"{_jaccard_score(question, other):.3f}"])
    _write(args.out / "sim-train.tsv", ["sentence1", "sentence2", "score"], sim[:TRAIN])
    _write(args.out / "sim-dev.tsv", ["sentence1", "sentence2", "score"], sim[800 : 800 + DEV])
    qtype = []
    for question, _, _ in qnli:
        word = next((t for t in re.findall(r"[a-z]+", question.lower()) if t in WH), None)
        if word:
            qtype.append([question, word])
    _write(args.out / "qtype-train.tsv", ["text", "label"], qtype[:TRAIN])
    _write(args.out / "qtype-dev.tsv", ["text", "label"], qtype[800 : 800 + DEV])
    zh = []
    for _ in range(1100):
        positive = rng.random() < 0.5
        opener, subject = rng.choice(OPENERS), rng.choice(SUBJECTS)
        predicate = rng.choice(POSITIVE if positive else NEGATIVE)
        zh.append([f"{opener}{subject}{predicate}。", "正面" if positive else "负面"])
    _write(args.out / "zh-train.tsv", ["text", "label"], zh[:TRAIN])
    _write(args.out / "zh-dev.tsv", ["text", "label"], zh[800 : 800 + DEV])


if __name__ == "__main__":
    main()
