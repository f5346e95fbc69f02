"""Gradescope: the autograder zip, and grading one upload the way Gradescope hands it over.

``build_autograder`` writes the zip that is uploaded as a Gradescope autograder.
Its root holds ``setup.sh`` (run once, as root, when Gradescope builds the image:
Python ≥ 3.11, the CPU build of torch, then the kit with ``pip install``),
``run_autograder`` (run per submission: ``grade gradescope <set> ...``) and the
kit's source: ``pyproject.toml`` (written from the installed kit's metadata),
``grader/``, ``reference/``, ``solutions/`` and ``exercises/`` (stubs generated
from the solutions, never the instructor's working copy), without caches. The
files are read from wherever the kit is installed, so an editable checkout and a
wheel install build the same zip.

``answer_folder`` finds the learner's answers in ``/autograder/submission``:
files at its top, a folder (any depth), or a zip (any depth inside).
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from grader import grading, stubs, submissions
from grader.exercises import KIT_ROOT, ExerciseSet, Question
from grader.report import write_atomic

DISTRIBUTION = "transformer-grading-kit"
PACKAGES = ("grader", "reference", "solutions")  # copied as installed; exercises/ is generated
_SKIPPED_PARTS = ("__pycache__",)
_SKIPPED_SUFFIXES = (".pyc", ".pyo")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: the same kit always gives the same bytes

SETUP_SH = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (Ubuntu 22.04 or 24.04).
# Written by `grade gradescope-build`: installs Python >= 3.11, the CPU build of torch (from TORCH_INDEX)
# and the kit (the folder this script is in) into a virtual environment, GRADE_VENV (default /opt/grade).
set -euo pipefail
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${GRADE_VENV:-/opt/grade}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends ca-certificates python3 python3-venv
PYTHON=python3
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    # Ubuntu 22.04's python3 is 3.10; the kit needs 3.11 (Ubuntu's universe repository has it)
    apt-get install -y --no-install-recommends python3.11 python3.11-venv
    PYTHON=python3.11
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --upgrade pip
# Gradescope's machines have no GPU: the CPU build (CUDA-only tests are reported as skipped)
"$VENV/bin/python" -m pip install "@TORCH@" --index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
"$VENV/bin/python" -m pip install "$SOURCE"
"$VENV/bin/grade" list    # fails the image build now, rather than every submission later
"""

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this for every submission. Written by `grade gradescope-build`.
# The learner's upload (files, a folder or a zip) is in $AUTOGRADER_ROOT/submission; the results go to
# $AUTOGRADER_ROOT/results/results.json. To try it elsewhere, set AUTOGRADER_ROOT (default /autograder)
# and GRADE, the path of a `grade` command (default: the one setup.sh installed).
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
GRADE="${GRADE:-${GRADE_VENV:-/opt/grade}/bin/grade}"
mkdir -p "$ROOT/results"
cd "$ROOT"
exec "$GRADE" gradescope @ARGS@ --device auto \\
    --submission-dir "$ROOT/submission" --results "$ROOT/results/results.json"
"""


def _pyproject(distribution: metadata.Distribution) -> str:
    """A ``pyproject.toml`` that installs the kit's source as laid out in the zip.

    Name, version, Python and dependencies (extras left out) come from the installed
    kit's metadata; every file of the zip's packages is package data.
    """
    requirements = [r for r in distribution.requires or [] if "extra ==" not in r]
    scripts = [e for e in distribution.entry_points if e.group == "console_scripts"]
    quote = json.dumps  # a JSON string of plain text is a TOML basic string
    return "\n".join([
        f"# Written by `grade gradescope-build` from the installed kit ({distribution.metadata['Name']} "
        f"{distribution.version}).",
        "[build-system]",
        'requires = ["setuptools>=68"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f"name = {quote(distribution.metadata['Name'])}",
        f"version = {quote(distribution.version)}",
        f"requires-python = {quote(distribution.metadata['Requires-Python'] or '>=3.11')}",
        "dependencies = [" + ", ".join(quote(r) for r in requirements) + "]",
        "",
        "[project.scripts]",
        *(f"{e.name} = {quote(e.value)}" for e in scripts),
        "",
        "[tool.setuptools.packages.find]",
        "include = [" + ", ".join(quote(f"{p}*") for p in (*PACKAGES, "exercises")) + "]",
        "namespaces = true",
        "",
        "[tool.setuptools.package-data]",
        '"*" = ["*", "**/*"]',
        "",
    ])


def _kit_files() -> dict[str, bytes]:
    """``{path in the zip: bytes}`` of the installed kit's packages and generated stubs.

    Raises:
        FileNotFoundError: a package of the kit is missing where the kit is installed.
    """
    files: dict[str, bytes] = {}
    for package in PACKAGES:
        root = KIT_ROOT / package
        if not root.is_dir():
            raise FileNotFoundError(f"the kit's {package}/ is not installed beside grader/ ({root})")
        for path in sorted(root.rglob("*")):
            parts = path.relative_to(KIT_ROOT).parts
            if (path.is_file() and path.suffix not in _SKIPPED_SUFFIXES
                    and not any(p.startswith(".") or p in _SKIPPED_PARTS for p in parts)):
                files["/".join(parts)] = path.read_bytes()
    for answers in sorted(p for p in (KIT_ROOT / "solutions").iterdir() if p.is_dir() and p.name.isidentifier()):
        for path in sorted(answers.glob("q*.py")):
            files[f"exercises/{answers.name}/{path.name}"] = stubs.strip_solution(path.read_text()).encode()
    return files


def _zip_bytes(files: dict[str, bytes], executables: set[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = (0o100755 if name in executables else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])
    return buffer.getvalue()


def build_autograder(exercise: ExerciseSet, questions: tuple[Question, ...], out: Path, *,
                     sandbox: bool = True) -> dict[str, Any]:
    """Write the Gradescope autograder zip to ``out`` (atomically); a summary.

    Args:
        questions: the questions ``run_autograder`` grades (the whole set when all are given).
        sandbox: False writes ``--no-sandbox`` into ``run_autograder`` (for a Gradescope image
            whose kernel or seccomp profile refuses Landlock; each upload still has its own container).

    Returns:
        ``{"files": int, "bytes": int, "questions": [ids], "points": float, "cpu_points": float}``:
        the zip's size, and the points of those questions in all and on Gradescope's CPU.

    Raises:
        FileNotFoundError: the kit is not installed whole (a package or its metadata missing).
    """
    try:
        distribution = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the kit's metadata ({DISTRIBUTION}) is not installed: pip install the kit") from None
    torch = next((str(r) for r in map(Requirement, distribution.requires or []) if r.name == "torch" and not r.marker),
                 "torch")
    ids = [q.id for q in questions]
    arguments = " ".join([exercise.name, *(ids if len(questions) < len(exercise.questions) else []),
                          *([] if sandbox else ["--no-sandbox"])])
    files = _kit_files()
    files["pyproject.toml"] = _pyproject(distribution).encode()
    files["setup.sh"] = SETUP_SH.replace("@TORCH@", torch).encode()
    files["run_autograder"] = RUN_AUTOGRADER.replace("@ARGS@", arguments).encode()
    content = _zip_bytes(files, executables={"setup.sh", "run_autograder"})
    write_atomic(Path(out), content)
    full, cpu = grading.collect_points(exercise), grading.collect_points(exercise, "cpu")
    return {"files": len(files), "bytes": len(content), "questions": ids,
            "points": sum(full.get(i, 0.0) for i in ids), "cpu_points": sum(cpu.get(i, 0.0) for i in ids)}


def answer_folder(upload: Path, scratch: Path) -> Path:
    """The folder with the learner's ``q*.py`` files in Gradescope's submission folder ``upload``.

    Learners upload the files themselves, a folder holding them (any depth), or a zip
    of either (unpacked into ``scratch``); ``upload`` may also be a zip file.

    Raises:
        submissions.MalformedSubmission: nothing gradable; the message says why, in the learner's terms.
    """
    upload = Path(upload)
    return submissions.materialize(submissions.Entry("submission", upload, "folder" if upload.is_dir() else "zip"),
                                   scratch)


def grade_upload(exercise: ExerciseSet, questions: tuple[Question, ...], upload: Path, *, device: str,
                 memory_limit: int) -> dict[str, Any]:
    """The result document for Gradescope's upload folder (a malformed result when nothing is gradable).

    Raises:
        grading.KitError: a hidden suite could not run (a bug in the kit).
    """
    from grader.batch import malformed_result

    with tempfile.TemporaryDirectory(prefix="grade-gradescope-") as scratch:
        try:
            folder = answer_folder(upload, Path(scratch))
        except submissions.MalformedSubmission as error:
            return malformed_result(exercise.name, [(q.id, q.title) for q in questions],
                                    grading.collect_points(exercise), str(error),
                                    graded_points=grading.collect_points(exercise, device))
        return grading.grade(exercise, questions, folder, device=device, memory_limit=memory_limit)
