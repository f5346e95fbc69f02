"""The learner bundle: ``grade release ex4 OUT``.

The bundle holds what a learner may see and nothing that gives the answers away:

- ``exercises/<set>/``: stubs generated from ``solutions/<set>/`` (``grader.stubs``),
  never copied from a working copy, for the released questions only;
- ``grader/`` (the engine), its own ``pyproject.toml`` and ``README.md``;
- ``grader/suites/<set>/``: the public tests of the released questions. Tests
  marked ``hidden`` are cut out of the suite source; a question with no public
  test (q6) is not released: the instructor grades it, the README says so and
  ``grade <set> q6`` in the bundle says so too (``_release.json``, read by
  ``grader.exercises``);
- ``reference/``: no source. Stand-in modules return expected values stored as
  data (``grader.replay``): the outputs of the reference on the public tests'
  fixed inputs, the ``snapshot`` functions' results (outputs and gradients for
  fixed weights and inputs, the misconception variants' outputs for the hints),
  tensors in safetensors.

Steps, in a temporary folder next to ``OUT`` (moved into place at the end, removed
on failure): write the tree → record (a subprocess grading the model answers on
the public tests with the real reference) → verify (a subprocess grading the model
answers with the bundle's own grader, as a learner would; a public test that does
not pass there is moved to the instructor's side and listed in ``_release.json``
as ``not_replayable``) → ``_release.json`` and ``README.md`` → no caches left.
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

import click

from grader import stubs
from grader.exercises import KIT_ROOT, RELEASE_MANIFEST, ExerciseSet, Question

MANIFEST = RELEASE_MANIFEST
CACHES = (".hypothesis", "__pycache__", ".pytest_cache")
ATTEMPTS = 3  # record + verify rounds: each moves the tests that did not replay to the instructor's side

REPORT_NOTE = '''

# --- learner bundle: say how many points the instructor's hidden tests carry (added by grader.release) ---
_render_without_note = render


def render(result, console, *, verbose=False):
    _render_without_note(result, console, verbose=verbose)
    manifest = Path(__file__).resolve().parent / "suites" / result["exercise"] / "_release.json"
    try:
        release = json.loads(manifest.read_text())
        hidden, withheld = release["hidden_points"], release["withheld"]
    except (OSError, ValueError, KeyError):
        return
    asked = [q["id"] for q in result["questions"]]
    if len(asked) == len(release["released"]) and withheld:
        console.print(f"[dim]Not part of this release (your instructor grades them): {', '.join(withheld)}.[/]")
    more = sum(points for qid, points in hidden.items() if qid in asked)
    if more:
        console.print(f"[dim]These are the public tests. The instructor's hidden tests carry {more:g} more points"
                      f" ({', '.join(f'{q} +{p:g}' for q, p in hidden.items() if q in asked and p)}).[/]")
'''

STAND_IN = '''"""Stand-in for the instructor's reference (its source is not part of the bundle): stored expected values."""
from grader.replay import stand_in

__getattr__ = stand_in(__name__)
'''

PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}-learner-bundle"
version = "{version}"
description = "Exercise set {name}: stubs to fill in and the public tests (`grade {name}`)."
readme = "README.md"
requires-python = ">=3.11"
dependencies = {dependencies}

[project.scripts]
grade = "grader.cli:main"

[tool.setuptools.packages.find]
include = ["grader*", "reference*"]
namespaces = true

[tool.setuptools.package-data]
grader = ["suites/**/*.py", "suites/**/*.json", "suites/pytest.ini"]
reference = ["*.json", "*.safetensors"]
"""

README = """# {name}: learner bundle

Write your answers in `exercises/{name}/` (one module per question; the docstrings are the specification),
or in the notebooks of `exercises/{name}/notebooks/` (the same stubs; grade those with
`grade {name} --submission exercises/{name}/notebooks`), then grade them:

```bash
python -m venv .venv && . .venv/bin/activate && pip install -e .
grade {name}          # or: grade {name} {first}
```

Questions in this release: {released}.
{withheld_line}
`grade {name}` runs the public tests ({public:g} points). {hidden_line}
"""


class ReleaseError(RuntimeError):
    """The bundle could not be built (a bug in the kit or a suite); nothing was left behind."""


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


def plan(exercise: ExerciseSet, ids: tuple[str, ...] = ()) -> tuple[tuple[Question, ...], dict[str, str]]:
    """The questions to release (those of ``ids``, or all, that have public tests) and the ones withheld.

    Returns ``(released, withheld)``; ``withheld`` maps every other question of the set to
    why the instructor keeps it.

    Raises:
        click.UsageError: an unknown id, or nothing public to release.
    """
    asked = exercise.select(ids)
    released = tuple(q for q in asked if cut_suite(q.suite.read_text(), set()) is not None)
    if not released:
        raise click.UsageError(f"{', '.join(q.id for q in asked)} of {exercise.name} has no public tests: nothing to "
                               "release (its tests are all hidden; the instructor grades it)")
    withheld = {q.id: ("all of its tests are hidden: your instructor grades it" if q in asked else
                       "not part of this release") for q in exercise.questions if q not in released}
    return released, withheld


def _write_tree(exercise: ExerciseSet, released: tuple[Question, ...], out: Path) -> None:
    """Stubs, engine, stand-ins and pyproject of the bundle (suites, tape, manifest and README come later)."""
    stub_folder = out / "exercises" / exercise.name
    stub_folder.mkdir(parents=True)
    (stub_folder / "notebooks").mkdir()
    for question in released:  # each stub as a module and as a notebook (grader.stubs)
        stub = stubs.strip_solution((exercise.solutions() / f"{question.module}.py").read_text())
        (stub_folder / f"{question.module}.py").write_text(stub)
        (stub_folder / "notebooks" / f"{question.module}.ipynb").write_text(stubs.stub_notebook(stub, question.module))
    grader = out / "grader"
    (grader / "suites" / exercise.name).mkdir(parents=True)
    for path in (KIT_ROOT / "grader").glob("*.py"):
        shutil.copyfile(path, grader / path.name)
    shutil.copyfile(KIT_ROOT / "grader" / "suites" / "pytest.ini", grader / "suites" / "pytest.ini")
    with open(grader / "report.py", "a") as stream:
        stream.write(REPORT_NOTE)
    reference = out / "reference"
    reference.mkdir()
    (reference / "__init__.py").write_text('"""Stand-ins for the reference: stored expected values, no source."""\n')
    for path in (KIT_ROOT / "reference").glob("*.py"):
        if path.name != "__init__.py":
            (reference / path.name).write_text(STAND_IN)
    import tomllib

    from grader import __version__

    project = tomllib.loads((KIT_ROOT / "pyproject.toml").read_text())["project"]
    (out / "pyproject.toml").write_text(PYPROJECT.format(name=exercise.name, version=__version__,
                                                         dependencies=json.dumps(project["dependencies"])))


def _write_suites(exercise: ExerciseSet, released: tuple[Question, ...], out: Path,
                  drop: dict[str, set[str]]) -> tuple[Question, ...]:
    """The cut suites of ``released`` into the bundle; the questions they form there (none lost to ``drop``)."""
    folder = out / "grader" / "suites" / exercise.name
    for old in folder.glob("q*_*.py"):
        old.unlink()
    written = []
    for question in released:
        text = cut_suite(question.suite.read_text(), drop.get(question.id, set()))
        if text is not None:
            (folder / question.suite.name).write_text(text)
            written.append(Question(question.id, question.module, question.title, folder / question.suite.name))
    return tuple(written)


def _run(code: str, *args: str, env: dict[str, str], cwd: Path) -> None:
    env = {k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"}  # test ids key the stored values
    env.update(PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg")
    completed = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                               cwd=cwd, timeout=1800)
    if completed.returncode != 0:
        last = (completed.stderr.strip() or completed.stdout.strip() or "no output").splitlines()[-1]
        raise ReleaseError(f"a release step failed (exit {completed.returncode}): {last}")


def record_main(exercise_name: str, suites: str, target: str, result_path: str) -> None:
    """Subprocess: grade the model answers on the cut suites in ``suites`` with the reference recorded."""
    from grader import replay

    names = [f"reference.{p.stem}" for p in sorted((KIT_ROOT / "reference").glob("*.py")) if p.stem != "__init__"]
    replay.install_recorders(names)
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
    questions = tuple(Question(q.id, q.module, q.title, Path(suites) / q.suite.name)
                      for q in exercise.questions if (Path(suites) / q.suite.name).exists())
    result = grading.grade(exercise, questions, exercise.solutions(), device="cpu")
    replay.Recorder.tape.save(Path(target))
    Path(result_path).write_text(json.dumps(result))


def _failing(result: dict[str, Any]) -> dict[str, set[str]]:
    """Test functions (by question) that neither passed nor were skipped on this device."""
    drop: dict[str, set[str]] = {}
    for question in result["questions"]:
        for test in question["tests"]:
            if test["outcome"] not in ("passed", "skipped"):
                drop.setdefault(question["id"], set()).add(test["name"].split("[")[0])
    return drop


def _record_and_verify(exercise: ExerciseSet, released: tuple[Question, ...], bundle: Path,
                       scratch: Path) -> tuple[tuple[Question, ...], dict[str, set[str]]]:
    """Record the expected values and check the bundle on the model answers; (public questions, tests moved)."""
    drop: dict[str, set[str]] = {}
    for _attempt in range(ATTEMPTS):
        public = _write_suites(exercise, released, bundle, drop)
        if not public:
            raise ReleaseError("no public test of the released questions could be replayed without the reference")
        recorded, verified = scratch / "recorded.json", scratch / "verified.json"
        _run("import sys; from grader.release import record_main; record_main(*sys.argv[1:])", exercise.name,
             str(bundle / "grader" / "suites" / exercise.name), str(bundle / "reference"), str(recorded),
             env={**os.environ, "PYTHONPATH": str(KIT_ROOT)}, cwd=scratch)
        more = _failing(json.loads(recorded.read_text()))
        if more:
            raise ReleaseError(f"the model answers fail public tests with the live reference: {more}")
        _run("from grader.cli import main; main()", exercise.name, *[q.id for q in public], "--submission",
             str(exercise.solutions()), "--json", str(verified), env={**os.environ, "PYTHONPATH": str(bundle)},
             cwd=scratch)
        more = _failing(json.loads(verified.read_text()))
        if not more:
            return public, drop
        for qid, names in more.items():
            drop.setdefault(qid, set()).update(names)
    raise ReleaseError(f"the public tests still fail in the bundle after {ATTEMPTS} rounds: {more}")


def _remove_caches(folder: Path) -> None:
    for name in CACHES:
        for path in sorted(folder.rglob(name), reverse=True):
            shutil.rmtree(path, ignore_errors=True)


def _points(exercise: ExerciseSet, questions: tuple[Question, ...]) -> dict[str, float]:
    from grader.grading import collect_points

    return collect_points(ExerciseSet(exercise.name, questions))


def build(exercise: ExerciseSet, out: Path, questions: tuple[str, ...] = (), *, force: bool = False) -> dict[str, Any]:
    """Write the learner bundle of ``exercise`` (only ``questions`` when given) to ``out``; its manifest.

    Built in a temporary folder next to ``out`` and moved into place; on any failure
    nothing is left behind and ``out`` is untouched.

    Raises:
        click.UsageError: bad question ids, nothing public to release, or ``out`` exists
            and is not an empty folder (without ``force``).
        ReleaseError: a step failed.
    """
    out = Path(out).resolve()
    if out.exists() and not (force or (out.is_dir() and not any(out.iterdir()))):
        raise click.UsageError(f"{out} exists and is not empty (use --force to replace it)")
    released, withheld = plan(exercise, tuple(questions))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        bundle = staging / "bundle"
        _write_tree(exercise, released, bundle)
        with tempfile.TemporaryDirectory(prefix="grade-release-") as scratch:
            public, drop = _record_and_verify(exercise, released, bundle, Path(scratch))
        totals = _points(exercise, released)
        public_points = _points(exercise, public)
        manifest = {
            "exercise": exercise.name,
            "released": [q.id for q in released],
            "withheld": withheld,
            "public_points": round(sum(public_points.values()), 4),
            "public_points_by_question": {q.id: round(public_points.get(q.id, 0.0), 4) for q in released},
            "hidden_points": {q.id: round(totals.get(q.id, 0.0) - public_points.get(q.id, 0.0), 4) for q in released},
            "not_replayable": {q: sorted(n) for q, n in drop.items()},
        }
        manifest["hidden_points_total"] = round(sum(manifest["hidden_points"].values()), 4)
        (bundle / "grader" / "suites" / exercise.name / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        (bundle / "README.md").write_text(_readme(exercise, manifest))
        _remove_caches(bundle)
        _move_into_place(bundle, out, staging / "replaced")
    except ReleaseError:
        raise
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as error:
        raise ReleaseError(f"{type(error).__name__}: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _move_into_place(bundle: Path, out: Path, old: Path) -> None:
    """Rename ``bundle`` to ``out``; a previous ``out`` goes to ``old`` first and comes back if the rename fails."""
    if out.exists():
        os.replace(out, old)
    try:
        os.replace(bundle, out)
    except OSError:
        if old.exists():
            os.replace(old, out)
        raise


def _readme(exercise: ExerciseSet, manifest: dict[str, Any]) -> str:
    withheld = manifest["withheld"]
    withheld_line = "".join(f"{qid} is not part of this release ({why}).\n" for qid, why in withheld.items())
    hidden = manifest["hidden_points_total"]
    return README.format(
        name=exercise.name, first=manifest["released"][0], released=", ".join(manifest["released"]),
        withheld_line=withheld_line, public=manifest["public_points"],
        hidden_line=(f"Your instructor's grade also includes hidden tests ({hidden:g} more points of these "
                     "questions); passing the public tests is necessary, not sufficient." if hidden else
                     "Your instructor grades these questions with the same tests."),
    )
