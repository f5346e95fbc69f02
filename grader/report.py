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


def _umask() -> int:
    """The process's umask, read without changing it (``/proc``; else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` via a temporary file in the same folder and a rename.

    The file gets the mode any new file would (``0o666`` less the umask), not the
    ``0o600`` of a temporary file, so that others the user shares with can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(handle, 0o666 & ~_umask())
        with os.fdopen(handle, "wb" if isinstance(content, bytes) else "w",
                       **({} if isinstance(content, bytes) else {"encoding": "utf-8"})) as stream:
            stream.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(result: dict[str, Any], path: Path) -> None:
    write_atomic(path, json.dumps(result, indent=2) + "\n")


POINT_FIELDS = ("score", "max_score", "full_max_score", "skipped_points")


def write_junit(result: dict[str, Any], path: Path) -> None:
    """JUnit XML: one test suite per question, one test case per hidden test.

    A test skipped on this device (CUDA-only on a CPU) is ``<skipped>`` with its reason;
    each suite carries the question's ``score``, ``max_score`` (graded here),
    ``full_max_score`` and ``skipped_points`` as properties.
    """
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
        for name in POINT_FIELDS:
            if name in question:
                suite.add_property(name, f"{question[name]:g}")
        xml.add_testsuite(suite)
    xml.update_statistics()
    text = xml.tostring()
    write_atomic(path, text.decode() if isinstance(text, bytes) else text)


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
        points = result.get("skipped_points", sum(t["max_points"] for t in skipped))
        console.print(f"\n[dim]{len(skipped)} tests skipped ({points:g} points, not graded here: "
                      f"{result.get('full_max_score', result['max_score'] + points):g} in all): "
                      f"{escape(skipped[0]['message'])}[/]")
    console.print(f"\n[bold]Total: {result['score']:g}/{result['max_score']:g}[/]"
                  f"  [dim]({result.get('duration_s', 0):.1f} s)[/]")
