"""Turning per-test records into the result document of DESIGN.md.

A question's ``score`` is the sum of the points of its passed tests. Its
``max_score`` is the points graded on this device: tests skipped here (CUDA
tests when grading on the CPU) count toward neither, so a complete CPU
submission gets full marks; ``full_max_score`` is all of its points and
``skipped_points`` the difference. The set's four numbers are the sums over
its questions; ``status`` is ``graded`` (``malformed`` or ``not_submitted`` for a
submission that could not be graded, see ``grader.batch.malformed_result``).
"""

from __future__ import annotations

from typing import Any, Iterable

from grader import __version__
from grader.exercises import ExerciseSet, Question


def question_block(question_id: str, title: str, tests: list[dict[str, Any]], *, score: float, max_score: float,
                   full_max_score: float) -> dict[str, Any]:
    """One question of a result document: its points graded here, in all, and skipped here."""
    return {"id": question_id, "title": title, "score": round(score, 4), "max_score": round(max_score, 4),
            "full_max_score": round(full_max_score, 4), "skipped_points": round(full_max_score - max_score, 4),
            "tests": tests}


def totals(blocks: list[dict[str, Any]]) -> dict[str, float]:
    """``score``, ``max_score``, ``full_max_score``, ``skipped_points`` of a document: sums over its questions."""
    return {name: round(sum(b[name] for b in blocks), 4)
            for name in ("score", "max_score", "full_max_score", "skipped_points")}


def build_result(exercise: ExerciseSet, questions: Iterable[Question], records: list[dict[str, Any]],
                 **extra: Any) -> dict[str, Any]:
    """The result document: ``exercise, status, score, max_score, full_max_score, skipped_points, questions``.

    Each question: ``{id, title, score, max_score, full_max_score, skipped_points, tests}``.
    ``extra`` fields (device, submission, duration_s, ...) are added at the top level.
    """
    blocks = []
    for question in questions:
        tests = [{k: v for k, v in r.items() if k != "question"} for r in records if r["question"] == question.id]
        counted = [t for t in tests if t["outcome"] != "skipped"]
        blocks.append(question_block(question.id, question.title, tests,
                                     score=sum(t["points"] for t in counted),
                                     max_score=sum(t["max_points"] for t in counted),
                                     full_max_score=sum(t["max_points"] for t in tests)))
    return {"exercise": exercise.name, "status": "graded", **totals(blocks), "kit_version": __version__, **extra,
            "questions": blocks}
