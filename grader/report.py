"""Reports of a result document: the terminal view, JSON and JUnit XML.

Every writer takes the result document of ``grader.scoring.build_result`` and
nothing else; files are written atomically (a temporary file renamed into
place), so a report file is never half-written and never one the submission
planted.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)


def write_json(result: dict[str, Any], path: Path) -> None:
    write_atomic(path, json.dumps(result, indent=2) + "\n")


def write_junit(result: dict[str, Any], path: Path) -> None:
    """JUnit XML: one test suite per question, one test case per hidden test."""
    from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

    xml = JUnitXml(name=result["exercise"])
    for question in result["questions"]:
        suite = TestSuite(f"{result['exercise']}.{question['id']}")
        for test in question["tests"]:
            case = TestCase(test["name"], classname=f"{result['exercise']}.{question['id']}", time=test["duration_s"])
            kind = {"failed": Failure, "error": Error, "skipped": Skipped}.get(test["outcome"])
            if kind is not None:
                first = (test["message"].splitlines() or [""])[0]
                entry = kind(first)
                entry.text = test["message"]
                case.result = [entry]
            suite.add_testcase(case)
        xml.add_testsuite(suite)
    write_atomic(path, xml.tostring().decode() if isinstance(xml.tostring(), bytes) else xml.tostring())


def _mark(score: float, max_score: float) -> str:
    if max_score == 0:
        return "[dim]-[/]"
    colour = "green" if score == max_score else "yellow" if score > 0 else "red"
    return f"[{colour}]{score:g}/{max_score:g}[/]"


def render(result: dict[str, Any], console: Console, *, verbose: bool = False) -> None:
    """Per-question table, then each failing test with its message, then the total."""
    where = Path(result.get("submission", "submission"))
    table = Table(title=f"{result['exercise']} · {where.parent.name}/{where.name} · {result.get('device', 'cpu')}",
                  title_justify="left")
    table.add_column("question")
    table.add_column("title")
    table.add_column("score", justify="right")
    table.add_column("tests", justify="right")
    for question in result["questions"]:
        passed = sum(t["outcome"] == "passed" for t in question["tests"])
        counted = sum(t["outcome"] != "skipped" for t in question["tests"])
        table.add_row(question["id"], escape(question["title"]), _mark(question["score"], question["max_score"]),
                      f"{passed}/{counted}")
    console.print(table)
    for question in result["questions"]:
        tests = question["tests"]
        shown = [t for t in tests if verbose or t["outcome"] in ("failed", "error")]
        unimplemented = [t for t in shown if t["message"].startswith("not implemented yet")]
        if unimplemented and len(unimplemented) == len([t for t in tests if t["outcome"] != "skipped"]) and not verbose:
            console.print(f"\n[bold]{question['id']}[/] not implemented yet ({len(unimplemented)} tests)")
            continue
        if shown:
            console.print(f"\n[bold]{question['id']}[/] {escape(question['title'])}")
        for test in shown:
            colour = {"passed": "green", "skipped": "dim", "error": "magenta"}.get(test["outcome"], "red")
            console.print(f"  [{colour}]{test['outcome']:<7}[/] {escape(test['name'])} "
                          f"[dim]({test['points']:g}/{test['max_points']:g})[/]")
            if test["message"] and test["outcome"] != "passed":
                for line in test["message"].splitlines()[:14]:
                    console.print(f"           {escape(line)}", highlight=False)
    notes = [(q["id"], t["name"], t["notes"]) for q in result["questions"] for t in q["tests"] if t.get("notes")]
    if notes:
        console.print("\n[bold]Measured, not graded[/]")
        for qid, name, values in notes:
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
            console.print(f"  {qid} {escape(name)}: {escape(shown)}")
    skipped = [t for q in result["questions"] for t in q["tests"] if t["outcome"] == "skipped"]
    if skipped and not verbose:
        console.print(f"\n[dim]{len(skipped)} tests skipped: {escape(skipped[0]['message'])}[/]")
    console.print(f"\n[bold]Total: {result['score']:g}/{result['max_score']:g}[/]"
                  f"  [dim]({result.get('duration_s', 0):.1f} s)[/]")
