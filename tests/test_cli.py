"""The ``grade`` command: usage errors, exit codes, the JSON and JUnit reports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from junitparser import JUnitXml

from conftest import EXERCISES, SOLUTIONS
from grader.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("args, text", [
    (["ex9"], "unknown exercise set or command 'ex9'"),
    (["ex4", "q42"], "ex4 has no question q42"),
    (["ex4", "--submission", "/no/such/folder"], "does not exist"),
    (["ex4", "--submission", "EMPTY"], "holds no q*.py files"),
    (["ex4", "--solutions", "--submission", str(SOLUTIONS)], "either --solutions or --submission"),
    (["ex4", "q1", "--solutions", "--json", "EMPTY"], "is a folder: give a file name"),
    (["ex4", "q1", "--solutions", "--junit", "/proc/no/such/out.xml"], "cannot create its folder"),
    (["ex4", "--no-such-option"], "No such option"),
])
def test_usage_errors_exit_2_with_one_line(args, text, tmp_path):
    outcome = run(*[str(tmp_path) if a == "EMPTY" else a for a in args])
    assert outcome.exit_code == 2
    assert text in outcome.output
    assert outcome.output.strip().count("\n") == 0, outcome.output
    assert "Traceback" not in outcome.output
    assert not [p for p in tmp_path.iterdir()], "a failed command left files behind"


def test_a_kit_bug_is_one_line_and_exit_3(monkeypatch):
    from grader import grading

    def broken(*args, **kwargs):
        raise KeyError("a bug in the kit")

    monkeypatch.setattr(grading, "grade", broken)
    monkeypatch.delenv("GRADE_TRACEBACK", raising=False)
    outcome = run("ex4", "q1", "--solutions")
    assert outcome.exit_code == 3
    assert outcome.output.strip() == "internal error in the grading kit (not your code): KeyError: 'a bug in the kit'"


def test_ctrl_c_exits_130_with_one_line(monkeypatch):
    from grader import grading

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(grading, "grade", interrupted)
    outcome = run("ex4", "q1", "--solutions")
    assert outcome.exit_code == 130
    assert outcome.output.strip() == "interrupted"


def test_version_and_list():
    assert run("--version").output.strip() == "grade, version 0.1.0"
    listing = run("list")
    assert listing.exit_code == 0 and "ex4" in listing.output and "q1" in listing.output


def test_json_and_junit_reports(tmp_path):
    json_path, junit_path = tmp_path / "out.json", tmp_path / "out.xml"
    outcome = run("ex4", "q1", "--solutions", "--json", str(json_path), "--junit", str(junit_path))
    assert outcome.exit_code == 0, outcome.output
    result = json.loads(json_path.read_text())
    assert {"exercise", "score", "max_score", "questions"} <= result.keys()
    (q1,) = result["questions"]
    assert q1["id"] == "q1" and q1["score"] == q1["max_score"] > 0
    for test in q1["tests"]:
        assert {"name", "outcome", "points", "max_points", "message"} <= test.keys()
        assert test["outcome"] in {"passed", "failed", "error", "skipped"}
    xml = JUnitXml.fromfile(str(junit_path))
    cases = [case for suite in xml for case in suite]
    assert len(cases) == len(q1["tests"]) and all(case.is_passed for case in cases)


def test_untouched_stubs_score_zero_and_exit_0(tmp_path):
    outcome = run("ex4", "q1", "--submission", str(EXERCISES), "--json", str(tmp_path / "r.json"))
    assert outcome.exit_code == 0, outcome.output
    assert "not implemented yet" in outcome.output
    assert json.loads((tmp_path / "r.json").read_text())["score"] == 0


def test_fail_under_exits_1():
    assert run("ex4", "q1", "--submission", str(EXERCISES), "--fail-under", "1").exit_code == 1
    assert run("ex4", "q1", "--solutions", "--fail-under", "1").exit_code == 0


def test_cuda_request_without_gpu_is_a_usage_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert run("ex4", "q1", "--solutions", "--device", "cuda").exit_code == 2


def test_console_script_runs_as_a_separate_process():
    """The installed entry point: the main job of the README, as a learner runs it."""
    done = subprocess.run([sys.executable, "-m", "grader", "ex4", "q1", "--solutions"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Total:" in done.stdout
