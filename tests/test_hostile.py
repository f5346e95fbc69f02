"""Hostile submissions: none gains a point, the other questions are graded, the kit finishes.

Each case is the model answer with q1 made hostile (at import or when called);
q3 stays correct and must keep exactly the marks the model answer gets.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import SOLUTIONS, Edit, grade, make_submission, messages, question

Q1 = "q1_positional_encoding.py"
IMPORTS = "import torch\n"  # first import line of the q1 model answer, where code is injected at import time


def at_import(code: str) -> tuple[tuple[str, str], ...]:
    return ((IMPORTS, IMPORTS + code + "\n"),)


def in_table(code: str) -> tuple[tuple[str, str], ...]:
    """Run ``code`` (written at 4-space indent) at the start of every solution region of q1."""
    deeper = "\n".join("    " + line for line in code.splitlines())
    return (
        ("\n    # BEGIN SOLUTION\n", f"\n    # BEGIN SOLUTION\n{code}\n"),
        ("\n        # BEGIN SOLUTION\n", f"\n        # BEGIN SOLUTION\n{deeper}\n"),
    )


HOSTILE = [
    Edit("infinite loop", Q1, in_table("    while True: pass"), hint="did not return within"),
    Edit("infinite loop at import", Q1, at_import("while True: pass"), hint="did not return within"),
    Edit("os._exit at import", Q1, at_import("import os; os._exit(0)"), hint="ended the worker process"),
    Edit("segfault", Q1, in_table("    import ctypes; ctypes.string_at(0)"), hint="SIGSEGV"),
    Edit("20 GB allocation", Q1, in_table("    torch.ones(5 * 2**30)"), hint="memory"),
    Edit("bytearray 20 GB", Q1, in_table("    bytearray(20 * 2**30)"), hint="MemoryError"),
    Edit("sys.exit at import", Q1, at_import("import sys; sys.exit(3)"), hint="sys.exit(3)"),
    Edit("SystemExit when called", Q1, in_table("    raise SystemExit(0)"), hint="SystemExit"),
    Edit("import reference", Q1, at_import("import reference.positional_encoding"), hint="not allowed"),
    Edit("import grader", Q1, at_import("from grader import checks"), hint="not allowed"),
    Edit("import solutions", Q1, at_import("import solutions"), hint="not allowed"),
    Edit("syntax error", Q1, at_import("def broken(:"), hint="SyntaxError"),
    Edit("monkeypatched comparisons", Q1, at_import(
        "torch.allclose = lambda *a, **k: True\n"
        "import torch.testing; torch.testing.assert_close = lambda *a, **k: None\n"
        "torch.Tensor.__eq__ = lambda *a: True\n"
        "import _pytest.reports, _pytest.runner\n"
        "_pytest.runner.call_and_report = lambda *a, **k: None\n"
        "def sinusoidal_table(*a, **k): return torch.zeros(1)\n"
        "def __getattr__(name): return sinusoidal_table"
    ) + (("def sinusoidal_table(", "def _unused_table("),), hint=None),
    Edit("fake summary and tensor subclass", Q1, in_table(
        "    print('=== 100 passed in 0.01s ===')\n"
        "    class Liar(torch.Tensor):\n"
        "        def __eq__(self, other): return True\n"
        "    return torch.zeros(2).as_subclass(Liar)"
    ), hint=None),
]


@pytest.fixture(scope="module")
def bystander(tmp_path_factory):
    return question(grade(SOLUTIONS, "q3"), "q3")


@pytest.mark.parametrize("edit", HOSTILE, ids=[e.name for e in HOSTILE])
def test_hostile_submission_gains_nothing(edit, tmp_path, bystander):
    folder = make_submission(tmp_path, edit)
    result = grade(folder, "q1", "q3", time_limit=1.0, memory_limit=2 * 2**30)
    q1, q3 = question(result, "q1"), question(result, "q3")
    assert q1["score"] == 0, [(t["name"], t["message"]) for t in q1["tests"] if t["outcome"] == "passed"]
    assert q3["score"] == bystander["score"] == q3["max_score"], messages(q3)
    if edit.hint:
        assert edit.hint in messages(q1), messages(q1)
    assert "Traceback" not in messages(q1)  # the kit's own frames never reach the learner


def test_report_files_cannot_be_planted(tmp_path):
    """A submission that writes the report file itself (the sandbox refuses it) is overwritten by the real result."""
    target = tmp_path / "result.json"
    plant = f"    try: open({str(target)!r}, 'w').write('{{\"score\": 1000}}')\n    except OSError: pass  # the sandbox"
    folder = make_submission(tmp_path, Edit("plant report", Q1, in_table(plant)))
    from grader.cli import main

    outcome = CliRunner().invoke(main, ["ex4", "q1", "--submission", str(folder), "--json", str(target),
                                       "--time-limit", "2"])
    assert outcome.exit_code == 0, outcome.output
    written = json.loads(target.read_text())  # the planted {"score": 1000} was replaced by the real result
    assert written["exercise"] == "ex4" and written["score"] == written["max_score"] < 1000


def test_crash_in_one_call_does_not_lose_the_others(tmp_path):
    """Only the calls that crash fail: a segfault in plot_periodicity leaves the table tests passing."""
    edit = Edit("segfault in plot", Q1, (("def plot_periodicity(", "def plot_periodicity(*a, **k):\n"
                                          "    import ctypes; ctypes.string_at(0)\n\n\ndef _old_plot("),))
    result = question(grade(make_submission(tmp_path, edit), "q1", time_limit=2.0), "q1")
    outcomes = {t["name"]: t["outcome"] for t in result["tests"]}
    assert "passed" in outcomes.values() and "failed" in outcomes.values()
    failed = [t for t in result["tests"] if t["outcome"] != "passed"]
    assert all("plot_periodicity" in t["message"] for t in failed), failed  # only the tests that call it
    assert all(outcomes[name] == "passed" for name in outcomes if name.startswith("test_table_values"))
