"""The ``textdistill`` command: a finetune -> distill -> evaluate chain (the fine-tuning through the installed
console script in a subprocess), and ``main()`` in-process (fast) for config show/validate and for bad
input, which must exit 2 with one clear message and leave nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import make_sentiment_rows, write_tsv
from textdistill.cli import EXIT_USER_ERROR, main
from textdistill.config.loader import load_config

# report=false: the end-of-run benchmark report has its own tests and would double these runs' time
QUIET = ["train.progress=false", "train.keep_checkpoints=0", "report=false"]


def _console() -> list[str]:
    """The installed console script (falls back to ``python -m textdistill.cli``)."""
    exe = shutil.which("textdistill")
    return [exe] if exe else [sys.executable, "-m", "textdistill.cli"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([*_console(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_finetune_distill_evaluate_chain(tmp_path, capsys, tiny_teacher_dir, sentiment_files):
    train, dev = str(sentiment_files["train"]), str(sentiment_files["dev"])
    ft = _run(
        "finetune",
        "--model",
        str(tiny_teacher_dir),
        "--train",
        train,
        "--dev",
        dev,
        "-o",
        "ft",
        "train.max_steps=4",
        "train.batch_size=16",
        *QUIET,
        cwd=tmp_path,
    )
    assert ft.returncode == 0, ft.stderr
    ft_out = json.loads(ft.stdout[ft.stdout.index("{") :])
    assert ft_out["run_dir"] == "ft"
    assert json.loads((tmp_path / "ft" / "run.json").read_text())["status"] == "finished"
    # fine-tuning replaced the distillation default objective by hard labels
    assert [t.name for t in load_config(tmp_path / "ft" / "config.yaml").objective] == ["hard_ce"]

    # distill and evaluate run through main() in this process: the same code path as the console script
    # without another ~5-10 s of imports per subprocess.
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        rc = main(
            [
                "distill",
                "-t",
                "ft/model",
                "--train",
                train,
                "--dev",
                dev,
                "--output-dir",
                "student",
                "student.type=truncate",
                "student.num_layers=2",
                "train.epochs=1",
                "train.batch_size=32",
                *QUIET,
            ]
        )
        ds_stdout = capsys.readouterr().out
        assert rc == 0
        ds_out = json.loads(ds_stdout[ds_stdout.index("{") :])
        run = json.loads((tmp_path / "student" / "run.json").read_text())
        assert run["status"] == "finished" and run["mode"] == "distill"
        assert ds_out["dev"] == run["results"]["dev"]

        assert main(["evaluate", "-m", "student/model", "-d", dev]) == 0
        metrics = json.loads(capsys.readouterr().out)
    # The saved student, re-scored from disk, matches what the run reported.
    assert metrics == pytest.approx(ds_out["dev"])
    assert metrics["n"] == 48
    # A run directory stands for its best model.
    assert main(["evaluate", "-m", str(tmp_path / "student"), "-d", dev]) == 0
    assert json.loads(capsys.readouterr().out) == metrics


# -- in-process ---------------------------------------------------------------------------------------------
def _main(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what fixtures printed (transformers' progress bars)
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _one_error(err: str) -> str:
    """The message of a single-error exit: one 'textdistill: error:' and no traceback."""
    assert err.startswith("textdistill: error: "), err
    assert err.count("textdistill: error:") == 1 and "Traceback" not in err
    return err


def test_config_show_applies_yaml_and_overrides(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1.0e-3\n  batch_size: 8\n")
    # Overrides given after an option still count (argparse alone would reject them).
    rc, out, _ = _main(
        capsys, "config", "show", "train.epochs=2", "--config", str(path), "train.batch_size=4", "-o", "r"
    )
    assert rc == 0
    shown = yaml.safe_load(out)
    assert (
        shown["train"]["lr"] == 1e-3 and shown["train"]["batch_size"] == 4 and shown["train"]["epochs"] == 2
    )
    assert shown["output_dir"] == "r"
    (tmp_path / "shown.yaml").write_text(out)
    expected = load_config(path, ["train.epochs=2", "train.batch_size=4", "output_dir=r"])
    assert load_config(tmp_path / "shown.yaml") == expected
    rc, out, _ = _main(capsys, "config", "show", "--mode", "finetune")
    assert [t["name"] for t in yaml.safe_load(out)["objective"]] == ["hard_ce"]


def test_config_validate(capsys, tmp_path, tiny_teacher_dir, sentiment_files):
    args = ["--train", str(sentiment_files["train"]), "-o", str(tmp_path / "run")]
    rc, out, _ = _main(
        capsys,
        "config",
        "validate",
        *args,
        f"teacher.path={tiny_teacher_dir}",
        "student.type=truncate",
        "student.num_layers=2",
    )
    assert (rc, out) == (
        0,
        "task: single-sentence 2-class classification, columns sentence -> label, metric accuracy, "
        "logit term kd_kl, lr 5e-05\nconfig and data are valid for distill\n",
    )
    rc, out, _ = _main(
        capsys, "config", "validate", "--mode", "finetune", *args, f"student.path={tiny_teacher_dir}"
    )
    assert out.endswith("logit term hard_ce, lr 5e-05\nconfig and data are valid for finetune\n") and rc == 0
    rc, out, err = _main(capsys, "config", "validate", *args, "train.lrr=1", "student.type=bilstm")
    assert rc == EXIT_USER_ERROR and out == ""
    msg = _one_error(err)
    assert "train.lrr: unknown key; did you mean 'lr'?" in msg
    assert not (tmp_path / "run").exists()


def test_list(capsys):
    rc, out, _ = _main(capsys, "list", "losses")
    assert rc == 0 and {"kd_kl", "hard_ce", "hidden_mse", "minilmv2"} <= set(out.split())
    rc, out, _ = _main(capsys, "list", "students")
    assert rc == 0 and set(out.split()) >= {"pretrained", "truncate", "shrink", "bilstm"}


def test_unrecognized_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["config", "show", "--nope"])
    assert e.value.code == 2
    assert "unrecognized arguments: --nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["config", "show", "-c", "x.yaml", "stray"])  # a leftover that is not key=value


def _distill(tiny_teacher_dir: Path, files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "distill",
        "-t",
        str(tiny_teacher_dir),
        "--train",
        str(files["train"]),
        "--dev",
        str(files["dev"]),
        "-o",
        str(out),
        "student.type=truncate",
        "student.num_layers=2",
        "train.epochs=1",
        *QUIET,
        *extra,
    ]


def test_missing_file(capsys, tmp_path, tiny_teacher_dir, sentiment_files):
    files = {**sentiment_files, "train": tmp_path / "nope.tsv"}
    out = tmp_path / "run"
    rc, _, err = _main(capsys, *_distill(tiny_teacher_dir, files, out))
    assert rc == EXIT_USER_ERROR
    assert f"data.train: file {str(tmp_path / 'nope.tsv')!r} does not exist" in _one_error(err)
    assert not out.exists()


def test_unknown_label_in_dev(capsys, tmp_path, tiny_teacher_dir, sentiment_files):
    dev = write_tsv(tmp_path / "dev3.tsv", make_sentiment_rows(5, seed=4) + [("good but dull", "neutral")])
    out = tmp_path / "run"
    rc, _, err = _main(capsys, *_distill(tiny_teacher_dir, {**sentiment_files, "dev": dev}, out))
    assert rc == EXIT_USER_ERROR
    msg = _one_error(err)
    # names the file, the line (header = line 1) and the label
    assert f"{dev}, line 7: label 'neutral' is not one of the known labels ['negative', 'positive']" in msg
    assert not out.exists()


def test_existing_run_refused_unless_overwrite(capsys, tmp_path, tiny_teacher_dir, sentiment_files):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"status": "finished"}')
    (out / "keep.txt").write_text("earlier run")
    before = sorted(p.name for p in out.iterdir())
    rc, _, err = _main(capsys, *_distill(tiny_teacher_dir, sentiment_files, out))
    assert rc == EXIT_USER_ERROR
    assert "already holds a run; pass --overwrite" in _one_error(err)
    assert sorted(p.name for p in out.iterdir()) == before
    assert (out / "run.json").read_text() == '{"status": "finished"}'
    # With --overwrite the run replaces it.
    rc, _, err = _main(
        capsys, *_distill(tiny_teacher_dir, sentiment_files, out, "train.max_steps=1"), "--overwrite"
    )
    assert rc == 0, err
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert not (out / "keep.txt").exists()


def test_teacher_that_is_not_a_classifier(capsys, tmp_path, sentiment_files):
    from transformers import BertModel

    from conftest import make_tokenizer, tiny_bert_config

    bare = tmp_path / "bare"
    tok = make_tokenizer(bare)
    BertModel(tiny_bert_config(len(tok))).save_pretrained(str(bare))
    out = tmp_path / "run"
    rc, _, err = _main(capsys, *_distill(bare, sentiment_files, out))
    assert rc == EXIT_USER_ERROR
    msg = _one_error(err)
    assert f"teacher.path: {str(bare)!r} holds a BertModel, not a sequence-classification model" in msg
    assert "textdistill finetune" in msg  # the fix
    assert not out.exists()


def test_student_with_another_vocabulary(capsys, tmp_path, tiny_teacher_dir, sentiment_files):
    from transformers import BertForSequenceClassification, BertTokenizerFast

    from conftest import tiny_bert_config

    other = tmp_path / "other"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "zebra"]
    BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}).save_pretrained(str(other))
    torch.manual_seed(0)
    BertForSequenceClassification(tiny_bert_config(len(tokens), layers=1)).save_pretrained(str(other))
    out = tmp_path / "run"
    argv = _distill(tiny_teacher_dir, sentiment_files, out)
    argv = [a for a in argv if not a.startswith("student.")] + [f"student.path={other}"]
    # token-aligned terms cannot compare two tokenizations: refused, naming the fix, nothing written
    rc, _, err = _main(capsys, *argv, "objective=[{name: kd_kl}, {name: attention_mse}]")
    assert rc == EXIT_USER_ERROR
    msg = _one_error(err)
    assert "attention_mse match the teacher's tokens" in msg
    assert "use sentence-level terms only (kd_kl, kd_soft_ce, kd_mse, hard_ce)" in msg
    assert not out.exists()
    # logit KD works: each model reads the text with its own tokenizer
    rc, _, err = _main(capsys, *argv)
    assert rc == 0, err
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(str(out / "model"))) == len(tokens)


def test_evaluate_errors(capsys, tmp_path, tiny_teacher_dir, sentiment_files):
    rc, _, err = _main(capsys, "evaluate", "-m", str(tiny_teacher_dir), "-d", str(tmp_path / "missing.tsv"))
    assert rc == EXIT_USER_ERROR
    assert f"data file {str(tmp_path / 'missing.tsv')!r} does not exist" in _one_error(err)
    rc, _, err = _main(capsys, "evaluate", "-m", str(tmp_path / "nomodel"), "-d", str(sentiment_files["dev"]))
    assert rc == EXIT_USER_ERROR
    assert f"{str(tmp_path / 'nomodel')!r} does not exist" in _one_error(err)


def test_debug_shows_the_exception(tmp_path, sentiment_files):
    from textdistill.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        main(["--debug", "distill", "-t", str(tmp_path / "absent"), "--train", str(sentiment_files["train"])])
