"""Every shipped recipe loads, validates against tiny fixture models, and is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import make_sentiment_rows
from textdistill.cli import main
from textdistill.errors import ConfigError
from textdistill.pipeline.recipe import resolve_pipeline
from textdistill.pipeline.recipe_format import load_recipe
from textdistill.recipes import recipe_names, recipe_path

SHIPPED = ["bilstm", "compact", "distilbert", "ernie-tiny", "hinton", "minilmv2", "tinybert"]
# The tiny teacher has 4 layers x 32 wide, 4 heads: shapes that fit it (uniform maps need 4 % layers == 0).
SMALL = {
    "student_layers": 2,
    "student_hidden": 16,
    "student_heads": 4,
    "student_intermediate": 32,
    "embedding_dim": 16,
    "lstm_hidden": 8,
}
# Enabled stages with and without a corpus, and the student each enabled stage starts from.
EXPECTED = {
    ("bilstm", True): {"distill": "bilstm"},
    ("bilstm", False): {"distill": "bilstm"},
    ("compact", False): {"kd": "pretrained"},
    ("distilbert", True): {"general": "truncate", "task": "from general"},
    ("distilbert", False): {"task": "truncate"},
    ("ernie-tiny", True): {"ft": "pretrained", "ged": "shrink", "td1": "from ged", "td2": "from td1"},
    ("ernie-tiny", False): {"ft": "pretrained", "td1": "shrink", "td2": "from td1"},
    ("hinton", True): {"warmup": "truncate", "kd": "from warmup"},
    ("hinton", False): {"kd": "truncate"},
    ("minilmv2", True): {"general": "shrink", "finetune": "from general"},
    ("minilmv2", False): {"relations": "shrink", "finetune": "from relations"},
    ("tinybert", True): {
        "general": "shrink",
        "intermediate": "from general",
        "prediction": "from intermediate",
    },
    ("tinybert", False): {"intermediate": "shrink", "prediction": "from intermediate"},
}


@pytest.fixture
def fixture_params(tiny_teacher_dir, sentiment_files, tmp_path) -> dict[str, object]:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "part1.txt").write_text("\n".join(t for t, _ in make_sentiment_rows(20, seed=7)) + "\n")
    return {
        "teacher": str(tiny_teacher_dir),
        "task_train": str(sentiment_files["train"]),
        "task_dev": str(sentiment_files["dev"]),
        "corpus": str(corpus),
        "student": str(tiny_teacher_dir),  # compact: a pretrained student directory
    }


def test_shipped_recipes_are_listed():
    assert recipe_names() == SHIPPED
    for name in SHIPPED:
        assert recipe_path(name).name == f"{name}.yaml"
    with pytest.raises(ConfigError, match=r"recipe 'tinybrt' is neither.*Did you mean 'tinybert'\?"):
        recipe_path("tinybrt")


@pytest.mark.parametrize("with_corpus", [True, False], ids=["corpus", "no-corpus"])
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_validates(name, with_corpus, fixture_params, tmp_path):
    recipe = load_recipe(name)
    params = {k: v for k, v in {**fixture_params, **SMALL}.items() if k in recipe.params}
    if not with_corpus and "corpus" in params:
        params["corpus"] = None
    resolved = resolve_pipeline(recipe, params, tmp_path / "out")
    if name == "tinybert" and not with_corpus:
        # intermediate-layer MSE from random weights: the collapse measured on SST-2 is warned about
        [warning] = resolved.warnings
        assert warning.startswith("stages.intermediate: attention_mse, hidden_mse on a randomly initialised")
        assert "corpus" in warning and "general_student" in warning
    else:
        assert resolved.warnings == []
    got = {}
    for stage in resolved.stages:
        if stage.enabled:
            student = stage.config.student
            upstream = [u for u in stage.upstream if student.path == str(resolved.stage(u).model_dir)]
            got[stage.name] = f"from {upstream[0]}" if upstream else student.type
    assert got == EXPECTED[(name, with_corpus and "corpus" in recipe.params)]
    # Every stage reads the task teacher (or, for ernie-tiny, the teacher its first stage fine-tunes).
    for stage in resolved.stages:
        if stage.enabled and stage.mode == "distill":
            expected = resolved.stage("ft").model_dir if name == "ernie-tiny" else Path(params["teacher"])
            assert stage.config.teacher.path == str(expected)


def test_shipped_recipes_are_checked_against_the_teacher(fixture_params, tmp_path):
    """The shipped default shapes do not fit the tiny teacher: the problems of all stages come at once."""
    recipe = load_recipe("tinybert")
    params = {k: v for k, v in fixture_params.items() if k in recipe.params}
    # Defaults: a 4 x 312 student with 12 heads; the teacher is 4 x 32 with 4 heads.
    with pytest.raises(ConfigError) as exc:
        resolve_pipeline(recipe, params, tmp_path / "out")
    head_problem = (
        "objective.2 (attention_mse): attention_mse compares attention heads one to one, but the student has "
        "12 heads and the teacher 4; set student.num_heads=4"
    )
    problems = exc.value.problems
    assert len(problems) == 2
    assert problems[0].startswith(f"stages.general: {head_problem}")
    assert problems[1].startswith(f"stages.intermediate: {head_problem}")  # checked against general's output


@pytest.mark.parametrize("name", SHIPPED)
def test_recipe_header_names_the_paper_and_docs_have_its_table(name):
    text = recipe_path(name).read_text(encoding="utf-8")
    recipe = load_recipe(name)
    first_author = recipe.paper.split()[0].rstrip(",")
    year = re.search(r"\b(19|20)\d\d\b", recipe.paper).group(0)
    header = text.split("\n\n")[0]
    assert header.startswith("# ") and first_author in header and year in header
    assert recipe.description
    docs = (Path(__file__).resolve().parents[1] / "docs" / "recipes.md").read_text(encoding="utf-8")
    section = docs.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
    assert "| stage | mode | teacher | student | data | objective |" in section
    for stage in recipe.stages:
        assert f"| `{stage.name}`" in section, stage.name


def test_recipes_command(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        assert re.search(rf"^{re.escape(name)}\s+\S", out, re.M), name
    assert main(["recipes", "tinybert"]) == 0
    out = capsys.readouterr().out
    assert "paper: Jiao et al. 2020" in out
    assert re.search(r"^  teacher\s+required\s+fine-tuned task teacher", out, re.M)
    assert re.search(r"^  corpus\s+default null\s+", out, re.M)
    assert re.search(
        r"^  prediction\s+distill\s+student: from intermediate\s+objective: kd_soft_ce", out, re.M
    )
    assert main(["recipes", "hinton", "--yaml"]) == 0
    assert capsys.readouterr().out == recipe_path("hinton").read_text(encoding="utf-8")
    assert main(["recipes", "nope"]) == 2
    assert "recipe 'nope' is neither a shipped recipe" in capsys.readouterr().err


def test_compact_defaults_to_a_trimmed_bilstm_with_teacher_pca_embeddings(fixture_params, tmp_path):
    recipe = load_recipe("compact")
    params = {k: v for k, v in fixture_params.items() if k in recipe.params and k != "student"}
    resolved = resolve_pipeline(recipe, params, tmp_path / "out")
    [stage] = [s for s in resolved.stages if s.enabled]
    assert stage.name == "kd_bilstm"
    student = stage.config.student
    assert (student.type, student.vocab, student.glove) == ("bilstm", "auto", None)
    assert (student.embedding_dim, student.lstm_hidden, student.init_embeddings_from_teacher) == (
        100,
        300,
        True,
    )
    assert [t.name for t in stage.config.objective] == ["kd_mse"]
    train = stage.config.train
    assert (train.lr, train.epochs, train.weight_decay, train.warmup_ratio) == (1e-3, 3, 0.0, 0.0)
    # the other stages say which parameter switched them off
    reasons = {s.name: s.reason for s in resolved.stages if not s.enabled}
    assert reasons == {
        "kd": "when: student (params.student is not set)",
        "kd_truncated": "when: student_layers (params.student_layers is not set)",
    }
    glove = tmp_path / "glove.txt"
    glove.write_text("the " + " ".join(["0.1"] * 16) + "\n", encoding="utf-8")
    small = {**params, "glove": str(glove), "embedding_dim": 16, "lstm_hidden": 8, "epochs": 1}
    [stage] = [s for s in resolve_pipeline(recipe, small, tmp_path / "o2").stages if s.enabled]
    assert (stage.config.student.glove, stage.config.student.embedding_dim) == (str(glove), 16)
    assert stage.config.train.epochs == 1


def test_compact_student_layers_truncates_the_teacher_and_a_student_dir_wins(fixture_params, tmp_path):
    recipe = load_recipe("compact")
    params = {k: v for k, v in fixture_params.items() if k in recipe.params and k != "student"}
    resolved = resolve_pipeline(recipe, {**params, "student_layers": 2}, tmp_path / "out")
    [stage] = [s for s in resolved.stages if s.enabled]
    assert stage.name == "kd_truncated"
    student = stage.config.student
    assert (student.type, student.num_layers, student.vocab) == ("truncate", 2, "auto")
    assert [t.name for t in stage.config.objective] == ["kd_kl", "hard_ce"]
    assert stage.config.train.lr == 1e-4
    both = {**params, "student_layers": 2, "student": fixture_params["student"]}
    resolved = resolve_pipeline(recipe, both, tmp_path / "out3")
    assert [s.name for s in resolved.stages if s.enabled] == ["kd"]
    assert {s.name: s.reason for s in resolved.stages if not s.enabled} == {
        "kd_bilstm": "unless: student (params.student is set)",
        "kd_truncated": "unless: student (params.student is set)",
    }
    bad = {**params, "vocab": "most"}
    with pytest.raises(ConfigError, match="student.vocab='most' is not full, auto"):
        resolve_pipeline(recipe, bad, tmp_path / "out2")


def test_compact_default_runs_a_trimmed_bilstm_whose_embeddings_are_the_teachers_by_pca(
    fixture_params, tmp_path
):
    """`textdistill run compact` end to end on the tiny teacher; with lr 1e-12 the saved embedding table is
    exactly the initialisation: PCA of the teacher's whole table, then the kept rows."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from textdistill.models.io import load_student
    from textdistill.models.students import project_embeddings

    out = tmp_path / "run"
    args = ["run", "compact", *(f"{k}={fixture_params[k]}" for k in ("teacher", "task_train", "task_dev"))]
    args += ["embedding_dim=16", "lstm_hidden=8", "bilstm_lr=1e-12", "epochs=1"]
    args += ["stages.kd_bilstm.train.precision=fp32", "stages.kd_bilstm.train.max_steps=2", "-o", str(out)]
    assert main(args) == 0
    model_dir = out / "kd_bilstm" / "model"
    student_tok = AutoTokenizer.from_pretrained(str(model_dir))
    teacher_tok = AutoTokenizer.from_pretrained(fixture_params["teacher"])
    assert len(student_tok) < len(teacher_tok)  # trimmed to the training text's tokens
    kept = teacher_tok.convert_tokens_to_ids(student_tok.convert_ids_to_tokens(list(range(len(student_tok)))))
    teacher = AutoModelForSequenceClassification.from_pretrained(fixture_params["teacher"])
    torch.manual_seed(0)  # only used when the width grows (here 16 < 32: PCA, no randomness)
    expected = project_embeddings(teacher.get_input_embeddings().weight, 16)[kept]
    student = load_student(model_dir)
    assert torch.allclose(student.embeddings.weight, expected, atol=1e-6)
