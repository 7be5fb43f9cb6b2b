"""Teacher-output cache: cached and live teachers give equal losses and gradients; fingerprints, atomicity."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_sentiment_rows
from textdistill.config.schema import (
    Config,
    DataConfig,
    LossTermConfig,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
)
from textdistill.data.collate import Collator
from textdistill.data.encoding import EncodedDataset
from textdistill.data.labels import LabelMap
from textdistill.data.readers import Example
from textdistill.errors import ConfigError, DataError, ModelError
from textdistill.losses import Objective
from textdistill.models.outputs import FeatureRequest
from textdistill.models.students import build_student
from textdistill.models.teacher import load_teacher, load_tokenizer
from textdistill.training.distiller import LiveTeacher, model_inputs
from textdistill.training.teacher_cache.build import build_teacher_cache
from textdistill.training.teacher_cache.cached import CachedTeacher
from textdistill.training.teacher_cache.dev_eval import EVAL_DIR, teacher_dev_evaluation
from textdistill.training.teacher_cache.source import build_teacher_source
from textdistill.training.teacher_cache.spec import (
    CACHE_DTYPES,
    cache_fingerprint,
    prepare_fingerprint,
    teacher_hidden_layers,
)
from textdistill.training.teacher_cache.store import CacheInvalid, TeacherCache
from textdistill.training.teacher_cache.writer import CacheTooLarge, human_bytes

CPU = torch.device("cpu")
LABELS = LabelMap(("negative", "positive"))
BUILD_BATCH = 8

# Objectives covering every storage path: logits only; hidden states (a subset of indices) + stored scores;
# stored Q/K/V; stored probabilities; scores/probabilities derived from stored Q/K and from stored scores.
OBJECTIVES = {
    "logits": [LossTermConfig("kd_kl", params={"temperature": 2.0})],
    "hidden_attention": [
        LossTermConfig("kd_kl"),
        LossTermConfig("hidden_mse"),
        LossTermConfig("attention_mse"),
    ],
    "minilmv2": [LossTermConfig("minilmv2")],
    "attention_probs": [LossTermConfig("attention_kl")],
    "derived": [
        LossTermConfig("minilmv2"),
        LossTermConfig("attention_mse"),
        LossTermConfig("attention_kl"),
        LossTermConfig("pkd"),
    ],
}

Setup = namedtuple("Setup", "teacher_dir teacher tokenizer ds collator")


def make_examples(n: int, seed: int, augmented: int = 0) -> list[Example]:
    """``n`` originals with sparse ids (0, 3, 6, ...) and ``augmented`` unlabelled copies with fresh ids."""
    rows = make_sentiment_rows(n, seed=seed)
    out = [Example(id=3 * i, text=text, label=label) for i, (text, label) in enumerate(rows)]
    for j in range(augmented):
        text = rows[j][0].split()
        out.append(Example(id=10_000 + j, text=" ".join(reversed(text)) + " film", is_original=False))
    return out


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a shared CPU they make every op wait for the others."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def setup(tiny_teacher_dir: Path) -> Setup:
    teacher = load_teacher(tiny_teacher_dir)
    tok = load_tokenizer(tiny_teacher_dir)
    ds = EncodedDataset(make_examples(20, seed=3, augmented=4), tok, 16, LABELS)
    return Setup(tiny_teacher_dir, teacher, tok, ds, Collator.for_tokenizer(tok))


def make_objective(name: str, teacher) -> tuple[torch.nn.Module, Objective]:
    student = build_student(StudentConfig(type="truncate", num_layers=2), teacher, 2)
    return student, Objective(OBJECTIVES[name], teacher.info, student.info)


def build(s: Setup, directory: Path, objective: Objective | None = None, **kw) -> TeacherCache:
    request = objective.teacher_request() if objective is not None else kw.pop("request", FeatureRequest())
    hidden = teacher_hidden_layers(objective) if objective is not None and request.hidden_states else None
    kw.setdefault("cache_dtype", "fp32")
    kw.setdefault("quiet", True)
    kw.setdefault("datasets", [s.ds])
    return build_teacher_cache(
        s.teacher,
        kw.pop("datasets"),
        s.collator,
        directory=directory,
        request=request,
        hidden_layers=hidden,
        batch_size=BUILD_BATCH,
        precision="fp32",
        **kw,
    )


def items_by_id(ds: EncodedDataset) -> dict[int, dict]:
    return {ds[i]["example_id"]: ds[i] for i in range(len(ds))}


def build_order_batches(cache: TeacherCache, s: Setup) -> list[dict[str, torch.Tensor]]:
    """The batches of the build pass: cache rows are in build order, ``BUILD_BATCH`` per batch."""
    items = items_by_id(s.ds)
    ordered = [items[int(i)] for i in cache.ids]
    return [s.collator(ordered[k : k + BUILD_BATCH]) for k in range(0, len(ordered), BUILD_BATCH)]


def loss_and_grads(student, objective, teacher_out, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    student.zero_grad(set_to_none=True)
    objective.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the student trains with dropout: the same masks for the live and cached runs
    out = student(**model_inputs(batch), features=objective.student_request())
    loss, _ = objective(out.float(), teacher_out, batch)
    loss.backward()
    grads = {
        f"{tag}.{n}": p.grad.clone()
        for tag, m in (("student", student), ("objective", objective))
        for n, p in m.named_parameters()
        if p.grad is not None
    }
    return loss.detach(), grads


def count_forwards(monkeypatch, teacher) -> list[int]:
    calls = [0]
    original = teacher.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(teacher, "forward", counted)
    return calls


def forbid_forward(monkeypatch, teacher) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("the teacher ran although the cache should have been reused")

    monkeypatch.setattr(teacher, "forward", boom)


# ------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_fp32_cache_gives_identical_loss_and_gradients(setup: Setup, tmp_path: Path, name: str) -> None:
    """Same batch as the build pass -> bit-identical teacher outputs, so identical loss and gradients."""
    student, objective = make_objective(name, setup.teacher)
    cache = build(setup, tmp_path / "c", objective)
    live = LiveTeacher(setup.teacher, objective.teacher_request(), "fp32", CPU)
    cached = CachedTeacher(cache, objective.teacher_request(), CPU)
    batches = build_order_batches(cache, setup)
    assert len(batches) == 3
    for batch in batches:
        loss_live, grads_live = loss_and_grads(student, objective, live(batch), batch)
        loss_cached, grads_cached = loss_and_grads(student, objective, cached(batch), batch)
        assert loss_live.item() > 0
        assert torch.equal(loss_live, loss_cached)
        assert grads_live.keys() == grads_cached.keys() and grads_live
        for k in grads_live:
            assert torch.equal(grads_live[k], grads_cached[k]), k


@pytest.mark.parametrize("name", ["derived"])  # hidden states, stored Q/K/V and scores, derived maps
def test_fp32_cache_on_other_batches_matches_to_float32_rounding(
    setup: Setup, tmp_path: Path, name: str
) -> None:
    """Training batches differ from the build pass's (other rows, other padded length), so the live teacher
    runs its matmuls with other shapes: its outputs may differ from the cached ones in the last float32 bits
    (measured: up to 2.4e-7 on hidden states of magnitude ~3, i.e. one ulp; logits/embeddings exact). The
    tolerances below are a few ulps, not a loosened check."""
    student, objective = make_objective(name, setup.teacher)
    cache = build(setup, tmp_path / "c", objective)
    live = LiveTeacher(setup.teacher, objective.teacher_request(), "fp32", CPU)
    cached = CachedTeacher(cache, objective.teacher_request(), CPU)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(setup.ds))
    for k in range(0, len(order), 5):
        batch = setup.collator([setup.ds[int(i)] for i in order[k : k + 5]])
        loss_live, grads_live = loss_and_grads(student, objective, live(batch), batch)
        loss_cached, grads_cached = loss_and_grads(student, objective, cached(batch), batch)
        torch.testing.assert_close(loss_cached, loss_live, rtol=2e-6, atol=0)
        for key in grads_live:
            torch.testing.assert_close(grads_cached[key], grads_live[key], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["derived"])  # hidden states, stored Q/K/V and scores, derived maps
@pytest.mark.parametrize(("dtype", "rtol"), [("fp16", 1e-3), ("bf16", 8e-3)])
def test_16bit_storage_is_the_live_output_rounded(setup: Setup, tmp_path: Path, name, dtype, rtol) -> None:
    """16-bit caches hold exactly the live fp32 outputs rounded to the storage dtype (zeros at padding); the
    loss moves only by the rounding's effect: ``rtol`` is twice the dtype's unit roundoff (fp16: 2^-11 =
    4.9e-4, bf16: 2^-8 = 3.9e-3); the measured relative change is at most about half the unit roundoff."""
    student, objective = make_objective(name, setup.teacher)
    request = objective.teacher_request()
    cache = build(setup, tmp_path / "c", objective, cache_dtype=dtype)
    assert cache.dtype == dtype
    live = LiveTeacher(setup.teacher, request, "fp32", CPU)
    cached = CachedTeacher(cache, request, CPU)
    torch_dtype = CACHE_DTYPES[dtype]

    def rounded(x: torch.Tensor) -> torch.Tensor:
        return x.to(torch_dtype).float()

    for batch in build_order_batches(cache, setup):
        a, b = live(batch), cached(batch)
        m = batch["attention_mask"].bool()
        assert torch.equal(b.logits, rounded(a.logits))
        for i in cache.spec.hidden:
            assert torch.equal(b.hidden_states[i][m], rounded(a.hidden_states[i][m]))
        for layer in cache.spec.qkv:
            for x_live, x_cached in zip(a.qkv[layer], b.qkv[layer]):
                assert torch.equal(x_cached[m], rounded(x_live[m]))
        for layer in cache.spec.scores:
            pair = (m[:, None, :, None] & m[:, None, None, :]).expand_as(a.attention_scores[layer])
            assert torch.equal(b.attention_scores[layer][pair], rounded(a.attention_scores[layer][pair]))
        loss_live, _ = loss_and_grads(student, objective, a, batch)
        loss_cached, _ = loss_and_grads(student, objective, b, batch)
        torch.testing.assert_close(loss_cached, loss_live, rtol=rtol, atol=0)


def test_outputs_shaped_like_live_with_zeros_at_padding(setup: Setup, tmp_path: Path) -> None:
    student, objective = make_objective("derived", setup.teacher)
    request = objective.teacher_request()
    cache = build(setup, tmp_path / "c", objective)
    # layer map 'last' (minilmv2) and 'uniform' 4 -> 2: Q/K/V of layer 3, scores/probs of layers 1 and 3
    assert cache.spec.qkv == (3,) and cache.spec.scores == (1,) and cache.spec.probs == ()
    assert cache.spec.hidden == (2,)  # pkd reads teacher layer 2 only (its last pair is excluded)
    batch = setup.collator([setup.ds[i] for i in (0, 21, 5)])  # mixed lengths: padding in every row but one
    a = LiveTeacher(setup.teacher, request, "fp32", CPU)(batch)
    b = CachedTeacher(cache, request, CPU)(batch)
    m = batch["attention_mask"].bool()
    assert (~m).any()
    assert b.logits.shape == a.logits.shape and b.logits.dtype == torch.float32
    assert b.num_heads == a.num_heads == 4 and b.attention_mask is batch["attention_mask"]
    assert len(b.hidden_states) == len(a.hidden_states) == 5
    assert b.hidden_states[2].shape == a.hidden_states[2].shape
    assert not b.hidden_states[2][~m].any()
    with pytest.raises(
        ModelError, match=r"hidden_states\[1\] is not in the teacher cache \(it holds indices \[2\]\)"
    ):
        _ = b.hidden_states[1]
    assert torch.isnan(tuple(b.hidden_states)[1]).all()  # bypassing the index check gives NaN, never zeros
    assert set(b.attention_scores) == set(a.attention_scores) == {1, 3}
    assert set(b.attentions) == {1, 3} and set(b.qkv) == {3}
    for layer in (1, 3):
        assert b.attention_scores[layer].shape == a.attention_scores[layer].shape
        pad_pair = ~(m[:, None, :, None] & m[:, None, None, :]).expand_as(b.attention_scores[layer])
        assert not b.attention_scores[layer][pad_pair].any()
        assert not b.attentions[layer][pad_pair].any()
        # probabilities of real query rows sum to 1 over real keys
        row_sums = b.attentions[layer].sum(-1)[m[:, None, :].expand(-1, 4, -1)]
        torch.testing.assert_close(row_sums, torch.ones_like(row_sums))
    for x, y in zip(a.qkv[3], b.qkv[3]):
        assert x.shape == y.shape and not y[~m].any()


def test_teacher_hidden_layers_follow_the_layer_map(setup: Setup) -> None:
    _, objective = make_objective("hidden_attention", setup.teacher)
    assert teacher_hidden_layers(objective) == {0, 2, 4}  # uniform 4 -> 2: 0<-0, 1<-2, 2<-4
    _, logits_only = make_objective("logits", setup.teacher)
    assert teacher_hidden_layers(logits_only) == set()


# ------------------------------------------------------------------------------------------ fingerprints
def test_matching_fingerprint_reuses_without_a_teacher_forward(
    setup: Setup, tmp_path: Path, monkeypatch
) -> None:
    _, objective = make_objective("hidden_attention", setup.teacher)
    first = build(setup, tmp_path / "c", objective)
    logits = first.read("logits", slice(None)).clone()
    forbid_forward(monkeypatch, setup.teacher)
    again = build(setup, tmp_path / "c", objective)
    assert again.fingerprint == first.fingerprint
    assert torch.equal(again.read("logits", slice(None)), logits)


@pytest.mark.parametrize("change", ["max_length", "weights", "features", "cache_dtype", "data"])
def test_fingerprint_mismatch_rebuilds(setup: Setup, tmp_path: Path, monkeypatch, change: str) -> None:
    _, objective = make_objective("hidden_attention", setup.teacher)
    first = build(setup, tmp_path / "c", objective)
    kw: dict = {}
    if change == "max_length":  # shorter inputs: truncated examples change
        kw["datasets"] = [EncodedDataset(setup.ds.examples, setup.tokenizer, 6, LABELS)]
    elif change == "weights":
        with torch.no_grad():
            setup.teacher.model.classifier.weight.add_(1e-3)
    elif change == "features":
        _, objective = make_objective("minilmv2", setup.teacher)
    elif change == "cache_dtype":
        kw["cache_dtype"] = "fp16"
    elif change == "data":
        kw["datasets"] = [EncodedDataset(make_examples(20, seed=4), setup.tokenizer, 16, LABELS)]
    calls = count_forwards(monkeypatch, setup.teacher)
    second = build(setup, tmp_path / "c", objective, **kw)
    assert calls[0] > 0
    assert second.fingerprint != first.fingerprint
    assert TeacherCache.open(tmp_path / "c").fingerprint == second.fingerprint  # replaced in place
    if change == "weights":  # the new logits are the changed teacher's
        live = LiveTeacher(setup.teacher, FeatureRequest(), "fp32", CPU)
        batch = build_order_batches(second, setup)[0]
        assert torch.equal(CachedTeacher(second, FeatureRequest(), CPU)(batch).logits, live(batch).logits)


def test_fingerprint_covers_max_length_and_tokenizer_files(setup: Setup, tmp_path: Path) -> None:
    kw = {"request": FeatureRequest(), "device": CPU, "precision": "fp32"}
    base, *_ = prepare_fingerprint(setup.teacher, [setup.ds], tokenizer_path=setup.teacher_dir, **kw)
    assert base["max_length"] == 16 and base["tokenizer"] is not None
    longer, *_ = prepare_fingerprint(
        setup.teacher, [setup.ds], tokenizer_path=setup.teacher_dir, max_length=32, **kw
    )
    assert cache_fingerprint(longer) != cache_fingerprint(base)  # same inputs, other max_length
    vocab = setup.teacher_dir / "vocab.txt"
    vocab.write_text(vocab.read_text(encoding="utf-8") + "extra\n", encoding="utf-8")
    edited, *_ = prepare_fingerprint(setup.teacher, [setup.ds], tokenizer_path=setup.teacher_dir, **kw)
    assert edited["tokenizer"] != base["tokenizer"]


def test_pass_precision_is_bf16_only_where_bf16_is_fast(setup: Setup, monkeypatch) -> None:
    import textdistill.training.precision as precision

    kw = {"request": FeatureRequest(), "device": CPU, "precision": "auto"}
    monkeypatch.setattr(precision, "cpu_supports_fast_bf16", lambda: False)
    assert prepare_fingerprint(setup.teacher, [setup.ds], **kw)[3] == "fp32"
    monkeypatch.setattr(precision, "cpu_supports_fast_bf16", lambda: True)
    components, _, _, resolved = prepare_fingerprint(setup.teacher, [setup.ds], **kw)
    assert resolved == components["precision"] == "bf16"


# -------------------------------------------------------------------------------- corrupt / partial
def _drop_array(d: Path) -> None:
    (d / "hidden_2.bin").unlink()


def _truncate_array(d: Path) -> None:
    data = (d / "logits.bin").read_bytes()
    (d / "logits.bin").write_bytes(data[:-4])


def _incomplete_meta(d: Path) -> None:
    meta = json.loads((d / "meta.json").read_text())
    del meta["complete"]
    (d / "meta.json").write_text(json.dumps(meta))


def _garbage_meta(d: Path) -> None:
    (d / "meta.json").write_text("{not json")


def _no_meta(d: Path) -> None:
    (d / "meta.json").unlink()


@pytest.mark.parametrize("damage", [_drop_array, _truncate_array, _incomplete_meta, _garbage_meta, _no_meta])
def test_corrupt_or_partial_cache_is_rebuilt(setup: Setup, tmp_path: Path, monkeypatch, damage) -> None:
    _, objective = make_objective("hidden_attention", setup.teacher)
    tmp_path = tmp_path / "area"  # holds only caches
    first = build(setup, tmp_path / "c", objective)
    logits = first.read("logits", slice(None)).clone()
    del first
    damage(tmp_path / "c")
    with pytest.raises(CacheInvalid):
        TeacherCache.open(tmp_path / "c")
    calls = count_forwards(monkeypatch, setup.teacher)
    rebuilt = build(setup, tmp_path / "c", objective)
    assert calls[0] > 0
    assert torch.equal(rebuilt.read("logits", slice(None)), logits)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temporary or stale directories left


def test_crash_mid_pass_leaves_no_cache(setup: Setup, tmp_path: Path, monkeypatch) -> None:
    _, objective = make_objective("hidden_attention", setup.teacher)
    tmp_path = tmp_path / "area"  # holds only caches
    original = setup.teacher.forward
    calls = [0]

    def dies_on_third_call(*args, **kwargs):  # probe, first batch, then the crash
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(setup.teacher, "forward", dies_on_third_call)
    with pytest.raises(KeyboardInterrupt):
        build(setup, tmp_path / "c", objective)
    assert list(tmp_path.iterdir()) == []  # neither the cache nor its partial temporary directory


# ------------------------------------------------------------------------------------------ disk space
def test_disk_estimate_is_exact_and_checked(setup: Setup, tmp_path: Path, monkeypatch, capsys) -> None:
    _, objective = make_objective("derived", setup.teacher)
    cache = build(setup, tmp_path / "c", objective, quiet=False)
    written = sum(f.stat().st_size for f in (tmp_path / "c").glob("*.bin")) + 16 * cache.num_examples
    assert f"about {human_bytes(written)} on disk" in capsys.readouterr().out

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=written))
    with pytest.raises(ConfigError, match="teacher.cache_dir") as err:
        build(setup, tmp_path / "d", objective)
    assert f"needs about {human_bytes(written)}" in str(err.value)
    assert f"has only {human_bytes(written)} free" in str(err.value)
    assert not (tmp_path / "d").exists()


def test_fp16_overflow_is_refused_with_the_fix(setup: Setup, tmp_path: Path) -> None:
    with torch.no_grad():
        setup.teacher.model.classifier.weight.mul_(1e7)
    with pytest.raises(ConfigError, match="beyond fp16's largest value 65504.*bf16"):
        build(setup, tmp_path / "c", cache_dtype="fp16")
    assert not (tmp_path / "c").exists()
    assert (
        build(setup, tmp_path / "c", cache_dtype="bf16").read("logits", slice(None)).float().abs().max()
        > 65504
    )


# ------------------------------------------------------------------------------------------- lookups
def test_lookup_errors_name_the_problem(setup: Setup, tmp_path: Path) -> None:
    cache = build(setup, tmp_path / "c")
    cached = CachedTeacher(cache, FeatureRequest(), CPU)
    batch = setup.collator([setup.ds[0], setup.ds[1]])
    with pytest.raises(DataError, match=r"example ids \[99999\] are not in the teacher cache"):
        cached({**batch, "example_ids": torch.tensor([0, 99999])})
    with pytest.raises(DataError, match="needs batch\\['example_ids'\\]"):
        cached({k: v for k, v in batch.items() if k != "example_ids"})
    # the same ids with other inputs: another length, or the same length and other tokens
    shorter = {**batch, "attention_mask": batch["attention_mask"].clone()}
    n = int(shorter["attention_mask"][0].sum())
    shorter["attention_mask"][0, n - 1] = 0
    with pytest.raises(
        DataError, match=rf"example id 0 does not match .* \({n - 1} real tokens, the cache has {n}\)"
    ):
        cached(shorter)
    edited = {**batch, "input_ids": batch["input_ids"].clone()}
    edited["input_ids"][1, 1] += 1
    with pytest.raises(DataError, match=r"example ids \[0, 3\] does not match .* \(other input_ids\)"):
        cached(edited)
    with pytest.raises(ModelError, match="does not hold hidden_states"):
        CachedTeacher(cache, FeatureRequest(hidden_states=True), CPU)
    with pytest.raises(ModelError, match=r"attention_scores of layers \[0\]"):
        CachedTeacher(cache, FeatureRequest(attention_scores={0}), CPU)


def test_ids_across_datasets(setup: Setup, tmp_path: Path) -> None:
    extra = EncodedDataset(
        make_examples(20, seed=3)[:5], setup.tokenizer, 16, LABELS
    )  # same ids, same inputs
    cache = build(setup, tmp_path / "c", datasets=[setup.ds, extra])
    assert cache.num_examples == len(setup.ds)
    clash = EncodedDataset(make_examples(5, seed=9), setup.tokenizer, 16, LABELS)  # ids 0..12, other texts
    with pytest.raises(DataError, match="example id 0 appears twice with different inputs"):
        build(setup, tmp_path / "d", datasets=[setup.ds, clash])


# ------------------------------------------------------------------------------ build_teacher_source
def make_config(s: Setup, tmp_path: Path, **teacher) -> Config:
    return Config(
        teacher=TeacherConfig(path=str(s.teacher_dir), **teacher),
        data=DataConfig(max_length=16),
        train=TrainConfig(eval_batch_size=BUILD_BATCH),
        output_dir=str(tmp_path / "runs" / "one"),
    )


def test_source_is_live_without_cache(setup: Setup, tmp_path: Path) -> None:
    _, objective = make_objective("logits", setup.teacher)
    source = build_teacher_source(
        make_config(setup, tmp_path, cache=False),
        setup.teacher,
        objective,
        [setup.ds],
        setup.collator,
        CPU,
        "fp32",
    )
    assert isinstance(source, LiveTeacher)
    assert not (tmp_path / "runs").exists()


def test_default_auto_caches_and_falls_back_to_live_only_when_it_does_not_fit(
    setup: Setup, tmp_path: Path, monkeypatch, capsys
) -> None:
    assert TeacherConfig().cache is None  # the default is auto
    _, objective = make_objective("logits", setup.teacher)
    args = (setup.teacher, objective, [setup.ds], setup.collator, CPU, "fp32")
    assert isinstance(build_teacher_source(make_config(setup, tmp_path), *args, quiet=True), CachedTeacher)

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=1000))
    elsewhere = tmp_path / "full-disk"
    auto = build_teacher_source(make_config(setup, tmp_path, cache_dir=str(elsewhere)), *args)
    assert isinstance(auto, LiveTeacher)
    assert "teacher cache: not used, the teacher runs live" in capsys.readouterr().out
    with pytest.raises(CacheTooLarge, match="teacher.cache_dir"):
        build_teacher_source(make_config(setup, tmp_path, cache=True, cache_dir=str(elsewhere)), *args)
    assert not elsewhere.exists()


# ----------------------------------------------------------------------------- teacher dev evaluations
def _dev(setup: Setup, seed: int = 3) -> EncodedDataset:
    return EncodedDataset(make_examples(20, seed=seed), setup.tokenizer, 16, LABELS)


def _scored(setup: Setup, calls: list[int]):
    from textdistill.evaluation.metrics import evaluate_model

    dev = _dev(setup)

    def compute():
        calls.append(1)
        batches = [
            setup.collator([dev[i] for i in range(b, min(b + 8, len(dev)))]) for b in range(0, len(dev), 8)
        ]
        return evaluate_model(setup.teacher, batches, regression=False, device=CPU)

    return compute


def test_teacher_dev_evaluation_is_computed_once_then_reused(setup: Setup, tmp_path: Path) -> None:
    calls: list[int] = []
    dev = _dev(setup)
    cfg = make_config(setup, tmp_path)
    first = teacher_dev_evaluation(cfg, setup.teacher, dev, "fp32", _scored(setup, calls), quiet=True)
    (stored,) = (tmp_path / "runs" / ".textdistill-cache" / EVAL_DIR).glob("*.npz")
    other_run = replace(cfg, output_dir=str(tmp_path / "runs" / "two"))
    again = teacher_dev_evaluation(other_run, setup.teacher, dev, "fp32", _scored(setup, calls), quiet=True)
    assert calls == [1]
    assert again[0] == first[0] and torch.equal(again[1], first[1])
    assert first[1].shape == (len(dev), 2) and first[0]["n"] == len(dev)

    # another precision, other weights or other inputs: computed again, stored beside the first
    teacher_dev_evaluation(cfg, setup.teacher, dev, "bf16", _scored(setup, calls), quiet=True)
    other = _dev(setup, seed=4)
    teacher_dev_evaluation(cfg, setup.teacher, other, "fp32", lambda: (calls.append(1), first)[1], quiet=True)
    with torch.no_grad():
        setup.teacher.model.classifier.bias.add_(1.0)
    teacher_dev_evaluation(cfg, setup.teacher, dev, "fp32", _scored(setup, calls), quiet=True)
    assert len(calls) == 4
    assert len(list(stored.parent.glob("*.npz"))) == 4

    # an unreadable file is recomputed and rewritten
    stored.write_bytes(b"garbage")
    with torch.no_grad():
        setup.teacher.model.classifier.bias.sub_(1.0)
    fixed = teacher_dev_evaluation(cfg, setup.teacher, dev, "fp32", _scored(setup, calls), quiet=True)
    assert len(calls) == 5 and torch.equal(fixed[1], first[1])
    assert teacher_dev_evaluation(cfg, setup.teacher, dev, "fp32", lambda: 1 / 0, quiet=True)[0] == first[0]


def test_teacher_dev_evaluation_without_cache_stores_nothing(setup: Setup, tmp_path: Path) -> None:
    calls: list[int] = []
    dev = _dev(setup)
    cfg = make_config(setup, tmp_path, cache=False)
    for _ in range(2):
        teacher_dev_evaluation(cfg, setup.teacher, dev, "fp32", _scored(setup, calls), quiet=True)
    assert calls == [1, 1]
    assert not (tmp_path / "runs").exists()


def test_source_builds_then_reuses_across_runs_and_stages(setup: Setup, tmp_path: Path, monkeypatch) -> None:
    _, intermediate = make_objective("hidden_attention", setup.teacher)
    cfg = make_config(setup, tmp_path, cache=True, cache_dtype="fp16")
    args = ([setup.ds], setup.collator, CPU, "fp32")
    source = build_teacher_source(cfg, setup.teacher, intermediate, *args, quiet=True)
    assert isinstance(source, CachedTeacher)
    assert source.cache.directory == tmp_path / "runs" / ".textdistill-cache" / source.cache.fingerprint
    assert source.cache.dtype == "fp16" and source.cache.spec.hidden == (0, 2, 4)

    forbid_forward(monkeypatch, setup.teacher)
    # another run next to the first one: same cache
    other_run = replace(cfg, output_dir=str(tmp_path / "runs" / "two"))
    again = build_teacher_source(other_run, setup.teacher, intermediate, *args, quiet=True)
    assert again.cache.directory == source.cache.directory
    # a logits-only stage: its fingerprint differs, but the intermediate cache holds its logits
    _, prediction = make_objective("logits", setup.teacher)
    stage2 = build_teacher_source(other_run, setup.teacher, prediction, *args, quiet=True)
    assert stage2.cache.directory == source.cache.directory
    batch = build_order_batches(source.cache, setup)[0]
    assert torch.equal(stage2(batch).logits, source(batch).logits)


def test_source_cache_dir_overrides_the_root(setup: Setup, tmp_path: Path) -> None:
    _, objective = make_objective("logits", setup.teacher)
    cfg = make_config(setup, tmp_path, cache=True, cache_dir=str(tmp_path / "elsewhere"))
    args = (setup.teacher, objective, [setup.ds], setup.collator, CPU, "fp32")
    source = build_teacher_source(cfg, *args, quiet=True)
    assert source.cache.directory.parent == tmp_path / "elsewhere"
    explicit = build_teacher_source(cfg, *args, cache_root=tmp_path / "explicit", quiet=True)
    assert explicit.cache.directory.parent == tmp_path / "explicit"
    assert not (tmp_path / "runs").exists()


def test_distiller_trains_the_same_from_the_cache(setup: Setup, tmp_path: Path) -> None:
    """Six optimizer steps (grad_accum 2: micro-batches keep their example_ids) from the fp32 cache end at the
    live run's weights up to float32 rounding (measured max difference 2.4e-8 after Adam steps of ~1e-3)."""
    from textdistill.data.samplers import make_loader
    from textdistill.training.distiller import Distiller

    train_cfg = TrainConfig(
        max_steps=6, batch_size=8, grad_accum=2, precision="fp32", lr=1e-3, warmup_steps=0, progress=False
    )

    def loader_fn(epoch: int, start: int):
        loader = make_loader(
            setup.ds,
            8,
            shuffle=True,
            group_by_length=True,
            seed=1,
            collator=setup.collator,
            start_batch=start,
        )
        loader.batch_sampler.set_epoch(epoch)
        return loader

    def train(cache: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        student, objective = make_objective("derived", setup.teacher)
        cfg = make_config(setup, tmp_path, cache=cache, cache_dtype="fp32")
        source = build_teacher_source(
            cfg, setup.teacher, objective, [setup.ds], setup.collator, CPU, "fp32", quiet=True
        )
        assert isinstance(source, CachedTeacher if cache else LiveTeacher)
        distiller = Distiller(
            student=student,
            objective=objective,
            train_cfg=train_cfg,
            train_loader_fn=loader_fn,
            steps_per_epoch=loader_fn(0, 0).batch_sampler.num_batches,
            teacher=source,
        )
        torch.manual_seed(1)
        distiller.fit()
        return [p.detach().clone() for p in distiller.unwrapped_student().parameters()]

    live, cached = train(False), train(True)
    initial = [p.detach() for p in make_objective("derived", setup.teacher)[0].parameters()]
    assert max((a - b).abs().max().item() for a, b in zip(live, initial)) > 1e-4  # it did train
    for a, b in zip(live, cached):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
