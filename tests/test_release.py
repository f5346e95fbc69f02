"""``grade release``: the learner bundle holds no answers, and grades as a learner would grade it.

The bundle is built for q1 only (fast). It is then graded from inside the bundle
(its own ``grader`` and the replaying ``reference`` stand-ins first on the path,
as after ``pip install -e .`` there): the model answers get the public marks,
the stubs get 0 with "not implemented yet", a known bug gets its hint, and the
output says how many more points the instructor's hidden tests carry.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grader import exercises, release

ROOT = Path(__file__).resolve().parent.parent
Q1 = "q1_positional_encoding.py"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release") / "bundle"
    release.build(exercises.load("ex4"), out, questions=("q1",))
    return out


def learner_grade(bundle: Path, submission: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    environment.update(PYTHONPATH=str(bundle), COLUMNS="200")
    return subprocess.run([sys.executable, "-c", "from grader.cli import main; main()", "ex4", "q1",
                           "--submission", str(submission), *args], cwd=bundle, env=environment,
                          capture_output=True, text=True, timeout=300)


def _solution_lines() -> list[str]:
    text = (ROOT / "solutions" / "ex4" / Q1).read_text()
    regions = re.findall(r"# BEGIN SOLUTION\n(.*?)# END SOLUTION", text, flags=re.S)
    return [line.strip() for region in regions for line in region.splitlines() if len(line.strip()) > 25]


def test_bundle_holds_no_answers(bundle):
    assert not (bundle / "solutions").exists()
    assert (bundle / "exercises" / "ex4" / Q1).exists()
    sources = {p: p.read_text(errors="replace") for p in bundle.rglob("*.py")}
    for path, text in sources.items():
        if path.parent.name == "reference" and path.name != "__init__.py":
            assert "grader.replay" in text and "def " not in text, f"{path.name} holds reference source"
    assert "def " not in (bundle / "reference" / "__init__.py").read_text()
    lines = _solution_lines()
    assert lines
    for line in lines:
        leaks = [str(p.relative_to(bundle)) for p, text in sources.items() if line in text]
        assert not leaks, f"solution line {line!r} found in {leaks}"


def test_manifest_counts_the_instructors_points(bundle):
    manifest = json.loads((bundle / "grader" / "suites" / "ex4" / release.MANIFEST).read_text())
    from grader.grading import collect_points

    total = collect_points(exercises.load("ex4"))["q1"]
    assert manifest["public_points"] + manifest["hidden_points"]["q1"] == pytest.approx(total)
    assert manifest["public_points"] > 0


def test_cut_suite_drops_hidden_tests():
    source = '''"""Title"""
import pytest

def test_public(learner):
    pass

@pytest.mark.hidden
@pytest.mark.points(3)
def test_secret(learner):
    assert learner.q1.answer() == 42

@pytest.mark.hidden
class TestSecret:
    def test_more(self):
        pass
'''
    cut = release.cut_suite(source, set())
    assert "test_public" in cut and "test_secret" not in cut and "TestSecret" not in cut and "42" not in cut
    assert release.cut_suite(source, {"test_public"}) is None
    assert release.cut_suite('import pytest\npytestmark = pytest.mark.hidden\ndef test_a():\n    pass\n', set()) is None


def test_learner_grades_the_model_answers(bundle):
    completed = learner_grade(bundle, ROOT / "solutions" / "ex4", "--json", str(bundle / "out.json"))
    assert completed.returncode == 0, completed.stderr
    result = json.loads((bundle / "out.json").read_text())
    assert result["score"] == result["max_score"] > 0
    manifest = json.loads((bundle / "grader" / "suites" / "ex4" / release.MANIFEST).read_text())
    if manifest["hidden_points"]["q1"]:
        assert "hidden tests carry" in completed.stdout


def test_learner_grades_the_stubs(bundle):
    completed = learner_grade(bundle, bundle / "exercises" / "ex4")
    assert completed.returncode == 0, completed.stderr
    assert "not implemented yet" in completed.stdout and "Total: 0/" in completed.stdout


def test_bundle_gives_the_same_hints(bundle, tmp_path):
    text = (ROOT / "solutions" / "ex4" / Q1).read_text()
    swapped = text.replace("torch.sin(", "torch.SIN(").replace("torch.cos(", "torch.sin(").replace("torch.SIN(",
                                                                                                  "torch.cos(")
    assert swapped != text
    (tmp_path / Q1).write_text(swapped)
    completed = learner_grade(bundle, tmp_path, "--json", str(tmp_path / "out.json"))
    assert completed.returncode == 0, completed.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    assert 0 <= result["score"] < result["max_score"]
    messages = "\n".join(t["message"] for q in result["questions"] for t in q["tests"])
    assert "Hint:" in messages and "swapped" in messages
