"""Per-step overhead outside the model: the optimizer update and the finite-gradient check.

Parameters shaped like the demo student (2 layers, hidden 128, 30,522-token embedding table: 4.4M
parameters, 41 tensors) with random gradients; each variant warmed up 3 times, then the median of
``--repeats`` timed calls. Compares the per-tensor implementations the loop used before with the
ones it uses now:

    AdamW             torch's CPU default (single-tensor loop) | foreach=True (now) | fused=True
    finite check      isfinite(g).all() per gradient (before) | one fused norm per group (now)

Example:
    python benchmarks/step_overhead.py --repeats 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def params(vocab: int = 30522, hidden: int = 128, layers: int = 2) -> list[torch.nn.Parameter]:
    shapes = [(vocab, hidden), (512, hidden), (2, hidden)]
    for _ in range(layers):
        shapes += [(hidden, hidden)] * 4 + [(hidden * 4, hidden), (hidden, hidden * 4)]
        shapes += [(hidden,)] * 6 + [(hidden * 4,)]
    shapes += [(hidden, hidden), (hidden,), (3, hidden), (3,)]
    out = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    for p in out:
        p.grad = torch.randn_like(p)
    return out


def timed(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    ps = params()
    grads = [p.grad for p in ps]
    rows = {}
    for name, kw in [("AdamW default (single-tensor)", {}), ("AdamW foreach", {"foreach": True})]:
        opt = torch.optim.AdamW(ps, lr=1e-3, **kw)
        rows[name] = timed(opt.step, args.repeats)
    opt = torch.optim.AdamW(ps, lr=1e-3, fused=True)
    rows["AdamW fused"] = timed(opt.step, args.repeats)
    rows["finite check: isfinite per gradient"] = timed(
        lambda: bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()), args.repeats
    )
    rows["finite check: fused norms"] = timed(
        lambda: bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()), args.repeats
    )
    n = sum(p.numel() for p in ps)
    print(f"{n / 1e6:.2f}M parameters in {len(ps)} tensors, torch threads {torch.get_num_threads()}")
    print("| operation | ms per step (median) |\n|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {1000 * v:.1f} |")
    print(json.dumps({k: round(1000 * v, 2) for k, v in rows.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
