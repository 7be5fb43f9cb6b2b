"""Cross-tokenizer logit KD: students with their own (or a trimmed) vocabulary, cached vs live teacher."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import tiny_bert_config
from textdistill.config.loader import load_config
from textdistill.errors import ConfigError
from textdistill.training.runner import run_training

COMMON = [
    "train.batch_size=16",
    "train.progress=false",
    "train.keep_checkpoints=0",
    "train.seed=0",
    "train.precision=fp32",
    "train.epochs=1",
    "report=false",
]


def _run(tiny_teacher_dir: Path, files: dict[str, Path], out: Path, *overrides: str):
    cfg = load_config(
        None,
        [
            f"teacher.path={tiny_teacher_dir}",
            f"data.train={files['train']}",
            f"data.dev={files['dev']}",
            f"output_dir={out}",
            *COMMON,
            *overrides,
        ],
    )
    return run_training(cfg, "distill", quiet=True)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _other_vocab_student(tmp_path: Path) -> Path:
    """A pretrained student whose tokenizer is not the teacher's (other words, other ids)."""
    from transformers import BertForSequenceClassification, BertTokenizerFast

    from conftest import WORDS

    other = tmp_path / "other"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "zebra", *reversed(WORDS)]
    BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True).save_pretrained(
        str(other)
    )
    torch.manual_seed(0)
    BertForSequenceClassification(tiny_bert_config(len(tokens), layers=1)).save_pretrained(str(other))
    return other


@pytest.mark.parametrize("student", ["trimmed", "other"])
def test_cached_and_live_teacher_train_the_same_student(tmp_path, tiny_teacher_dir, sentiment_files, student):
    if student == "trimmed":
        args = ["student.type=truncate", "student.num_layers=2", "student.vocab=auto"]
    else:
        args = ["student.type=pretrained", f"student.path={_other_vocab_student(tmp_path)}"]
    cached = _run(tiny_teacher_dir, sentiment_files, tmp_path / "cached", *args, "teacher.cache=true")
    live = _run(tiny_teacher_dir, sentiment_files, tmp_path / "live", *args, "teacher.cache=false")
    a, b = _weights(cached.model_dir), _weights(live.model_dir)
    assert a.keys() == b.keys()
    for k in a:
        # the cache stores fp16 teacher logits: the students differ by that rounding only
        assert torch.allclose(a[k], b[k], atol=2e-3, rtol=0), k
    assert cached.dev_metrics["accuracy"] == pytest.approx(live.dev_metrics["accuracy"], abs=0.05)
    assert cached.teacher_dev_metrics == live.teacher_dev_metrics  # the teacher reads its own tokens on dev


def test_exact_equivalence_with_an_fp32_cache(tmp_path, tiny_teacher_dir, sentiment_files):
    args = ["student.type=truncate", "student.num_layers=2", "student.vocab=auto", "teacher.cache_dtype=fp32"]
    cached = _run(tiny_teacher_dir, sentiment_files, tmp_path / "cached", *args, "teacher.cache=true")
    live = _run(tiny_teacher_dir, sentiment_files, tmp_path / "live", *args, "teacher.cache=false")
    a, b = _weights(cached.model_dir), _weights(live.model_dir)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), k


def test_trimmed_student_saves_its_own_tokenizer(tmp_path, tiny_teacher_dir, sentiment_files):
    from transformers import AutoTokenizer

    from conftest import WORDS

    result = _run(
        tiny_teacher_dir,
        sentiment_files,
        tmp_path / "run",
        "student.type=truncate",
        "student.num_layers=2",
        "student.vocab=auto",
    )
    tok = AutoTokenizer.from_pretrained(str(result.model_dir))
    teacher_tok = AutoTokenizer.from_pretrained(str(tiny_teacher_dir))
    rows = sentiment_files["train"].read_text(encoding="utf-8").split("\n")[1:]
    seen = {w for r in rows if r for w in r.split("\t")[0].split()}
    assert seen <= set(WORDS)
    assert set(tok.get_vocab()) == seen | {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    assert len(tok) < len(teacher_tok)
    assert _weights(result.model_dir)["bert.embeddings.word_embeddings.weight"].shape[0] == len(tok)


def test_truncated_trimmed_student_starts_as_the_teacher(tmp_path, tiny_teacher_dir, sentiment_files):
    """All teacher layers + trimmed vocabulary = the teacher, on text whose tokens were kept."""
    from textdistill.config.schema import Config
    from textdistill.models.students import build_student
    from textdistill.models.teacher import load_teacher, load_tokenizer
    from textdistill.training.cross_tokenizer import resolve_student_tokenization

    cfg = Config()
    cfg.student.type, cfg.student.num_layers, cfg.student.vocab = "truncate", 4, "auto"
    texts = ["the movie was good", "bad plot"]
    teacher_tok = load_tokenizer(tiny_teacher_dir)
    st = resolve_student_tokenization(cfg, teacher_tok, texts, quiet=True)
    teacher = load_teacher(tiny_teacher_dir)
    student = st.apply(build_student(cfg.student, teacher, 2)).eval()
    with torch.no_grad():
        t = teacher(**teacher_tok(texts, padding=True, return_tensors="pt")).logits
        s = student(**st.tokenizer(texts, padding=True, return_tensors="pt")).logits
    assert st.cross and torch.allclose(s, t, atol=1e-5, rtol=0)


def test_token_aligned_term_is_refused_across_tokenizers(tmp_path, tiny_teacher_dir, sentiment_files):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="hidden_mse.*tokenizes the text\\s+differently.*sentence-level"):
        _run(
            tiny_teacher_dir,
            sentiment_files,
            out,
            "student.type=truncate",
            "student.num_layers=2",
            "student.vocab=auto",
            "objective=[{name: kd_kl}, {name: hidden_mse}]",
        )
    assert not out.exists()


def test_same_vocabulary_keeps_the_single_tokenizer_path(tmp_path, tiny_teacher_dir):
    from textdistill.config.schema import Config
    from textdistill.models.teacher import load_tokenizer
    from textdistill.training.cross_tokenizer import resolve_student_tokenization

    cfg = Config()
    cfg.student.type = "truncate"
    tok = load_tokenizer(tiny_teacher_dir)
    st = resolve_student_tokenization(cfg, tok, ["good"], quiet=True)
    assert not st.cross and st.tokenizer is tok and st.kept_ids is None


def test_bad_vocab_value_is_a_config_error(tmp_path, tiny_teacher_dir, sentiment_files):
    with pytest.raises(ConfigError, match="student.vocab='most' is not full, auto"):
        _run(
            tiny_teacher_dir,
            sentiment_files,
            tmp_path / "r",
            "student.type=truncate",
            "student.num_layers=2",
            "student.vocab=most",
        )


def _glove_file(path: Path, words: dict[str, list[float]]) -> Path:
    path.write_text(
        "".join(f"{w} {' '.join(str(x) for x in v)}\n" for w, v in words.items()), encoding="utf-8"
    )
    return path


def test_bilstm_glove_init_copies_each_words_vector(tmp_path, tiny_tokenizer):
    from textdistill.models.bilstm import BiLSTMClassifier, BiLSTMConfig
    from textdistill.models.glove import init_from_glove

    vectors = {
        "good": [1.0, 2.0, 3.0],
        "movie": [-1.0, 0.5, 0.0],
        "ing": [0.0, 0.0, 4.0],
        "zebra": [9.0, 9.0, 9.0],
    }
    glove = _glove_file(tmp_path / "g.txt", vectors)
    torch.manual_seed(0)
    model = BiLSTMClassifier(BiLSTMConfig(vocab_size=len(tiny_tokenizer), num_labels=2, embedding_dim=3))
    before = model.embeddings.weight.detach().clone()
    assert init_from_glove(model.embeddings, tiny_tokenizer, glove) == 3  # good, movie, ##ing
    w = model.embeddings.weight.detach()
    rows = [tiny_tokenizer.convert_tokens_to_ids(t) for t in ("good", "movie", "##ing")]
    got = w[rows]
    ref = torch.tensor([vectors["good"], vectors["movie"], vectors["ing"]])
    # one common scale for every copied vector (the table's std over GloVe's), directions kept exactly
    scale = got[0, 0] / ref[0, 0]
    assert torch.allclose(got, ref * scale, atol=1e-6)
    others = [i for i in range(len(tiny_tokenizer)) if i not in rows]
    assert torch.equal(w[others], before[others])


def test_bilstm_glove_width_mismatch_names_the_fix(tmp_path, tiny_tokenizer):
    from textdistill.models.bilstm import BiLSTMClassifier, BiLSTMConfig
    from textdistill.models.glove import init_from_glove

    glove = _glove_file(tmp_path / "g.txt", {"good": [1.0, 2.0]})
    model = BiLSTMClassifier(BiLSTMConfig(vocab_size=len(tiny_tokenizer), num_labels=2, embedding_dim=3))
    with pytest.raises(ConfigError, match="set student.embedding_dim=2"):
        init_from_glove(model.embeddings, tiny_tokenizer, glove)


def test_bilstm_with_glove_and_trimmed_vocab_distils(tmp_path, tiny_teacher_dir, sentiment_files):
    from conftest import WORDS

    glove = _glove_file(tmp_path / "g.txt", {w: [float(i), 1.0, -1.0, 0.5] for i, w in enumerate(WORDS)})
    result = _run(
        tiny_teacher_dir,
        sentiment_files,
        tmp_path / "run",
        "student.type=bilstm",
        "student.vocab=auto",
        f"student.glove={glove}",
        "student.embedding_dim=4",
        "student.lstm_hidden=8",
        "student.mlp_hidden=8",
        "objective=[{name: kd_mse}]",
    )
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(str(result.model_dir))) < len(WORDS) + 5 + 1
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match="student.glove.*does not exist"):
        _run(
            tiny_teacher_dir,
            sentiment_files,
            tmp_path / "run2",
            "student.type=bilstm",
            f"student.glove={missing}",
        )
