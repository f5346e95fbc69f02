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
    return {"exercise": "ex4", "learner": learner, "status": "graded", "score": q1 + q2, "max_score": 15.0,
            "full_max_score": 17.0, "skipped_points": 2.0, "duration_s": 1.5,
            "questions": [{"id": "q1", "title": "PE", "score": q1, "max_score": 10.0, "full_max_score": 11.0,
                           "skipped_points": 1.0, "tests": tests("q1", q1, 10.0)},
                          {"id": "q2", "title": "Encoder", "score": q2, "max_score": 5.0, "full_max_score": 6.0,
                           "skipped_points": 1.0, "tests": tests("q2", q2, 5.0)}]}


RESULTS = {"ann": _result("ann", 10.0, 5.0), "ben": _result("ben", 0.0, 5.0), "cy": _result("cy", 10.0, 0.0)}


def test_csv_reads_back():
    rows = list(csv.DictReader(io.StringIO(exports.grades_csv(RESULTS))))
    assert [r["learner"] for r in rows] == ["ann", "ben", "cy"]
    assert rows[1] == {"learner": "ben", "lms_id": "", "late": "", "learner_folder": "ben", "q1": "0", "q2": "5",
                       "total": "5", "max_score": "15", "full_max_score": "17", "skipped_points": "2",
                       "status": "graded", "error": ""}


def test_csv_keeps_the_real_name_id_and_late_flag():
    result = {**_result("José Ñúñez", 10.0, 5.0), "lms_id": "12345", "late": True,
              "learner_folder": "josenunez_12345", "email": "jn@uni.edu"}
    row = next(csv.DictReader(io.StringIO(exports.grades_csv({"josenunez_12345": result}))))
    assert (row["learner"], row["lms_id"], row["late"], row["learner_folder"], row["email"]) == \
        ("José Ñúñez", "12345", "yes", "josenunez_12345", "jn@uni.edu")


def test_canvas_csv_columns():
    missing = {**_result("Kim", 0.0, 0.0), "status": "not_submitted", "lms_id": "9"}
    table = list(csv.reader(io.StringIO(exports.canvas_csv({**RESULTS, "kim": missing}, assignment="ex4 (77)"))))
    assert table[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "ex4 (77)"]
    assert table[1] == ["Points Possible", "", "", "", "", "15"]
    assert table[2] == ["ann", "", "", "", "", "15"] and table[-1] == ["Kim", "9", "", "", "", ""]


def test_junit_reports_skipped_tests_and_both_totals(tmp_path):
    from junitparser import JUnitXml, Skipped

    from grader.report import write_junit

    write_junit(RESULTS["ben"], tmp_path / "junit.xml")
    xml = JUnitXml.fromfile(str(tmp_path / "junit.xml"))
    suites = {suite.name: suite for suite in xml}
    q1 = suites["ex4.q1"]
    skipped = [case for case in q1 if case.result and isinstance(case.result[0], Skipped)]
    assert [case.name for case in skipped] == ["test_q1_cuda"] and skipped[0].result[0].message == "needs a CUDA GPU"
    assert q1.skipped == 1
    properties = {prop.name: prop.value for prop in q1.properties()}
    assert properties == {"score": "0", "max_score": "10", "full_max_score": "11", "skipped_points": "1"}


def test_gradescope_schema_and_visibility():
    jsonschema = pytest.importorskip("jsonschema")
    document = exports.gradescope(RESULTS["ben"])
    jsonschema.validate(document, exports.GRADESCOPE_SCHEMA)
    assert document["score"] == 5.0
    assert [t["name"] for t in document["tests"]] == ["q1 · test_q1_a", "q1 · test_q1_cuda (skipped)",
                                                      "q2 · test_q2_a", "q2 · test_q2_cuda (skipped)"]
    assert document["tests"][0]["output"].startswith("got 1.0") and document["tests"][0]["max_score"] == 10.0
    assert document["tests"][1]["max_score"] == 0 and "needs a CUDA GPU" in document["tests"][1]["output"]
    assert document["tests"][2]["visibility"] == "after_due_date"
    assert exports.gradescope(RESULTS["ben"], hidden_visibility="hidden")["tests"][2]["visibility"] == "hidden"
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
    missing = {**_result("Kim Nguyen", 0.0, 0.0), "status": "not_submitted"}
    maxima = exports.to_nbgrader({**RESULTS, "kim": missing}, url)
    assert maxima == {"max_score": 15.0, "full_max_score": 17.0, "skipped_points": 2.0}
    exports.to_nbgrader({"ben": _result("ben", 10.0, 5.0)}, url)  # a regrade updates in place
    with api.Gradebook(url) as gradebook:
        assert sorted(s.id for s in gradebook.students) == ["ann", "ben", "cy", "kim"]
        assert gradebook.find_student("kim").first_name == "Kim Nguyen"
        with pytest.raises(api.MissingEntry):  # who did not submit has no submission: nbgrader lists them missing
            gradebook.find_submission("ex4", "kim")
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
    assert "3 learners written" in outcome.output and "out of 15 points; 2 points of CUDA-only tests were not " \
        "graded (full 17)" in outcome.output
    from nbgrader.api import Gradebook

    with Gradebook(url) as gradebook:
        assert gradebook.find_submission("ex4", "cy").score == 10.0
