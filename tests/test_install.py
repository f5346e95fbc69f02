"""The kit installed as a wheel, the way ``pip install .`` (and Gradescope's setup.sh) installs it.

The editable checkout is not the only layout: a wheel puts ``grader``, ``reference``,
``solutions`` and ``exercises`` into site-packages, where the worker's ``sys.path`` rule
once dropped site-packages itself (the model answers then scored 68.5/115 with no error).
This test builds the wheel, installs it with its own dependencies into a fresh virtual
environment (no ``-e``, no checkout on the path) and grades from an unrelated folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the kit's wheel and its dependencies; returns its ``bin`` folder."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(work / "dist"), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    wheel = next((work / "dist").glob("*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-2000:]
    return venv / "bin"


def run_grade(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environment["PATH"] = f"{bin_dir}{os.pathsep}{environment.get('PATH', '')}"
    return subprocess.run([str(bin_dir / "grade"), *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=600)


def test_wheel_grades_the_model_answers_at_full_marks(installed, tmp_path):
    where = run_grade(installed, tmp_path, "--version")
    assert where.returncode == 0, where.stderr
    done = run_grade(installed, tmp_path, "ex4", "--solutions", "--json", "result.json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    lost = [(q["id"], t["name"], t["message"][:200]) for q in result["questions"] for t in q["tests"]
            if t["outcome"] in ("failed", "error")]
    assert not lost, lost
    assert result["score"] == result["max_score"] > 100
    # graded from the installed package, not from this checkout
    assert str(ROOT) not in result["submission"]
    assert "site-packages" in result["submission"]


def test_wheel_grades_its_stubs_as_not_implemented(installed, tmp_path):
    done = run_grade(installed, tmp_path, "ex4", "q1", "--json", "result.json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["score"] == 0
    messages = {t["message"] for q in result["questions"] for t in q["tests"]}
    assert any("not implemented yet" in m for m in messages), messages
