"""The learner bundle: ``grade release ex4 OUT``.

The bundle holds what a learner may see and nothing that gives the answers away:

- ``exercises/<set>/`` (the stubs), ``grader/`` (the engine), ``pyproject.toml``, ``README.md``;
- ``grader/suites/<set>/``: the public tests only. Tests marked ``hidden`` are cut
  out of the suite source, and so is any public test that cannot be replayed
  without the reference (see below); their points are listed as the
  instructor's in ``_release.json``, and ``grade <set>`` in the bundle says how
  many more points they carry;
- ``reference/``: no source. Stand-in modules replay outputs recorded from the
  real reference (``grader.replay``): the public tests are run against the model
  answers with every reference operation recorded (tensors in safetensors), so
  in the bundle they compare with the same expected values and give the same
  messages and misconception hints.

Steps: cut the suites → record (a subprocess: the real reference wrapped in
recorders, the model answers graded on the public tests) → write the bundle →
verify (a subprocess grading the model answers with the bundle's own grader;
any public test that does not pass there moves to the instructor's side) →
``_release.json``.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from grader.exercises import KIT_ROOT, ExerciseSet

MANIFEST = "_release.json"

REPORT_NOTE = '''

# --- learner bundle: say how many points the instructor's hidden tests carry (added by grader.release) ---
_render_without_note = render


def render(result, console, *, verbose=False):
    _render_without_note(result, console, verbose=verbose)
    manifest = Path(__file__).resolve().parent / "suites" / result["exercise"] / "_release.json"
    try:
        hidden = json.loads(manifest.read_text())["hidden_points"]
    except (OSError, ValueError, KeyError):
        return
    asked = [q["id"] for q in result["questions"]]
    more = sum(points for qid, points in hidden.items() if qid in asked)
    if more:
        console.print(f"[dim]These are the public tests. The instructor's hidden tests carry {more:g} more points"
                      f" ({', '.join(f'{q} +{p:g}' for q, p in hidden.items() if q in asked and p)}).[/]")
'''

STAND_IN = '''"""Recorded stand-in for the instructor's reference (its source is not part of the bundle)."""
from grader.replay import stand_in

__getattr__ = stand_in(__name__)
'''

README = """# {name}: learner bundle

Write your answers in `exercises/{name}/` (one module per question; the docstrings are the specification),
then grade them:

```bash
python -m venv .venv && . .venv/bin/activate && pip install -e .
grade {name}          # or: grade {name} q1 q3
```

`grade {name}` runs the public tests. Your instructor's grade also includes hidden tests
({hidden:g} more points); passing the public tests is necessary, not sufficient.
"""


def _is_hidden(node: ast.AST) -> bool:
    decorators = getattr(node, "decorator_list", [])
    return any("hidden" in ast.unparse(d) for d in decorators)


def cut_suite(source: str, drop: set[str]) -> str | None:
    """The suite without hidden tests and without the test functions named in ``drop``; None when nothing is left."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
            if "hidden" in ast.unparse(node.value):
                return None
    kept = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if _is_hidden(node) or node.name in drop:
                continue
        kept.append(node)
    tree.body = kept
    if not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name.startswith(("test",
               "Test")) for n in kept):
        return None
    return ast.unparse(tree) + "\n"


def _write_bundle_tree(exercise: ExerciseSet, out: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    (out / "exercises").mkdir(parents=True, exist_ok=True)
    shutil.copytree(KIT_ROOT / "exercises" / exercise.name, out / "exercises" / exercise.name, ignore=ignore,
                    dirs_exist_ok=True)
    grader = out / "grader"
    grader.mkdir(parents=True, exist_ok=True)
    for path in (KIT_ROOT / "grader").glob("*.py"):
        shutil.copyfile(path, grader / path.name)
    (grader / "suites" / exercise.name).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(KIT_ROOT / "grader" / "suites" / "pytest.ini", grader / "suites" / "pytest.ini")
    with open(grader / "report.py", "a") as stream:
        stream.write(REPORT_NOTE)
    reference = out / "reference"
    reference.mkdir(exist_ok=True)
    (reference / "__init__.py").write_text('"""Recorded stand-ins for the reference (no source in the bundle)."""\n')
    for path in (KIT_ROOT / "reference").glob("*.py"):
        if path.name != "__init__.py":
            (reference / path.name).write_text(STAND_IN)
    pyproject = (KIT_ROOT / "pyproject.toml").read_text()
    (out / "pyproject.toml").write_text(pyproject.replace('readme = "README.md"', 'readme = "README.md"'))


def _write_suites(exercise: ExerciseSet, out: Path, drop: dict[str, set[str]]) -> list[str]:
    folder = out / "grader" / "suites" / exercise.name
    for old in folder.glob("q*_*.py"):
        old.unlink()
    written = []
    for question in exercise.questions:
        text = cut_suite(question.suite.read_text(), drop.get(question.id, set()))
        if text is not None:
            (folder / question.suite.name).write_text(text)
            written.append(question.id)
    return written


def _run(code: str, *args: str, env: dict | None = None, cwd: Path | None = None) -> None:
    env = {k: v for k, v in (env or os.environ).items() if k != "PYTEST_CURRENT_TEST"}  # test ids key the tape
    completed = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                               cwd=cwd, timeout=1800)
    if completed.returncode != 0:
        raise RuntimeError(f"release step failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}")


def record_main(exercise_name: str, suites: str, target: str, result_path: str) -> None:
    """Subprocess: grade the model answers on the cut suites in ``suites`` with the reference recorded."""
    from grader import replay

    names = ["reference"] + [f"reference.{p.stem}" for p in sorted((KIT_ROOT / "reference").glob("*.py"))
                             if p.stem != "__init__"]
    replay.install_recorders(names[1:])
    from grader import checks

    original = checks.hints_for

    def eager_hints(target_name, run):  # record every hint's wrong-variant output, not only on failure
        hints = original(target_name, run)
        for _, thunk in hints:
            try:
                thunk()
            except Exception:  # noqa: BLE001 - a variant that cannot run here gives no hint there either
                pass
        return hints

    checks.hints_for = eager_hints
    from grader import exercises, grading

    exercise = exercises.load(exercise_name)
    questions = tuple(
        exercises.Question(q.id, q.module, q.title, Path(suites) / q.suite.name)
        for q in exercise.questions if (Path(suites) / q.suite.name).exists()
    )
    result = grading.grade(exercise, questions, exercise.solutions(), device="cpu")
    replay.Recorder.tape.save(Path(target))
    Path(result_path).write_text(json.dumps(result))


def _failing(result: dict[str, Any]) -> dict[str, set[str]]:
    drop: dict[str, set[str]] = {}
    for question in result["questions"]:
        for test in question["tests"]:
            if test["outcome"] != "passed":
                drop.setdefault(question["id"], set()).add(test["name"].split("[")[0])
    return drop


def build(exercise: ExerciseSet, out: Path, questions: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write the learner bundle for ``exercise`` (only ``questions`` when given) into ``out``; the manifest."""
    from grader.grading import collect_points

    exercise = ExerciseSet(exercise.name, exercise.select(tuple(questions)))
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    _write_bundle_tree(exercise, out)
    drop: dict[str, set[str]] = {}
    environment = {**os.environ, "PYTHONPATH": str(out), "MPLBACKEND": "Agg"}
    verified: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="grade-release-") as scratch:
        for _attempt in range(3):
            _write_suites(exercise, out, drop)
            recorded = Path(scratch) / "recorded.json"
            _run("import sys; from grader.release import record_main; record_main(*sys.argv[1:])", exercise.name,
                 str(out / "grader" / "suites" / exercise.name), str(out / "reference"), str(recorded),
                 cwd=KIT_ROOT)
            more = _failing(json.loads(recorded.read_text()))
            verify = Path(scratch) / "verify.json"
            if not more:  # verify with the bundle's own grader and replayed reference
                _run("from grader.cli import main; main()", exercise.name, *[q.id for q in exercise.questions],
                 "--submission",
                     str(exercise.solutions()), "--json", str(verify), env=environment, cwd=out)
                verified = json.loads(verify.read_text())
                more = _failing(verified)
            if not more:
                break
            for qid, names in more.items():
                drop.setdefault(qid, set()).update(names)
        else:
            raise RuntimeError(f"could not make the public tests replayable: still failing {more}")
    totals = collect_points(exercise)
    public = {q["id"]: q["max_score"] for q in verified.get("questions", [])}
    hidden = {q.id: round(totals.get(q.id, 0.0) - public.get(q.id, 0.0), 4) for q in exercise.questions}
    manifest = {
        "exercise": exercise.name,
        "public_points": round(sum(public.values()), 4),
        "public_tests": sum(len(q["tests"]) for q in verified.get("questions", [])),
        "hidden_points": hidden,
        "hidden_points_total": round(sum(hidden.values()), 4),
        "not_replayable": {q: sorted(n) for q, n in drop.items()},
    }
    (out / "grader" / "suites" / exercise.name / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "README.md").write_text(README.format(name=exercise.name, hidden=manifest["hidden_points_total"]))
    return manifest
