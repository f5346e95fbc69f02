"""Batch-grading throughput: N generated submissions (correct, buggy, hostile) graded with ``-j 2``.

    python benchmarks/batch.py [--count 50] [--jobs 2] [--questions q1 q2 q3 q4] [--no-append]

Submissions are made from the model answers: about half correct, a third with a
plausible bug, the rest hostile (crashes its worker at import, imports the
reference, blows up memory, monkeypatches torch, prints a fake summary) or
untouched stubs. The figure appended to ``benchmarks/RESULTS.md`` (section
``## Batch``) is submissions per minute, with the single-submission time of
``grade ex4`` on the same questions for comparison.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

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
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    from grader import batch, exercises

    exercise = exercises.load("ex4")
    questions = tuple(q.id for q in exercise.select(tuple(q for q in args.questions
                                                          if q in {x.id for x in exercise.questions})))
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch:
        root = Path(scratch)
        # the single-submission path, for comparison: one `grade ex4` process on the model answers
        import subprocess

        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from grader.cli import main; main()", "ex4", *questions,
                        "--solutions"], cwd=root, capture_output=True, check=True)
        single = time.perf_counter() - started
        subs = make(root, args.count)
        started = time.perf_counter()
        summary = batch.run_batch("ex4", subs, root / "results", questions=questions, jobs=args.jobs, progress=True)
        elapsed = time.perf_counter() - started
    per_minute = len(summary.graded) / elapsed * 60
    line = (f"| {time.strftime('%Y-%m-%d')} | {platform.node()} ({__import__('os').cpu_count()} cores) | "
            f"{' '.join(questions)} | {args.count} | {args.jobs} | {elapsed:.1f} s | {per_minute:.1f} | "
            f"{single:.1f} s | {len(summary.failed)} |")
    print(f"{args.count} submissions in {elapsed:.1f} s with -j {args.jobs}: {per_minute:.1f} per minute "
          f"(single `grade ex4 {' '.join(questions)}` process: {single:.1f} s)")
    if not args.no_append:
        results = ROOT / "benchmarks" / "RESULTS.md"
        text = results.read_text() if results.exists() else "# Benchmarks\n"
        if "## Batch" not in text:
            text = text.rstrip() + (
                "\n\n## Batch\n\n`python benchmarks/batch.py` (generated correct, buggy and hostile submissions, "
                "`grade batch` with long-lived judges).\n\n"
                "| date | machine | questions | submissions | -j | wall time | submissions/min | "
                "single `grade` | not gradable |\n|---|---|---|---|---|---|---|---|---|\n")
        start = text.index("## Batch")
        end = text.find("\n## ", start + 1)
        end = len(text) if end < 0 else end
        text = text[:start] + text[start:end].rstrip() + "\n" + line + "\n" + ("\n" + text[end:].lstrip("\n")
                                                                            if end < len(text) else "")
        results.write_text(text)


if __name__ == "__main__":
    main()
