"""Shared fixtures of the kit's own tests: grading in-process and building submissions.

``grade(folder, *questions)`` grades a folder exactly as ``grade ex4`` does (a real
worker process, the real hidden suites) but from this process, so torch and the
suites are imported once for the whole test run. ``make_submission`` copies the
model answers and applies text edits (a plausible bug, or a correct rewrite).
``marked_processes`` finds what a ``grade`` process started (judges, fork servers,
workers) through a marker in their environment.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from grader import exercises, grading

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions" / "ex4"
EXERCISES = ROOT / "exercises" / "ex4"


def grade(folder: Path, *questions: str, device: str = "cpu", **limits) -> dict:
    """Grade ``folder`` on ``questions`` of ex4 (all when none); the result document.

    ``limits``: ``memory_limit`` (bytes) and ``time_limit`` (seconds per call), as ``grading.grade`` takes them.
    """
    exercise = exercises.load("ex4")
    return grading.grade(exercise, exercise.select(questions), Path(folder), device=device, **limits)


def question(result: dict, qid: str) -> dict:
    return next(q for q in result["questions"] if q["id"] == qid)


def messages(block: dict) -> str:
    return "\n".join(t["message"] for t in block["tests"])


@dataclass(frozen=True)
class Edit:
    """A submission made from the model answers with text replacements in one file.

    ``edits`` are ``(old, new)`` pairs; each ``old`` must occur in the file. ``hint``
    is text the feedback must contain (a misconception hint), or ``None``.
    """

    name: str
    file: str
    edits: tuple[tuple[str, str], ...]
    hint: str | None = None
    extra_files: dict = field(default_factory=dict)


def make_submission(root: Path, edit: Edit | None = None, source: Path = SOLUTIONS) -> Path:
    """Copy ``source`` into ``root/<edit name>`` and apply ``edit``; the folder."""
    folder = root / (edit.name.replace(" ", "_") if edit else "copy")
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("__pycache__"))
    if edit:
        path = folder / edit.file
        text = path.read_text()
        for old, new in edit.edits:
            assert old in text, f"{edit.name}: {old!r} not found in {edit.file}"
            text = text.replace(old, new)
        path.write_text(text)
        for name, content in edit.extra_files.items():
            (folder / name).write_text(content)
    return folder


def grade_edits(tmp_path_factory: pytest.TempPathFactory, qid: str, edits: list[Edit]) -> dict[str, dict]:
    """Grade the model answers and every edit on question ``qid``; results by edit name (``"solutions"`` too)."""
    root = tmp_path_factory.mktemp(qid)
    results = {"solutions": question(grade(SOLUTIONS, qid), qid)}
    for edit in edits:
        results[edit.name] = question(grade(make_submission(root, edit), qid), qid)
    return results


def assert_every_test_catches_a_bug(results: dict[str, dict], buggy: list[Edit]) -> None:
    """Every hidden test of the question fails on at least one of the ``buggy`` edits."""
    names = {t["name"] for t in results["solutions"]["tests"] if t["outcome"] != "skipped"}
    caught = {t["name"] for e in buggy for t in results[e.name]["tests"] if t["outcome"] != "passed"}
    assert names <= caught, f"hidden tests that no buggy submission fails: {sorted(names - caught)}"


def corpus_tests(qid: str, buggy: list[Edit], correct: list[Edit], full_marks: float) -> dict:
    """The standard kit tests of one hidden suite, for a test module's namespace.

    ``globals().update(corpus_tests("q1", BUGGY, CORRECT, 10))`` adds: the module-scoped
    ``results`` fixture (every edit graded once); the model answers get ``full_marks``;
    each buggy edit loses points and shows its hint; each correct rewrite keeps full
    marks; every hidden test fails on some buggy edit; the untouched stub scores 0 with
    every test "not implemented yet".
    """

    @pytest.fixture(scope="module")
    def results(tmp_path_factory):
        return grade_edits(tmp_path_factory, qid, buggy + correct)

    def test_model_answers_get_full_marks(results):
        block = results["solutions"]
        assert block["score"] == block["max_score"] == full_marks, messages(block)

    @pytest.mark.parametrize("edit", buggy, ids=lambda e: e.name)
    def test_buggy_edit_loses_points(results, edit):
        block = results[edit.name]
        assert block["score"] < block["max_score"], f"{edit.name}: still full marks"
        if edit.hint:
            assert edit.hint in messages(block), f"{edit.name}: feedback lacks {edit.hint!r}:\n{messages(block)}"

    @pytest.mark.parametrize("edit", correct, ids=lambda e: e.name)
    def test_correct_rewrite_keeps_full_marks(results, edit):
        block = results[edit.name]
        assert block["score"] == block["max_score"], f"{edit.name}:\n{messages(block)}"

    def test_every_hidden_test_catches_a_bug(results):
        assert_every_test_catches_a_bug(results, buggy)

    def test_untouched_stub_scores_zero():
        block = question(grade(EXERCISES, qid), qid)
        graded = [t for t in block["tests"] if t["outcome"] != "skipped"]
        assert block["score"] == 0
        assert all(t["outcome"] == "failed" and "not implemented yet" in t["message"] for t in graded), messages(block)

    return {name: value for name, value in locals().items() if name == "results" or name.startswith("test_")}


def marked_processes(marker: str) -> list[int]:
    """Processes alive (not zombies) whose environment holds ``marker`` (Linux ``/proc``; elsewhere none)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker.encode() in (proc / "environ").read_bytes() and \
                    (proc / "stat").read_text().rpartition(")")[2].split()[0] != "Z":
                found.append(int(proc.name))
        except OSError:
            continue
    return found
