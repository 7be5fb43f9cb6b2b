"""textdistill vs TextBrewer 0.2.1: the same distillation jobs, interleaved, in one invocation.

Two jobs, each run by both tools from the same fine-tuned teacher, the same student weights, the same
examples in the same batches, the same optimiser, schedule, batch size, max length and epochs:

    logit         logit KD only: textdistill ``kd_kl`` (T=1) vs TextBrewer ``kd_loss_type='ce'`` (T=1).
                  KL(p_T || p_S) = CE(p_T, p_S) - H(p_T) and H(p_T) does not depend on the student, so both
                  give the same gradients (the loss values differ by the teacher's entropy).
    intermediate  TinyBERT-style single stage: hidden-state MSE (with a learned student -> teacher width
                  projection per pair) + attention-score MSE + logit KD (T=1), all weights 1, on the same
                  layer pairs (:func:`even_layer_pairs`; textdistill's ``uniform`` map needs T / S integer).

Each run is a fresh subprocess (so peak RSS, the process's ``VmHWM``, is per run; see :func:`rss_mib` for
why not ``ru_maxrss``), run in the order textdistill, TextBrewer, textdistill, TextBrewer ... (see
/work/shared/design/MEASURING.md); a speed claim is the per-pair ratio of wall times. Settings:

    best   each tool's best out-of-the-box setting. textdistill: teacher.cache=true (a cold cache per run,
           built inside the timed run), train.precision=auto, data.group_by_length=true. TextBrewer: its
           defaults (GeneralDistiller, no logit cache, fp32 on CPU: its fp16 needs apex + CUDA).
    warm   textdistill's best setting with a warm cache: the teacher outputs (and the teacher's dev
           evaluation) were stored by an earlier run on the same teacher and data, as when a user tries
           several students, seeds or hyper-parameters: the ``best`` run of the same job and seed leaves its
           cold-built cache (after its timing) to the warm run. TextBrewer has no cache, so its ``best``
           runs of the same job and seed are the pair.
    fp32   both in fp32 (textdistill train.precision=fp32). Skipped when ``auto`` already resolves to fp32
           on this machine (CPUs without bf16): it would repeat ``best`` exactly.

Same work, verified per run: the student starts from one saved shrink student (built once with
``textdistill.models.students.build_student``); TextBrewer's side reads the TSV files itself and picks
textdistill's seeded subset by row id; its dataloader replays textdistill's seeded, length-grouped batch
order through a batch sampler (the example ids each tool trained on, step by step, are recorded and
compared); both tokenize with the teacher's tokenizer (token ids compared); both pad each
batch to its longest sequence (``--tb-padding max_length`` shows TextBrewer with fixed padding instead); both
use AdamW (lr, weight decay 0.01 except 1-d parameters), the same linear warm-up/decay schedule (textdistill's
formula), gradient clipping at 1.0, and evaluate on the dev set after every epoch.

Known differences, each tool's own definition of the "same" loss (documented, not equalised). On a
length-grouped batch they vanish: ``benchmarks/intermediate_parity.py`` checks one step of the intermediate job
(same gradients to 1e-7) and compares both tools over reseeded projection inits and dropout streams.

* hidden MSE / attention MSE: textdistill averages per example then over the batch; TextBrewer divides the
  batch's masked sum by the batch's total real tokens (long examples weigh more).
* projection init: both N(0, 0.02) with zero bias (textdistill's default since its projection-init fix;
  runs recorded before it used ``nn.Linear``'s default on the textdistill side).
  TextBrewer clips the gradient norm of the student only, textdistill of student + projections.
* attention features: textdistill matches pre-softmax scores QK^T/sqrt(d) (TinyBERT), recomputed from
  hooked Q/K projections. HF models never return scores, so TextBrewer's adaptor gets the same scores from
  the same kind of Q/K hooks written here (``--tb-attention scores``, default). ``--tb-attention probs``
  instead feeds TextBrewer HF's ``output_attentions`` probabilities, the style of TextBrewer's HF example
  adaptors; transformers 5 only returns them from eager attention, so both models then load with
  ``attn_implementation="eager"`` (a different, slower job).
* textdistill also evaluates the teacher on dev once per run (for retention and agreement; stored with the
  teacher cache, so a warm run reads it); TextBrewer has no such step. It is inside the timed wall time.
* textdistill keeps the best-dev epoch; TextBrewer the last. Both accuracies are reported.

Compatibility shim (TextBrewer 0.2.1 with torch 2.13 / transformers 5): TextBrewer imports a tensorboard
``SummaryWriter`` at import time, although it only uses it when ``TrainingConfig.log_dir`` is set. Installing
tensorboard would change textdistill's own behaviour (its MetricsLogger writes TensorBoard events when
tensorboard is importable), so when neither ``tensorboardX`` nor ``tensorboard`` is installed the TextBrewer
subprocess registers a stub ``tensorboardX`` module whose ``SummaryWriter`` refuses to be created for the
duration of ``import textbrewer`` only (accelerate probes ``find_spec("tensorboardX")`` later), and runs
with ``log_dir=None``. Nothing else is needed: TextBrewer never imports transformers and only reads model
outputs through its adaptors (here: ``SequenceClassifierOutput.logits`` / ``.hidden_states``).

Example (the command behind docs/results.md):
    python benchmarks/vs_textbrewer.py --data ../shared/data/sst2 --train-examples 2000 --epochs 3 --seeds 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

TOOLS = ("textdistill", "textbrewer")
JOBS = ("logit", "intermediate")
SECTION = "vs-textbrewer"


# ============================================================================================ shared helpers
def digest(obj: Any) -> str:
    """Short sha256 of the JSON form of ``obj`` (used to compare token ids and batch orders across runs)."""
    return hashlib.sha256(json.dumps(obj, separators=(",", ":")).encode()).hexdigest()[:16]


def lr_multiplier(total_steps: int, warmup_steps: int):
    """textdistill's linear schedule, restated for TextBrewer's LambdaLR: warm-up, then linear decay to 0.

    ``f(step) = (step + 1) / warmup`` for ``step < warmup``, else ``max(0, 1 - (step - warmup) / (total -
    warmup))``; the same numbers as ``textdistill.training.optim.lr_lambda(total, warmup, "linear")``.
    """

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        rest = max(1, total_steps - warmup_steps)
        return max(0.0, 1.0 - min(1.0, (step - warmup_steps) / rest))

    return f


def even_layer_pairs(student_layers: int, teacher_layers: int) -> list[list[int]]:
    """Hidden-state pairs ``[student, teacher]`` (0 = embeddings): TinyBERT's uniform map ``i -> i * T / S``.

    When ``T / S`` is not an integer (6 -> 4 here, which textdistill's ``uniform`` strategy refuses) the
    teacher layer is rounded with Python's ``round`` (half to even), the evenly spread explicit map that
    textdistill suggests in that error: 6 -> 4 gives 0<-0, 1<-2, 2<-3, 3<-4, 4<-6.
    """
    return [[0, 0]] + [[i, round(i * teacher_layers / student_layers)] for i in range(1, student_layers + 1)]


def rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    ``VmHWM`` of /proc/self/status, the high-water mark of this process's own address space. Not
    ``getrusage().ru_maxrss``: Linux carries the parent's peak across fork + exec into the child's
    ``ru_maxrss``, so every run would report at least the orchestrator's footprint (which holds the teacher).
    ``ru_maxrss`` (KiB) is the fallback where /proc is missing.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def read_glue_tsv(path: str) -> list[tuple[str, str]]:
    """``(sentence, label)`` rows of a GLUE TSV (header, tab-separated, no quoting, blank lines skipped).

    The row index is textdistill's example id (0-based data row in file order), so TextBrewer's side reads
    the files itself and picks textdistill's seeded subset by id.
    """
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").lstrip("\ufeff").split("\t")
        text_col, label_col = header.index("sentence"), header.index("label")
        rows = []
        for line in f:
            line = line.rstrip("\n").rstrip("\r")
            if line.strip():
                fields = line.split("\t")
                rows.append((fields[text_col], fields[label_col].strip()))
    return rows


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (falls back to ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ================================================================================================ children
def child_main(spec_path: str) -> int:
    """Run one (tool, job, setting, seed) in this process and write its result JSON."""
    spec = json.loads(Path(spec_path).read_text())
    import torch
    import transformers  # noqa: F401  (both tools need it: imported before the clock and the baseline)

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    result: dict[str, Any] = {
        "tool": spec["tool"],
        "job": spec["job"],
        "setting": spec["setting"],
        "seed": spec["seed"],
        "threads": torch.get_num_threads(),
        "baseline_rss_mib": rss_mib(),
    }
    started = time.perf_counter()
    if spec["tool"] == "textdistill":
        run_textdistill(spec, result)
    else:
        run_textbrewer(spec, result)
    result["wall_s"] = time.perf_counter() - started
    result["peak_rss_mib"] = rss_mib()
    if torch.cuda.is_available():
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    examples = spec["train_examples_used"] * spec["epochs"]
    result["examples_per_s"] = examples / result["wall_s"]
    result["train_examples_per_s"] = examples / result["train_phase_s"]
    Path(spec["result"]).write_text(json.dumps(result, indent=2))
    return 0


def run_textdistill(spec: dict, result: dict) -> None:
    """The job through ``textdistill.training.runner.run_training``, timed from the outside.

    Timing hooks only wrap (never change) four functions: ``build_teacher_source`` (the cold teacher-cache
    pass), ``Distiller.fit``, ``evaluate_model`` (every dev evaluation, the teacher's included) and
    ``Distiller.train_step`` (to record the example ids of every step).
    """
    from textdistill.config.schema import (
        Config,
        DataConfig,
        LayerMapConfig,
        LossTermConfig,
        StudentConfig,
        TeacherConfig,
        TrainConfig,
    )
    from textdistill.evaluation import metrics as metrics_mod
    from textdistill.training import distiller as distiller_mod
    from textdistill.training import runner as runner_mod
    from textdistill.training.runner import run_training
    from textdistill.training.teacher_cache import source as teacher_cache

    order: list[list[int]] = []
    timing: dict[str, float] = {}
    calls: list[float] = []  # every evaluate_model call: per-epoch evals, the best-model reload, the teacher
    original_fit = distiller_mod.Distiller.fit
    original_step = distiller_mod.Distiller.train_step
    original_source = teacher_cache.build_teacher_source
    original_eval = metrics_mod.evaluate_model
    original_teacher_eval = runner_mod.teacher_dev_evaluation

    def fit(self):
        t = time.perf_counter()
        try:
            return original_fit(self)
        finally:
            timing["fit_s"] = time.perf_counter() - t

    def train_step(self, batch):
        order.append(batch["example_ids"].tolist())
        return original_step(self, batch)

    def build_teacher_source(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original_source(*args, **kwargs)
        finally:
            timing["teacher_source_s"] = time.perf_counter() - t

    def evaluate_model(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original_eval(*args, **kwargs)
        finally:
            calls.append(time.perf_counter() - t)

    def teacher_dev_evaluation(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original_teacher_eval(*args, **kwargs)
        finally:
            timing["teacher_eval_s"] = time.perf_counter() - t

    metrics_mod.evaluate_model = evaluate_model
    runner_mod.teacher_dev_evaluation = teacher_dev_evaluation
    distiller_mod.Distiller.fit = fit
    distiller_mod.Distiller.train_step = train_step
    teacher_cache.build_teacher_source = build_teacher_source

    kd = LossTermConfig(name="kd_kl", params={"temperature": 1.0})
    if spec["job"] == "logit":
        objective = [kd]
    else:
        pairs = LayerMapConfig(strategy="explicit", pairs=spec["layer_pairs"])
        objective = [
            LossTermConfig(name="hidden_mse", layer_map=pairs),
            LossTermConfig(name="attention_mse", layer_map=pairs),
            kd,
        ]
    run_dir = Path(spec["run_dir"])
    warm = bool(spec.get("td_cache_dir"))
    cache_dir = Path(spec["td_cache_dir"]) if warm else run_dir.parent / f"{run_dir.name}-cache"
    if not warm:
        shutil.rmtree(cache_dir, ignore_errors=True)  # a cold cache: building it is part of the timed work
    cfg = Config(
        teacher=TeacherConfig(path=spec["teacher"], cache=spec["td_cache"], cache_dir=str(cache_dir)),
        student=StudentConfig(type="pretrained", path=spec["student_init"]),
        data=DataConfig(
            train=spec["train_file"],
            dev=spec["dev_file"],
            max_train_examples=spec["train_examples"],
            max_length=spec["max_length"],
            group_by_length=True,
        ),
        objective=objective,
        train=TrainConfig(
            epochs=float(spec["epochs"]),
            batch_size=spec["batch_size"],
            lr=spec["lr"],
            warmup_ratio=spec["warmup_ratio"],
            precision=spec["td_precision"],
            seed=spec["seed"],
            keep_checkpoints=0,
            progress=False,
        ),
        report=False,
        output_dir=str(run_dir),
        overwrite=True,
    )
    run = run_training(cfg, "distill", quiet=True)
    evals = [
        json.loads(line)["eval/accuracy"]
        for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()
        if '"eval/accuracy"' in line
    ]
    run_json = json.loads((run.run_dir / "run.json").read_text())
    result.update(
        precision=run_json.get("precision"),
        eval_s=sum(calls),
        eval_calls_s=calls,
        teacher_eval_s=timing.get("teacher_eval_s"),
        train_phase_s=timing.get("teacher_source_s", 0.0) + timing["fit_s"],
        fit_s=timing["fit_s"],
        teacher_source_s=timing.get("teacher_source_s", 0.0),
        steps=len(order),
        order_digest=digest(order),
        epoch_accuracy=evals,
        dev_accuracy_final=evals[-1],
        dev_accuracy_best=run.dev_metrics["accuracy"],
        teacher_dev_accuracy=(run.teacher_dev_metrics or {}).get("accuracy"),
    )
    if spec.get("td_keep_cache_as"):  # for the warm run of the same job and seed (after the timing)
        shutil.rmtree(spec["td_keep_cache_as"], ignore_errors=True)
        Path(spec["td_keep_cache_as"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(cache_dir), spec["td_keep_cache_as"])
    elif not warm:
        shutil.rmtree(cache_dir, ignore_errors=True)


def import_textbrewer() -> tuple[Any, str | None]:
    """``import textbrewer``, with the tensorboard stub described in the module docstring when needed.

    Returns:
        The module and a description of the shim applied (None when none was needed).
    """
    import importlib.util

    shim = None
    if importlib.util.find_spec("tensorboardX") is None and importlib.util.find_spec("tensorboard") is None:
        stub = types.ModuleType("tensorboardX")

        class SummaryWriter:  # only created by TextBrewer when TrainingConfig.log_dir is set
            def __init__(self, *args: Any, **kwargs: Any):
                raise RuntimeError(
                    "benchmark shim: tensorboard is not installed; run TextBrewer with log_dir=None"
                )

        stub.SummaryWriter = SummaryWriter
        sys.modules["tensorboardX"] = stub
        shim = "stub tensorboardX.SummaryWriter (tensorboard not installed; TrainingConfig.log_dir=None)"
    try:
        import textbrewer
    finally:
        if shim is not None:
            # TextBrewer has bound the name; other libraries (accelerate probes find_spec("tensorboardX"))
            # must not see the stub.
            del sys.modules["tensorboardX"]
    return textbrewer, shim


class QKScores:
    """Pre-softmax attention scores ``Q K^T / sqrt(d_head)`` of chosen BERT layers, from Q/K forward hooks.

    The hooks keep the outputs of ``attention.self.query`` / ``.key`` (``(B, L, H)``, identical under every
    attention implementation); :meth:`scores` turns layer ``i``'s into ``(B, heads, L, L)`` (no mask added)
    and forgets them. Layers not requested give None, so the adaptor's list keeps 0-based layer indices.
    """

    def __init__(self, model: Any, layers: list[int]):
        self.heads = int(model.config.num_attention_heads)
        self.layers = sorted(set(layers))
        self.num_layers = int(model.config.num_hidden_layers)
        self.kept: dict[tuple[int, str], Any] = {}
        blocks = model.base_model.encoder.layer
        for i in self.layers:
            attn = blocks[i].attention.self
            attn.query.register_forward_hook(self._keeper(i, "q"))
            attn.key.register_forward_hook(self._keeper(i, "k"))

    def _keeper(self, layer: int, role: str):
        def hook(module: Any, inputs: Any, output: Any) -> None:
            self.kept[(layer, role)] = output

        return hook

    def scores(self) -> list[Any]:
        """``num_layers`` entries: ``(B, heads, L, L)`` scores for the hooked layers, None elsewhere."""
        out: list[Any] = [None] * self.num_layers
        for i in self.layers:
            q, k = self.kept.pop((i, "q")), self.kept.pop((i, "k"))
            b, length, width = q.shape
            d = width // self.heads
            qh = q.view(b, length, self.heads, d).transpose(1, 2)
            kh = k.view(b, length, self.heads, d).transpose(1, 2)
            out[i] = qh @ kh.transpose(-1, -2) / math.sqrt(d)
        return out


class PlannedBatches:
    """A batch sampler replaying fixed index lists: epoch ``e`` (the ``e``-th pass) yields ``epochs[e]``."""

    def __init__(self, epochs: list[list[list[int]]]):
        self.epochs = epochs
        self.passes = 0

    def __iter__(self):
        batches = self.epochs[min(self.passes, len(self.epochs) - 1)]
        self.passes += 1
        return iter(batches)

    def __len__(self) -> int:
        return len(self.epochs[0])


def run_textbrewer(spec: dict, result: dict) -> None:
    """The job through TextBrewer's ``GeneralDistiller`` with HF models and adaptors written here."""
    import random

    import numpy as np
    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    textbrewer, shim = import_textbrewer()
    result["textbrewer_version"] = textbrewer.__version__
    result["shim"] = shim
    random.seed(spec["seed"])
    np.random.seed(spec["seed"])
    torch.manual_seed(spec["seed"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    plan = json.loads(Path(spec["data"]).read_text())
    train_rows = read_glue_tsv(spec["train_file"])
    dev_rows = read_glue_tsv(spec["dev_file"])
    train_ex = [train_rows[i] for i in plan["train_ids"]]
    tok = AutoTokenizer.from_pretrained(spec["teacher"])

    def encode(texts: list[str]) -> list[dict[str, list[int]]]:
        enc = tok(texts, truncation=True, max_length=spec["max_length"])
        keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
        return [{k: enc[k][i] for k in keys} for i in range(len(texts))]

    train = encode([text for text, _ in train_ex])
    for item, example_id in zip(train, plan["train_ids"], strict=True):
        item["example_id"] = example_id
    dev = encode([text for text, _ in dev_rows])
    result["token_digest"] = digest([x["input_ids"] for x in train])
    pad_id = tok.pad_token_id
    fixed = spec["tb_padding"] == "max_length"

    def collate(items: list[dict]) -> dict[str, Any]:
        width = spec["max_length"] if fixed else max(len(x["input_ids"]) for x in items)
        batch: dict[str, Any] = {}
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        types_ = torch.zeros((len(items), width), dtype=torch.long)
        for r, x in enumerate(items):
            n = len(x["input_ids"])
            ids[r, :n] = torch.tensor(x["input_ids"])
            mask[r, :n] = 1
            if "token_type_ids" in x:
                types_[r, :n] = torch.tensor(x["token_type_ids"])
        batch["input_ids"], batch["attention_mask"] = ids, mask
        if "token_type_ids" in items[0]:
            batch["token_type_ids"] = types_
        if "example_id" in items[0]:
            batch["example_ids"] = [x["example_id"] for x in items]
        return batch

    probs = spec["job"] == "intermediate" and spec["tb_attention"] == "probs"
    load_kwargs: dict[str, Any] = {"dtype": torch.float32}
    if probs:
        load_kwargs["attn_implementation"] = "eager"  # transformers 5: only eager returns attentions
    teacher = AutoModelForSequenceClassification.from_pretrained(spec["teacher"], **load_kwargs).to(device)
    student = AutoModelForSequenceClassification.from_pretrained(spec["student_init"], **load_kwargs)
    student = student.to(device)
    label2id = {str(k): int(v) for k, v in teacher.config.label2id.items()}
    dev_gold = torch.tensor([label2id[label] for _, label in dev_rows])

    pairs = spec["layer_pairs"]
    att_pairs = [(s - 1, t - 1) for s, t in pairs if s > 0 and t > 0]  # 0-based layers
    hooks_t = hooks_s = None
    model_args: dict[str, Any] = {}
    matches: list[dict[str, Any]] = []
    if spec["job"] == "intermediate":
        model_args["output_hidden_states"] = True
        if probs:
            model_args["output_attentions"] = True
        else:
            hooks_t = QKScores(teacher, [t for _, t in att_pairs])
            hooks_s = QKScores(student, [s for s, _ in att_pairs])
        d_s, d_t = student.config.hidden_size, teacher.config.hidden_size
        for s, t in pairs:
            match = {"layer_T": t, "layer_S": s, "feature": "hidden", "loss": "hidden_mse", "weight": 1}
            if d_s != d_t:
                match["proj"] = ["linear", d_s, d_t]
            matches.append(match)
        for s, t in att_pairs:
            matches.append(
                {"layer_T": t, "layer_S": s, "feature": "attention", "loss": "attention_mse", "weight": 1}
            )

    def adaptor(hooks: QKScores | None):
        def adapt(batch: dict, outputs: Any) -> dict[str, Any]:
            out: dict[str, Any] = {"logits": outputs.logits, "inputs_mask": batch["attention_mask"]}
            if spec["job"] == "intermediate":
                out["hidden"] = outputs.hidden_states
                out["attention"] = outputs.attentions if hooks is None else hooks.scores()
            return out

        return adapt

    order: list[list[int]] = []

    def take_ids(batch: dict) -> dict:
        order.append(batch.pop("example_ids"))
        return batch

    def accuracy(model: Any) -> float:
        model.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(dev), spec["eval_batch_size"]):
                items = dev[start : start + spec["eval_batch_size"]]
                batch = {k: v.to(device) for k, v in collate(items).items()}
                pred = model(**batch).logits.argmax(-1).cpu()
                correct += int((pred == dev_gold[start : start + len(items)]).sum())
        return correct / len(dev)

    epoch_acc: list[float] = []
    eval_time = [0.0]

    def callback(model: Any, step: int) -> None:
        t = time.perf_counter()
        epoch_acc.append(accuracy(model))
        eval_time[0] += time.perf_counter() - t

    loader = DataLoader(train, batch_sampler=PlannedBatches(plan["batches"]), collate_fn=collate)
    decay = [p for p in student.parameters() if p.ndim >= 2]
    no_decay = [p for p in student.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=spec["lr"]
    )
    total = len(plan["batches"][0]) * spec["epochs"]
    warmup = int(spec["warmup_ratio"] * total)
    out_dir = Path(spec["run_dir"])
    shutil.rmtree(out_dir, ignore_errors=True)
    train_cfg = textbrewer.TrainingConfig(device=str(device), output_dir=str(out_dir), log_dir=None)
    distill_cfg = textbrewer.DistillationConfig(
        temperature=1, kd_loss_type="ce", kd_loss_weight=1, intermediate_matches=matches or None
    )
    distiller = textbrewer.GeneralDistiller(
        train_cfg, distill_cfg, teacher, student, adaptor(hooks_t), adaptor(hooks_s)
    )
    t = time.perf_counter()
    distiller.train(
        optimizer,
        loader,
        num_epochs=spec["epochs"],
        scheduler_class=torch.optim.lr_scheduler.LambdaLR,
        scheduler_args={"lr_lambda": lr_multiplier(total, warmup)},
        max_grad_norm=1.0,
        callback=callback,
        batch_postprocessor=take_ids,
        **model_args,
    )
    train_s = time.perf_counter() - t
    result.update(
        precision="fp32",
        eval_s=eval_time[0],
        train_phase_s=train_s,
        fit_s=train_s,
        steps=len(order),
        order_digest=digest(order),
        epoch_accuracy=epoch_acc,
        dev_accuracy_final=epoch_acc[-1],
        dev_accuracy_best=max(epoch_acc),
    )
    shutil.rmtree(out_dir, ignore_errors=True)


# ============================================================================================ orchestrator
def wait_for_teacher(teacher: Path, minutes: float) -> None:
    """Poll every 60 s until ``teacher`` holds a finished model (config + weights, run finished)."""
    deadline = time.time() + minutes * 60

    def ready() -> bool:
        if not ((teacher / "config.json").is_file() and (teacher / "model.safetensors").is_file()):
            return False
        run_json = teacher.parent / "run.json"
        if run_json.is_file():  # a textdistill run dir: wait until its best model is final
            try:
                return json.loads(run_json.read_text()).get("status") == "finished"
            except ValueError:
                return False
        return True

    while not ready():
        if time.time() > deadline:
            raise SystemExit(f"teacher {teacher} not ready after {minutes} min; pass --teacher DIR")
        print(f"waiting for the teacher in {teacher} ...", flush=True)
        time.sleep(60)


def prepare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Build the shared student init and export, per seed, the examples and textdistill's batch order."""
    from textdistill.config.schema import DataConfig, StudentConfig
    from textdistill.data.encoding import EncodedDataset
    from textdistill.data.samplers import LengthGroupedSampler
    from textdistill.data.task import load_task_data
    from textdistill.models.io import save_model
    from textdistill.models.students import build_student
    from textdistill.models.teacher import load_teacher, load_tokenizer
    from textdistill.training.runner import set_seed

    teacher_path = str(args.teacher)
    tokenizer = load_tokenizer(teacher_path)
    teacher = load_teacher(teacher_path)
    id2label = {int(k): v for k, v in teacher.config.id2label.items()}
    data_cfg = DataConfig(
        train=str(Path(args.data) / "train.tsv"),
        dev=str(Path(args.data) / "dev.tsv"),
        max_train_examples=args.train_examples,
        max_length=args.max_length,
    )
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in args.seeds_list:
        task = load_task_data(data_cfg, teacher_id2label=id2label, seed=seed)
        train_ds = EncodedDataset(task.train, tokenizer, args.max_length, task.label_map)
        # exactly textdistill's training loader: make_loader(..., shuffle=True, group_by_length=True, seed)
        sampler = LengthGroupedSampler(train_ds.lengths, args.batch_size, seed)
        batches = [sampler.epoch_batches(e) for e in range(args.epochs)]
        ids = [e.id for e in task.train]
        # TextBrewer's side reads the TSV files itself; it gets only which rows and in which batches.
        exported = {"train_ids": [e.id for e in task.train], "batches": batches}
        path = work / f"data-seed{seed}.json"
        path.write_text(json.dumps(exported))
        lengths = list(train_ds.lengths)
        per_seed[seed] = {
            "data": str(path),
            "train_examples_used": len(task.train),
            "dev_examples": len(task.dev),
            "dev_majority_accuracy": max(task.stats["dev"]["label_counts"].values()) / len(task.dev),
            "steps_per_epoch": len(batches[0]),
            "token_digest": digest([train_ds[i]["input_ids"] for i in range(len(train_ds))]),
            "order_digest": digest([[ids[i] for i in b] for e in batches for b in e]),
            "tokens_mean": sum(lengths) / len(lengths),
            "tokens_max": max(lengths),
            "padding_share": 1.0
            - sum(lengths) / sum(len(b) * max(lengths[i] for i in b) for b in batches[0]),
        }
    num_labels = len(id2label)
    set_seed(args.seeds_list[0])
    student_cfg = StudentConfig(
        type="shrink",
        num_layers=args.student_layers,
        hidden_size=args.student_hidden,
        num_heads=args.student_heads,
        intermediate_size=args.student_intermediate,
    )
    student = build_student(student_cfg, teacher, num_labels, id2label)
    init_dir = work / "student-init"
    save_model(student, init_dir, tokenizer, id2label)
    n_params = sum(p.numel() for p in student.parameters())
    layer_pairs = even_layer_pairs(student.info.num_layers, teacher.info.num_layers)
    del teacher, student
    return {
        "student_init": str(init_dir),
        "student_parameters": n_params,
        "layer_pairs": layer_pairs,
        "seeds": per_seed,
    }


def settings_to_run(requested: list[str]) -> tuple[list[str], str | None]:
    """The settings actually run, and why one was skipped (``fp32`` is ``best`` where auto means fp32)."""
    import torch

    from textdistill.training.precision import resolve_precision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    auto = resolve_precision("auto", device)
    out, note = [], None
    for s in requested:
        if s == "warm" and "best" not in requested:
            raise SystemExit("--settings warm pairs with TextBrewer's best runs: add best")
        if s == "fp32" and "best" in requested and auto == "fp32":
            note = f"setting fp32 skipped: train.precision=auto resolves to fp32 on this {device}, so it equals best"
            continue
        out.append(s)
    return out, note


def machine_info() -> dict[str, Any]:
    """CPU, threads, library versions, bf16 support and the load average (this machine is shared)."""
    import torch
    import transformers

    from textdistill.training.precision import cpu_bf16_flags, resolve_precision

    try:
        from importlib.metadata import version

        tb_version = version("textbrewer")
    except Exception:
        tb_version = None
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bf16_flags": sorted(cpu_bf16_flags()),
        "precision_auto": resolve_precision("auto", "cpu"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "textbrewer": tb_version,
        "load_average_start": os.getloadavg()[0],
    }


def run_child(spec: dict[str, Any], work: Path, timeout: float | None) -> dict[str, Any]:
    """Run one spec in a fresh Python process; its result, or an ``error`` record."""
    name = spec["name"]
    spec_path = work / "specs" / f"{name}.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec["result"] = str(work / "results" / f"{name}.json")
    Path(spec["result"]).parent.mkdir(parents=True, exist_ok=True)
    Path(spec["result"]).unlink(missing_ok=True)
    spec_path.write_text(json.dumps(spec, indent=2))
    log = work / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with log.open("w") as f:
        try:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    elapsed = time.perf_counter() - t
    if rc != 0 or not Path(spec["result"]).is_file():
        tail = log.read_text()[-3000:]
        return {
            "tool": spec["tool"],
            "job": spec["job"],
            "setting": spec["setting"],
            "seed": spec["seed"],
            "error": f"exit {rc}",
            "log_tail": tail,
            "process_s": elapsed,
        }
    res = json.loads(Path(spec["result"]).read_text())
    res["process_s"] = elapsed
    return res


def fmt_stat(values: list[float], digits: int) -> str:
    """``mean`` or ``mean ± std`` (sample std) of ``values``."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (job, setting): each tool's stats and the per-pair TextBrewer/textdistill wall-time ratios."""
    out: dict[str, Any] = {}
    keys = sorted({(r["job"], r["setting"]) for r in runs}, key=lambda k: (JOBS.index(k[0]), k[1]))
    for job, setting in keys:
        # warm has textdistill runs only: TextBrewer (no cache) pairs with its best runs of the same job
        group = [
            r
            for r in runs
            if r["job"] == job
            and "error" not in r
            and (
                r["setting"] == setting
                or (setting == "warm" and r["setting"] == "best" and r["tool"] == "textbrewer")
            )
        ]
        entry: dict[str, Any] = {}
        for tool in TOOLS:
            rs = [r for r in group if r["tool"] == tool]
            entry[tool] = {
                k: [r[k] for r in rs]
                for k in (
                    "wall_s",
                    "train_phase_s",
                    "eval_s",
                    "examples_per_s",
                    "peak_rss_mib",
                    "dev_accuracy_final",
                    "dev_accuracy_best",
                )
            }
        ratios, same_work, train_ratios, dacc = [], [], [], []
        for seed in sorted({r["seed"] for r in group}):
            td = [r for r in group if r["tool"] == "textdistill" and r["seed"] == seed]
            tb = [r for r in group if r["tool"] == "textbrewer" and r["seed"] == seed]
            for a, b in zip(td, tb, strict=False):
                ratios.append(b["wall_s"] / a["wall_s"])
                # the same work: without textdistill's scoring of the teacher on dev, which TextBrewer skips
                same_work.append(b["wall_s"] / (a["wall_s"] - (a.get("teacher_eval_s") or 0.0)))
                train_ratios.append(b["train_phase_s"] / a["train_phase_s"])
                dacc.append(a["dev_accuracy_final"] - b["dev_accuracy_final"])
        entry["pairs"] = len(ratios)
        entry["wall_ratio_tb_over_td"] = ratios
        entry["same_work_wall_ratio_tb_over_td"] = same_work
        entry["train_phase_ratio_tb_over_td"] = train_ratios
        entry["dev_accuracy_final_td_minus_tb"] = dacc
        out[f"{job}/{setting}"] = entry
    return out


def ratio_text(values: list[float]) -> str:
    """``median (min–max)`` of per-pair ratios, or the single ratio."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}x"
    return f"{statistics.median(values):.2f}x ({min(values):.2f}–{max(values):.2f})"


def markdown(results: dict[str, Any]) -> str:
    """The two tables: per tool, and per pair (TextBrewer time / textdistill time: > 1 = textdistill faster)."""
    lines = [
        "| job | setting | tool | wall s (end to end) | train phase s | dev eval s | ex/s (end to end) | "
        "peak RSS MiB | dev acc (last epoch) | dev acc (best epoch) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, entry in results["summary"].items():
        job, setting = key.split("/")
        for tool in TOOLS:
            s = entry[tool]
            if setting == "warm" and tool == "textbrewer":
                continue  # the same runs as its best row
            lines.append(
                f"| {job} | {setting} | {tool} | {fmt_stat(s['wall_s'], 1)} | {fmt_stat(s['train_phase_s'], 1)} | "
                f"{fmt_stat(s['eval_s'], 1)} | "
                f"{fmt_stat(s['examples_per_s'], 1)} | {fmt_stat(s['peak_rss_mib'], 0)} | "
                f"{fmt_stat(s['dev_accuracy_final'], 4)} | {fmt_stat(s['dev_accuracy_best'], 4)} |"
            )
    lines += [
        "",
        "| job | setting | pairs | TextBrewer / textdistill wall time | … without textdistill's teacher "
        "scoring | … train phase only | dev acc textdistill − TextBrewer |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, entry in results["summary"].items():
        job, setting = key.split("/")
        lines.append(
            f"| {job} | {setting} | {entry['pairs']} | {ratio_text(entry['wall_ratio_tb_over_td'])} | "
            f"{ratio_text(entry.get('same_work_wall_ratio_tb_over_td', []))} | "
            f"{ratio_text(entry['train_phase_ratio_tb_over_td'])} | "
            f"{fmt_stat(entry['dev_accuracy_final_td_minus_tb'], 4)} |"
        )
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    """Replace (or append) the section between ``<!-- vs-textbrewer:start/end -->`` in ``path``."""
    start, end = f"<!-- {SECTION}:start -->", f"<!-- {SECTION}:end -->"
    block = f"{start}\n{body}\n{end}"
    text = path.read_text() if path.exists() else "# Results\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def docs_body(results: dict[str, Any], table: str) -> str:
    """The docs/results.md section: command, machine, setup, tables, caveats."""
    m, a, p = results["machine"], results["args"], results["prepared"]
    seed0 = p["seeds"].get(str(a["seeds_list"][0]))
    data_line = ""
    if seed0:
        data_line = (
            f"{seed0['train_examples_used']} SST-2 train examples (seeded subset), {seed0['dev_examples']} dev; "
            f"{seed0['tokens_mean']:.1f} tokens mean, {seed0['tokens_max']} max (max_length {a['max_length']}); "
            f"{seed0['steps_per_epoch']} steps/epoch; padding share of the length-grouped batches "
            f"{100 * seed0['padding_share']:.1f}%; always predicting the dev majority class scores "
            f"{seed0.get('dev_majority_accuracy', float('nan')):.4f}."
        )
    checks = results["checks"]
    te = [
        r["teacher_eval_s"]
        for r in results["runs"]
        if r.get("teacher_eval_s") is not None and r["setting"] != "warm" and r["tool"] == "textdistill"
    ]
    teacher_eval = f"{statistics.mean(te):.1f} s per run" if te else "not measured"
    acc = results.get("teacher_dev_accuracy")
    teacher_acc = f"{acc:.4f}" if acc is not None else "n/a"
    return "\n".join(
        [
            "## textdistill vs TextBrewer 0.2.1 (SST-2 distillation, CPU)",
            "",
            f"Command: `{results['command']}`",
            "",
            f"Machine: {m['cpu']}, {m['cpu_count']} cores, torch threads {m['torch_threads']}, bf16 flags "
            f"{m['bf16_flags'] or 'none'} (precision auto = {m['precision_auto']}); torch {m['torch']}, "
            f"transformers {m['transformers']}, TextBrewer {m['textbrewer']}, Python {m['python']}; "
            f"load average {m['load_average_start']:.1f} at start, {results['load_average_end']:.1f} at end "
            "(shared machine).",
            "",
            f"Job: teacher `{a['teacher']}` ({teacher_acc} dev acc); student "
            f"shrink {a['student_layers']}L/{a['student_hidden']}H/{a['student_heads']} heads/"
            f"{a['student_intermediate']} FFN ({p['student_parameters'] / 1e6:.2f}M params), one saved init for "
            f"both; {a['epochs']} epoch(s), batch {a['batch_size']}, lr {a['lr']}, warm-up "
            f"{a['warmup_ratio']}, seeds {a['seeds_list']}. {data_line} Layer pairs (student<-teacher, 0 = "
            f"embeddings): {' '.join(f'{s}<-{t}' for s, t in p['layer_pairs'])} (6 -> 4 has no integer "
            "uniform map). Same batches verified: "
            f"{checks['same_order']}; same token ids: {checks['same_tokens']}. "
            f"{results['settings_note'] or ''}",
            "",
            table,
            "",
            "Wall time is each run end to end in its own process (data, model loading, textdistill's "
            "teacher cache (cold in `best`: built inside the run; warm in `warm`: built by an earlier, "
            "untimed run on the same teacher and data), training, per-epoch dev evaluation, checkpoints); "
            "train phase is textdistill's cache pass + loop vs TextBrewer's `train()`; dev eval is every dev "
            "evaluation inside the wall time: both evaluate the student after each epoch (TextBrewer through "
            "the callback written here); textdistill also scores the teacher once for retention and "
            f"agreement ({teacher_eval} when not cached). The `warm` rows pair with TextBrewer's `best` runs. Peak RSS is each process's VmHWM. Ratios > 1 mean textdistill was faster; "
            "\"without textdistill's teacher scoring\" subtracts that one-off dev pass from textdistill's "
            "wall time (the same work as TextBrewer's run). Losses: on a length-grouped batch both tools' "
            "intermediate objectives give the same gradients to 1e-7 "
            "(`benchmarks/intermediate_parity.py`); they differ in per-example vs per-token averaging on "
            "mixed-length batches and in which parameters are clipped (see the script's docstring). "
            f"{len(a['seeds_list'])} pair(s) per job and setting on a shared machine "
            f"(load above): ratios from so few pairs are indicative only.",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help="folder with SST-2 train.tsv and dev.tsv (GLUE format)")
    ap.add_argument("--teacher", default="runs/bench-sst2/teacher/model", help="fine-tuned SST-2 teacher dir")
    ap.add_argument("--wait-minutes", type=float, default=20.0, help="poll this long for the teacher")
    ap.add_argument("--work", default="runs/bench-vs-textbrewer", help="scratch dir (runs, logs, exports)")
    ap.add_argument("--out", default="benchmarks/results/vs_textbrewer.json")
    ap.add_argument("--results-md", default="docs/results.md")
    ap.add_argument("--no-docs", action="store_true", help="do not write the docs/results.md section")
    ap.add_argument("--train-examples", type=int, default=None, help="seeded subset of SST-2 train")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=1, help="seeds 42, 43, ...; mean ± std when > 1")
    ap.add_argument("--jobs", nargs="+", default=list(JOBS), choices=JOBS)
    ap.add_argument(
        "--settings", nargs="+", default=["best", "warm", "fp32"], choices=["best", "warm", "fp32"]
    )
    ap.add_argument("--student-layers", type=int, default=4)
    ap.add_argument("--student-hidden", type=int, default=192)
    ap.add_argument("--student-heads", type=int, default=12)
    ap.add_argument("--student-intermediate", type=int, default=768)
    ap.add_argument("--threads", type=int, default=None, help="torch threads in every run (default: torch's)")
    ap.add_argument("--tb-attention", choices=["scores", "probs"], default="scores")
    ap.add_argument("--tb-padding", choices=["dynamic", "max_length"], default="dynamic")
    ap.add_argument("--run-timeout", type=float, default=None, help="seconds per run before it is killed")
    args = ap.parse_args(argv)
    if not args.child and not args.data:
        ap.error("--data is required")
    if args.epochs < 1 or args.seeds < 1:
        ap.error("--epochs and --seeds must be at least 1")
    args.seeds_list = [42 + i for i in range(args.seeds)]
    return args


def base_spec(args: argparse.Namespace, prepared: dict[str, Any]) -> dict[str, Any]:
    """What every run of one invocation shares: models, data files, hyper-parameters, layer pairs."""
    return {
        "teacher": str(Path(args.teacher).resolve()),
        "student_init": str(Path(prepared["student_init"]).resolve()),
        "train_file": str((Path(args.data) / "train.tsv").resolve()),
        "dev_file": str((Path(args.data) / "dev.tsv").resolve()),
        "train_examples": args.train_examples,
        "max_length": args.max_length,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch_size,
        "lr": args.lr,
        "warmup_ratio": args.warmup_ratio,
        "layer_pairs": prepared["layer_pairs"],
        "threads": args.threads,
        "tb_attention": args.tb_attention,
        "tb_padding": args.tb_padding,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    wait_for_teacher(Path(args.teacher), args.wait_minutes)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    machine = machine_info()
    prepared = prepare(args, work)
    settings, note = settings_to_run(args.settings)
    base = base_spec(args, prepared)
    runs: list[dict[str, Any]] = []
    for seed in args.seeds_list:
        sd = prepared["seeds"][seed]
        for job in args.jobs:
            for setting in settings:
                tools = ("textdistill",) if setting == "warm" else TOOLS
                warm_cache = str((work / "warm-cache" / f"{job}-s{seed}").resolve())
                for tool in tools:  # A B A B: textdistill, then TextBrewer, for every pair
                    name = f"{job}-{setting}-{tool}-s{seed}"
                    spec = dict(
                        base,
                        name=name,
                        tool=tool,
                        job=job,
                        setting=setting,
                        seed=seed,
                        data=sd["data"],
                        train_examples_used=sd["train_examples_used"],
                        run_dir=str((work / "runs" / name).resolve()),
                        td_cache=True,
                        # best leaves its cold-built cache to the warm run of the same job and seed
                        td_cache_dir=warm_cache if setting == "warm" else None,
                        td_keep_cache_as=warm_cache if setting == "best" and "warm" in settings else None,
                        td_precision="fp32" if setting == "fp32" else "auto",
                    )
                    print(f"[{time.time() - t0:6.0f}s] {name} ...", flush=True)
                    res = run_child(spec, work, args.run_timeout)
                    runs.append(res)
                    if "error" in res:
                        print(f"  FAILED ({res['error']}):\n{res['log_tail']}", flush=True)
                    else:
                        print(
                            f"  wall {res['wall_s']:.1f}s, train {res['train_phase_s']:.1f}s, "
                            f"rss {res['peak_rss_mib']:.0f} MiB, dev acc {res['dev_accuracy_final']:.4f}",
                            flush=True,
                        )
    prepared["seeds"] = {str(k): v for k, v in prepared["seeds"].items()}
    ok = [r for r in runs if "error" not in r]
    same_order = all(
        r["order_digest"] == prepared["seeds"][str(r["seed"])]["order_digest"] for r in ok
    ) and bool(ok)
    same_tokens = all(
        r["token_digest"] == prepared["seeds"][str(r["seed"])]["token_digest"]
        for r in ok
        if "token_digest" in r
    )
    teacher_acc = next((r.get("teacher_dev_accuracy") for r in ok if r.get("teacher_dev_accuracy")), None)
    results: dict[str, Any] = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "args": {k: v for k, v in vars(args).items() if k != "child"},
        "machine": machine,
        "prepared": prepared,
        "settings_run": settings,
        "settings_note": note,
        "checks": {"same_order": same_order, "same_tokens": same_tokens},
        "teacher_dev_accuracy": teacher_acc,
        "runs": runs,
        "summary": summarise(runs),
        "load_average_end": os.getloadavg()[0],
        "total_s": time.time() - t0,
        "completed": len(ok) == len(runs),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    table = markdown(results)
    print(table)
    print(f"same batches: {same_order}; same token ids: {same_tokens}; wrote {out}")
    if not results["completed"]:
        print("some runs failed: docs/results.md left unchanged", file=sys.stderr)
        return 1
    if not args.no_docs:
        write_section(Path(args.results_md), docs_body(results, table))
        print(f"updated {args.results_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
