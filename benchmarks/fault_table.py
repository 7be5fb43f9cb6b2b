"""Measure docs/reliability.md's fault table: each fault made real, through the ``textdistill`` CLI.

    sudo python benchmarks/fault_table.py --teacher ../shared/models/teacher-sst2-minilm \
        --data ../shared/data/sst2 --work /tmp/faults

Needs root for the real faults: tmpfs mounts of 20, 40 and 70 MB (disk full during a checkpoint), a
tmpfs remounted read-only while the run writes (read-only mid-run), ``chattr +i`` (a directory that even
root cannot write: the permission error of an output dir owned by someone else). The rest runs anywhere.
Each scenario prints one row: the fault, the exit status and the first line of the error the user sees,
and what is left on disk (checked: previous checkpoint verified, student files, markers). Runs use the
MiniLM teacher with a 64-wide, 1-layer shrink student (checkpoints about 25 MB) on the first 640 SST-2
training sentences; the numbers in the table are the exit status, sizes and file checks, not timings.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
ROWS: list[tuple[str, str, str]] = []


def cli(*args: str, stdin: str | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "textdistill.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def first_error(p: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith(("textdistill: error", "Traceback"))]
    lines += [ln for ln in p.stderr.splitlines() if ln.startswith("textdistill:")]
    text = lines[0] if lines else (p.stderr.strip().splitlines() or ["(nothing)"])[-1]
    if text.endswith(":"):  # "N configuration problems:": show the first problem too
        after = p.stderr.splitlines()
        text += " " + " ".join(ln.strip() for ln in after[after.index(text) + 1 :][:3])
    return ("Traceback! " if "Traceback" in p.stderr else "") + text[:400]


def row(fault: str, p: subprocess.CompletedProcess | str, kept: str) -> None:
    seen = p if isinstance(p, str) else f"exit {p.returncode}: {first_error(p)}"
    ROWS.append((fault, seen, kept))
    print(f"| {fault} | {seen} | {kept} |", flush=True)


def run_args(work: Path, teacher: str, out: Path, *extra: str) -> list[str]:
    return [
        "distill",
        "--teacher",
        teacher,
        "--train",
        str(work / "train.tsv"),
        "--dev",
        str(work / "dev.tsv"),
        "-o",
        str(out),
        "student.type=shrink",
        "student.num_layers=1",
        "student.hidden_size=64",
        "student.num_heads=2",
        "train.batch_size=32",
        "train.epochs=1",
        "train.save_every=5",
        "train.eval_every=5",
        "train.keep_checkpoints=2",
        "train.progress=false",
        "teacher.cache=false",
        "data.max_length=64",
        "report=false",
        *extra,
    ]


def checkpoints(out: Path) -> str:
    sys.path.insert(0, str(ROOT / "src"))
    from textdistill.training.checkpoint import list_checkpoints, verify_checkpoint

    good = []
    for _step, p in list_checkpoints(out):
        try:
            verify_checkpoint(p)
            good.append(p.name)
        except Exception as e:  # noqa: BLE001 - reported in the table
            good.append(f"{p.name} BAD ({e})")
    left = (
        [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
        if (out / "checkpoints").is_dir()
        else []
    )
    return f"checkpoints verified: {good or 'none'}; temporary leftovers: {left or 'none'}"


def mount(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False)


# -- scenarios ------------------------------------------------------------------------------------------
def disk_full(work: Path, teacher: str) -> None:
    for size in ("20m", "40m", "70m"):
        mnt = work / f"tmpfs-{size}"
        mount(mnt, size)
        try:
            p = cli(*run_args(work, teacher, mnt / "run"))
            row(f"disk full during a checkpoint (tmpfs {size.upper()}B)", p, checkpoints(mnt / "run"))
        finally:
            umount(mnt)


def read_only_mid_run(work: Path, teacher: str) -> None:
    """The run directory turns unwritable mid-run: ``chattr +i`` on it and on checkpoints/ once step-6
    exists (a busy tmpfs cannot be remounted read-only; the immutable flag refuses every new file the same
    way, EPERM instead of EROFS, even for root)."""
    out = work / "ro-run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "textdistill.cli", *run_args(work, teacher, out, "train.save_every=3")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    while proc.poll() is None and not (out / "checkpoints" / "step-6").is_dir():
        time.sleep(0.05)
    frozen = [out, out / "checkpoints"]
    subprocess.run(["chattr", "+i", *map(str, frozen)], check=True)
    try:
        o, e = proc.communicate(timeout=900)
    finally:
        subprocess.run(["chattr", "-i", *map(str, frozen)], check=False)
    p = subprocess.CompletedProcess(proc.args, proc.returncode, o, e)
    status = json.loads((out / "run.json").read_text()).get("status")
    row(
        "run dir turns unwritable mid-run (chattr +i after step-6)",
        p,
        f"{checkpoints(out)}; run.json: {status}",
    )


def unwritable(work: Path, teacher: str) -> None:
    theirs = work / "theirs"
    theirs.mkdir(exist_ok=True)
    subprocess.run(["chattr", "+i", str(theirs)], check=True)
    try:
        args = run_args(work, teacher, theirs / "run")[
            3:
        ]  # config validate takes teacher.path=, not --teacher
        v = cli("config", "validate", f"teacher.path={teacher}", *args)
        row("output dir not writable (chattr +i: EPERM even for root): config validate", v, "nothing written")
        p = cli(*run_args(work, teacher, theirs / "run"))
        row("output dir not writable: distill", p, "nothing written")
        p = cli(
            *run_args(
                work,
                teacher,
                work / "cache-run",
                f"teacher.cache_dir={theirs / 'cache'}",
                "teacher.cache=true",
            )
        )
        row("teacher.cache_dir not writable: distill", p, f"run dir created: {(work / 'cache-run').exists()}")
    finally:
        subprocess.run(["chattr", "-i", str(theirs)], check=False)


def infinite(work: Path, teacher: str) -> None:
    p = cli(
        *run_args(
            work,
            teacher,
            work / "inf",
            "train.lr=.inf",
            "train.max_grad_norm=.inf",
            "train.weight_decay=.inf",
        )
    )
    row("train.lr / max_grad_norm / weight_decay = .inf", p, f"run dir created: {(work / 'inf').exists()}")


def remote_code(work: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_faults import make_remote_code_model

    marker = work / "MARKER"
    model = make_remote_code_model(work / "remote-model", marker)
    p = cli("evaluate", "--model", str(model), "--data", str(work / "dev.tsv"), stdin="y\n")
    row(
        "model dir with auto_map + custom module, `printf 'y\\n' | textdistill evaluate`",
        p,
        f"module ran: {marker.exists()}",
    )


def pickles(work: Path, teacher: str) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "tests"))
    from test_faults import Marker, rewrite_manifest

    out = work / "pickle-run"
    cli(*run_args(work, teacher, out, "train.max_steps=10"))
    run = json.loads((out / "run.json").read_text())
    run["status"] = "interrupted"
    (out / "run.json").write_text(json.dumps(run))
    marker = work / "PICKLE_MARKER"
    from textdistill.training.checkpoint import list_checkpoints

    newest = list_checkpoints(out)[0][1]
    torch.save({"state": Marker(str(marker))}, newest / "optimizer.pt")
    rewrite_manifest(newest)
    p = cli(*run_args(work, teacher, out, "train.max_steps=10"), "--resume")
    skipped = [ln for ln in p.stdout.splitlines() if "skipping checkpoint" in ln]
    resumed = [ln for ln in p.stdout.splitlines() if "resuming from" in ln]
    row(
        f"poisoned optimizer.pt in {newest.name} (manifest rewritten to match), --resume",
        f"exit {p.returncode}: {(skipped or ['(no skip line)'])[0][:300]}",
        f"code ran: {marker.exists()}; {(resumed or ['(did not resume)'])[0][:200]}",
    )


def huge(work: Path, teacher: str) -> None:
    (work / "big_header.tsv").write_text("x" * 5_000_000 + "\tlabel\nhello\t1\n")
    (work / "wide.tsv").write_text("\t".join(f"col{i}" for i in range(30000)) + "\nhello\n")
    for name in ("big_header.tsv", "wide.tsv"):
        p = cli("evaluate", "--model", teacher, "--data", str(work / name))
        row(
            f"{name} ({(work / name).stat().st_size:,} bytes of header)",
            f"exit {p.returncode}, {len(p.stderr):,} bytes of stderr",
            "-",
        )


def sigterm_phases(work: Path, teacher: str) -> None:
    for phase, marker, extra in (
        (
            "teacher-cache build",
            "teacher cache:",
            ("teacher.cache=true", f"teacher.cache_dir={work / 'cache-sig'}"),
        ),
        ("startup (before the run directory is written)", None, ()),
    ):
        out = work / f"sig-{len(marker or '')}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "textdistill.cli", *run_args(work, teacher, out, *extra)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        if marker:
            for line in proc.stdout:
                if marker in line:
                    break
        else:
            time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        o, e = proc.communicate(timeout=600)
        p = subprocess.CompletedProcess(proc.args, proc.returncode, o, e)
        status = (
            json.loads((out / "run.json").read_text()).get("status")
            if (out / "run.json").exists()
            else "(no run.json)"
        )
        row(f"SIGTERM during {phase}", p, f"run.json: {status}")


def resume_starts_over(work: Path, teacher: str) -> None:
    out = work / "over"
    cli(*run_args(work, teacher, out, "train.max_steps=10"))
    run = json.loads((out / "run.json").read_text())
    run["status"] = "interrupted"
    (out / "run.json").write_text(json.dumps(run))
    for p in (out / "checkpoints").iterdir():
        (p / "manifest.json").unlink()
    p = cli(*run_args(work, teacher, out, "train.max_steps=10"), "--resume")
    aside = sorted(work.glob("over.previous-*"))
    row(
        "--resume when every checkpoint fails verification",
        f"exit {p.returncode}: {[ln for ln in p.stdout.splitlines() if 'moved to' in ln][:1]}",
        f"earlier student kept: {[str(a / 'model') for a in aside if (a / 'model').is_dir()]}",
    )


def lock(work: Path, teacher: str) -> None:
    out = work / "locked"
    first = subprocess.Popen(
        [sys.executable, "-m", "textdistill.cli", *run_args(work, teacher, out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    while not (out / ".textdistill.lock").exists():
        time.sleep(0.05)
    p = cli(*run_args(work, teacher, out), "--resume")
    first.kill()
    first.wait()
    row("second process resumes a running run", p, "the first run's files untouched")
    p = cli(*run_args(work, teacher, out, "train.max_steps=5"), "--resume")
    note = [ln for ln in p.stdout.splitlines() if "taking over the lock" in ln]
    row(
        "resume after the first was SIGKILLed (stale lock)",
        f"exit {p.returncode}: {(note or ['(no note)'])[0][:300]}",
        f"run.json: {json.loads((out / 'run.json').read_text()).get('status')}",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--data", required=True, help="directory with train.tsv and dev.tsv (SST-2)")
    ap.add_argument("--work", default="/tmp/textdistill-faults")
    ap.add_argument("--only", nargs="*", help="scenario names to run")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    lines = Path(args.data, "train.tsv").read_text(encoding="utf-8").splitlines()
    (work / "train.tsv").write_text("\n".join(lines[:641]) + "\n", encoding="utf-8")
    dev = Path(args.data, "dev.tsv").read_text(encoding="utf-8").splitlines()
    (work / "dev.tsv").write_text("\n".join(dev[:129]) + "\n", encoding="utf-8")
    scenarios = {
        "remote_code": lambda: remote_code(work),
        "disk_full": lambda: disk_full(work, args.teacher),
        "read_only": lambda: read_only_mid_run(work, args.teacher),
        "unwritable": lambda: unwritable(work, args.teacher),
        "infinite": lambda: infinite(work, args.teacher),
        "pickles": lambda: pickles(work, args.teacher),
        "huge": lambda: huge(work, args.teacher),
        "sigterm": lambda: sigterm_phases(work, args.teacher),
        "starts_over": lambda: resume_starts_over(work, args.teacher),
        "lock": lambda: lock(work, args.teacher),
    }
    print("| fault | what the user sees | what is kept |\n|---|---|---|")
    for name, fn in scenarios.items():
        if not args.only or name in args.only:
            fn()


if __name__ == "__main__":
    main()
