"""Gradebook exports of result documents: CSV, Gradescope ``results.json``, nbgrader gradebook.

Each export takes result documents (``grader.scoring.build_result``, plus the
``learner`` field a batch adds) and nothing else; files are written atomically.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path
from typing import Any, Iterable

from grader.report import write_atomic, write_json

# Gradescope's documented results format (autograder specifications, "Output format"):
# the fields this kit writes, as a JSON schema (checked by the kit's tests).
GRADESCOPE_VISIBILITY = ("hidden", "after_due_date", "after_published", "visible")
GRADESCOPE_SCHEMA = {
    "type": "object",
    "required": ["score", "tests"],
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "number"},
        "output": {"type": "string"},
        "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "visibility": {"enum": list(GRADESCOPE_VISIBILITY)},
        "stdout_visibility": {"enum": list(GRADESCOPE_VISIBILITY)},
        "tests": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "score", "max_score"],
                "properties": {
                    "name": {"type": "string"},
                    "name_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
                    "number": {"type": "string"},
                    "score": {"type": "number"},
                    "max_score": {"type": "number"},
                    "status": {"enum": ["passed", "failed"]},
                    "output": {"type": "string"},
                    "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "visibility": {"enum": list(GRADESCOPE_VISIBILITY)},
                },
                "additionalProperties": False,
            },
        },
        "leaderboard": {"type": "array"},
    },
}


def question_ids(results: Iterable[dict[str, Any]]) -> list[str]:
    """Question ids in order of first appearance (``q1``, ``q2``, ...)."""
    seen: dict[str, None] = {}
    for result in results:
        for question in result["questions"]:
            seen.setdefault(question["id"], None)
    return sorted(seen, key=lambda q: (len(q), q))


def grades_csv(results: dict[str, dict[str, Any]]) -> str:
    """One row per learner: ``learner, <question ids>..., total, max_score, status, error``."""
    ids = question_ids(results.values())
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["learner", *ids, "total", "max_score", "status", "error"])
    for learner in sorted(results):
        result = results[learner]
        scores = {q["id"]: q["score"] for q in result["questions"]}
        writer.writerow([learner, *(f"{scores[i]:g}" if i in scores else "" for i in ids),
                         f"{result['score']:g}", f"{result['max_score']:g}", result.get("status", "graded"),
                         (result.get("error") or "").splitlines()[0] if result.get("error") else ""])
    return buffer.getvalue()


def write_csv(results: dict[str, dict[str, Any]], path: Path) -> None:
    write_atomic(path, grades_csv(results))


def gradescope(result: dict[str, Any], *, hidden_visibility: str = "after_due_date") -> dict[str, Any]:
    """Gradescope's ``results.json`` for one result document.

    One Gradescope test per hidden test (``q1 · test_name``) with its points and
    message; tests marked ``hidden`` in the kit get ``hidden_visibility``.
    """
    tests = []
    for question in result["questions"]:
        for test in question["tests"]:
            if test["outcome"] == "skipped":
                continue
            tests.append({
                "name": f"{question['id']} · {test['name']}",
                "number": question["id"],
                "score": float(test["points"]),
                "max_score": float(test["max_points"]),
                "status": "passed" if test["outcome"] == "passed" else "failed",
                "output": test["message"],
                "visibility": hidden_visibility if test.get("visibility") == "hidden" else "visible",
            })
    lines = [f"{result['exercise']}: {result['score']:g}/{result['max_score']:g} points"]
    if result.get("error"):
        lines.append(f"Your submission could not be graded: {result['error']}")
    lines += [f"{q['id']} {q['title']}: {q['score']:g}/{q['max_score']:g}" for q in result["questions"]]
    return {
        "score": float(result["score"]),
        "execution_time": float(result.get("duration_s", 0.0)),
        "output": "\n".join(lines),
        "stdout_visibility": "hidden",
        "visibility": "visible",
        "tests": tests,
    }


def write_gradescope(result: dict[str, Any], path: Path, **options: Any) -> None:
    write_json(gradescope(result, **options), path)


def to_nbgrader(results: dict[str, dict[str, Any]], db_url: str, *, assignment: str | None = None,
                notebook: str | None = None) -> None:
    """Put the scores into an nbgrader gradebook through nbgrader's ``Gradebook`` API.

    The assignment (default: the exercise set) gets one notebook (default: the set's
    name) with one autograded grade cell per question (``q1`` ...) worth the
    question's points; each learner becomes a student with a submission whose
    ``auto_score`` per question is the kit's score.
    """
    from nbgrader.api import Gradebook

    if not results:
        return
    # nbgrader runs its database migrations with the `alembic` script installed beside this Python
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    first = next(iter(results.values()))
    assignment = assignment or first["exercise"]
    notebook = notebook or first["exercise"]
    maxima: dict[str, float] = {}
    for result in results.values():
        for question in result["questions"]:
            maxima[question["id"]] = max(maxima.get(question["id"], 0.0), float(question["max_score"]))
    with Gradebook(db_url) as gradebook:
        gradebook.update_or_create_assignment(assignment)
        gradebook.update_or_create_notebook(notebook, assignment)
        for qid, points in maxima.items():
            gradebook.update_or_create_grade_cell(qid, notebook, assignment, max_score=points, cell_type="code")
        for learner, result in sorted(results.items()):
            gradebook.update_or_create_student(learner)
            gradebook.update_or_create_submission(assignment, learner)
            for question in result["questions"]:
                grade = gradebook.find_grade(question["id"], notebook, assignment, learner)
                grade.auto_score = float(question["score"])
                grade.needs_manual_grade = False
            gradebook.db.commit()
