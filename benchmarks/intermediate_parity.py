"""Is textdistill's TinyBERT-style job the same job as TextBrewer's? One step exactly, then over random draws.

``vs_textbrewer.py``'s intermediate job (hidden-state MSE through a learned width projection + attention-score
MSE + logit KD, from one shrink student init, 188 steps) ended 0.04 apart on seed 42 (textdistill 0.581,
TextBrewer 0.623). Both tools draw their own projection init (N(0, 0.02), zero bias, other random numbers)
and their own dropout masks; the data, batches, student init, optimiser and schedule are identical. This
script separates the two possible causes, a different objective or a different random draw:

1. **Steps** (``step``, ``step_mixed``, ``step_train_mode``, ``step_time`` in the JSON): on real training
   batches, with TextBrewer's projections set to textdistill's, it compares textdistill's ``Objective`` with
   TextBrewer's ``GeneralDistiller.compute_loss``: each term, the total and every student / projection
   gradient, in eval mode on epoch 0's first batch and on a batch of 16 examples spread over the whole
   length range, and in train mode (dropout) with the RNG reset to the same state before each tool's
   forward. Two documented definitional differences are reported, not hidden: the logit term (``kd_kl`` is
   KL(p_T || p_S), TextBrewer's ``ce`` is CE(p_T, p_S) = KL + H(p_T), so the totals differ by the teacher's
   entropy and the gradients do not) and the averaging of the MSE terms (textdistill: per example, then
   over the batch; TextBrewer: over the batch's real tokens). With TextBrewer's averaging substituted on
   textdistill's side the gradients must agree to float rounding. ``step_time`` times the student side of
   a step (forward, loss, backward) of both tools on the same batches, alternated.
2. **Draws** (``runs``): the full 3-epoch job, ``--draws`` times per variant, each draw ``k`` reseeding the
   projection init (``torch.manual_seed(1000 + k)`` right before the loss/projections are built) and the
   dropout stream (``torch.manual_seed(k)`` when training starts) in both tools alike. Variants:

   ``textdistill``          the defaults
   ``textbrewer``           TextBrewer 0.2.1 (GeneralDistiller), as ``vs_textbrewer.py`` runs it
   ``textdistill-clip-S``   textdistill clipping the student's gradient only, as TextBrewer does (its own
                            default clips student + projections together)
   ``textdistill-tokens``   textdistill with TextBrewer's per-token averaging of the MSE terms
   ``textdistill-as-tb``    both of the above together

Accuracy only: the runs are timed but the timing is not the point (see ``vs_textbrewer.py``).

Example (the command behind docs/results.md):
    python benchmarks/intermediate_parity.py --data ../shared/data/sst2 --train-examples 2000 --draws 3
    python benchmarks/intermediate_parity.py --data ../shared/data/sst2 --steps-only   # step checks only
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_textbrewer as vt  # noqa: E402  (the sibling benchmark: data export, both tools' runners)

VARIANTS = ("textdistill", "textbrewer", "textdistill-clip-S", "textdistill-tokens", "textdistill-as-tb")
DEFAULT_VARIANTS = VARIANTS[:4]


# ------------------------------------------------------------------------------------- textdistill patches
def per_token_averaging() -> None:
    """Swap textdistill's per-example averaging of hidden/attention MSE for TextBrewer's per-token one."""
    import torch

    from textdistill.losses import attention, hidden
    from textdistill.losses.base import attention_mask_of, reduce_layers

    def token_mse(hs: torch.Tensor, ht: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return ((hs - ht).pow(2).sum(-1) * mask).sum() / (mask.sum() * ht.shape[-1])

    def compute(self, student, teacher, batch, progress):  # noqa: ANN001 (AttentionMSE.compute)
        losses = []
        for a_s, a_t in self.pairs(student, teacher):
            mask = attention_mask_of(batch, student, a_s[:, 0])
            pair = mask[:, None, :, None] * mask[:, None, None, :]
            sq = torch.where(pair.bool(), (a_s - a_t).pow(2), 0.0)
            losses.append(sq.sum() / (a_s.shape[1] * pair.sum()))
        return reduce_layers(losses, self.params["layer_reduction"])

    hidden.token_mse = token_mse
    attention.AttentionMSE.compute = compute


def reseed_textdistill(draw: int) -> None:
    import torch

    from textdistill.losses.objective import Objective
    from textdistill.training.distiller import Distiller

    init, fit = Objective.__init__, Distiller.fit

    def seeded_init(self, *args: Any, **kwargs: Any) -> None:
        torch.manual_seed(1000 + draw)  # the projections' init
        init(self, *args, **kwargs)

    def seeded_fit(self):  # noqa: ANN001
        torch.manual_seed(draw)  # the dropout masks
        return fit(self)

    Objective.__init__, Distiller.fit = seeded_init, seeded_fit


def reseed_textbrewer(draw: int) -> None:
    import torch

    vt.import_textbrewer()
    from textbrewer import distiller_basic, distiller_general

    init, train = distiller_general.GeneralDistiller.__init__, distiller_basic.BasicDistiller.train

    def seeded_init(self, *args: Any, **kwargs: Any) -> None:
        torch.manual_seed(1000 + draw)  # GeneralDistiller builds the projections
        init(self, *args, **kwargs)

    def seeded_train(self, *args: Any, **kwargs: Any):
        torch.manual_seed(draw)
        return train(self, *args, **kwargs)

    distiller_general.GeneralDistiller.__init__ = seeded_init
    distiller_basic.BasicDistiller.train = seeded_train


def child(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    variant, draw = spec["variant"], int(spec["draw"])
    if variant == "textbrewer":
        reseed_textbrewer(draw)
    else:
        reseed_textdistill(draw)
    if variant in ("textdistill-clip-S", "textdistill-as-tb"):
        from textdistill.training.distiller import Distiller

        Distiller._params = lambda self: [p for p in self.student.parameters() if p.requires_grad]
    if variant in ("textdistill-tokens", "textdistill-as-tb"):
        per_token_averaging()
    return vt.child_main(spec_path)


# ------------------------------------------------------------------------------------------------ one step
def step_checks(
    prepared: dict[str, Any], args: argparse.Namespace, timing_batches: int = 24
) -> dict[str, Any]:
    """Both tools' losses, gradients and student-step cost on the same batches of the exported order.

    ``step``: epoch 0's first batch, eval mode. ``step_mixed``: 16 training examples spread over the whole
    length range (3 to 56 tokens), eval mode: the per-example vs per-token averaging shows here, and with
    TextBrewer's averaging substituted the gradients must still agree. ``step_train_mode``: train mode
    (dropout on), the global RNG reset to the same state before each tool's student forward: the same
    dropout masks are drawn only if both consume the RNG identically. ``step_time``: the student side of one
    step (forward, loss, backward; teacher outputs precomputed for both) on ``timing_batches`` batches,
    the tools alternated batch by batch, median ms over rounds 2-4.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from textdistill.config.schema import LayerMapConfig, LossTermConfig
    from textdistill.losses.objective import Objective
    from textdistill.models.hf import HFClassifier

    textbrewer, _ = vt.import_textbrewer()
    seed = args.seeds_list[0]
    exported = json.loads(Path(prepared["seeds"][seed]["data"]).read_text())
    rows = vt.read_glue_tsv(str(Path(args.data) / "train.tsv"))  # (sentence, label) by example id
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)

    def encode(positions: list[int]) -> dict[str, torch.Tensor]:
        texts = [rows[exported["train_ids"][i]][0] for i in positions]
        enc = tokenizer(texts, padding=True, truncation=True, max_length=args.max_length, return_tensors="pt")
        return dict(enc)

    first = exported["batches"][0][0]  # positions in train_ids of epoch 0's first batch
    n_train = len(exported["train_ids"])
    lengths = [len(tokenizer(rows[exported["train_ids"][i]][0])["input_ids"]) for i in range(n_train)]
    by_length = sorted(range(n_train), key=lambda i: (lengths[i], i))
    mixed = [by_length[round(k * (n_train - 1) / 15)] for k in range(16)]
    batches = {"step": encode(first), "step_mixed": encode(mixed)}
    timed = [encode(b) for b in exported["batches"][0][:timing_batches]]

    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher, dtype=torch.float32).eval()
    student = AutoModelForSequenceClassification.from_pretrained(
        prepared["student_init"], dtype=torch.float32
    ).eval()  # eval: no dropout, so both tools see the same forward
    pairs = prepared["layer_pairs"]
    layer_map = LayerMapConfig(strategy="explicit", pairs=pairs)
    terms = [
        LossTermConfig(name="hidden_mse", layer_map=layer_map),
        LossTermConfig(name="attention_mse", layer_map=layer_map),
        LossTermConfig(name="kd_kl", params={"temperature": 1.0}),
    ]
    t_wrap, s_wrap = HFClassifier(teacher), HFClassifier(student)
    objective = Objective(terms, t_wrap.info, s_wrap.info)

    def inputs(batch: dict[str, torch.Tensor]) -> tuple:
        return batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")

    # TextBrewer's distiller on the same models, its projections set to textdistill's
    att_pairs = [(s - 1, t - 1) for s, t in pairs if s > 0 and t > 0]
    hooks_t = vt.QKScores(teacher, [t for _, t in att_pairs])
    hooks_s = vt.QKScores(student, [s for s, _ in att_pairs])
    d_s, d_t = student.config.hidden_size, teacher.config.hidden_size
    matches = [
        {
            "layer_T": t,
            "layer_S": s,
            "feature": "hidden",
            "loss": "hidden_mse",
            "weight": 1,
            "proj": ["linear", d_s, d_t],
        }
        for s, t in pairs
    ]
    matches += [
        {"layer_T": t, "layer_S": s, "feature": "attention", "loss": "attention_mse", "weight": 1}
        for s, t in att_pairs
    ]

    def adaptor(hooks: Any):
        return lambda b, o: {
            "logits": o.logits,
            "inputs_mask": b["attention_mask"],
            "hidden": o.hidden_states,
            "attention": hooks.scores(),
        }

    distiller = textbrewer.GeneralDistiller(
        textbrewer.TrainingConfig(device="cpu", log_dir=None, output_dir=str(Path(args.work) / "tb-step")),
        textbrewer.DistillationConfig(
            temperature=1, kd_loss_type="ce", kd_loss_weight=1, intermediate_matches=matches
        ),
        teacher,
        student,
        adaptor(hooks_t),
        adaptor(hooks_s),
    )
    mine = [m for m in objective.modules() if isinstance(m, torch.nn.Linear)]
    theirs = [p for p in distiller.projs if p is not None]
    assert len(mine) == len(theirs) == len(pairs), (len(mine), len(theirs))
    for a, b in zip(mine, theirs):
        b.weight.data.copy_(a.weight.data)
        b.bias.data.copy_(a.bias.data)
    post = textbrewer.distiller_utils.post_adaptor

    def teacher_outputs(batch: dict[str, torch.Tensor]) -> tuple[Any, Any]:
        with torch.no_grad():
            own = t_wrap(*inputs(batch), features=objective.teacher_request())
            tb = post(distiller.adaptor_T(batch, teacher(**batch, output_hidden_states=True)))
        return own, tb

    def zero() -> None:
        student.zero_grad(set_to_none=True)
        objective.zero_grad(set_to_none=True)
        for p in theirs:
            p.zero_grad(set_to_none=True)

    def td_step(batch: dict[str, torch.Tensor], t_out: Any) -> tuple[torch.Tensor, dict, list[float]]:
        zero()
        t0 = time.perf_counter()
        s_out = s_wrap(*inputs(batch), features=objective.student_request())
        t1 = time.perf_counter()
        total, parts = objective(s_out.float(), t_out, batch)
        t2 = time.perf_counter()
        total.backward()
        return total, parts, [t1 - t0, t2 - t1, time.perf_counter() - t2]

    def tb_step(batch: dict[str, torch.Tensor], res_t: Any) -> tuple[torch.Tensor, dict, list[float]]:
        zero()
        t0 = time.perf_counter()
        res_s = post(distiller.adaptor_S(batch, student(**batch, output_hidden_states=True)))
        t1 = time.perf_counter()
        total, parts = distiller.compute_loss(res_s, res_t)
        t2 = time.perf_counter()
        total.backward()
        return total, parts, [t1 - t0, t2 - t1, time.perf_counter() - t2]

    def own_grads() -> dict[str, torch.Tensor]:
        grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
        for i, p in enumerate(objective.parameters()):
            grads[f"projection.{i}"] = p.grad.clone()
        return grads

    def their_grads() -> dict[str, torch.Tensor]:
        grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
        for i, p in enumerate(q for m in theirs for q in (m.weight, m.bias)):
            grads[f"projection.{i}"] = p.grad.clone()
        return grads

    def worst(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
        assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
        return max(float((b[n] - g).abs().max() / g.abs().max().clamp_min(1e-30)) for n, g in a.items())

    def entropy(res_t: Any) -> float:
        p_t = torch.softmax(res_t["logits"][0], -1)
        return float(-(p_t * p_t.log()).sum(-1).mean())

    def floats(total: torch.Tensor, parts: dict) -> dict[str, float]:
        return {"total": float(total), **{k: float(v) for k, v in parts.items()}}

    out: dict[str, Any] = {}
    teacher_of = {name: teacher_outputs(batch) for name, batch in batches.items()}
    for name, batch in batches.items():  # textdistill's own averaging first
        total, parts, _ = td_step(batch, teacher_of[name][0])
        out[name] = {
            "batch_examples": len(batch["input_ids"]),
            "batch_lengths": batch["attention_mask"].sum(-1).tolist(),
            "textdistill_default": floats(total, parts),
        }

    # student-side cost of a step, train mode, the tools alternated batch by batch (textdistill's averaging)
    student.train()
    timed_teacher = [teacher_outputs(b) for b in timed]
    spans: dict[str, list[list[float]]] = {"textdistill": [], "textbrewer": []}
    for rnd in range(4):
        for i, batch in enumerate(timed):
            order = ["textdistill", "textbrewer"] if (rnd + i) % 2 == 0 else ["textbrewer", "textdistill"]
            for tool in order:
                torch.manual_seed(rnd * 1000 + i)
                if tool == "textdistill":
                    _, _, span = td_step(batch, timed_teacher[i][0])
                else:
                    _, _, span = tb_step(batch, timed_teacher[i][1])
                if rnd > 0:  # round 0 warms up
                    spans[tool].append(span)
    out["step_time"] = {
        "batches": len(timed),
        "rounds_timed": 3,
        "threads": torch.get_num_threads(),
        **{
            tool: {
                key: 1000 * statistics.median(s[k] if k < 3 else sum(s) for s in v)
                for k, key in enumerate(["forward_ms", "loss_ms", "backward_ms", "total_ms"])
            }
            for tool, v in spans.items()
        },
    }

    per_token_averaging()
    student.eval()
    for name, batch in batches.items():
        own_t, tb_t = teacher_of[name]
        total, parts, _ = td_step(batch, own_t)
        token = floats(total, parts)
        token_grads = own_grads()
        tb_total, tb_parts, _ = tb_step(batch, tb_t)
        h = entropy(tb_t)
        out[name].update(
            textdistill_per_token=token,
            textbrewer_terms={k: float(v) for k, v in tb_parts.items()},
            textbrewer_total=float(tb_total),
            teacher_entropy=h,
            textbrewer_total_minus_entropy=float(tb_total) - h,
            gradient_tensors_compared=len(token_grads),
            max_relative_gradient_difference=worst(token_grads, their_grads()),
        )

    # train mode: dropout on, the same RNG state before each tool's forward (TextBrewer's averaging)
    student.train()
    checks = []
    for name, batch in [("first", batches["step"]), ("mixed", batches["step_mixed"]), ("timed[5]", timed[5])]:
        own_t, tb_t = teacher_outputs(batch)
        torch.manual_seed(123)
        total, _, _ = td_step(batch, own_t)
        grads = own_grads()
        torch.manual_seed(123)
        tb_total, _, _ = tb_step(batch, tb_t)
        checks.append(
            {
                "batch": name,
                "textdistill_per_token_total": float(total),
                "textbrewer_total_minus_entropy": float(tb_total) - entropy(tb_t),
                "max_relative_gradient_difference": worst(grads, their_grads()),
            }
        )
    out["step_train_mode"] = checks
    return out


# --------------------------------------------------------------------------------------------- orchestrator
def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--child":
        return child(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--teacher", default="runs/bench-sst2/teacher/model")
    ap.add_argument("--work", default="runs/bench-intermediate-parity")
    ap.add_argument("--out", default="benchmarks/results/intermediate_parity.json")
    ap.add_argument("--train-examples", type=int, default=2000)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS)
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the runs of other variants (and the step checks) of an existing --out JSON; replace these",
    )
    ap.add_argument("--skip-step", action="store_true", help="only the training runs")
    ap.add_argument(
        "--steps-only",
        action="store_true",
        help="only the step checks, merged into an existing --out JSON (its training runs are kept)",
    )
    own = ap.parse_args(argv)
    args = vt.parse_args(
        ["--data", own.data, "--teacher", own.teacher, "--work", own.work, "--train-examples",
         str(own.train_examples), "--jobs", "intermediate", "--seeds", "1"]
    )  # fmt: skip
    work = Path(own.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    prepared = vt.prepare(args, work)
    results: dict[str, Any] = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": vt.machine_info(),
        "layer_pairs": prepared["layer_pairs"],
    }
    if not own.skip_step:
        steps = step_checks(prepared, args)
        results.update(steps)
        print(json.dumps(steps, indent=1), flush=True)
        if own.steps_only:  # keep the training runs of an earlier invocation
            out = Path(own.out)
            earlier = json.loads(out.read_text()) if out.is_file() else {}
            earlier.update(steps, steps_command=results["command"], steps_machine=results["machine"])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(earlier, indent=2))
            print(f"wrote {out}")
            return 0
    seed = args.seeds_list[0]
    base = {
        **vt.base_spec(args, prepared),
        "job": "intermediate",
        "setting": "best",
        "seed": seed,
        "data": prepared["seeds"][seed]["data"],
        "train_examples_used": prepared["seeds"][seed]["train_examples_used"],
        "td_cache": True,
        "td_cache_dir": None,
        "td_keep_cache_as": None,
        "td_precision": "auto",
    }
    runs = []
    for draw in range(1, own.draws + 1):
        for variant in own.variants:
            name = f"{variant}-draw{draw}"
            spec = dict(
                base,
                name=name,
                tool="textbrewer" if variant == "textbrewer" else "textdistill",
                variant=variant,
                draw=draw,
                run_dir=str((work / "runs" / name).resolve()),
                result=str((work / "results" / f"{name}.json").resolve()),
            )
            spec_path = work / "specs" / f"{name}.json"
            spec_path.parent.mkdir(parents=True, exist_ok=True)
            Path(spec["result"]).parent.mkdir(parents=True, exist_ok=True)
            Path(spec["result"]).unlink(missing_ok=True)
            spec_path.write_text(json.dumps(spec, indent=2))
            log = work / "logs" / f"{name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("w") as f:
                rc = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    check=False,
                ).returncode
            if rc != 0 or not Path(spec["result"]).is_file():
                print(f"{name} failed (exit {rc}):\n{log.read_text()[-3000:]}", file=sys.stderr)
                return 1
            res = json.loads(Path(spec["result"]).read_text())
            runs.append({"variant": variant, "draw": draw, **res})
            print(f"[{time.time() - t0:5.0f}s] {name}: epochs {res['epoch_accuracy']}", flush=True)
    if own.merge and Path(own.out).is_file():
        earlier = json.loads(Path(own.out).read_text())
        kept = [r for r in earlier.get("runs", []) if r["variant"] not in own.variants]
        runs = kept + runs
        commands = earlier.get("merged_commands", [earlier.get("command")])
        earlier.update({k: v for k, v in results.items() if k not in ("command", "machine")})
        results = dict(
            earlier, merged_commands=[*commands, results["command"]], merged_machine=results["machine"]
        )
    summary = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        accs = [r["dev_accuracy_final"] for r in runs if r["variant"] == variant]
        summary[variant] = {
            "dev_accuracy_final": accs,
            "mean": statistics.mean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        }
    results.update(runs=runs, summary=summary, total_s=time.time() - t0)
    out = Path(own.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print("| variant | dev acc per draw | mean ± std |\n|---|---|---|")
    for variant, s in summary.items():
        per = ", ".join(f"{a:.4f}" for a in s["dev_accuracy_final"])
        print(f"| {variant} | {per} | {s['mean']:.4f} ± {s['std']:.4f} |")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
