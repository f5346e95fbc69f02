"""Gradebook exports of result documents: CSV, Canvas gradebook CSV, Gradescope ``results.json``, nbgrader.

Each export takes result documents (``grader.scoring.build_result``, plus the
``learner`` field a batch adds) and nothing else; files are written atomically.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable

from grader.report import trim_output, write_atomic, write_json

# Gradescope's documented results format (gradescope-autograders.readthedocs.io, "Autograder
# Specifications", "Output format") as a JSON schema: every field it lists, nothing else; the kit
# always writes score, and name, score and max_score per test. Checked by the kit's tests.
GRADESCOPE_VISIBILITY = ("hidden", "after_due_date", "after_published", "visible")
_FORMATS = {"enum": ["text", "html", "simple_format", "md", "ansi"]}
GRADESCOPE_SCHEMA = {
    "type": "object",
    "required": ["score", "tests"],
    "additionalProperties": False,
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "number", "minimum": 0},
        "output": {"type": "string"},
        "output_format": _FORMATS,
        "test_output_format": _FORMATS,
        "test_name_format": _FORMATS,
        "visibility": {"enum": list(GRADESCOPE_VISIBILITY)},
        "stdout_visibility": {"enum": list(GRADESCOPE_VISIBILITY)},
        "extra_data": {"type": "object"},
        "tests": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "score", "max_score"],
                "additionalProperties": False,
                "properties": {
                    "score": {"type": "number"},
                    "max_score": {"type": "number", "minimum": 0},
                    "status": {"enum": ["passed", "failed"]},
                    "name": {"type": "string"},
                    "name_format": _FORMATS,
                    "number": {"type": "string"},
                    "output": {"type": "string"},
                    "output_format": _FORMATS,
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "visibility": {"enum": list(GRADESCOPE_VISIBILITY)},
                    "extra_data": {"type": "object"},
                },
            },
        },
        "leaderboard": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "value"],
                "additionalProperties": False,
                "properties": {"name": {"type": "string"}, "value": {"type": ["number", "string"]},
                               "order": {"enum": ["asc", "desc"]}},
            },
        },
    },
}


def question_ids(results: Iterable[dict[str, Any]]) -> list[str]:
    """Question ids in order of first appearance (``q1``, ``q2``, ...)."""
    seen: dict[str, None] = {}
    for result in results:
        for question in result["questions"]:
            seen.setdefault(question["id"], None)
    return sorted(seen, key=lambda q: (len(q), q))


IDENTITY = ("learner", "lms_id", "late", "learner_folder")  # who, from the result (see grader.submissions.Entry)
ROSTER = ("sis_user_id", "sis_login_id", "email", "section")  # from --roster, when it has them
TOTALS = ("total", "max_score", "full_max_score", "skipped_points", "status", "error")


def _rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``(results folder, result)`` sorted by the learner's name, then folder."""
    return sorted(results.items(), key=lambda item: (str(item[1].get("learner", item[0])).casefold(), item[0]))


def grades_csv(results: dict[str, dict[str, Any]]) -> str:
    """One row per learner.

    Columns: ``learner`` (the name as submitted, or the roster's), ``lms_id``, ``late``,
    ``learner_folder`` (``RESULTS/<folder>/``), the roster's ``sis_user_id, sis_login_id,
    email, section`` when any learner has them, one per question, then ``total``,
    ``max_score`` (graded on this device), ``full_max_score``, ``skipped_points``,
    ``status`` (``graded``, ``malformed``, ``not_submitted``, ``failed``) and ``error``.
    """
    ids = question_ids(results.values())
    extra = [c for c in ROSTER if any(r.get(c) for r in results.values())]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*IDENTITY, *extra, *ids, *TOTALS])
    for folder, result in _rows(results):
        scores = {q["id"]: q["score"] for q in result["questions"]}
        error = (result.get("error") or "").splitlines()
        writer.writerow([result.get("learner", folder), result.get("lms_id", ""), "yes" if result.get("late") else "",
                         result.get("learner_folder", folder), *(result.get(c, "") for c in extra),
                         *(f"{scores[i]:g}" if i in scores else "" for i in ids),
                         f"{result['score']:g}", f"{result['max_score']:g}",
                         f"{result.get('full_max_score', result['max_score']):g}",
                         f"{result.get('skipped_points', 0):g}", result.get("status", "graded"),
                         error[0] if error else ""])
    return buffer.getvalue()


def write_csv(results: dict[str, dict[str, Any]], path: Path) -> None:
    write_atomic(path, grades_csv(results))


CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")


def canvas_csv(results: dict[str, dict[str, Any]], *, assignment: str) -> str:
    """The CSV that Canvas's Gradebook import takes (Grades → Import).

    Canvas's own gradebook export format: ``Student, ID, SIS User ID, SIS Login ID,
    Section``, then one column per assignment, and a ``Points Possible`` row first
    (the maximum graded on this device). ``ID`` is the Canvas user id (from the
    Canvas file names, or the roster). A learner who did not submit gets an empty
    cell, which Canvas leaves unchanged; one whose submission could not be graded gets 0.
    To fill an existing Canvas assignment, name the column as Canvas does:
    ``Name (assignment id)``.
    """
    top = max((r["max_score"] for r in results.values()), default=0.0)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*CANVAS_COLUMNS, assignment])
    writer.writerow(["Points Possible", "", "", "", "", f"{top:g}"])
    for folder, result in _rows(results):
        score = "" if result.get("status") == "not_submitted" else f"{result['score']:g}"
        writer.writerow([result.get("learner", folder), result.get("lms_id", ""), result.get("sis_user_id", ""),
                         result.get("sis_login_id", ""), result.get("section", ""), score])
    return buffer.getvalue()


def write_canvas_csv(results: dict[str, dict[str, Any]], path: Path, *, assignment: str) -> None:
    write_atomic(path, canvas_csv(results, assignment=assignment))


def gradescope(result: dict[str, Any], *, hidden_visibility: str = "after_due_date") -> dict[str, Any]:
    """Gradescope's ``results.json`` for one result document.

    One Gradescope test per hidden test, numbered ``<question>.<test>`` (``1.3``) and named
    ``q1 · test_name``, with its points, status and message; tests marked ``hidden`` get
    ``hidden_visibility``. A test skipped on the grading device (CUDA-only on a CPU) is
    listed as skipped, with its reason and 0 of 0 points: ``score`` is the points graded
    on this device, the listed maxima add up to ``max_score``, and ``output`` states both
    that total and the full one. Under a failing test's message comes what the learner's
    code printed during it, when anything (its first and last lines; all of it is in the result).
    """
    tests = []
    for question in result["questions"]:
        number = question["id"].removeprefix("q")
        for index, test in enumerate(question["tests"], 1):
            printed = test.get("output") if test["outcome"] in ("failed", "error") else None
            shown = "\n\nYour code printed:\n" + "\n".join(trim_output(printed, note="")) if printed else ""
            entry = {"name": f"{question['id']} · {test['name']}", "number": f"{number}.{index}",
                     "tags": [question["id"]], "output": test["message"] + shown,
                     "visibility": hidden_visibility if test.get("visibility") == "hidden" else "visible"}
            if test["outcome"] == "skipped":
                entry.update(name=f"{entry['name']} (skipped)", score=0.0, max_score=0.0,
                             output=f"Skipped, not graded: {test['message']}", tags=[question["id"], "skipped"])
            else:
                entry.update(score=float(test["points"]), max_score=float(test["max_points"]),
                             status="passed" if test["outcome"] == "passed" else "failed")
            tests.append(entry)
    skipped = [t for q in result["questions"] for t in q["tests"] if t["outcome"] == "skipped"]
    where = {"cpu": " on the CPU", "cuda": " on a CUDA GPU"}.get(result.get("device", ""), "")
    lines = [f"Your submission could not be graded: {result['error']}"] if result.get("error") else []
    lines.append(f"{result['exercise']}: {result['score']:g}/{result['max_score']:g} points graded{where}")
    full = result.get("full_max_score", result["max_score"] + sum(t["max_points"] for t in skipped))
    if full != result["max_score"]:
        reason = f" Skipped: {skipped[0]['message']}." if skipped else ""
        lines.append(f"{full - result['max_score']:g} more points are not graded here: the full total is {full:g}."
                     + reason)
    lines += [f"{q['id']} {q['title']}: {q['score']:g}/{q['max_score']:g}" for q in result["questions"]]
    return {
        "score": float(result["score"]),
        "execution_time": round(float(result.get("duration_s", 0.0))),
        "output": "\n".join(lines),
        "stdout_visibility": "hidden",
        "visibility": "visible",
        "tests": tests,
    }


def write_gradescope(result: dict[str, Any], path: Path, *, hidden_visibility: str = "after_due_date") -> None:
    write_json(gradescope(result, hidden_visibility=hidden_visibility), path)


def to_nbgrader(results: dict[str, dict[str, Any]], db_url: str, *, assignment: str | None = None,
                notebook: str | None = None) -> dict[str, float]:
    """Put the scores into an nbgrader gradebook through nbgrader's ``Gradebook`` API.

    The assignment (default: the exercise set) gets one notebook (default: the set's
    name) with one autograded grade cell per question (``q1`` ...) worth the
    question's points graded on this device (``max_score``: CUDA-only tests skipped on
    a CPU are not in it, as in every other output); each learner becomes a student
    (``id``: the results folder; first name: the learner's name) with a submission
    whose ``auto_score`` per question is the kit's score. A learner who did not submit
    gets no submission (nbgrader lists them as missing).

    Returns:
        ``{"max_score", "full_max_score", "skipped_points"}`` of the assignment, to report.
    """
    from nbgrader.api import Gradebook

    if not results:
        return {}
    # nbgrader runs its database migrations with the `alembic` script installed beside this Python
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    first = next(iter(results.values()))
    assignment = assignment or first["exercise"]
    notebook = notebook or first["exercise"]
    maxima: dict[str, tuple[float, float]] = {}
    for result in results.values():
        for question in result["questions"]:
            graded, full = maxima.get(question["id"], (0.0, 0.0))
            maxima[question["id"]] = (max(graded, float(question["max_score"])),
                                      max(full, float(question.get("full_max_score", question["max_score"]))))
    with warnings.catch_warnings(), Gradebook(db_url) as gradebook:
        warnings.filterwarnings("ignore", module="nbgrader")  # nbgrader's own SQLAlchemy session warnings
        gradebook.update_or_create_assignment(assignment)
        gradebook.update_or_create_notebook(notebook, assignment)
        for qid, (points, _) in maxima.items():
            gradebook.update_or_create_grade_cell(qid, notebook, assignment, max_score=points, cell_type="code")
        for learner, result in sorted(results.items()):
            gradebook.update_or_create_student(learner, first_name=str(result.get("learner", learner)),
                                               email=result.get("email") or None,
                                               lms_user_id=result.get("lms_id") or None)
            if result.get("status") == "not_submitted":
                continue
            gradebook.update_or_create_submission(assignment, learner)
            for question in result["questions"]:
                grade = gradebook.find_grade(question["id"], notebook, assignment, learner)
                grade.auto_score = float(question["score"])
                grade.needs_manual_grade = False
            gradebook.db.commit()
    graded = round(sum(g for g, _ in maxima.values()), 4)
    full = round(sum(f for _, f in maxima.values()), 4)
    return {"max_score": graded, "full_max_score": full, "skipped_points": round(full - graded, 4)}
