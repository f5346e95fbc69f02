"""Turning per-test records into the result document of DESIGN.md.

A question's score is the sum of the points of its passed tests; its maximum
leaves out skipped tests (e.g. CUDA tests when grading on the CPU), so a
complete CPU submission gets full marks. The set's score is the sum over its
questions.
"""

from __future__ import annotations

from typing import Any, Iterable

from grader import __version__
from grader.exercises import ExerciseSet, Question


def build_result(exercise: ExerciseSet, questions: Iterable[Question], records: list[dict[str, Any]],
                 **extra: Any) -> dict[str, Any]:
    """The result document: ``exercise, score, max_score, questions[{id, title, score, max_score, tests}]``.

    ``extra`` fields (device, submission, duration_s, ...) are added at the top level.
    """
    blocks = []
    for question in questions:
        tests = [{k: v for k, v in r.items() if k != "question"} for r in records if r["question"] == question.id]
        counted = [t for t in tests if t["outcome"] != "skipped"]
        blocks.append({
            "id": question.id,
            "title": question.title,
            "score": round(sum(t["points"] for t in counted), 4),
            "max_score": round(sum(t["max_points"] for t in counted), 4),
            "tests": tests,
        })
    return {
        "exercise": exercise.name,
        "score": round(sum(b["score"] for b in blocks), 4),
        "max_score": round(sum(b["max_score"] for b in blocks), 4),
        "kit_version": __version__,
        **extra,
        "questions": blocks,
    }
