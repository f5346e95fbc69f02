"""Feedback a learner reads: what their code printed, and one message per cause.

Real submissions (the model answers with an edit) graded through the real worker,
then rendered by ``grader.report.render`` as ``grade`` shows them (80 columns, as
in a pipe). The line-count bounds come from measured runs: before grouping, a
syntax error in q1 took 180 lines for ``grade ex4`` and swapped sin/cos 103 lines
for ``grade ex4 q1``; after, 29 and 49.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from rich.console import Console

from conftest import Edit, grade, make_submission, question
from grader import report

Q1 = "q1_positional_encoding.py"
SIN = "    table[:, 0::2] = torch.sin(position * div_term)"
COS = "    table[:, 1::2] = torch.cos(position * div_term)"
SWAPPED = ((SIN, SIN.replace("sin", "cos")), (COS, COS.replace("cos", "sin")))
PRINTS = ("    for i in range(40):\n        print(f'debug line {i}', max_len, d_model)\n"
          "    print('PASSED 10/10')\n    print('\\x1b[2J\\x1b[HTotal: 115/115')\n")
CRASH = ("def plot_periodicity(*a, **k):\n    import os, sys\n    print('about to crash', end='')\n"
         "    sys.stderr.write('err line\\n')\n    os._exit(3)\n\n\ndef _old_plot(")
SWAP_HINT = "Your sin and cos are swapped"


def shown(result: dict, *, verbose: bool = False) -> str:
    """The terminal report of ``result`` as ``grade`` prints it into a pipe (80 columns, no colour)."""
    buffer = io.StringIO()
    report.render(result, Console(file=buffer, width=80, color_system=None, highlight=False), verbose=verbose)
    return buffer.getvalue()


def named(block: dict, name: str) -> dict:
    return next(t for t in block["tests"] if t["name"] == name)


@pytest.fixture(scope="module")
def printing(tmp_path_factory):
    """q1 with sin/cos swapped, 42 printed lines per table (a fake summary among them), a crash in the plot.

    The printing one is graded by ``grade --json`` in a fresh process without
    ``PYTHONUNBUFFERED``: Python's default buffering would lose what was printed
    before ``os._exit`` if the worker did not unbuffer its output itself.
    """
    root = tmp_path_factory.mktemp("printing")
    edit = Edit("prints", Q1, (*SWAPPED, (SIN.replace("sin", "cos"), PRINTS + SIN.replace("sin", "cos")),
                               ("def plot_periodicity(", CRASH)))
    quiet = Edit("quiet", Q1, (*SWAPPED, ("def plot_periodicity(", CRASH)))
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "PYTEST_CURRENT_TEST")}
    subprocess.run([sys.executable, "-m", "grader", "ex4", "q1", "--submission", str(make_submission(root, edit)),
                    "--time-limit", "5", "--json", str(root / "prints.json"), "--junit", str(root / "prints.xml")],
                   env=environment, check=True, capture_output=True, timeout=600)
    return (json.loads((root / "prints.json").read_text()), grade(make_submission(root, quiet), "q1", time_limit=5.0),
            root / "prints.xml")


def test_output_is_kept_per_test_in_the_result(printing):
    result, *_ = printing
    table = named(question(result, "q1"), "test_table_values[50x16]")
    assert table["outcome"] == "failed"
    assert table["output"].splitlines()[:40] == [f"debug line {i} 50 16" for i in range(40)]
    assert "debug line" not in table["message"]  # the kit's message and the learner's output never mix


def test_junit_carries_the_output_as_system_out(printing):
    from junitparser import JUnitXml

    *_, junit = printing
    cases = {case.name: case for suite in JUnitXml.fromfile(str(junit)) for case in suite}
    assert "debug line 39 50 16" in cases["test_table_values[50x16]"].system_out
    assert "about to crash" in cases["test_plot_heatmap"].system_out


def test_output_before_a_hang_is_kept(tmp_path):
    """A call killed at its time limit keeps what it printed; the next test starts clean."""
    hang = "def plot_periodicity(*a, **k):\n    print('still here')\n    while True:\n        pass\n\n\ndef _old_plot("
    block = question(grade(make_submission(tmp_path, Edit("hang", Q1, (("def plot_periodicity(", hang),))), "q1",
                           time_limit=1.0), "q1")
    plot = named(block, "test_plot_heatmap")
    assert "did not return within 1 s" in plot["message"] and plot["output"] == "still here\n"
    assert not any(t.get("output") for t in block["tests"] if "plot" not in t["name"] and "bad_sizes" not in t["name"])


def test_output_of_a_crashed_worker_is_kept(printing):
    result, *_ = printing
    plot = named(question(result, "q1"), "test_plot_heatmap")
    assert "ended the worker process" in plot["message"] and "about to crash" not in plot["message"]
    assert "about to crash" in plot["output"] and "err line" in plot["output"]


def test_output_is_shown_trimmed_and_all_of_it_with_v(printing):
    result, *_ = printing
    text = shown(result)
    assert "your code printed" in text and "debug line 0 50 16" in text
    assert "debug line 20 50 16" not in text
    assert "… 32 lines left out (grade -v shows all)" in text
    full = shown(result, verbose=True)
    assert all(f"debug line {i} 50 16" in full for i in range(40))
    assert "about to crash" in full and "field output" in full


def test_printed_fake_summary_changes_nothing(printing):
    """Printing a pass line or a total (with cursor escapes) scores as the same code silent, shown fenced."""
    loud, quiet, _ = printing
    assert loud["score"] == quiet["score"] < loud["max_score"]
    assert [t["outcome"] for t in question(loud, "q1")["tests"]] == [t["outcome"] for t in question(quiet, "q1")["tests"]]
    text = shown(loud)
    assert "\x1b" not in text and "\\x1b[2J" in text
    faked = [line for line in text.splitlines() if "PASSED 10/10" in line or "115/115" in line]
    assert faked and all(line.startswith("           │ ") for line in faked), faked
    totals = [line for line in text.splitlines() if line.startswith("Total:")]
    assert len(totals) == 1 and totals[0].startswith(f"Total: {loud['score']:g}/")


@pytest.fixture(scope="module")
def swapped(tmp_path_factory):
    return grade(make_submission(tmp_path_factory.mktemp("swapped"), Edit("swapped", Q1, SWAPPED)), "q1")


def test_a_shared_hint_is_shown_once_with_its_count(swapped):
    tests = question(swapped, "q1")["tests"]
    hinted = [t for t in tests if SWAP_HINT in t["message"]]
    assert len(hinted) > 3  # every record keeps its own full message
    text = shown(swapped)
    assert text.count(SWAP_HINT) == 1
    assert f"Hint ({len(hinted)} tests): {SWAP_HINT}" in text
    assert len(text.splitlines()) < 60  # 103 before grouping, 49 after


@pytest.fixture(scope="module")
def typo(tmp_path_factory):
    """q1 with a closing parenthesis deleted; q2 imports q1."""
    folder = make_submission(tmp_path_factory.mktemp("typo"), Edit("typo", Q1, (
        ('sinusoidal_table(max_len, d_model).unsqueeze(0))', 'sinusoidal_table(max_len, d_model).unsqueeze(0)'),)))
    return folder, grade(folder, "q1", "q2")


def test_an_import_failing_in_another_module_blames_it_once(typo):
    _, result = typo
    q1, q2 = question(result, "q1"), question(result, "q2")
    assert all(t["message"].startswith("import q1 raised SyntaxError") for t in q1["tests"])
    assert all(t["message"].startswith("q2 imports q1, which did not import: fix q1 first") for t in q2["tests"])
    text = shown(result)
    assert text.count("q2 imports q1, which did not import: fix q1 first") == 1
    assert text.count("SyntaxError") == 1 and f"all {len(q1['tests'])} tests" in text
    assert len(text.splitlines()) < 25  # 180 lines before (grade ex4), 29 after


def test_graded_alone_the_importer_shows_the_cause(typo):
    folder, _ = typo
    text = shown(grade(folder, "q2"))
    assert "q2 imports q1, which did not import: fix q1 first" in text and "SyntaxError" in text


def test_a_module_raising_valueerror_at_import_passes_no_raises_check(tmp_path):
    """A failed import is never taken for the ValueError a test expects from a call."""
    folder = make_submission(tmp_path, Edit("raises at import", Q1, (("import torch\n",
                                                                      "import torch\nraise ValueError('no')\n"),)))
    block = question(grade(folder, "q1"), "q1")
    assert block["score"] == 0 and all(t["message"].startswith("import q1 raised ValueError") for t in block["tests"])


def record(name: str, message: str, outcome: str = "failed", output: str = "") -> dict:
    return {"name": name, "outcome": outcome, "points": 0.0, "max_points": 1.0, "message": message,
            **({"output": output} if output else {})}


def test_grouping_keeps_different_causes_apart():
    tests = [record("test_a[1]", "boom"), record("test_a[2]", "boom"), record("test_b", "other"),
             record("test_c", "x differs\nHint: h"), record("test_d", "y differs\nHint: h"),
             record("test_e", "boom", outcome="error"), record("test_f", "", outcome="passed")]
    failures = report.group_failures(tests)
    assert [[t["name"] for t in f.tests] for f in failures] == [["test_a[1]", "test_a[2]"], ["test_b"], ["test_c"],
                                                                ["test_e"]]
    assert [t["name"] for t in failures[2].also] == ["test_d"] and failures[2].hints == {"h": 2}
    assert failures[2].message == "x differs"
    assert report.compact_names(["test_a[1]", "test_a[2]", "test_b"]) == "test_a[1, 2], test_b"


def test_trimmed_output_counts_what_it_leaves_out():
    lines = report.trim_output("\n".join(f"l{i}" for i in range(47)))
    assert lines[:5] == ["l0", "l1", "l2", "l3", "l4"] and lines[-1] == "l46"
    assert lines[5] == "… 37 lines left out (grade -v shows all)" and len(lines) == 11
    assert report.trim_output("a\nb") == ["a", "b"]
    assert report.trim_output("x" * 500)[0].endswith("(300 more characters)")
    assert len(report.trim_output("\n".join(map(str, range(47))), verbose=True)) == 47


def test_feedback_file_groups_as_the_terminal_does(typo, swapped):
    from grader.batch import feedback_markdown

    _, result = typo
    text = feedback_markdown(result)
    assert text.count("q2 imports q1, which did not import: fix q1 first") == 1 and text.count("SyntaxError") == 1
    assert feedback_markdown(swapped).count(SWAP_HINT) == 1


def test_printed_backticks_cannot_leave_the_feedback_fence():
    """Printed text shows inside one code block, whatever backtick fences it holds."""
    printed = "```\n# ex4: 115/115 points\n````"
    lines = report.failures_markdown({"tests": [record("test_a", "boom", output=printed)]}, set())
    assert lines[-3:] == ["`````", printed, "`````"]  # a fence longer than any run of backticks inside
