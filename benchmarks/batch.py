"""Batch-grading throughput: N generated submissions (correct, buggy, hostile) graded with ``-j 2``.

    python benchmarks/batch.py [--count 50] [--jobs 2] [--questions q1 q2 q3 q4] [--kit DIR] [--no-append]

Submissions are made from the model answers: about half correct, a third with a
plausible bug, the rest hostile (crashes its worker at import, imports the
reference, blows up memory, monkeypatches torch, prints a fake summary) or
untouched stubs. The figure appended to ``benchmarks/RESULTS.md`` (section
``## Batch``) is submissions per minute, machine time per submission two ways
(wall time x cores / submissions, and the CPU seconds of every process of
``grade batch`` / submissions, see ``timing.py``), with the single-submission
time of ``grade ex4`` on the same questions for comparison. ``grade batch`` runs
as its own process, on the kit in ``--kit`` (default: this checkout).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import timing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SOLUTIONS = ROOT / "solutions" / "ex4"
STUBS = ROOT / "exercises" / "ex4"
Q1 = "q1_positional_encoding.py"

HOSTILE = {
    "crash": "import os\nos._exit(1)\n",
    "reference": "from reference.positional_encoding import *  # noqa\n",
    "memory": "x = bytearray(64 * 2**30)\n",
    "patch": "import torch\ntorch.allclose = lambda *a, **k: True\ntorch.testing.assert_close = lambda *a, **k: None\n",
    "fake": "print('===== 13 passed in 0.1s =====')\nraise SystemExit(0)\n",
}
BUGS = [
    ("torch.sin(", "torch.cos("),  # q1: cos everywhere
    ("10000.0", "1000.0"),  # q1: wrong base
]


TABLE = ("| date | machine | questions | submissions | -j | wall time | submissions/min | wall s x cores / submission "
         "| CPU s / submission | single `grade` | not gradable |\n|---|---|---|---|---|---|---|---|---|---|---|")


def make(root: Path, count: int) -> Path:
    subs = root / "submissions"
    subs.mkdir()
    kinds = []
    for i in range(count):
        kind = ["correct", "correct", "buggy", "correct", "hostile", "buggy", "stubs", "correct", "hostile", "buggy"][
            i % 10]
        folder = subs / f"learner{i:03d}"
        shutil.copytree(STUBS if kind == "stubs" else SOLUTIONS, folder, ignore=shutil.ignore_patterns("__pycache__"))
        if kind == "buggy":
            old, new = BUGS[i % len(BUGS)]
            text = (folder / Q1).read_text()
            (folder / Q1).write_text(text.replace(old, new))
        if kind == "hostile":
            name = list(HOSTILE)[i % len(HOSTILE)]
            (folder / Q1).write_text(HOSTILE[name] + (folder / Q1).read_text())
            kind = f"hostile:{name}"
        kinds.append(kind)
    return subs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--questions", nargs="*", default=["q1", "q2", "q3", "q4"])
    parser.add_argument("--kit", type=Path, default=ROOT, help="the copy of the kit to time (default: this one)")
    parser.add_argument("--note", default="", help="words for the machine column (e.g. 'before')")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    from grader import exercises

    exercise = exercises.load("ex4")
    questions = tuple(q.id for q in exercise.select(tuple(q for q in args.questions
                                                          if q in {x.id for x in exercise.questions})))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as on an instructor's machine
    env["PYTHONPATH"] = str(args.kit.resolve())
    grade = [sys.executable, "-m", "grader"]
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch:
        root = Path(scratch)
        # the single-submission path, for comparison: one `grade ex4` process on the model answers
        single = timing.run(grade + ["ex4", *questions, "--solutions"], env=env, cwd=scratch)
        subs = make(root, args.count)
        load = timing.load()
        batch = timing.run(grade + ["batch", "ex4", str(subs), "--out", str(root / "results"), "-j", str(args.jobs),
                                    "--no-progress", *[f"--question={q}" for q in questions]], env=env, cwd=scratch)
        graded = len(list((root / "results").glob("*/result.json")))
    per_minute = graded / batch.wall_s * 60
    machine = f"{batch.cpu_s / args.count:.2f}" if batch.cpu_s is not None else "-"
    note = f", {args.note}" if args.note else ""
    line = (f"| {time.strftime('%Y-%m-%d')} | {platform.node()} ({os.cpu_count()} cores, load {load}{note}) | "
            f"{' '.join(questions)} | {args.count} | {args.jobs} | {batch.wall_s:.1f} s | {per_minute:.1f} | "
            f"{batch.wall_s * os.cpu_count() / args.count:.2f} | {machine} | {single.wall_s:.1f} s | "
            f"{args.count - graded} |")
    print(f"{args.count} submissions in {batch.wall_s:.1f} s with -j {args.jobs}: {per_minute:.1f} per minute, "
          f"{machine} s of CPU per submission (single `grade ex4 {' '.join(questions)}`: {single.wall_s:.1f} s)")
    if not args.no_append:
        results = ROOT / "benchmarks" / "RESULTS.md"
        text = results.read_text() if results.exists() else "# Benchmarks\n"
        if "## Batch" not in text:
            text = text.rstrip() + "\n\n## Batch\n\n"
        start = text.index("## Batch")
        ends = [i for i in (text.find("\n## ", start + 1), text.find("\n<!-- ", start + 1)) if i >= 0]
        end = min(ends, default=len(text))
        section = text[start:end].rstrip()
        if TABLE not in section:
            section += "\n\n" + TABLE
        text = text[:start] + section + "\n" + line + "\n" + ("\n" + text[end:].lstrip("\n") if end < len(text) else "")
        results.write_text(text)


if __name__ == "__main__":
    main()
