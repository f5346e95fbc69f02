"""``grade batch``: a folder of mixed submissions graded in parallel, killed midway, resumed.

One batch (question q1 only, to stay fast) is graded through the real CLI in a
subprocess: correct answers as a folder and as a nested zip, untouched stubs, a
bug that earns a hint, a submission that kills its worker at import, and
malformed entries (an empty folder, a broken zip, a PDF, a folder of non-Python
files). The first run is killed once some learners are done; the rerun must
grade exactly the rest.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from grader import batch, submissions

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions" / "ex4"
EXERCISES = ROOT / "exercises" / "ex4"
Q1 = "q1_positional_encoding.py"

MALFORMED = {"carol": "it is empty", "dave": "not a readable zip archive", "frank": "neither a folder nor a .zip",
             "ivan": "no q*_*.py answer files found"}


def _q1(text: str) -> dict[str, str]:
    return {Q1: text}


def build_batch(root: Path) -> Path:
    """The mixed batch folder; returns it."""
    subs = root / "submissions"
    subs.mkdir()
    solution = (SOLUTIONS / Q1).read_text()
    for name, files in {
        "alice": _q1(solution),
        "bob": _q1((EXERCISES / Q1).read_text()),
        "gina": _q1("import os\nos._exit(3)\n"),
        "hank": _q1(solution.replace("torch.sin(", "torch.SIN(").replace("torch.cos(", "torch.sin(")
                    .replace("torch.SIN(", "torch.cos(")),
    }.items():
        (subs / name).mkdir()
        for file, text in files.items():
            (subs / name / file).write_text(text)
    with zipfile.ZipFile(subs / "erin.zip", "w") as archive:  # nested one level, with macOS litter
        archive.writestr(f"ex4/{Q1}", solution)
        archive.writestr(f"__MACOSX/ex4/._{Q1}", "junk")
    (subs / "carol").mkdir()
    (subs / "dave.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    (subs / "frank.pdf").write_bytes(b"%PDF-1.4 my answers")
    (subs / "ivan").mkdir()
    (subs / "ivan" / "answers.ipynb").write_text("{}")
    return subs


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from grader.cli import main; main()", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Run 1 killed after two learners are done, then run 2; everything both runs left behind."""
    root = tmp_path_factory.mktemp("batch")
    subs = build_batch(root)
    out = root / "results"
    first = _cli("batch", "ex4", str(subs), "--out", str(out), "-q", "q1", "-j", "1", "--no-progress")
    deadline = time.monotonic() + 120
    while len(list(out.glob("*/result.json"))) < 2 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = {p.parent.name: (p.stat().st_mtime_ns, json.loads(p.read_text())["batch"]["graded_at"])
              for p in out.glob("*/result.json")}
    second = _cli("batch", "ex4", str(subs), "--out", str(out), "-q", "q1", "-j", "2", "--no-progress")
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr
    results = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/result.json")}
    return {"subs": subs, "out": out, "before": before, "stdout": stdout, "results": results}


def test_every_learner_gets_a_result(graded):
    assert sorted(graded["results"]) == sorted(["alice", "bob", "carol", "dave", "erin", "frank.pdf", "gina",
                                                 "hank", "ivan"])
    for learner in graded["results"]:
        assert (graded["out"] / learner / "feedback.md").read_text().startswith("# ex4: ")


def test_kill_and_resume_loses_nothing_and_grades_nothing_twice(graded):
    before, results = graded["before"], graded["results"]
    assert len(before) >= 2
    for learner, (mtime, graded_at) in before.items():
        path = graded["out"] / learner / "result.json"
        assert path.stat().st_mtime_ns == mtime, f"{learner} was graded again"
        assert results[learner]["batch"]["graded_at"] == graded_at
    assert f"{len(results) - len(before)} graded, {len(before)} already graded" in graded["stdout"]
    assert not list(graded["out"].glob("*/.result.json.*")), "a half-written result was left behind"


def test_scores_and_reasons(graded):
    results = graded["results"]
    full = results["alice"]["max_score"]
    assert full > 0
    assert results["alice"]["score"] == full and results["erin"]["score"] == full
    assert results["bob"]["score"] == 0
    assert "not implemented yet" in (graded["out"] / "bob" / "feedback.md").read_text()
    assert results["gina"]["score"] == 0 and "exit code 3" in json.dumps(results["gina"])
    assert 0 <= results["hank"]["score"] < full
    for learner, reason in MALFORMED.items():
        result = results[learner if learner != "frank" else "frank.pdf"]
        assert result["score"] == 0 and result["max_score"] == full
        assert result["status"] == "malformed" and reason in result["error"]
    assert {r["status"] for name, r in results.items() if name not in MALFORMED and name != "frank.pdf"} == {"graded"}


def test_grades_csv(graded):
    rows = list(csv.DictReader(io.StringIO((graded["out"] / "grades.csv").read_text())))
    by_learner = {row["learner"]: row for row in rows}
    assert len(rows) == 9
    alice = by_learner["alice"]
    assert float(alice["q1"]) == float(alice["total"]) == graded["results"]["alice"]["score"]
    assert by_learner["dave"]["status"] == "malformed" and "zip" in by_learner["dave"]["error"]


def test_junit_per_learner(graded):
    from junitparser import JUnitXml

    xml = JUnitXml.fromfile(str(graded["out"] / "hank" / "junit.xml"))
    cases = [case for suite in xml for case in suite]
    assert cases and any(case.result for case in cases)


def test_class_report(graded):
    page = (graded["out"] / "report.html").read_text()
    assert 'src="data:image/png;base64,' in page
    assert "<h2>Most frequent misconceptions</h2>" in page and "dave.zip is not a readable zip" in page
    report = (graded["out"] / "report.md").read_text()
    assert "| q1 |" in report and "## Slowest submissions" in report
    assert (graded["out"] / "report_histogram.png").read_bytes().startswith(b"\x89PNG")
    hints = [line.strip().removeprefix("Hint:").strip() for q in graded["results"]["hank"]["questions"]
             for t in q["tests"] for line in t["message"].splitlines() if line.strip().startswith("Hint:")]
    misconceptions = report.split("## Most frequent misconceptions")[1].split("##")[0]
    if hints:  # the swapped sin/cos bug earns a hint in the q1 suite: it is counted in the report
        assert hints[0] in misconceptions
    else:
        assert "No misconception hint was shown." in misconceptions


def test_rerun_skips_unchanged_and_regrades_changed(graded, tmp_path):
    subs, out = graded["subs"], graded["out"]
    todo, done = batch.plan("ex4", subs, out, questions=("q1",))
    assert todo == [] and len(done) == 9
    changed = tmp_path / "subs"
    import shutil

    shutil.copytree(subs, changed)
    (changed / "alice" / Q1).write_text((changed / "alice" / Q1).read_text() + "\n# changed\n")
    todo, done = batch.plan("ex4", changed, out, questions=("q1",))
    assert [t.entry.learner for t in todo] == ["alice"]
    todo, _ = batch.plan("ex4", subs, out, questions=("q1",), force=True)
    assert len(todo) == 9
    todo, _ = batch.plan("ex4", subs, out, questions=("q1",), device="cuda")
    assert len(todo) == 9, "another device is another grade"


def test_nbgrader_layout_and_learner_ids(tmp_path):
    for learner in ("u1", "u2"):
        folder = tmp_path / "submitted" / learner / "ex4"
        folder.mkdir(parents=True)
        (folder / Q1).write_text("x = 1\n")
    (tmp_path / "submitted" / "u3").mkdir()
    entries = submissions.discover(tmp_path, "ex4")
    assert [(e.learner, e.path.name) for e in entries] == [("u1", "ex4"), ("u2", "ex4"), ("u3", "u3")]
    assert submissions.learner_id("../../etc") != "../../etc" and "/" not in submissions.learner_id("../../etc")


def test_zip_cannot_write_outside(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("../../escaped.py", "x = 1\n")
        handle.writestr(Q1, "x = 1\n")
    folder = submissions.materialize(submissions.Entry("evil", archive, "zip"), tmp_path / "unpacked")
    assert (folder / Q1).exists()
    assert not (tmp_path.parent / "escaped.py").exists() and not (tmp_path / "escaped.py").exists()


def test_one_maximum_graded_malformed_and_not_submitted_alike(tmp_path):
    """q8 has CUDA-only tests: on the CPU a graded stub, an empty folder and a roster-only learner
    are all out of the points graded here, with the full total and the skipped points beside it."""
    from grader import roster

    subs = tmp_path / "subs"
    (subs / "stub").mkdir(parents=True)
    (subs / "stub" / "q8_optimized.py").write_text((EXERCISES / "q8_optimized.py").read_text())
    (subs / "empty").mkdir()
    out = tmp_path / "out"
    summary = batch.run_batch("ex4", subs, out, questions=("q8",), jobs=1, progress=False,
                              people=[roster.Person("Kim Nguyen", "9")])
    results = summary.results
    assert sorted(r["status"] for r in results.values()) == ["graded", "malformed", "not_submitted"]
    totals = {(r["max_score"], r["full_max_score"], r["skipped_points"]) for r in results.values()}
    graded = results["stub"]
    skipped = sum(t["max_points"] for t in graded["questions"][0]["tests"] if t["outcome"] == "skipped")
    assert skipped > 0 and totals == {(graded["full_max_score"] - skipped, graded["full_max_score"], skipped)}
    for result in results.values():
        (question,) = result["questions"]
        assert (question["max_score"], question["skipped_points"]) == (result["max_score"], skipped)
    rows = list(csv.DictReader(io.StringIO((out / "grades.csv").read_text())))
    assert {(r["max_score"], r["full_max_score"], r["skipped_points"]) for r in rows} == \
        {(f"{graded['max_score']:g}", f"{graded['full_max_score']:g}", f"{skipped:g}")}
    assert "need a CUDA GPU were not graded" in (out / "stub" / "feedback.md").read_text()


def test_class_zip_and_usage_errors(tmp_path):
    """A whole-class zip is graded like the folder; a missing or corrupt one is a one-line usage error."""
    with zipfile.ZipFile(tmp_path / "class.zip", "w") as archive:
        archive.writestr("class/alice/" + Q1, (SOLUTIONS / Q1).read_text())
    run = _cli("batch", "ex4", str(tmp_path / "class.zip"), "--dry-run", "-q", "q1")
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 0 and f"alice: alice: q1 <- {Q1}" in stdout, stderr
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 broken")
    for source in ("missing.zip", "broken.zip"):
        run = _cli("batch", "ex4", str(tmp_path / source), "--out", str(tmp_path / "out"), "-q", "q1")
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 2 and len(stderr.strip().splitlines()) == 1 and source in stderr, stderr


def test_output_files_follow_the_umask(tmp_path):
    from grader.report import write_atomic

    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.csv", "x")
        write_atomic(tmp_path / "b.png", b"x")
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {oct(0o640)}
    assert not list(tmp_path.glob(".*")), "no temporary file is left behind"
