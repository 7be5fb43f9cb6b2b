"""Config loading (defaults < YAML < overrides, every problem at once) and whole-config validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import make_tokenizer, tiny_bert_config
from textdistill.config.loader import (
    apply_overrides,
    dump_yaml,
    from_dict,
    load_config,
    parse_override,
    read_yaml,
    resolve_config,
)
from textdistill.config.schema import Config, DataConfig, LossTermConfig, TrainConfig
from textdistill.config.validate import for_mode, validate_config
from textdistill.errors import ConfigError


def _problems(excinfo: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return excinfo.value.problems


# -- loading ------------------------------------------------------------------------------------------------
def test_defaults():
    cfg = load_config()
    assert cfg == Config()
    # lr unset: chosen by student kind when the run starts (task_inference.default_lr)
    assert cfg.train.lr is None and cfg.train.batch_size == 32 and cfg.train.precision == "auto"
    assert [t.name for t in cfg.objective] == ["kd_kl"]
    assert cfg.student.type == "pretrained" and cfg.teacher.path is None


def test_yaml_then_overrides_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1.0e-3\n  batch_size: 8\n  epochs: 2\nstudent:\n  type: shrink\n")
    cfg = load_config(path, ["train.batch_size=4", "train.batch_size=6", "data.max_length=64"])
    assert cfg.train.lr == 1e-3  # YAML over default
    assert cfg.train.batch_size == 6  # override over YAML; later overrides win
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)
    assert cfg.student.type == "shrink"
    assert cfg.data.max_length == 64  # override of a key the YAML does not mention
    assert cfg.train.weight_decay == TrainConfig().weight_decay  # untouched default


def test_list_index_overrides_reach_default_and_yaml_lists(tmp_path):
    # The default objective (one kd_kl term) is editable without restating it in YAML.
    cfg = load_config(None, ["objective.0.weight=2", "objective.0.params.temperature=4"])
    assert cfg.objective == [LossTermConfig(name="kd_kl", weight=2, params={"temperature": 4})]
    path = tmp_path / "c.yaml"
    path.write_text("objective:\n  - name: kd_kl\n  - name: hidden_mse\n    weight: 0.5\n")
    cfg = load_config(path, ["objective.1.weight=3", "objective.-1.layer_map.strategy=uniform"])
    assert [t.name for t in cfg.objective] == ["kd_kl", "hidden_mse"]
    assert cfg.objective[1].weight == 3
    assert cfg.objective[1].layer_map is not None and cfg.objective[1].layer_map.strategy == "uniform"
    # A YAML list replaces the default list; it is not merged with it.
    path.write_text("objective:\n  - name: hard_ce\n")
    assert [t.name for t in load_config(path).objective] == ["hard_ce"]


def test_list_index_problems():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["objective.2.weight=1", "objective.x.weight=1"])
    assert _problems(e) == [
        "objective.2: index 2 is out of range (the list has 1 items)",
        "objective.x: 'x' is not a list index (the list has 1 items: 0..0)",
    ]


def test_override_values_parse_as_yaml_scalars():
    cfg = load_config(
        None,
        [
            "train.lr=3e-5",
            "data.labels=[neg, pos]",
            "train.max_grad_norm=null",
            "train.compile=true",
            "train.epochs=.5",
            "output_dir=123",
            "objective.0.weight={schedule: linear, start: 0, end: 1}",
        ],
    )
    assert cfg.train.lr == 3e-5 and isinstance(cfg.train.lr, float)  # YAML 1.1 reads '3e-5' as a string
    assert cfg.data.labels == ["neg", "pos"]
    assert cfg.train.max_grad_norm is None
    assert cfg.train.compile is True
    assert cfg.train.epochs == 0.5
    assert cfg.output_dir == "123"
    assert cfg.objective[0].weight == {"schedule": "linear", "start": 0, "end": 1}
    assert parse_override("a.b=x=y") == (["a", "b"], "x=y")  # only the first '=' splits
    assert parse_override("a=") == (["a"], "")


def test_unknown_keys_suggest_the_closest():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.lrr=1"])
    (problem,) = _problems(e)
    assert problem.startswith("train.lrr: unknown key; did you mean 'lr'?")
    assert "valid keys: epochs, max_steps, batch_size" in problem
    with pytest.raises(ConfigError) as e:
        load_config(None, ["zzz=1"])
    assert _problems(e)[0].startswith("zzz: unknown key (valid keys: teacher, student, data")


def test_wrong_types():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.batch_size=2.5", "train.seed=true", "train.lr=abc", "train.compile=maybe"])
    assert _problems(e) == [
        "train.batch_size: expected an integer, got 2.5",
        "train.lr: expected a number, got 'abc'",
        "train.seed: expected an integer, got True",
        "train.compile: expected true or false, got 'maybe'",
    ]
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train=5", "train.batch_size=2", "data.labels=neg"])
    # A scalar where a mapping belongs is reported, not silently replaced by the later override.
    assert _problems(e) == [
        "override 'train.batch_size=2': train is 5, not a mapping, so it has no key 'batch_size'",
        "data.labels: expected a list, got 'neg'",
        "train: expected a mapping of TrainConfig fields, got 5",
    ]
    # Integral floats are integers; integers are numbers.
    cfg = load_config(None, ["train.batch_size=8.0", "train.lr=1"])
    assert cfg.train.batch_size == 8 and isinstance(cfg.train.batch_size, int)
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


def test_all_problems_reported_at_once(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lrr: 1\n  batch_size: many\nteacher:\n  pth: x\nbogus: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, ["train.epochs", "data.max_lenght=3", "student.type=7"])
    problems = _problems(e)
    assert len(problems) == 6
    assert str(e.value).startswith("6 configuration problems:\n  - ")
    joined = "\n".join(problems)
    for expected in (
        "override 'train.epochs' has no '='",
        "teacher.pth: unknown key; did you mean 'path'?",
        "train.lrr: unknown key; did you mean 'lr'?",
        "train.batch_size: expected an integer, got 'many'",
        "data.max_lenght: unknown key; did you mean 'max_length'?",
        "bogus: unknown key",
    ):
        assert expected in joined
    # student.type=7 is fine: YAML's 7 is accepted as the string '7' (the registry rejects it later)


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: 1e-3\n   batch_size: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"config file {str(path)!r} is not valid YAML at line 3" in str(e.value)
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping of keys.*got a list"):
        read_yaml(path)
    path.write_bytes(b"train:\n  lr: \xff\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        read_yaml(path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "missing.yaml")
    path.write_text("")
    assert load_config(path) == Config()  # an empty file is all defaults


def test_override_syntax_errors():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.lr", "=3", "a..b=1"])
    assert _problems(e) == [
        "override 'train.lr' has no '='; write key.sub=value, e.g. train.lr=3e-5",
        "override '=3' has an empty key; write key.sub=value, e.g. train.lr=3e-5",
        "override 'a..b=1' has an empty key; write key.sub=value, e.g. train.lr=3e-5",
    ]


def test_resolve_config_leaves_input_alone_and_dump_round_trips(tmp_path):
    data = {"train": {"lr": 0.1}}
    cfg = resolve_config(data, ["train.lr=0.2", "objective.0.weight=0.5"])
    assert data == {"train": {"lr": 0.1}}
    assert cfg.train.lr == 0.2
    path = tmp_path / "dump.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(path) == cfg
    # from_dict on its own names the root by class name (library callers), or not at all with prefix="".
    with pytest.raises(ConfigError, match=r"TrainConfig\.lr: expected a number"):
        from_dict(TrainConfig, {"lr": "x"})
    assert apply_overrides({}, ["a.b=1"]) == {"a": {"b": 1}}
    assert resolve_config({}, ["text_column=text"], DataConfig).text_column == "text"


# -- validation ---------------------------------------------------------------------------------------------
@pytest.fixture
def setup(tmp_path, sentiment_files) -> dict[str, Path]:
    """A tiny classifier teacher, a bare (headless) model dir and the sentiment files."""
    from transformers import BertForSequenceClassification, BertModel

    teacher = tmp_path / "teacher"
    tok = make_tokenizer(teacher)
    torch.manual_seed(0)
    BertForSequenceClassification(tiny_bert_config(len(tok), layers=4)).save_pretrained(str(teacher))
    bare = tmp_path / "bare"
    make_tokenizer(bare)
    BertModel(tiny_bert_config(len(tok))).save_pretrained(str(bare))
    return {"teacher": teacher, "bare": bare, "out": tmp_path / "out", **sentiment_files}


def _cfg(setup, *overrides: str) -> Config:
    return load_config(
        None,
        [
            f"teacher.path={setup['teacher']}",
            f"data.train={setup['train']}",
            f"data.dev={setup['dev']}",
            f"output_dir={setup['out']}",
            "student.type=truncate",
            "student.num_layers=2",
            *overrides,
        ],
    )


def _validation_problems(cfg: Config, mode: str = "distill") -> list[str]:
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, mode)
    return e.value.problems


def test_valid_config_returns_model_infos(setup):
    v = validate_config(_cfg(setup))
    assert v.teacher_info is not None and v.teacher_info.num_layers == 4 and v.teacher_info.num_labels == 2
    assert v.student_info is not None and v.student_info.num_layers == 2
    assert not setup["out"].exists()  # validation writes nothing


def test_missing_files_and_teacher(setup, tmp_path):
    cfg = _cfg(setup, f"data.train={tmp_path / 'nope.tsv'}", f"data.dev={tmp_path}", "teacher.path=null")
    problems = _validation_problems(cfg)
    assert problems == [
        f"data.train: file {str(tmp_path / 'nope.tsv')!r} does not exist; pass the path of a TSV/CSV/JSONL file",
        f"data.dev: {str(tmp_path)!r} is a directory; pass the path of a TSV/CSV/JSONL file",
        "teacher.path: no teacher given; set teacher.path=DIR (a fine-tuned classifier)",
    ]
    assert "data.train: no training data given" in _validation_problems(_cfg(setup, "data.train=null"))[0]


def test_teacher_problems(setup, tmp_path):
    (problem,) = _validation_problems(_cfg(setup, f"teacher.path={tmp_path / 'absent'}"))
    assert problem.startswith(f"teacher.path: model directory {str(tmp_path / 'absent')!r} does not exist")
    (problem,) = _validation_problems(_cfg(setup, f"teacher.path={setup['bare']}"))
    assert problem.startswith(
        f"teacher.path: {str(setup['bare'])!r} holds a BertModel, not a sequence-classification"
    )


def test_bad_values(setup, monkeypatch):
    import textdistill.training.precision as precision

    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: frozenset())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    problems = _validation_problems(
        _cfg(
            setup,
            "train.precision=fp8",
            "train.batch_size=8",
            "train.grad_accum=16",
            "train.lr=0",
            "train.warmup_ratio=1",
            "train.lr_schedule=step",
            "data.max_length=4",
            "teacher.cache_dtype=int8",
        )
    )
    assert problems == [
        "train.precision: 'fp8' is not one of auto, fp32, bf16, fp16",
        "train.lr: must be > 0, got 0.0",
        "train.grad_accum: must be between 1 and train.batch_size (8), got 16",
        "train.lr_schedule: 'step' is not one of linear, cosine, constant",
        "train.warmup_ratio: must be in [0, 1), got 1.0",
        "data.max_length: must be >= 8, got 4",
        "teacher.cache_dtype: 'int8' is not one of fp16, bf16, fp32",
    ]
    # A best-model metric evaluation never reports would never improve: no model would be saved.
    (problem,) = _validation_problems(_cfg(setup, "train.metric=macro-f1"))
    assert problem == (
        # data.regression unset (inferred when the run reads the data): either kind's metrics are valid
        "train.metric: 'macro-f1' is not a task metric; did you mean 'macro_f1'? "
        "(choose one of accuracy, macro_f1, mcc, f1, pearson, spearman, mse, last, or leave it unset)"
    )
    problem = _validation_problems(_cfg(setup, "train.metric=accuracy", "data.regression=true"))[0]
    assert problem.startswith("train.metric: 'accuracy' is not a regression metric (choose one of pearson")
    validate_config(_cfg(setup, "train.metric=mcc"))
    validate_config(_cfg(setup, "train.metric=last"))
    # fp16 on the CPU the run would use is refused before any weights load or run dir is made.
    (problem,) = _validation_problems(_cfg(setup, "train.precision=fp16"))
    assert problem.startswith("train.precision: fp16 autocast is for GPUs")
    validate_config(_cfg(setup, "train.grad_accum=8", "train.batch_size=8"))  # accum == batch is fine


def test_impossible_layer_map_and_unavailable_features(setup):
    cfg = _cfg(
        setup,
        "objective=[{name: hidden_mse, layer_map: {strategy: explicit, pairs: [[1, 2], [2, 99]]}}]",
    )
    (problem,) = _validation_problems(cfg)
    assert problem.startswith("objective.0 (hidden_mse).layer_map.pairs.1: teacher layer 99 is out of range")
    assert "valid: 0..4" in problem
    cfg = load_config(
        None,
        [
            f"teacher.path={setup['teacher']}",
            f"data.train={setup['train']}",
            f"output_dir={setup['out']}",
            "student.type=bilstm",
            "objective=[{name: kd_kl}, {name: attention_mse}]",
        ],
    )
    (problem,) = _validation_problems(cfg)
    # The message names the term, the student and what it lacks.
    assert problem.startswith(
        "objective.1 (attention_mse): attention_mse needs attention_scores from the student"
    )
    assert "'bilstm'" in problem and "provides only logits" in problem


def test_existing_run_dir_refused_without_overwrite(setup):
    out = setup["out"]
    out.mkdir()
    (out / "run.json").write_text("{}")
    (problem,) = _validation_problems(_cfg(setup))
    assert problem == (
        f"output_dir: {str(out)!r} already holds a run; pass --overwrite to replace it or choose another"
    )
    validate_config(_cfg(setup, "overwrite=true"))
    assert (out / "run.json").read_text() == "{}"  # validation never empties it
    (out / "run.json").unlink()
    (out / "notes.txt").write_text("mine")
    (problem,) = _validation_problems(_cfg(setup, "overwrite=true"))  # never overwrite a non-run dir
    assert "is not empty and is not a textdistill run directory" in problem


def test_finetune_mode(setup):
    cfg = load_config(
        None,
        [
            f"student.path={setup['teacher']}",
            f"data.train={setup['train']}",
            f"output_dir={setup['out']}",
        ],
    )
    # The default objective (kd_kl) needs a teacher; finetune runs hard_ce instead, and says so.
    assert "kd_kl needs a teacher" in _validation_problems(cfg, "finetune")[0]
    ft = for_mode(cfg, "finetune")
    assert [t.name for t in ft.objective] == ["hard_ce"]
    assert for_mode(cfg, "distill") is cfg
    v = validate_config(ft, "finetune")
    assert v.teacher_info is None and v.student_info is not None and v.student_info.num_layers == 4
    (problem,) = _validation_problems(load_config(None, [f"data.train={setup['train']}"]), "finetune")
    assert problem.startswith("student: fine-tuning trains a pretrained model")
    with pytest.raises(ConfigError, match="mode 'train' is not one of distill, finetune"):
        validate_config(cfg, "train")
