"""Time the single-submission path and record it in benchmarks/RESULTS.md.

Times, as separate processes (what a learner waits for): ``python -c "import torch"``,
``grade ex4 q1 --solutions`` and ``grade ex4 --solutions``, each ``--repeat`` times,
and the per-question grading time from the JSON report. Rewrites the section
between the ``<!-- grading -->`` markers of RESULTS.md; other sections are kept.

Usage: python benchmarks/grading.py [--repeat 3] [--device cpu|cuda] [--label TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--label", default=None, help="section label (default: device and machine)")
    options = parser.parse_args()
    grade = [sys.executable, "-m", "grader"]
    rows = {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "grade ex4 q1 --solutions": grade + ["ex4", "q1", "--solutions", "--device", options.device],
        "grade ex4 --solutions": grade + ["ex4", "--solutions", "--device", options.device],
    }
    times = {name: [timed(command) for _ in range(options.repeat)] for name, command in rows.items()}
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "result.json"
        subprocess.run(grade + ["ex4", "--solutions", "--device", options.device, "--json", str(report)],
                       check=True, stdout=subprocess.DEVNULL)
        result = json.loads(report.read_text())
    import torch

    label = options.label or f"{options.device}, {os.cpu_count()} cores, {platform.machine()}"
    lines = [f"## Single submission: {label} (torch {torch.__version__}, median of {options.repeat})", "",
             "| command | median s | min s | max s |", "|---|---|---|---|"]
    for name, values in times.items():
        lines.append(f"| `{name}` | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    lines += ["", f"Score {result['score']:g}/{result['max_score']:g}; worker peak RSS "
              f"{result.get('worker_peak_rss_mb', 0):.0f} MB; time inside grading per question "
              "(sum of test durations, s):", "", "| question | tests | seconds |", "|---|---|---|"]
    for question in result["questions"]:
        seconds = sum(t["duration_s"] for t in question["tests"])
        lines.append(f"| {question['id']} | {len(question['tests'])} | {seconds:.2f} |")
    notes = [(q["id"], t["name"], t["notes"]) for q in result["questions"] for t in q["tests"] if t.get("notes")]
    if notes:
        lines += ["", "Measured, not graded:", ""]
        lines += [f"- {qid} {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()) for qid, name, values in notes]
    write_section(f"grading-{options.device}", "\n".join(lines))
    print("\n".join(lines))


def write_section(key: str, body: str) -> None:
    """Replace the text between ``<!-- key -->`` and ``<!-- /key -->`` in RESULTS.md (append if absent)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
