"""LMS downloads in ``grade batch``: Canvas flat files, Moodle folders, nbgrader, plain entries, a class zip.

The layouts are built in tmp_path with tiny q1-only submissions (the model answer
or the stub of q1). Discovery and the roster are checked directly (fast); one
batch of a whole-class zip (Canvas + Moodle + plain, with a roster) is graded
through the CLI (``-q q1``) and its grades.csv, canvas.csv and per-learner reasons
are read back; Ctrl-C and an unreachable Dask scheduler are checked on a real
``grade batch`` process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from conftest import marked_processes
from grader import roster, submissions

ROOT = Path(__file__).resolve().parent.parent
Q1 = "q1_positional_encoding.py"
SOLUTION = (ROOT / "solutions" / "ex4" / Q1).read_text()
STUB = (ROOT / "exercises" / "ex4" / Q1).read_text()
MODULES = {"q1": "q1_positional_encoding"}


def _zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def canvas_class(folder: Path) -> Path:
    """Canvas "Download Submissions", unzipped: 5 learners, one id claimed by two names, one broken zip."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"josenunez_late_12345_67890_{Q1[:-3]}-1.py").write_text(SOLUTION)  # the resubmission: graded
    (folder / f"josenunez_late_12345_67890_{Q1}").write_text(STUB)  # the first attempt: set aside
    (folder / f"smithann_222_333_{Q1}").write_text(STUB)
    (folder / "smithann_222_333_notes.txt").write_text("my notes")
    (folder / f"doejane_666_777_{Q1}").write_text(SOLUTION)
    (folder / f"doejohn_666_778_{Q1}").write_text(SOLUTION)
    (folder / "brokenbob_888_999_answers.zip").write_bytes(b"PK\x03\x04 not really a zip")
    return folder


def moodle_class(folder: Path) -> Path:
    """Moodle "Download all submissions": one folder holding a zip, one holding the file, one online text."""
    zipped = folder / "Émile Zola_55_assignsubmission_file_"
    zipped.mkdir(parents=True)
    _zip(zipped / "my answers.zip", {f"ex4/{Q1}": SOLUTION, f"__MACOSX/ex4/._{Q1}": "junk"})
    plain = folder / "José Ñúñez_56_assignsubmission_file_"
    plain.mkdir()
    (plain / Q1).write_text(STUB)
    (folder / "José Ñúñez_56_assignsubmission_onlinetext_").mkdir()
    return folder


# ----------------------------------------------------------------------------- discovery (fast)
def test_canvas_flat_files_become_one_learner_per_user_id(tmp_path):
    entries = {e.learner: e for e in submissions.discover(canvas_class(tmp_path / "c"), "ex4")}
    assert sorted(entries) == ["brokenbob_888", "doejane_666", "doejohn_666", "josenunez_12345", "smithann_222"]
    jose = entries["josenunez_12345"]
    assert (jose.name, jose.lms_id, jose.late, jose.lms) == ("josenunez", "12345", True, "canvas")
    assert [(target, path.name) for target, path in jose.files] == [(Q1, f"josenunez_late_12345_67890_{Q1[:-3]}-1.py")]
    assert "older copy" in jose.notes[0]
    assert not entries["smithann_222"].late
    for rival in ("doejane_666", "doejohn_666"):
        assert "2 submissions claim the canvas id 666" in entries[rival].problem
    assert not jose.problem and not entries["smithann_222"].problem


def test_canvas_files_map_to_questions(tmp_path):
    entries = {e.learner: e for e in submissions.discover(canvas_class(tmp_path / "c"), "ex4")}
    ann = entries["smithann_222"]
    folder = submissions.materialize(ann, tmp_path / "scratch")
    plan = submissions.plan_files(ann, folder, MODULES)
    assert plan.questions == {"q1": f"smithann_222_333_{Q1}"}
    assert any("smithann_222_333_notes.txt matches no question" in note for note in plan.notes)
    with pytest.raises(submissions.MalformedSubmission, match="not a readable zip"):
        submissions.materialize(entries["brokenbob_888"], tmp_path / "broken")
    with pytest.raises(submissions.MalformedSubmission, match="claim the canvas id 666"):
        submissions.materialize(entries["doejane_666"], tmp_path / "rival")


def test_moodle_folders_with_a_zip_or_files(tmp_path):
    entries = {e.learner: e for e in submissions.discover(moodle_class(tmp_path / "m"), "ex4")}
    assert sorted(entries) == ["Emile_Zola_55", "Jose_Nunez_56"]  # the online-text folder is no learner
    emile = entries["Emile_Zola_55"]
    assert (emile.name, emile.lms_id, emile.lms) == ("Émile Zola", "55", "moodle")
    folder = submissions.materialize(emile, tmp_path / "scratch")
    assert (folder / Q1).read_text() == SOLUTION
    assert submissions.plan_files(emile, folder, MODULES).questions == {"q1": Q1}


def test_moodle_flat_files_without_folders(tmp_path):
    (tmp_path / f"José Ñúñez_56_assignsubmission_file_{Q1}").write_text(SOLUTION)
    (tmp_path / "José Ñúñez_56_assignsubmission_file_report.pdf").write_bytes(b"%PDF")
    (tmp_path / f"Ann Lee_57_assignsubmission_file_{Q1}").write_text(STUB)
    entries = submissions.discover(tmp_path, "ex4")
    assert [(e.learner, e.name, e.lms_id, e.lms, len(e.files)) for e in entries] == [
        ("Ann_Lee_57", "Ann Lee", "57", "moodle", 1), ("Jose_Nunez_56", "José Ñúñez", "56", "moodle", 2)]
    jose = entries[1]
    plan = submissions.plan_files(jose, submissions.materialize(jose, tmp_path / "scratch"), MODULES)
    assert plan.questions == {"q1": f"José Ñúñez_56_assignsubmission_file_{Q1}"}
    assert any("report.pdf matches no question" in note for note in plan.notes)


def test_plain_entries_keep_the_real_name_and_the_late_flag(tmp_path):
    (tmp_path / "José Ñúñez (late)").mkdir()
    (tmp_path / "José Ñúñez (late)" / Q1).write_text(SOLUTION)
    _zip(tmp_path / "bob.zip", {Q1: SOLUTION})
    (tmp_path / "alice").mkdir()
    _zip(tmp_path / "alice.zip", {Q1: SOLUTION})
    entries = submissions.discover(tmp_path, "ex4")
    jose = next(e for e in entries if e.name == "José Ñúñez")
    assert jose.late and jose.learner.startswith("Jose_Nunez-") and jose.identity()["learner"] == "José Ñúñez"
    assert next(e for e in entries if e.learner == "bob").kind == "zip"
    alices = [e for e in entries if e.name == "alice"]
    assert sorted(e.learner for e in alices) == ["alice", "alice-2"]
    assert all("2 submissions claim the name 'alice'" in e.problem for e in alices)


def test_nbgrader_layout(tmp_path):
    for learner in ("u1", "u2"):
        (tmp_path / "submitted" / learner / "ex4").mkdir(parents=True)
        (tmp_path / "submitted" / learner / "ex4" / Q1).write_text(SOLUTION)
    entries = submissions.discover(tmp_path, "ex4")
    assert [(e.learner, e.lms, e.lms_id, e.path.name) for e in entries] == [("u1", "nbgrader", "u1", "ex4"),
                                                                            ("u2", "nbgrader", "u2", "ex4")]


def test_a_whole_class_zip_is_opened_and_its_wrapper_folder_entered(tmp_path):
    source = canvas_class(tmp_path / "c")
    archive = tmp_path / "submissions.zip"
    _zip(archive, {f"submissions/{p.name}": p.read_bytes().decode("latin-1") for p in source.iterdir()})
    with submissions.opened(archive) as folder:
        assert len(submissions.discover(folder, "ex4")) == 5
    assert not folder.exists(), "the unpacked class is removed afterwards"
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(FileNotFoundError, match="not a zip archive"):
        with submissions.opened(tmp_path / "bad.zip"):
            pass


def test_roster_reads_canvas_export_and_matches_by_id_login_and_name(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_text("Student,ID,SIS User ID,SIS Login ID,Section\n"
                    "    Points Possible,,,,\n"
                    '"Núñez, José",12345,S1,jnunez,A\n'
                    '"Zola, Émile",,S2,ezola,B\n'
                    "Ann Smith,,,asmith,A\n"
                    "Kim Nguyen,999,S4,knguyen,B\n", encoding="utf-8")
    people = roster.read(path)
    assert [p.name for p in people] == ["Núñez, José", "Zola, Émile", "Ann Smith", "Kim Nguyen"]
    entries = (submissions.discover(canvas_class(tmp_path / "c"), "ex4")
               + submissions.discover(moodle_class(tmp_path / "m"), "ex4"))
    (tmp_path / "asmith").mkdir()
    entries += submissions.discover(tmp_path, "ex4")
    matched, missing = roster.match(people, entries)
    assert matched["josenunez_12345"].name == "Núñez, José"  # by Canvas id
    assert matched["Emile_Zola_55"].name == "Zola, Émile"  # by name, accents and order ignored
    assert matched["asmith"].name == "Ann Smith"  # a plain folder named by login
    assert [p.name for p in missing] == ["Kim Nguyen"]
    (tmp_path / "bad.csv").write_text("colour,size\nred,3\n")
    with pytest.raises(roster.RosterError, match="no name or id column"):
        roster.read(tmp_path / "bad.csv")


# ----------------------------------------------------------------------------- one graded class (the CLI)
def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from grader.cli import main; main()", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)


@pytest.fixture(scope="module")
def lms_batch(tmp_path_factory):
    """A whole-class zip of Canvas files, Moodle folders and a plain late folder, graded with a roster."""
    root = tmp_path_factory.mktemp("lms")
    staged = canvas_class(root / "staged")
    moodle_class(staged)
    (staged / "Bob Stone (late)").mkdir()
    (staged / "Bob Stone (late)" / Q1).write_text(SOLUTION)
    archive = root / "class.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(staged.rglob("*")):
            if path.is_file():
                handle.write(path, str(path.relative_to(staged)))
    people = root / "roster.csv"
    people.write_text("Student,ID,SIS User ID,SIS Login ID,Section\n"
                      '"Núñez, José",12345,S1,jnunez,A\n"Zola, Émile",,S2,ezola,B\nKim Nguyen,999,S4,knguyen,B\n',
                      encoding="utf-8")
    out = root / "results"
    dry = _cli("batch", "ex4", str(archive), "-q", "q1", "--dry-run", "--roster", str(people))
    dry_out, dry_err = dry.communicate(timeout=60)
    started = time.monotonic()
    run = _cli("batch", "ex4", str(archive), "--out", str(out), "-q", "q1", "-j", "2", "--no-progress",
               "--roster", str(people), preexec_fn=lambda: os.umask(0o002))
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    return {"out": out, "stdout": stdout, "dry": (dry.returncode, dry_out, dry_err),
            "seconds": time.monotonic() - started,
            "rows": {r["learner_folder"]: r for r in csv.DictReader(io.StringIO((out / "grades.csv").read_text()))},
            "canvas": list(csv.reader(io.StringIO((out / "canvas.csv").read_text())))}


def test_dry_run_lists_learners_and_files(lms_batch):
    code, stdout, stderr = lms_batch["dry"]
    assert code == 0, stderr
    assert f"josenunez_12345: josenunez (canvas, id 12345, late): q1 <- josenunez_late_12345_67890_{Q1[:-3]}-1.py" \
        in stdout
    assert "Emile_Zola_55: Émile Zola (moodle, id 55): q1 <- " in stdout
    assert "brokenbob_888: brokenbob (canvas, id 888): cannot be graded: brokenbob_888_999_answers.zip is not a " \
           "readable zip" in stdout
    assert "Kim Nguyen (roster, id 999): not submitted" in stdout
    assert "9 learners found" in stdout.splitlines()[-1] and "nothing was graded" in stdout.splitlines()[-1]


def test_grades_csv_keeps_names_ids_late_flags_and_roster_rows(lms_batch):
    rows = lms_batch["rows"]
    assert len(rows) == 9
    jose = rows["josenunez_12345"]
    assert (jose["learner"], jose["lms_id"], jose["late"], jose["sis_login_id"], jose["section"]) == \
        ("Núñez, José", "12345", "yes", "jnunez", "A")
    assert jose["total"] == "10" and jose["status"] == "graded"
    assert rows["Emile_Zola_55"]["learner"] == "Zola, Émile" and rows["Emile_Zola_55"]["total"] == "10"
    assert rows["Jose_Nunez_56"]["learner"] == "José Ñúñez" and rows["Jose_Nunez_56"]["total"] == "0"
    bob = next(r for r in rows.values() if r["learner"] == "Bob Stone")
    assert bob["late"] == "yes" and bob["total"] == "10"
    kim = next(r for r in rows.values() if r["learner"] == "Kim Nguyen")
    assert kim["status"] == "not_submitted" and kim["lms_id"] == "999"
    assert rows["brokenbob_888"]["status"] == "malformed" and "not a readable zip" in rows["brokenbob_888"]["error"]
    for rival in ("doejane_666", "doejohn_666"):
        assert rows[rival]["status"] == "malformed" and "claim the canvas id 666" in rows[rival]["error"]
    assert {(r["max_score"], r["full_max_score"], r["skipped_points"]) for r in rows.values()} == {("10", "10", "0")}
    assert "not submitted" in lms_batch["stdout"] and "3 could not be graded, 1 not submitted" in lms_batch["stdout"]


def test_canvas_csv_is_the_gradebook_import_format(lms_batch):
    table = lms_batch["canvas"]
    assert table[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "ex4"]
    assert table[1] == ["Points Possible", "", "", "", "", "10"]
    by_name = {row[0]: row for row in table[2:]}
    assert by_name["Núñez, José"] == ["Núñez, José", "12345", "S1", "jnunez", "A", "10"]
    assert by_name["Kim Nguyen"][5] == "" and by_name["brokenbob"][5] == "0"
    assert len(table) == 11


def test_feedback_says_what_was_set_aside_and_files_follow_the_umask(lms_batch):
    out = lms_batch["out"]
    feedback = (out / "josenunez_12345" / "feedback.md").read_text()
    assert feedback.startswith("# ex4: 10/10 points") and "is an older copy of q1_positional_encoding.py" in feedback
    assert "smithann_222_333_notes.txt matches no question" in (out / "smithann_222" / "feedback.md").read_text()
    result = json.loads((out / "josenunez_12345" / "result.json").read_text())
    assert (result["learner"], result["lms_id"], result["late"], result["lms"]) == ("josenunez", "12345", True,
                                                                                    "canvas")
    for path in [out / n for n in ("grades.csv", "canvas.csv", "report.html")] + \
            [out / "josenunez_12345" / n for n in ("feedback.md", "result.json", "junit.xml")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o664, path  # umask 002 in the batch, not tempfile's 0600


# ----------------------------------------------------------------------------- Ctrl-C, unreachable scheduler
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_ctrl_c_stops_judges_and_workers_at_once_and_says_a_rerun_resumes(tmp_path):
    subs = tmp_path / "subs"
    for learner in ("ann", "ben", "cat", "dan"):
        (subs / learner).mkdir(parents=True)
        (subs / learner / Q1).write_text(SOLUTION)
    out = tmp_path / "results"
    marker = f"GRADE_TEST_{uuid.uuid4().hex}"
    run = _cli("batch", "ex4", str(subs), "--out", str(out), "-q", "q1", "-j", "1", "--no-progress",
               env={**os.environ, marker: "1"})
    deadline = time.monotonic() + 120
    while not list(out.glob("*/result.json")) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # the judge is grading the next learner now
    assert len(marked_processes(marker)) > 2, "a judge and its fork server should be running"
    sent = time.monotonic()
    os.kill(run.pid, signal.SIGINT)
    _, stderr = run.communicate(timeout=30)
    stopped = time.monotonic() - sent
    assert run.returncode == 130, stderr
    assert stopped < 5, f"took {stopped:.1f} s to stop"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "run the same command again to resume" in lines[0], stderr
    time.sleep(0.3)
    assert marked_processes(marker) == [], "judge or worker processes were left behind"
    kept = list(out.glob("*/result.json"))
    assert kept and all(json.loads(p.read_text())["status"] == "graded" for p in kept)
    assert f"interrupted: {len(kept)} learner" in lines[0] and "graded so far kept" in lines[0]


def test_unreachable_scheduler_is_a_usage_error_within_10_s(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "subs" / "ann").mkdir(parents=True)
    (tmp_path / "subs" / "ann" / Q1).write_text(SOLUTION)
    address = f"tcp://127.0.0.1:{port}"
    started = time.monotonic()
    run = _cli("batch", "ex4", str(tmp_path / "subs"), "--out", str(tmp_path / "out"), "-q", "q1",
               "--scheduler", address)  # with the progress bar: the error comes before it shows
    _, stderr = run.communicate(timeout=60)
    seconds = time.monotonic() - started
    pytest.importorskip("distributed")
    assert run.returncode == 2, stderr
    assert seconds < 10, f"{seconds:.1f} s"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and "Traceback" not in stderr, stderr
