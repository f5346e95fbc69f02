"""Usage errors of ``grade <set>`` answer before anything heavy starts.

Each error runs ``grade`` in a fresh interpreter (a small wrapper around
``grader.cli.main``) and checks: exit 2, one line on stderr naming the problem,
no file or folder left behind, and that neither torch, pytest nor hypothesis was
imported and no fork server was started. Wall-clock times are measured in
``benchmarks/grading.py``, never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grader.cli import writable_file

# runs `grade ARGS...` and reports on stdout what the process loaded
WRAPPER = """
import json, sys
from multiprocessing import forkserver
from grader.cli import main
code = None
try:
    main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "heavy": sorted(m for m in ("torch", "pytest", "hypothesis") if m in sys.modules),
                  "forkserver": getattr(forkserver._forkserver, "_forkserver_pid", None)}))
"""


def grade(folder: Path, *args: str) -> tuple[dict, str]:
    """Run ``grade *args`` in ``folder``; (what the process loaded and its exit code, its stderr)."""
    done = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=folder, capture_output=True, text=True,
                          timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A folder with ``answers/q1_positional_encoding.py``, ``empty/`` and ``notes.txt``."""
    (tmp_path / "answers").mkdir()
    (tmp_path / "answers" / "q1_positional_encoding.py").write_text("def f():\n    return 1\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("notes\n")
    return tmp_path


ERRORS = [
    (["ex9"], "unknown exercise set or command 'ex9'"),
    (["ex4", "q9"], "ex4 has no question q9; its questions are q1"),
    (["ex4", "--submission", "missing"], "missing does not exist"),
    (["ex4", "--submission", "empty"], "holds no q*.py files"),
    (["ex4", "--submission", "answers/q1_positional_encoding.py"],
     "answers/q1_positional_encoding.py is a file: pass its folder, --submission answers"),
    (["ex4", "--submission", "notes.txt"], "notes.txt is a file: --submission takes the folder with your answers"),
    (["ex4", "--solutions", "--submission", "answers"], "either --solutions or --submission"),
    (["ex4", "q1", "--solutions", "--json", "empty"], "--json empty is a folder: give a file name"),
    (["ex4", "q1", "--solutions", "--junit", "notes.txt/out.xml"], "notes.txt is a file, not a folder"),
    (["ex4", "q1", "--solutions", "--json", "/proc/no/such/result.json"], "cannot create its folder /proc/no"),
    (["ex4", "q1", "--solutions", "--json", "/dev/null"], "--json /dev/null is not a regular file"),
    (["ex4", "--solutions", "--require-cuda", "--device", "cpu"], "--require-cuda grades on CUDA"),
]


@pytest.mark.parametrize("args, text", ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_usage_error_is_one_line_before_torch(scratch, args, text):
    before = sorted(p.relative_to(scratch) for p in scratch.rglob("*"))
    outcome, stderr = grade(scratch, *args)
    assert outcome["code"] == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("Error: "), stderr
    assert text in stderr
    assert outcome["heavy"] == [], f"imported {outcome['heavy']} before saying: {stderr}"
    assert outcome["forkserver"] is None, "the fork server was started before the usage error"
    assert sorted(p.relative_to(scratch) for p in scratch.rglob("*")) == before, "files or folders left behind"


def test_the_wrapper_sees_a_late_error(scratch):
    """Control: a usage error found only after torch is up (no GPU for --device cuda) is reported as heavy."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("--device cuda is not an error on a machine with a GPU")
    outcome, stderr = grade(scratch, "ex4", "q1", "--solutions", "--device", "cuda")
    assert outcome["code"] == 2 and "no CUDA GPU" in stderr
    assert "torch" in outcome["heavy"] and outcome["forkserver"] is not None


def test_writable_file_leaves_no_folder_behind(tmp_path):
    target = tmp_path / "a" / "b" / "result.json"
    assert writable_file(target, "--json") == target
    assert list(tmp_path.iterdir()) == [], "the check created folders"
