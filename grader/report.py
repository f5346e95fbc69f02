"""Reports of a result document: the terminal view, JSON and JUnit XML.

Every writer takes the result document of ``grader.scoring.build_result`` and
nothing else; files are written atomically (a temporary file renamed into
place), so a report file is never half-written and never one the submission
planted.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text


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
    what the learner's code printed during a test is its ``<system-out>``;
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
                message = printable(test["message"])  # XML 1.0 has no place for control characters
                entry = kind((message.splitlines() or [""])[0])
                entry.text = message
                case.result = [entry]
            if test.get("output"):
                case.system_out = test["output"]  # what the learner's code printed (already printable)
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


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with carriage returns as line breaks and other control characters as ``\\xNN``.

    Learner code writes messages and output; an escape sequence in them could move the
    cursor, recolour the terminal or overwrite the kit's own lines (a fake total).
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


# -- failures, one message per cause -----------------------------------------------------------
MESSAGE_LINES = 14  # of a failure message, without -v
OUTPUT_HEAD, OUTPUT_TAIL = 5, 5  # lines of what learner code printed, shown without -v
OUTPUT_LINE_CHARS = 200  # characters per printed line, without -v
OUTPUT_GROUPS = 2  # failures per question whose printed output is shown (later ones: its line count)
_HINT_LINE = re.compile(r"^\s*Hint:\s*(.+)$")
_DEPENDS = re.compile(r"^(q\d+) imports (q\d+), which did not import")
_STUB = re.compile(r"^not implemented yet \((q\d+\.[\w.]+)")


@dataclass
class FailureGroup:
    """Failing tests of one question that share one cause (their full records stay in the result).

    ``tests`` share ``message`` exactly (or fail on the same function not implemented yet);
    ``also`` are tests whose own messages carry the same first hint (the same diagnosed
    mistake), shown by name only. A hint line that several failures carry is taken
    out of their messages and kept in ``hints`` of the first, with its number of tests.
    """

    outcome: str
    message: str
    tests: list[dict[str, Any]] = field(default_factory=list)
    also: list[dict[str, Any]] = field(default_factory=list)
    hints: dict[str, int] = field(default_factory=dict)

    def shown(self, graded: set[str]) -> str:
        """The message to show: only its first line when it blames a question in ``graded`` (shown there)."""
        depends = _DEPENDS.match(self.message)
        return self.message.splitlines()[0] if depends and depends[2] in graded else self.message


def _key(test: dict[str, Any]) -> str:
    """Messages that say the same thing: equal text, or the same function not implemented yet."""
    if stub := _STUB.match(test["message"]):
        return f"not implemented yet: {stub[1]}"
    return test["message"]


def group_failures(tests: list[dict[str, Any]]) -> list[FailureGroup]:
    """The failing (``failed``/``error``) tests of one question, one :class:`FailureGroup` per cause.

    In the order of each cause's first test. A cause is a message, or the first
    ``Hint:`` line of a message (tests whose messages differ but name the same
    mistake); a hint line that remains in more than one failure is shown once, in
    the first of them, with the number of tests it applies to.
    """
    groups: dict[tuple[str, str], FailureGroup] = {}
    for test in tests:
        if test["outcome"] in ("failed", "error"):
            key = (test["outcome"], _key(test))
            groups.setdefault(key, FailureGroup(test["outcome"], key[1])).tests.append(test)
    failures: list[FailureGroup] = []
    by_hint: dict[str, FailureGroup] = {}
    for failure in groups.values():
        hints = _hints(failure.message)
        if hints and hints[0] in by_hint:
            by_hint[hints[0]].also.extend(failure.tests)
            continue
        if hints:
            by_hint[hints[0]] = failure
        failures.append(failure)
    counts: dict[str, int] = {}
    carriers: dict[str, int] = {}
    for failure in failures:
        for hint in dict.fromkeys(_hints(failure.message)):
            counts[hint] = counts.get(hint, 0) + len(failure.tests) + len(failure.also)
            carriers[hint] = carriers.get(hint, 0) + 1
    shared = {hint for hint in counts if carriers[hint] > 1 or counts[hint] > 1}
    for failure in failures:
        lines = []
        for line in failure.message.splitlines():
            hint = _HINT_LINE.match(line)
            if hint and hint[1].strip() in shared:
                if hint[1].strip() in counts:
                    failure.hints[hint[1].strip()] = counts.pop(hint[1].strip())
                continue
            lines.append(line)
        failure.message = "\n".join(lines)
    return failures


def _hints(message: str) -> list[str]:
    return [m[1].strip() for line in message.splitlines() if (m := _HINT_LINE.match(line))]


def compact_names(names: list[str]) -> str:
    """``test_a[x], test_a[y], test_b`` → ``test_a[x, y], test_b`` (parametrized tests folded)."""
    folded: dict[str, list[str]] = {}
    for name in names:
        base, bracket, rest = name.partition("[")
        folded.setdefault(base, []).append(rest.removesuffix("]") if bracket else "")
    return ", ".join(base if params == [""] else f"{base}[{', '.join(p for p in params if p)}]"
                     for base, params in folded.items())


def _points(tests: list[dict[str, Any]]) -> str:
    return f"{sum(t['points'] for t in tests):g}/{sum(t['max_points'] for t in tests):g}"


def trim_output(text: str, *, verbose: bool = False, note: str = " (grade -v shows all)") -> list[str]:
    """Lines of what learner code printed: all with ``verbose``, else the first and last few, each cut short.

    The line standing for those left out says how many, then ``note``.
    """
    lines = text.rstrip("\n").splitlines()
    if verbose:
        return lines
    lines = [line if len(line) <= OUTPUT_LINE_CHARS else
             f"{line[:OUTPUT_LINE_CHARS]}… ({len(line) - OUTPUT_LINE_CHARS} more characters)" for line in lines]
    if len(lines) <= OUTPUT_HEAD + OUTPUT_TAIL + 1:
        return lines
    left_out = len(lines) - OUTPUT_HEAD - OUTPUT_TAIL
    return [*lines[:OUTPUT_HEAD], f"… {left_out} lines left out{note}", *lines[-OUTPUT_TAIL:]]


def _print_output(console: Console, text: str, *, verbose: bool, others: int = 0) -> None:
    """What learner code printed, labelled and fenced with ``│`` so it never reads as the kit's own lines."""
    also = f" (and {others} more of these tests printed: grade -v shows each)" if others else ""
    console.print(f"           [cyan]your code printed{also}:[/]", highlight=False)
    for line in trim_output(printable(text), verbose=verbose):
        console.print(Text(f"           │ {line}", style="dim"), highlight=False)


def _print_message(console: Console, message: str, *, lines: int | None) -> None:
    for line in printable(message).splitlines()[:lines]:
        console.print(Text(f"           {line}"), highlight=False)


def _render_failures(question: dict[str, Any], graded: set[str], console: Console) -> None:
    """A question's failures, grouped: each message once, with its tests, hints and printed output."""
    tests = question["tests"]
    counted = [t for t in tests if t["outcome"] != "skipped"]
    failures = group_failures(tests)
    if not failures:
        return
    if all(t["message"].startswith("not implemented yet") for f in failures for t in f.tests) \
            and len(counted) == sum(len(f.tests) for f in failures):
        console.print(f"\n[bold]{question['id']}[/] not implemented yet ({len(counted)} tests)")
        return
    console.print(f"\n[bold]{question['id']}[/] {escape(question['title'])}")
    shown_output = 0
    for failure in failures:
        colour = "magenta" if failure.outcome == "error" else "red"
        if len(failure.tests) == 1:
            names = escape(failure.tests[0]["name"])
        elif len(failure.tests) == len(counted):
            names = f"all {len(counted)} tests"
        else:
            names = f"{len(failure.tests)} tests: {escape(compact_names([t['name'] for t in failure.tests]))}"
        console.print(f"  [{colour}]{failure.outcome:<7}[/] {names} [dim]({_points(failure.tests)})[/]")
        _print_message(console, failure.shown(graded), lines=MESSAGE_LINES)
        for hint, count in failure.hints.items():
            console.print(Text(printable(f"           Hint ({count} tests): {hint}")), highlight=False)
        if failure.also:
            console.print(f"  [{colour}]{failure.outcome:<7}[/] {len(failure.also)} more with this hint: "
                          f"{escape(compact_names([t['name'] for t in failure.also]))} [dim]({_points(failure.also)}; "
                          f"grade -v shows their messages)[/]")
        printed = [t["output"] for t in failure.tests + failure.also if t.get("output")]
        if printed and shown_output < OUTPUT_GROUPS:
            _print_output(console, printed[0], verbose=False, others=len(printed) - 1)
            shown_output += 1
        elif printed:
            lines = len(printed[0].rstrip("\n").splitlines())
            console.print(f"           [cyan]your code printed {lines} line{'s' * (lines != 1)}[/] "
                          "[dim](grade -v shows them)[/]", highlight=False)


def _fenced(text: str) -> list[str]:
    """``text`` as a Markdown code block whose fence is longer than any run of backticks in it."""
    runs = [len(run) for run in re.findall(r"`+", text)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return [fence, text, fence]


def failures_markdown(question: dict[str, Any], graded: set[str]) -> list[str]:
    """Markdown lines of a question's failures for a learner's ``feedback.md``, one section per cause.

    As the terminal report shows them (:func:`group_failures`): each message once under
    the names of its tests, a shared hint once with its count, tests with the same
    mistake by name, and the first and last lines of what the learner's code printed.
    ``graded``: the questions in the result (an import blamed on one of them is not repeated).
    """
    lines: list[str] = []
    for failure in group_failures(question["tests"]):
        message = failure.shown(graded).strip() or failure.outcome
        message += "".join(f"\nHint ({count} tests): {hint}" for hint, count in failure.hints.items())
        names = compact_names([t["name"] for t in failure.tests])
        lines += ["", f"### {names} ({_points(failure.tests)})", "", *_fenced(printable(message))]
        if failure.also:
            lines += ["", f"The same mistake in: {compact_names([t['name'] for t in failure.also])} "
                          f"({_points(failure.also)})"]
        printed = [t["output"] for t in failure.tests + failure.also if t.get("output")]
        if printed:
            lines += ["", "Your code printed:", "",
                      *_fenced("\n".join(trim_output(printable(printed[0]), note=" (the result.json beside this "
                                                                                  "file has all of it)")))]
    return lines


def _render_every_test(question: dict[str, Any], console: Console) -> None:
    """``-v``: every test of a question, its whole message and all it printed, passed tests too."""
    console.print(f"\n[bold]{question['id']}[/] {escape(question['title'])}")
    for test in question["tests"]:
        colour = {"passed": "green", "skipped": "dim", "error": "magenta"}.get(test["outcome"], "red")
        console.print(f"  [{colour}]{test['outcome']:<7}[/] {escape(test['name'])} "
                      f"[dim]({test['points']:g}/{test['max_points']:g})[/]")
        if test["message"] and test["outcome"] != "passed":
            _print_message(console, test["message"], lines=None)
        if test.get("output"):
            _print_output(console, test["output"], verbose=True)


def _render_files(result: dict[str, Any], console: Console) -> None:
    """``q1: graded q1_x.ipynb (notebook)`` and its notes, for questions answered in a notebook or in two files."""
    for question in result["questions"]:
        graded, notes = question.get("graded_file", ""), question.get("file_notes", [])
        if graded.endswith(".ipynb") or notes:
            kind = "notebook" if graded.endswith(".ipynb") else "module"
            console.print(f"{question['id']}: graded {escape(printable(graded))} ({kind})", highlight=False)
            for note in notes:
                console.print(f"    [dim]{escape(printable(note))}[/]", highlight=False)


def render(result: dict[str, Any], console: Console, *, verbose: bool = False) -> None:
    """Per-question table, then the failures (one message per cause), then the total.

    Without ``verbose``: failing tests that share a message are shown once, with
    their names and count; a hint shared by several failures once; what learner code
    printed during a failing test under it, trimmed. With ``verbose``: every test,
    passed ones too, with its whole message and everything it printed.
    """
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
    _render_files(result, console)
    graded = {q["id"] for q in result["questions"]}
    for question in result["questions"]:
        if verbose:
            _render_every_test(question, console)
        else:
            _render_failures(question, graded, console)
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
    if verbose and any(t.get("output") for q in result["questions"] for t in q["tests"]):
        console.print("\n[dim]What your code printed (stdout and stderr) is kept per test in the result "
                      "document: grade --json FILE, field output.[/]")
    console.print(f"\n[bold]Total: {result['score']:g}/{result['max_score']:g}[/]"
                  f"  [dim]({result.get('duration_s', 0):.1f} s)[/]")
