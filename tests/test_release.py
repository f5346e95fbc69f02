"""``grade release``: the whole learner bundle, graded the way a learner grades it.

One bundle of all questions is built per test session (about 1.5 min). It is then
used as a learner has it after ``pip install -e .`` (its own ``grader`` and
``reference`` stand-ins first on ``sys.path``, graded from another folder): no
answers or caches inside, the stubs score 0, the model answers full marks, q6 is
said to stay with the instructor, and on every buggy edit of the kit's corpora
(``tests/test_suite_q*.py``) each public test gives the same outcome, points and
message in the bundle as in the kit.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import SOLUTIONS, make_submission
from grader import exercises, release, stubs
from grader.cli import main
from grader.grading import collect_points

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_QUESTIONS = ("q1", "q2", "q3", "q4", "q5", "q7", "q8")  # q6 is all hidden: the instructor grades it


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> tuple[Path, dict]:
    """The bundle of all questions, and its manifest (built once per session)."""
    out = tmp_path_factory.mktemp("release") / "bundle"
    manifest = release.build(exercises.load("ex4"), out)
    return out, manifest


@pytest.fixture(scope="session")
def bundle_files(bundle) -> dict[str, str]:
    """Every file of the fresh bundle (relative path → text), read before a learner runs anything there."""
    out, _ = bundle
    return {str(p.relative_to(out)): p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.is_file()}


def learner_env(bundle_dir: Path) -> dict[str, str]:
    """The environment of a learner who installed the bundle (its packages first on the path)."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    environment.update(PYTHONPATH=str(bundle_dir), COLUMNS="200", PYTHONDONTWRITEBYTECODE="1")
    return environment


def learner_grade(bundle_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", "ex4", *args], cwd=cwd, env=learner_env(bundle_dir),
                          capture_output=True, text=True, timeout=600)


# --------------------------------------------------------------------------- what the bundle holds


def _code_lines(source: str, minimum: int = 30) -> set[str]:
    """Distinctive code lines: statements outside docstrings, not comments, not bare string literals."""
    tree = ast.parse(source)
    docstrings = {n.body[0].lineno for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef,
                  ast.FunctionDef)) and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(getattr(n.body[0], "value", None), ast.Constant)}
    lines = set()
    for number, line in enumerate(source.splitlines(), 1):
        text = line.strip()
        if len(text) >= minimum and number not in docstrings and not text.startswith(("#", '"', "'", 'f"', "f'")):
            lines.add(text)
    return lines


def _solution_lines() -> set[str]:
    lines = set()
    for path in SOLUTIONS.glob("q*.py"):
        for region in re.findall(r"# BEGIN SOLUTION\n(.*?)# END SOLUTION", path.read_text(), flags=re.S):
            lines |= {line.strip() for line in region.splitlines()
                      if len(line.strip()) >= 25 and not line.strip().startswith("#")}
    return lines


def _shipped_kit_lines() -> set[str]:
    """Lines shipped on purpose (engine, public suites, generated stubs): a line of the reference or of a model
    answer that is also one of these (a signature, a shared helper) is no leak."""
    sources = [p.read_text() for p in (ROOT / "grader").glob("*.py")]
    suites = [p.read_text() for p in (ROOT / "grader" / "suites" / "ex4").glob("q*.py")]
    sources += suites + [ast.unparse(ast.parse(source)) for source in suites]  # the bundle's suites are unparsed
    sources += [stubs.strip_solution(p.read_text()) for p in SOLUTIONS.glob("q*.py")]
    return {line.strip() for source in sources for line in source.splitlines()}


def test_bundle_holds_no_reference_or_model_answer(bundle_files):
    reference = set().union(*(_code_lines(p.read_text()) for p in (ROOT / "reference").glob("*.py")))
    secret = (reference | _solution_lines()) - _shipped_kit_lines()
    assert len(secret) > 500  # the scan is real: hundreds of distinctive lines
    leaks = []
    for name, text in bundle_files.items():
        if name.endswith(".ipynb"):  # the stub notebooks: their cells' lines, as for a module
            text = "\n".join("".join(cell["source"]) for cell in json.loads(text)["cells"])
        if name.endswith((".py", ".md", ".toml", ".ipynb")):  # source: whole lines
            leaks += [(name, line) for line in secret & {line.strip() for line in text.splitlines()}]
        else:  # stored values: anywhere
            leaks += [(name, line) for line in secret if line in text]
    assert not leaks, f"{len(leaks)} leaked lines, e.g. {leaks[:5]}"
    assert not any(name.startswith(("solutions/", "tests/")) for name in bundle_files)


def test_bundle_holds_no_caches(bundle_files):
    cached = [name for name in bundle_files if set(Path(name).parts) & {".hypothesis", "__pycache__", ".pytest_cache"}
              or name.endswith(".pyc")]
    assert not cached, cached


def test_stubs_are_generated_from_the_solutions(bundle, bundle_files):
    _, manifest = bundle
    assert manifest["released"] == list(PUBLIC_QUESTIONS)
    stubs_shipped = sorted(n for n in bundle_files if n.startswith("exercises/"))
    expected = sorted(f"exercises/ex4/{folder}{p.stem}{suffix}" for p in SOLUTIONS.glob("q*.py")
                      if not p.name.startswith("q6") for folder, suffix in (("", ".py"), ("notebooks/", ".ipynb")))
    assert stubs_shipped == expected
    for name in stubs_shipped:  # each stub as a module and as a notebook
        stub = stubs.strip_solution((SOLUTIONS / f"{Path(name).stem}.py").read_text())
        assert bundle_files[name] == (stub if name.endswith(".py") else stubs.stub_notebook(stub, Path(name).stem)), name


def test_public_feedback_is_whole(bundle):
    _, manifest = bundle
    totals = collect_points(exercises.load("ex4"))
    for qid in PUBLIC_QUESTIONS:  # every public test of every question but q6 runs in the bundle
        assert manifest["public_points_by_question"][qid] == totals[qid], qid
    assert manifest["not_replayable"] == {} and manifest["hidden_points_total"] == 0
    assert list(manifest["withheld"]) == ["q6"]


def test_readme_says_q6_stays_with_the_instructor(bundle_files):
    assert "q6 is not part of this release" in bundle_files["README.md"]
    assert "your instructor grades it" in bundle_files["README.md"]


# --------------------------------------------------------------------------- grading in the bundle


def test_learner_grades_the_stubs_and_the_model_answers(bundle, tmp_path):
    out, manifest = bundle
    stub = learner_grade(out, tmp_path, "--submission", str(out / "exercises" / "ex4"), "--json", "stub.json")
    assert stub.returncode == 0, stub.stderr
    result = json.loads((tmp_path / "stub.json").read_text())
    assert [q["id"] for q in result["questions"]] == list(PUBLIC_QUESTIONS)
    assert result["score"] == 0 and "not implemented yet" in stub.stdout
    assert "Not part of this release (your instructor grades them): q6" in stub.stdout
    model = learner_grade(out, tmp_path, "--submission", str(SOLUTIONS), "--json", "model.json")
    assert model.returncode == 0, model.stderr
    result = json.loads((tmp_path / "model.json").read_text())
    assert result["score"] == result["max_score"] > 0.95 * manifest["public_points"]


def test_learner_is_told_q6_is_not_released(bundle, tmp_path):
    out, _ = bundle
    completed = learner_grade(out, tmp_path, "q6")
    assert completed.returncode == 2
    assert "q6 is not part of this release: your instructor grades it" in completed.stderr
    assert "Traceback" not in completed.stderr


def _corpus(qid: str) -> list:
    return importlib.import_module(f"test_suite_{qid}").BUGGY


GRADER = """
import json, sys
from pathlib import Path
from grader import exercises, grading
assert Path(grading.__file__).is_relative_to(Path(sys.argv[3])), grading.__file__  # the bundle's or the kit's grader
exercise = exercises.load("ex4")
results = {key: grading.grade(exercise, exercise.select((qid,)), Path(folder))["questions"][0]
           for key, qid, folder in json.loads(Path(sys.argv[1]).read_text())}
Path(sys.argv[2]).write_text(json.dumps(results))
"""


@pytest.mark.slow
def test_bundle_and_kit_agree_on_every_buggy_edit(bundle, tmp_path, record_property):
    """Every buggy edit of the corpora, graded in the kit (live reference) and in the bundle (stored values)."""
    out, _ = bundle
    jobs = [(f"{qid}/{edit.name}", qid, str(make_submission(tmp_path / qid, edit)))
            for qid in PUBLIC_QUESTIONS for edit in _corpus(qid)]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    # both sides graded as ``grade`` grades, outside this pytest process (its assertion rewriting would show)
    graders = [subprocess.Popen([sys.executable, "-c", GRADER, "jobs.json", f"{side}.json", str(root)],
                                cwd=tmp_path, env=learner_env(root), stderr=subprocess.PIPE, text=True)
               for side, root in (("bundle", out), ("kit", ROOT))]
    for grader in graders:
        _, errors = grader.communicate(timeout=3600)
        assert grader.returncode == 0, errors[-3000:]
    bundled, kit = (json.loads((tmp_path / f"{side}.json").read_text()) for side in ("bundle", "kit"))

    def view(block: dict) -> dict:
        return {t["name"]: (t["outcome"], t["points"], t["message"]) for t in block["tests"]}

    pairs = disagreements = 0
    first = []
    for key, _, _ in jobs:
        mine, theirs = view(kit[key]), view(bundled[key])
        assert mine.keys() == theirs.keys(), key
        for name in mine:
            pairs += 1
            if mine[name] != theirs[name]:
                disagreements += 1
                first.append((key, name, mine[name], theirs[name]))
    record_property("edits", len(jobs))
    record_property("edit_test_pairs", pairs)
    record_property("agreeing_pairs", pairs - disagreements)
    assert not disagreements, f"{disagreements} of {pairs} (edit, test) pairs differ; first: {first[:3]}"


# --------------------------------------------------------------------------- partial releases and failures


def test_partial_release_ships_and_grades_only_its_questions(tmp_path):
    out = tmp_path / "q1-only"
    manifest = release.build(exercises.load("ex4"), out, ("q1",))
    assert manifest["released"] == ["q1"] and set(manifest["withheld"]) == {"q2", "q3", "q4", "q5", "q6", "q7", "q8"}
    assert sorted(str(p.relative_to(out / "exercises" / "ex4")) for p in (out / "exercises" / "ex4").rglob("q*")) == [
        "notebooks/q1_positional_encoding.ipynb", "q1_positional_encoding.py"]
    assert sorted(p.name for p in (out / "grader" / "suites" / "ex4").glob("q*.py")) == ["q1_positional_encoding.py"]
    completed = learner_grade(out, tmp_path, "q2")
    assert completed.returncode == 2 and "q2 is not part of this release" in completed.stderr
    swapped = (SOLUTIONS / "q1_positional_encoding.py").read_text().replace("torch.sin(", "torch.SIN(").replace(
        "torch.cos(", "torch.sin(").replace("torch.SIN(", "torch.cos(")
    (tmp_path / "buggy").mkdir()
    (tmp_path / "buggy" / "q1_positional_encoding.py").write_text(swapped)
    completed = learner_grade(out, tmp_path, "--submission", str(tmp_path / "buggy"), "--json", "out.json")
    assert completed.returncode == 0, completed.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    assert 0 <= result["score"] < result["max_score"]
    assert "Your sin and cos are swapped" in "\n".join(t["message"] for t in result["questions"][0]["tests"])


def test_releasing_only_q6_is_a_usage_error(tmp_path):
    outcome = CliRunner().invoke(main, ["release", "ex4", str(tmp_path / "out"), "-q", "q6"])
    assert outcome.exit_code == 2
    assert "nothing to release" in outcome.output and "Traceback" not in outcome.output
    assert not (tmp_path / "out").exists()


def test_a_failed_release_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise release.ReleaseError("a release step failed (exit 1): boom")

    monkeypatch.setattr(release, "_record_and_verify", broken)
    outcome = CliRunner().invoke(main, ["release", "ex4", str(tmp_path / "out")])
    assert outcome.exit_code == 3
    assert len(outcome.output.strip().splitlines()) == 1 and "boom" in outcome.output
    assert list(tmp_path.iterdir()) == []  # neither OUT nor the temporary folder next to it


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
