"""Time the single-submission path and its usage errors; record them in benchmarks/RESULTS.md.

Times, as separate processes (what a learner waits for), each ``--repeat`` times:
``python -c "import torch"``, ``grade ex4 q1 --solutions``, ``grade ex4 --solutions``
and five usage errors (which must answer before torch is imported). Each row gives
wall time and machine time (CPU seconds of all the processes of the command:
judge, fork server, workers; see ``timing.py``) as minimum / median, and the
load average when it ran: other work on the machine skews wall times, so compare
minima taken at similar load. Also the per-question grading time from the JSON
report. Rewrites the section between the ``<!-- grading-... -->`` markers of
RESULTS.md; other sections are kept.

Bytecode caches are written and used as on a learner's machine (a
``PYTHONDONTWRITEBYTECODE`` in this environment is dropped for the runs; one
warm-up run fills the caches), unless ``--no-bytecode-cache``.

Usage: python benchmarks/grading.py [--repeat 5] [--device cpu|cuda] [--label TEXT] [--kit DIR]
[--no-bytecode-cache]
``--kit DIR`` times another copy of the kit (e.g. ``git archive <commit> | tar -x -C DIR``), for before/after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

import timing

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
KIT = Path(__file__).resolve().parent.parent


def rows(device: str, scratch: Path) -> dict[str, list[str]]:
    """Command label → argv (run in ``scratch``, which holds ``answers/``, ``empty/`` and ``notes.txt``)."""
    grade = [sys.executable, "-m", "grader"]
    return {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "grade ex4 q1 --solutions": grade + ["ex4", "q1", "--solutions", "--device", device],
        "grade ex4 --solutions": grade + ["ex4", "--solutions", "--device", device],
        "grade ex4 q9 (error)": grade + ["ex4", "q9"],
        "grade ex4 --submission missing (error)": grade + ["ex4", "--submission", "missing"],
        "grade ex4 --submission answers/q1_positional_encoding.py (error)":
            grade + ["ex4", "--submission", "answers/q1_positional_encoding.py"],
        "grade ex4 --submission empty (error)": grade + ["ex4", "--submission", "empty"],
        "grade ex4 q1 --solutions --json empty (error)": grade + ["ex4", "q1", "--solutions", "--json", "empty"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--label", default=None, help="section label (default: device and machine)")
    parser.add_argument("--kit", type=Path, default=KIT, help="the copy of the kit to time (default: this one)")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="keep PYTHONDONTWRITEBYTECODE=1: every kit module is compiled at every start")
    options = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if options.no_bytecode_cache:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = str(options.kit.resolve())
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as folder:
        scratch = Path(folder)
        (scratch / "answers").mkdir()
        (scratch / "answers" / "q1_positional_encoding.py").write_text("")
        (scratch / "empty").mkdir()
        commands = rows(options.device, scratch)
        timing.run(commands["grade ex4 --solutions"], env=env, cwd=folder)  # warm-up: bytecode caches
        measured = {}
        for name, command in commands.items():
            load = timing.load()
            runs = [timing.run(command, env=env, cwd=folder) for _ in range(options.repeat)]
            measured[name] = (runs, load)
        report = scratch / "result.json"
        timing.run([sys.executable, "-m", "grader", "ex4", "--solutions", "--device", options.device, "--json",
                    str(report)], env=env, cwd=folder)
        result = json.loads(report.read_text())
    import torch

    label = options.label or f"{options.device}, {os.cpu_count()} cores, {platform.machine()}"
    lines = [f"## Single submission: {label} (torch {torch.__version__}, {options.repeat} runs each)", "",
             f"`python benchmarks/grading.py --repeat {options.repeat}"
             + (f" --kit {options.kit}" if options.kit != KIT else "")
             + (" --no-bytecode-cache" if options.no_bytecode_cache else "") + "`", "",
             "| command | wall s (min / median) | machine s·core (min / median) | exit | load |",
             "|---|---|---|---|---|"]
    for name, (runs, load) in measured.items():
        cpu = [r.cpu_s for r in runs if r.cpu_s is not None]
        lines.append(f"| `{name}` | {timing.summary([r.wall_s for r in runs])} | "
                     f"{timing.summary(cpu) if cpu else '-'} | {runs[0].returncode} | {load} |")
    lines += ["", f"Score {result['score']:g}/{result['max_score']:g}; worker peak RSS "
              f"{result.get('worker_peak_rss_mb', 0):.0f} MB; time inside grading per question "
              "(sum of test durations, s):", "", "| question | tests | seconds |", "|---|---|---|"]
    for question in result["questions"]:
        seconds = sum(t["duration_s"] for t in question["tests"])
        lines.append(f"| {question['id']} | {len(question['tests'])} | {seconds:.2f} |")
    key = f"grading-{options.device}" if options.label is None else "grading-" + re.sub(r"\W+", "-", label).strip("-")
    write_section(key, "\n".join(lines))
    print("\n".join(lines))


def write_section(key: str, body: str) -> None:
    """Replace the text between ``<!-- key -->`` and ``<!-- /key -->`` in RESULTS.md (append if absent)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    elif "\n## Batch" in text:  # single-submission sections come before the batch table
        at = text.index("\n## Batch")
        text = text[:at].rstrip() + "\n\n" + block + "\n\n" + text[at + 1:]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
