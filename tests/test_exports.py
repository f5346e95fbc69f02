"""Gradebook exports read back: CSV parsed, Gradescope JSON checked against its schema, nbgrader's gradebook."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader import exports
from grader.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _result(learner: str, q1: float, q2: float, *, hidden: bool = True) -> dict:
    tests = lambda qid, score, top: [  # noqa: E731
        {"name": f"test_{qid}_a", "outcome": "passed" if score else "failed", "points": score, "max_points": top,
         "visibility": "hidden" if hidden and qid == "q2" else "visible", "duration_s": 0.01,
         "message": "" if score else "got 1.0, expected 2.0\nHint: softmax over the wrong axis"},
        {"name": f"test_{qid}_cuda", "outcome": "skipped", "points": 0.0, "max_points": 1.0,
         "visibility": "visible", "duration_s": 0.0, "message": "needs a CUDA GPU"},
    ]
    return {"exercise": "ex4", "learner": learner, "score": q1 + q2, "max_score": 15.0, "duration_s": 1.5,
            "questions": [{"id": "q1", "title": "PE", "score": q1, "max_score": 10.0, "tests": tests("q1", q1, 10.0)},
                          {"id": "q2", "title": "Encoder", "score": q2, "max_score": 5.0,
                           "tests": tests("q2", q2, 5.0)}]}


RESULTS = {"ann": _result("ann", 10.0, 5.0), "ben": _result("ben", 0.0, 5.0), "cy": _result("cy", 10.0, 0.0)}


def test_csv_reads_back():
    rows = list(csv.DictReader(io.StringIO(exports.grades_csv(RESULTS))))
    assert [r["learner"] for r in rows] == ["ann", "ben", "cy"]
    assert rows[1] == {"learner": "ben", "q1": "0", "q2": "5", "total": "5", "max_score": "15", "status": "graded",
                       "error": ""}


def test_gradescope_schema_and_visibility():
    jsonschema = pytest.importorskip("jsonschema")
    document = exports.gradescope(RESULTS["ben"])
    jsonschema.validate(document, exports.GRADESCOPE_SCHEMA)
    assert document["score"] == 5.0
    assert [t["name"] for t in document["tests"]] == ["q1 · test_q1_a", "q2 · test_q2_a"]  # skipped ones left out
    assert document["tests"][0]["output"].startswith("got 1.0") and document["tests"][0]["max_score"] == 10.0
    assert document["tests"][1]["visibility"] == "after_due_date"
    assert exports.gradescope(RESULTS["ben"], hidden_visibility="hidden")["tests"][1]["visibility"] == "hidden"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"score": "5", "tests": []}, exports.GRADESCOPE_SCHEMA)


def test_gradescope_command_grades_autograder_folders(tmp_path):
    """`grade gradescope` with Gradescope's two paths as tmp dirs, on real answers (q1)."""
    jsonschema = pytest.importorskip("jsonschema")
    submission = tmp_path / "autograder" / "submission"
    shutil.copytree(ROOT / "solutions" / "ex4", submission / "ex4")  # learners upload a folder: nesting is fine
    results = tmp_path / "autograder" / "results" / "results.json"
    outcome = CliRunner().invoke(main, ["gradescope", "ex4", "q1", "--submission-dir", str(submission),
                                        "--results", str(results), "--device", "cpu"])
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(results.read_text())
    jsonschema.validate(document, exports.GRADESCOPE_SCHEMA)
    assert document["score"] == sum(t["max_score"] for t in document["tests"]) > 0
    assert all(t["name"].startswith("q1 · ") for t in document["tests"])


def test_gradescope_command_on_an_empty_upload(tmp_path):
    submission = tmp_path / "submission"
    submission.mkdir()
    results = tmp_path / "results.json"
    outcome = CliRunner().invoke(main, ["gradescope", "ex4", "q1", "--submission-dir", str(submission),
                                        "--results", str(results), "--device", "cpu"])
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(results.read_text())
    assert document["score"] == 0 and "could not be graded" in document["output"] and "empty" in document["output"]


def test_nbgrader_gradebook_reads_back(tmp_path):
    api = pytest.importorskip("nbgrader.api")
    url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    exports.to_nbgrader(RESULTS, url)
    exports.to_nbgrader({"ben": _result("ben", 10.0, 5.0)}, url)  # a regrade updates in place
    with api.Gradebook(url) as gradebook:
        assert [s.id for s in gradebook.students] == ["ann", "ben", "cy"]
        assignment = gradebook.find_assignment("ex4")
        assert assignment.max_score == 15.0
        assert gradebook.find_grade("q1", "ex4", "ex4", "cy").score == 10.0
        assert gradebook.find_grade("q2", "ex4", "ex4", "cy").score == 0.0
        assert gradebook.find_submission("ex4", "ann").score == 15.0
        assert gradebook.find_submission("ex4", "ben").score == 15.0


def test_nbgrader_command(tmp_path):
    pytest.importorskip("nbgrader.api")
    for learner, result in RESULTS.items():
        (tmp_path / "results" / learner).mkdir(parents=True)
        (tmp_path / "results" / learner / "result.json").write_text(json.dumps(result))
    url = f"sqlite:///{tmp_path / 'gb.db'}"
    outcome = CliRunner().invoke(main, ["nbgrader", str(tmp_path / "results"), "--db", url])
    assert outcome.exit_code == 0, outcome.output
    from nbgrader.api import Gradebook

    with Gradebook(url) as gradebook:
        assert gradebook.find_submission("ex4", "cy").score == 10.0
