"""The Gradescope autograder as shipped: the zip `grade gradescope-build` writes, run on a simulated /autograder.

`run_autograder` runs from the unpacked zip with AUTOGRADER_ROOT pointing at a temporary
tree and GRADE at this environment's `grade`; results.json is checked against
Gradescope's documented fields (a JSON schema). The zip's source is installed as a
package (the wheel layout) and rebuilds the very same zip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from grader import exercises, exports, grading
from grader import gradescope as autograder
from grader.cli import main
from grader.submissions import MalformedSubmission

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions" / "ex4"
STUBS = ROOT / "exercises" / "ex4"
GRADE = Path(sys.executable).parent / "grade"
QUESTIONS = ("q1", "q8")  # q1 graded in seconds; q8 holds the CUDA-only tests, skipped here


@pytest.fixture(scope="module")
def autograder_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build") / "autograder.zip"
    outcome = CliRunner().invoke(main, ["gradescope-build", "ex4", str(out), *(f"-q{q}" for q in QUESTIONS)])
    assert outcome.exit_code == 0, outcome.output
    assert "Set the assignment's autograder points to" in outcome.output
    return out


def unpack(archive: Path, target: Path) -> Path:
    with zipfile.ZipFile(archive) as handle:
        handle.extractall(target)
        for info in handle.infolist():  # extractall drops the modes: restore run_autograder's x bit
            os.chmod(target / info.filename, (info.external_attr >> 16) & 0o777)
    return target


# -- the zip --------------------------------------------------------------------------------------------------------
def test_zip_holds_the_scripts_and_the_kit_and_nothing_else(autograder_zip):
    with zipfile.ZipFile(autograder_zip) as handle:
        names = handle.namelist()
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in handle.infolist()}
        stubs = {n: handle.read(n).decode() for n in names if n.startswith("exercises/")}
        run = handle.read("run_autograder").decode()
    assert {n.split("/")[0] for n in names} == {"setup.sh", "run_autograder", "pyproject.toml", "grader", "reference",
                                                "solutions", "exercises"}
    assert modes["setup.sh"] == modes["run_autograder"] == 0o755
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/." in n or n.startswith(".")]
    assert "grader/suites/ex4/q8_optimized.py" in names and "grader/suites/pytest.ini" in names
    assert sorted(stubs) == sorted(f"exercises/ex4/{p.name}" for p in SOLUTIONS.glob("q*.py"))
    assert all("NotImplementedError" in text and "BEGIN SOLUTION" not in text for text in stubs.values())
    assert "gradescope ex4 q1 q8 --device auto" in run


def test_build_is_reproducible_and_refuses_to_overwrite(autograder_zip, tmp_path):
    again = tmp_path / "again.zip"
    assert CliRunner().invoke(main, ["gradescope-build", "ex4", str(again), "-q", "q1", "-q", "q8"]).exit_code == 0
    assert again.read_bytes() == autograder_zip.read_bytes()
    refused = CliRunner().invoke(main, ["gradescope-build", "ex4", str(again), "-q", "q1"])
    assert refused.exit_code == 2 and "--force" in refused.output
    not_a_zip = CliRunner().invoke(main, ["gradescope-build", "ex4", str(tmp_path / "autograder")])
    assert not_a_zip.exit_code == 2 and "*.zip" in not_a_zip.output


def test_build_without_sandbox_writes_the_flag_into_run_autograder(tmp_path):
    """For a Gradescope image that refuses Landlock: run_autograder passes --no-sandbox (by default it does not)."""
    out = tmp_path / "unsandboxed.zip"
    assert CliRunner().invoke(main, ["gradescope-build", "ex4", str(out), "-q", "q1", "--no-sandbox"]).exit_code == 0
    with zipfile.ZipFile(out) as handle:
        assert "gradescope ex4 q1 --no-sandbox --device auto" in handle.read("run_autograder").decode()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt-get install shellcheck)")
def test_scripts_pass_shellcheck(autograder_zip, tmp_path):
    source = unpack(autograder_zip, tmp_path)
    outcome = subprocess.run(["shellcheck", "--shell=bash", str(source / "setup.sh"), str(source / "run_autograder")],
                             capture_output=True, text=True)
    assert outcome.returncode == 0, outcome.stdout


def test_zip_source_installs_as_a_package_and_rebuilds_the_same_zip(autograder_zip, tmp_path):
    """`pip install` of the zip's source (what setup.sh does) gives a kit that builds the very same zip."""
    source = unpack(autograder_zip, tmp_path / "source")
    installed = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(installed), str(source)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    assert (installed / "grader" / "suites" / "ex4" / "q1_positional_encoding.py").is_file()
    rebuilt = tmp_path / "rebuilt.zip"
    outcome = subprocess.run([sys.executable, "-c", "import grader, sys; assert grader.__file__.startswith(sys.argv[1]);"
                              " from grader.cli import main; sys.argv[1:] = sys.argv[2:]; main()", str(installed),
                              "gradescope-build", "ex4", str(rebuilt), "-q", "q1", "-q", "q8"],
                             cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True,
                             text=True, timeout=300)
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    assert rebuilt.read_bytes() == autograder_zip.read_bytes()


# -- run_autograder on a simulated /autograder ----------------------------------------------------------------------
def test_run_autograder_grades_a_zip_upload(autograder_zip, tmp_path):
    """A learner uploads one zip holding a folder: q1 answered, q8 untouched. results.json as Gradescope reads it."""
    root = tmp_path / "autograder"
    source = unpack(autograder_zip, root / "source")
    (root / "submission").mkdir()
    with zipfile.ZipFile(root / "submission" / "my answers.zip", "w") as upload:
        upload.write(SOLUTIONS / "q1_positional_encoding.py", "ex4/q1_positional_encoding.py")
        upload.write(STUBS / "q8_optimized.py", "ex4/q8_optimized.py")
    outcome = subprocess.run([str(source / "run_autograder")], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "AUTOGRADER_ROOT": str(root), "GRADE": str(GRADE)})
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    document = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(document, exports.GRADESCOPE_SCHEMA)

    exercise = exercises.load("ex4")
    full, cpu = grading.collect_points(exercise), grading.collect_points(exercise, "cpu")
    graded = [t for t in document["tests"] if "status" in t]
    skipped = [t for t in document["tests"] if "skipped" in t["tags"]]
    assert document["score"] == full["q1"] == sum(t["score"] for t in graded)
    assert sum(t["max_score"] for t in document["tests"]) == cpu["q1"] + cpu["q8"]
    assert skipped and all(t["name"].endswith("(skipped)") and t["max_score"] == t["score"] == 0
                           and "needs a CUDA GPU" in t["output"] and "status" not in t for t in skipped)
    assert {t["name"].split(" · ")[0] for t in document["tests"]} == {"q1", "q8"}
    assert f"the full total is {full['q1'] + full['q8']:g}" in document["output"]
    assert f"{document['score']:g}/{cpu['q1'] + cpu['q8']:g} points graded on the CPU" in document["output"]


# -- the upload: files, a folder, a zip -----------------------------------------------------------------------------
def _zip(path: Path, members: dict[str, Path]) -> None:
    with zipfile.ZipFile(path, "w") as handle:
        for name, file in members.items():
            handle.write(file, name)


ANSWER = SOLUTIONS / "q1_positional_encoding.py"
UPLOADS = {
    "files": lambda up: shutil.copy(ANSWER, up / ANSWER.name),
    "folder": lambda up: (up / "hw" / "ex4").mkdir(parents=True) or shutil.copy(ANSWER, up / "hw" / "ex4"),
    "zip": lambda up: _zip(up / "bob.zip", {ANSWER.name: ANSWER}),
    "zip of a folder": lambda up: _zip(up / "bob.zip", {f"bob/ex4/{ANSWER.name}": ANSWER, "__MACOSX/._x": ANSWER}),
}


@pytest.mark.parametrize("form", UPLOADS)
def test_answers_are_found_in_every_upload_form(form, tmp_path):
    upload = tmp_path / "submission"
    upload.mkdir()
    UPLOADS[form](upload)
    folder = autograder.answer_folder(upload, tmp_path / "scratch")
    assert (folder / ANSWER.name).read_bytes() == ANSWER.read_bytes()


def test_a_zip_file_as_the_upload_path(tmp_path):
    _zip(tmp_path / "upload.zip", {f"ex4/{ANSWER.name}": ANSWER})
    assert (autograder.answer_folder(tmp_path / "upload.zip", tmp_path / "scratch") / ANSWER.name).is_file()


@pytest.mark.parametrize("form, reason", [("empty", "it is empty"), ("a zip without answers", "notes.txt")])
def test_uploads_without_answers_say_why(form, reason, tmp_path):
    upload = tmp_path / "submission"
    upload.mkdir()
    if form == "a zip without answers":
        (tmp_path / "notes.txt").write_text("hello")
        _zip(upload / "notes.zip", {"notes.txt": tmp_path / "notes.txt"})
    with pytest.raises(MalformedSubmission, match=f"no q\\*_\\*.py answer files found.*{reason}"):
        autograder.answer_folder(upload, tmp_path / "scratch")


# -- results.json ---------------------------------------------------------------------------------------------------
def _result() -> dict:
    tests = [
        {"name": "test_a", "outcome": "passed", "points": 2.0, "max_points": 2.0, "visibility": "visible",
         "message": ""},
        {"name": "test_b", "outcome": "failed", "points": 0.0, "max_points": 1.0, "visibility": "hidden",
         "message": "got 1.0, expected 2.0"},
        {"name": "test_cuda", "outcome": "skipped", "points": 0.0, "max_points": 1.5, "visibility": "visible",
         "message": "needs a CUDA GPU (grading on cpu)"},
    ]
    return {"exercise": "ex4", "score": 2.0, "max_score": 3.0, "full_max_score": 4.5, "skipped_points": 1.5,
            "device": "cpu", "duration_s": 2.6,
            "questions": [{"id": "q8", "title": "Flash", "score": 2.0, "max_score": 3.0, "tests": tests}]}


def test_results_json_lists_skipped_tests_and_honest_totals():
    document = exports.gradescope(_result(), hidden_visibility="hidden")
    jsonschema.validate(document, exports.GRADESCOPE_SCHEMA)
    assert document["score"] == 2.0 and document["execution_time"] == 3
    assert [t["number"] for t in document["tests"]] == ["8.1", "8.2", "8.3"]
    assert [t.get("status") for t in document["tests"]] == ["passed", "failed", None]
    assert [t["visibility"] for t in document["tests"]] == ["visible", "hidden", "visible"]
    skipped = document["tests"][2]
    assert skipped["name"] == "q8 · test_cuda (skipped)" and skipped["tags"] == ["q8", "skipped"]
    assert (skipped["score"], skipped["max_score"]) == (0.0, 0.0) and "needs a CUDA GPU" in skipped["output"]
    assert sum(t["max_score"] for t in document["tests"]) == 3.0
    assert document["output"].splitlines()[:2] == [
        "ex4: 2/3 points graded on the CPU",
        "1.5 more points are not graded here: the full total is 4.5. Skipped: needs a CUDA GPU (grading on cpu)."]


def test_schema_rejects_what_gradescope_does_not_document():
    document = exports.gradescope(_result())
    for bad in ({**document, "status": "ok"}, {**document, "tests": [{**document["tests"][2], "status": "skipped"}]},
                {**document, "score": "2"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, exports.GRADESCOPE_SCHEMA)
