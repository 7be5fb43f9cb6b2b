"""Recipe parsing, reference resolution, warm starts and whole-pipeline validation (nothing trains here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import make_sentiment_rows, tiny_bert_config
from textdistill.errors import ConfigError
from textdistill.pipeline import recipe as recipe_mod
from textdistill.pipeline.recipe import apply_recipe_overrides, canonical_config, resolve_pipeline
from textdistill.pipeline.recipe_format import load_recipe, recipe_from_dict, split_arguments

TRAIN = {"max_steps": 2, "batch_size": 8, "precision": "fp32", "progress": False}


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(text for text, _ in make_sentiment_rows(40, seed=5)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def base_params(tiny_teacher_dir, sentiment_files, corpus) -> dict[str, str]:
    return {
        "teacher": str(tiny_teacher_dir),
        "train": str(sentiment_files["train"]),
        "dev": str(sentiment_files["dev"]),
        "corpus": str(corpus),
    }


def three_stage(**stage_changes) -> dict:
    """general -> intermediate -> prediction, with per-stage changes merged into the stage mappings."""
    stages = [
        {
            "name": "gd",
            "mode": "general",
            "when": "corpus",
            "student": {
                "type": "shrink",
                "num_layers": "${params.layers}",
                "hidden_size": 16,
                "intermediate_size": 32,
            },
            "data": {"train": "${params.corpus}"},
            "objective": [{"name": "hidden_mse"}, {"name": "attention_mse"}],
        },
        {
            "name": "inter",
            "mode": "distill",
            "student": {"from": "gd"},
            "objective": [{"name": "hidden_mse"}, {"name": "attention_mse"}],
        },
        {
            "name": "pred",
            "mode": "distill",
            "student": {"from": "inter"},
            "objective": [{"name": "kd_soft_ce"}],
        },
    ]
    for stage in stages:
        stage.update(stage_changes.get(stage["name"], {}))
    return {
        "params": {
            "teacher": {"help": "teacher dir"},
            "train": {},
            "dev": {},
            "corpus": {"default": None},
            "layers": 2,
        },
        "defaults": {
            "teacher": {"path": "${params.teacher}"},
            "data": {"train": "${params.train}", "dev": "${params.dev}", "max_length": 16},
            "train": TRAIN,
        },
        "stages": stages,
    }


def test_resolves_references_warm_starts_and_typed_values(base_params, tmp_path):
    recipe = recipe_from_dict(three_stage(), name="three")
    resolved = resolve_pipeline(recipe, {**base_params, "layers": 2}, tmp_path / "out")
    gd, inter, pred = resolved.stages
    assert gd.config.student.num_layers == 2 and isinstance(gd.config.student.num_layers, int)
    assert gd.config.data.train == base_params["corpus"]
    assert inter.config.student.type == "pretrained"
    assert inter.config.student.path == str(tmp_path / "out" / "gd" / "model")
    assert pred.config.student.path == str(tmp_path / "out" / "inter" / "model")
    assert (inter.upstream, pred.upstream) == (("gd",), ("inter",))
    assert inter.config.output_dir == str(tmp_path / "out" / "inter") and inter.config.overwrite
    # The fingerprinted form names upstream outputs symbolically and drops cosmetic keys.
    assert inter.canonical["student"]["path"] == "${stages.gd.output}"
    assert "progress" not in inter.canonical["train"] and "output_dir" not in inter.canonical
    assert inter.files == [base_params["train"], base_params["dev"]]
    assert inter.models == [
        base_params["teacher"]
    ]  # the gd output is an upstream stage, not an outside model
    assert gd.files == [base_params["corpus"]]


def test_param_defaults_and_embedded_references(tmp_path, base_params):
    data = three_stage(pred={"train": {"seed": "${params.seed}"}})
    data["params"]["seed"] = 7
    data["params"]["other_teacher"] = {"default": "${params.teacher}"}
    data["stages"][0]["teacher"] = {"path": "${params.other_teacher}"}
    data["defaults"]["data"]["dev"] = "${params.dev_dir}/dev.tsv"
    data["params"]["dev_dir"] = {"default": str(Path(base_params["dev"]).parent)}
    resolved = resolve_pipeline(recipe_from_dict(data, name="x"), base_params, tmp_path / "o")
    assert resolved.params["other_teacher"] == base_params["teacher"]
    assert resolved.stage("gd").config.teacher.path == base_params["teacher"]
    assert resolved.stage("pred").config.train.seed == 7
    assert resolved.stage("inter").config.data.dev == str(Path(base_params["dev"]).parent) + "/dev.tsv"


def test_bad_references_and_params_are_reported_together(tmp_path, base_params):
    data = three_stage(
        inter={"teacher": {"path": "${stages.pred.output}"}, "data": {"dev": "${stages.inter.output}"}},
        pred={"student": {"from": "gd2"}, "train": {"lr": "${params.lrr}", "seed": "${foo}"}},
    )
    data["defaults"]["train"] = {**TRAIN, "seed": "${params.sed}"}  # reported once, not once per stage
    params = {k: v for k, v in base_params.items() if k != "teacher"} | {"bogus": 1}
    with pytest.raises(ConfigError) as exc:
        resolve_pipeline(recipe_from_dict(data, name="x"), params, tmp_path / "o")
    problems = exc.value.problems
    expected = [
        "params.bogus: recipe 'x' has no parameter 'bogus'",
        "params.teacher: required parameter not given (teacher dir); pass teacher=VALUE",
        "defaults: ${params.sed} refers to an unknown parameter",
        "stages.inter: ${stages.pred.output} refers to stage 'pred', which runs after it",
        "stages.inter: ${stages.inter.output} refers to itself",
        "stages.pred: ${params.lrr} refers to an unknown parameter (parameters: teacher, train, dev, corpus, layers)",
        "stages.pred: ${foo} is not a valid reference",
        "stages.pred: ${stages.gd2.output} refers to an unknown stage 'gd2'; did you mean 'gd'?",
    ]
    for text in expected:
        assert sum(text in p for p in problems) == 1, (text, problems)
    assert len(problems) == len(expected)


def test_disabled_stage_and_warm_start_fallback(tmp_path, base_params):
    params = {**base_params, "corpus": None}
    # `from` a disabled stage with no path/fallback, and a plain reference to it: both reported.
    data = three_stage(pred={"teacher": {"path": "${stages.gd.output}"}})
    with pytest.raises(ConfigError) as exc:
        resolve_pipeline(recipe_from_dict(data, name="x"), params, tmp_path / "o")
    text = str(exc.value)
    assert "stages.inter.student: warm-starts from 'gd' (when: corpus (params.corpus is not set))" in text
    assert "stages.pred: uses ${stages.gd.output}, but stage 'gd' is disabled" in text
    # With a fallback the stage builds it, shape keys filled in for the fallback's type.
    data = three_stage(
        inter={"student": {"from": "gd", "num_layers": 2, "hidden_size": 16, "fallback": {"type": "shrink"}}}
    )
    resolved = resolve_pipeline(recipe_from_dict(data, name="x"), params, tmp_path / "o")
    assert not resolved.stage("gd").enabled
    student = resolved.stage("inter").config.student
    assert (student.type, student.num_layers, student.hidden_size) == ("shrink", 2, 16)
    assert resolved.stage("inter").upstream == ()
    # from: [a, b] takes the first enabled stage.
    data = three_stage(pred={"student": {"from": ["gd", "inter"]}})
    data["stages"][1]["student"] = {"from": "gd", "fallback": {"type": "shrink", "num_layers": 2}}
    resolved = resolve_pipeline(recipe_from_dict(data, name="x"), params, tmp_path / "o")
    assert resolved.stage("pred").config.student.path == str(tmp_path / "o" / "inter" / "model")


def test_when_and_unless_take_lists_of_parameters(tmp_path, base_params):
    """when: [a, b] runs only when every one is set; unless: [a, b] only when none is."""

    def enabled(params: dict, when=None, unless=None) -> tuple[bool, str]:
        data = three_stage()
        data["params"]["extra"] = {"default": None}
        data["stages"] = [{**data["stages"][2], "student": {"type": "truncate", "num_layers": 2}}]
        data["stages"][0].update({k: v for k, v in {"when": when, "unless": unless}.items() if v is not None})
        resolved = resolve_pipeline(recipe_from_dict(data, name="x"), params, tmp_path / "o")
        stage = resolved.stage("pred")
        return stage.enabled, stage.reason

    both = {**base_params, "extra": "yes"}
    none = {**base_params, "corpus": None}
    assert enabled(both, when=["corpus", "extra"]) == (True, "")
    assert enabled(base_params, when=["corpus", "extra"]) == (False, "when: extra (params.extra is not set)")
    assert enabled(none, unless=["corpus", "extra"]) == (True, "")
    assert enabled(base_params, unless=["extra", "corpus"]) == (
        False,
        "unless: corpus (params.corpus is set)",
    )
    assert enabled(none, when="layers", unless=["corpus", "extra"]) == (True, "")
    assert enabled(both, when="corpus", unless="extra") == (False, "unless: extra (params.extra is set)")
    for bad, message in (
        (["corpus", "nope"], "stages.gd.when: 'nope' is not a parameter of this recipe"),
        ([], "stages.gd.when: expected a parameter name or a list of parameter names, got []"),
        ([1], "stages.gd.when: expected a parameter name or a list of parameter names, got [1]"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            recipe_from_dict(three_stage(gd={"when": bad}), name="x")


def _checkpoint_config(directory: Path, layers: int, hidden: int) -> Path:
    directory.mkdir(parents=True)
    cfg = tiny_bert_config(81, layers=layers, hidden=hidden, heads=4)
    cfg.architectures = ["BertModel"]
    cfg.save_pretrained(str(directory))  # config.json only: validation never reads weights
    return directory


def test_gd_checkpoint_of_another_shape_warns_unless_the_recipe_produces_it(tmp_path, base_params):
    """A general-distilled init of the wrong shape cannot be loaded: warn and use the fallback."""
    shaped = {"num_layers": "${params.layers}", "hidden_size": 16, "fallback": {"type": "shrink"}}
    data = three_stage(inter={"student": {"from": "gd", "path": "${params.gd_ckpt}", **shaped}})
    data["params"]["gd_ckpt"] = None
    recipe = recipe_from_dict(data, name="x")
    wrong = _checkpoint_config(tmp_path / "gd-3x16", layers=3, hidden=16)
    right = _checkpoint_config(tmp_path / "gd-2x16", layers=2, hidden=16)
    no_corpus = {**base_params, "corpus": None}

    resolved = resolve_pipeline(recipe, {**no_corpus, "gd_ckpt": str(wrong)}, tmp_path / "o")
    # the shape warning, then the warning about intermediate-layer MSE on the random fallback student
    warning, collapse = resolved.warnings
    assert "on a randomly initialised (shrink) student, without general distillation" in collapse
    assert f"the general-distilled checkpoint {str(wrong)!r} has num_layers=3, hidden_size=16" in warning
    assert "asks for num_layers=2, hidden_size=16; the GD init cannot be loaded" in warning
    student = resolved.stage("inter").config.student
    assert (student.type, student.num_layers, student.hidden_size) == ("shrink", 2, 16)

    resolved = resolve_pipeline(recipe, {**no_corpus, "gd_ckpt": str(right)}, tmp_path / "o")
    assert resolved.warnings == []
    assert resolved.stage("inter").config.student.path == str(right)
    assert str(right) in resolved.stage("inter").models  # an outside checkpoint is fingerprinted

    # With the GD stage in the recipe, its output (predicted: 2 layers x 16) is used, no warning.
    resolved = resolve_pipeline(recipe, {**base_params, "gd_ckpt": str(wrong)}, tmp_path / "o")
    assert resolved.warnings == []
    assert resolved.stage("inter").config.student.path == str(tmp_path / "o" / "gd" / "model")

    # ... and a stage of the recipe producing another shape than asked is an error.
    data["stages"][1]["student"]["hidden_size"] = 24
    with pytest.raises(
        ConfigError,
        match=r"asks for num_layers=2, hidden_size=24, but stage 'gd' produces a student with num_layers=2, hidden_size=16",
    ):
        resolve_pipeline(recipe_from_dict(data, name="x"), base_params, tmp_path / "o")


def test_later_stages_are_validated_against_predicted_outputs(tmp_path, base_params):
    """gd's output does not exist yet, but inter's layer map is checked against the 3 layers it will have."""
    data = three_stage(
        gd={"objective": [{"name": "hidden_cos"}]},  # last-layer map: fine for 3 of 4 layers
        pred={"objective": [{"name": "kd_kll"}]},
    )
    with pytest.raises(ConfigError) as exc:
        resolve_pipeline(recipe_from_dict(data, name="x"), {**base_params, "layers": 3}, tmp_path / "o")
    problems = exc.value.problems
    assert len(problems) == 3, problems
    assert problems[0].startswith("stages.inter: objective.0 (hidden_mse).layer_map: strategy uniform")
    assert "teacher's layer count (4) to be a multiple of the student's (3)" in problems[0]
    assert problems[1].startswith("stages.inter: objective.1 (attention_mse).layer_map")
    assert "stages.pred: objective.0 (kd_kll): unknown loss term 'kd_kll'" in problems[2]


def test_stage_config_errors_carry_the_stage_name(tmp_path, base_params):
    data = three_stage(inter={"train": {"lr": "fast", "bogus": 1}}, gd={"objective": [{"name": "kd_kl"}]})
    with pytest.raises(ConfigError) as exc:
        resolve_pipeline(recipe_from_dict(data, name="x"), base_params, tmp_path / "o")
    text = str(exc.value)
    assert "stages.inter.train.lr: expected a number, got 'fast'" in text
    assert "stages.inter.train.bogus: unknown key" in text
    assert "stages.gd: objective.0 (kd_kl): general distillation has no labels and no task head" in text


def test_finetune_stage_defaults_to_hard_labels(tmp_path, tiny_teacher_dir, sentiment_files):
    data = {
        "params": {"model": {}},
        "stages": [
            {
                "name": "ft",
                "mode": "finetune",
                "student": {"type": "pretrained", "path": "${params.model}"},
                "data": {"train": str(sentiment_files["train"]), "dev": str(sentiment_files["dev"])},
            }
        ],
    }
    resolved = resolve_pipeline(
        recipe_from_dict(data, name="ft"), {"model": str(tiny_teacher_dir)}, tmp_path / "o"
    )
    assert [t.name for t in resolved.stage("ft").config.objective] == ["hard_ce"]
    assert resolved.stage("ft").models == [str(tiny_teacher_dir)]


def test_structural_problems(tmp_path):
    data = {
        "stagez": [],
        "params": {"x": {"deflt": 1}},
        "defaults": {"output_dir": "o", "trian": {}},
        "stages": [
            {"name": "a", "mode": "distil", "when": "nope"},
            {"name": "a", "mode": "general", "output_dir": "x", "objectve": []},
            {"name": "1bad", "mode": "general"},
        ],
    }
    with pytest.raises(ConfigError) as exc:
        recipe_from_dict(data, name="x")
    text = str(exc.value)
    for part in (
        "stagez: unknown recipe key; did you mean 'stages'?",
        "params.x.deflt: unknown key; did you mean 'default'?",
        "defaults.output_dir: set by the pipeline",
        "defaults.trian: unknown section; did you mean 'train'?",
        "stages.a.mode: 'distil' is not one of finetune, distill, general, generate; did you mean 'distill'?",
        "stages.a.when: 'nope' is not a parameter of this recipe",
        "stages.a.name: stage name 'a' is used twice",
        "stages.a.output_dir: set by the pipeline",
        "stages.a.objectve: unknown section; did you mean 'objective'?",
        "stages.1bad.name: expected a name of letters",
    ):
        assert part in text, part
    assert len(exc.value.problems) == 10


def test_command_line_arguments_and_stage_overrides(tmp_path):
    params, overrides = split_arguments(
        ["teacher=runs/t", "layers=6", "corpus=null", "stages.inter.train.lr=0.01"]
    )
    assert params == {"teacher": "runs/t", "layers": 6, "corpus": None}
    assert overrides == ["stages.inter.train.lr=0.01"]
    with pytest.raises(ConfigError, match=r"write stages.<stage>.train.lr=VALUE"):
        split_arguments(["train.lr=1"])
    data = apply_recipe_overrides(
        three_stage(), ["stages.inter.train.lr=0.01", "defaults.data.max_length=32"]
    )
    assert data["stages"][1]["train"] == {"lr": 0.01}
    assert data["defaults"]["data"]["max_length"] == 32
    with pytest.raises(ConfigError, match=r"no stage 'intr'.*did you mean 'inter'"):
        apply_recipe_overrides(three_stage(), ["stages.intr.train.lr=1"])
    # load_recipe applies overrides to a file by stage name.
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(three_stage()), encoding="utf-8")
    recipe = load_recipe(path, ["stages.pred.objective.0.name=kd_kl"])
    assert recipe.name == "r" and recipe.stages[2].sections["objective"] == [{"name": "kd_kl"}]


def test_canonical_config_is_independent_of_the_output_directory(tmp_path, base_params):
    recipe = recipe_from_dict(three_stage(), name="x")
    a = resolve_pipeline(recipe, base_params, tmp_path / "a").stage("pred")
    b = resolve_pipeline(recipe, base_params, tmp_path / "elsewhere" / "b").stage("pred")
    assert a.canonical == b.canonical
    assert canonical_config(a.config, {}) != a.canonical  # without the mapping the real path shows


def test_augmentation_is_checked_before_anything_trains(tmp_path, base_params, monkeypatch):
    data = three_stage(inter={"augment": {"method": "tang", "p_pos": 0.0, "n_aug": 0}})
    with pytest.raises(ConfigError, match=r"augment.n_aug=0 must be an integer >= 1"):
        resolve_pipeline(recipe_from_dict(data, name="x"), base_params, tmp_path / "o")
    data = three_stage(inter={"augment": {"method": "tang", "p_pos": 0.0}})
    monkeypatch.setattr(recipe_mod, "_AUGMENTED_ROWS_SUPPORTED", False)
    with pytest.raises(ConfigError, match=r"stages.inter.augment: method 'tang' writes augmented rows"):
        resolve_pipeline(recipe_from_dict(data, name="x"), base_params, tmp_path / "o")
    monkeypatch.setattr(recipe_mod, "_AUGMENTED_ROWS_SUPPORTED", True)
    resolved = resolve_pipeline(recipe_from_dict(data, name="x"), base_params, tmp_path / "o")
    assert resolved.stage("inter").augment.method == "tang"
    assert resolved.stage("pred").augment is None
    data = three_stage(gd={"augment": {"method": "tang"}})
    with pytest.raises(ConfigError, match=r"stages.gd.augment: augmentation applies to labelled task data"):
        resolve_pipeline(recipe_from_dict(data, name="x"), base_params, tmp_path / "o")
