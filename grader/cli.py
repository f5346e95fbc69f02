"""The ``grade`` command (Click; rich for terminal output).

Each command parses its options and hands off to one module:
``grade <set> [QUESTION...]`` → ``grader.grading``; ``grade list`` → collection of
the suites. Usage errors exit 2 with a one-line message; a finished grade exits
0 whatever the score (1 with ``--fail-under`` and a lower score).

Usage errors come before anything heavy: this module imports only click and the
kit's light modules, and ``grade`` checks every argument (set, questions, folder,
report files) before the fork server and torch start, so a mistake is answered
in a fraction of a second.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import tempfile
from pathlib import Path

import click

from grader import __version__, exercises, lifecycle

# At exit, Python's last garbage collections walk every object torch created (0.2 s);
# frozen objects are skipped. Finalizers (atexit, weakref.finalize) still run.
atexit.register(gc.freeze)

EXIT_FAIL_UNDER = 1
EXIT_KIT_BUG = 3
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it


class GradeGroup(click.Group):
    """Top-level group: fixed commands plus one grading command per exercise set."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return super().list_commands(ctx) + exercises.names()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in exercises.names():
            command = _grade_command(name)
        return command

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and self.get_command(ctx, args[0]) is None and not args[0].startswith("-"):
            commands = ", ".join(super().list_commands(ctx))
            raise click.UsageError(
                f"unknown exercise set or command '{args[0]}'; exercise sets: {', '.join(exercises.names())}; "
                f"commands: {commands}"
            )
        return super().resolve_command(ctx, args)

    def main(self, *args, **kwargs):
        """Click's main, with every usage error on one line: ``Error: <what is wrong and how to fix it>``."""
        kwargs["standalone_mode"] = False
        try:
            with lifecycle.terminate_as_interrupt():  # `kill` stops a grade or a batch as Ctrl-C does
                code = super().main(*args, **kwargs)
        except click.ClickException as error:
            click.echo(f"Error: {error.format_message()}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        """Run the command; whatever escapes it becomes one line and an exit code, never a traceback.

        Ctrl-C exits 130 ("interrupted"); any other exception is a bug in the kit: exit 3,
        one line (``GRADE_TRACEBACK=1`` shows the traceback, for the kit's developers).
        """
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as error:  # noqa: BLE001 - a bug in the kit: one line, never a traceback
            if os.environ.get("GRADE_TRACEBACK"):
                raise
            click.echo(f"internal error in the grading kit (not your code): {type(error).__name__}: {error}", err=True)
            sys.exit(EXIT_KIT_BUG)


def writable_file(path: Path | None, option: str) -> Path | None:
    """``path`` if a file can be written there; checked by trying, and leaving nothing behind.

    Missing folders on the way are created, a temporary file is made in the last one,
    and all of it is removed again (the report writer creates the folders when it writes).

    Raises:
        click.UsageError: ``path`` is a folder or another non-regular file (``/dev/null``), a folder
            on its way is a file, or its folder cannot be created or written.
    """
    if path is None:
        return None
    path = Path(path).expanduser()
    if path.is_dir():
        raise click.UsageError(f"{option} {path} is a folder: give a file name, e.g. {path / 'result.json'}")
    if path.exists() and not path.is_file():  # a device or a pipe would be replaced by the report, not written
        raise click.UsageError(f"{option} {path} is not a regular file: give a file name")
    missing = []  # folders to create, innermost first
    existing = path.parent
    while not os.path.lexists(existing):
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise click.UsageError(f"{option} {path}: {existing} is a file, not a folder")
    try:
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except OSError as error:
                raise click.UsageError(f"{option} {path}: cannot create its folder {folder} "
                                       f"({error.strerror})") from None
        try:
            handle, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        except OSError as error:
            raise click.UsageError(f"{option} {path}: cannot write in {path.parent} ({error.strerror})") from None
        os.close(handle)
        os.unlink(probe)
    finally:
        for folder in missing:
            try:
                folder.rmdir()
            except OSError:
                pass
    return path


def submission_folder(path: Path) -> Path:
    """``path`` as given to ``--submission``, if it is not a file (then it must be a folder).

    Raises:
        click.UsageError: ``path`` is a file; for a ``.py``/``.ipynb`` answer file the message
            names its folder as what to pass; for a ``.zip``, says to unzip it.
    """
    if not Path(path).expanduser().is_file():
        return Path(path)
    name = Path(path)
    if name.suffix in (".py", ".ipynb"):
        raise click.UsageError(f"{name} is a file: pass its folder, --submission {name.parent}")
    if name.suffix == ".zip":
        raise click.UsageError(f"{name} is a zip file: unzip it and pass the folder with your answers")
    raise click.UsageError(f"{name} is a file: --submission takes the folder with your answers (q1_*.py ...)")


@click.group(cls=GradeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="grade")
def main() -> None:
    """Grade Transformer exercises: `grade ex4` grades your exercises/ex4 folder."""


def _grade_command(name: str) -> click.Command:
    @click.command(name=name, help=f"Grade exercise set {name} (all questions, or the ones listed: q1 q3).")
    @click.argument("questions", nargs=-1)
    @click.option("--submission", type=click.Path(path_type=Path), help=f"Folder with your q*.py files "
                  f"(default: exercises/{name}).")
    @click.option("--solutions", is_flag=True, help="Grade the model answers (a self-check of the kit).")
    @click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True,
                  help="Where reference and learner code run; auto picks CUDA when present.")
    @click.option("--require-cuda", is_flag=True, help="Grade on CUDA and exit 1 when no GPU is visible or a test "
                  "is skipped for want of CUDA (for GPU CI jobs).")
    @click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the result document here.")
    @click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="Write JUnit XML here (for CI).")
    @click.option("--fail-under", type=float, help="Exit 1 when the score is below this.")
    @click.option("--memory-limit", type=float, default=4.0, show_default=True,
                  help="GiB the worker running your code may grow by.")
    @click.option("--time-limit", type=float, default=10.0, show_default=True,
                  help="Seconds each call into your code may take.")
    @click.option("-v", "--verbose", is_flag=True, help="Show every test, passed ones too.")
    def command(questions, submission, solutions, device, require_cuda, json_path, junit_path, fail_under, memory_limit,
                time_limit, verbose):
        from grader import forkserver, grading  # neither imports torch

        # every usage error first, in a fraction of a second: nothing heavy has started yet
        exercise = exercises.load(name)
        selected = exercise.select(tuple(questions))
        if solutions and submission:
            raise click.UsageError("use either --solutions or --submission, not both")
        ctx = click.get_current_context()
        device_given = ctx.get_parameter_source("device") != click.core.ParameterSource.DEFAULT
        if require_cuda and device == "cpu" and device_given:
            raise click.UsageError("--require-cuda grades on CUDA: drop --device cpu (or --require-cuda)")
        folder = exercise.solutions() if solutions else submission_folder(submission) if submission \
            else exercise.default_submission()
        folder = grading.check_submission(folder)
        json_path = writable_file(json_path, "--json")
        junit_path = writable_file(junit_path, "--junit")

        forkserver.boot()  # the workers' fork server imports torch while we import it here
        from grader import sandbox

        if sandbox.enabled() and sandbox.unavailable():
            click.echo(f"note: no sandbox here ({sandbox.unavailable()}): your code runs with your own rights", err=True)
        from rich.console import Console

        from grader import report

        device = _cuda_required() if require_cuda else grading.resolve_device(device)
        result = grading.grade(exercise, selected, folder, device=device, memory_limit=int(memory_limit * 2**30),
                               time_limit=time_limit)
        report.render(result, Console(highlight=False), verbose=verbose)
        if json_path:
            report.write_json(result, json_path)
        if junit_path:
            report.write_junit(result, junit_path)
        if require_cuda:
            _fail_on_cuda_skips(result)
        if fail_under is not None and result["score"] < fail_under:
            click.echo(f"score {result['score']:g} is below --fail-under {fail_under:g}", err=True)
            sys.exit(EXIT_FAIL_UNDER)

    return command


def _cuda_required() -> str:
    """``--require-cuda``: the device to grade on, ``cuda``; exit 1 with one line when torch sees no GPU."""
    import torch

    if not torch.cuda.is_available():
        click.echo(f"--require-cuda: no CUDA GPU is visible to torch {torch.__version__} "
                   f"(CUDA build: {torch.version.cuda or 'none'}); failing instead of grading on the CPU", err=True)
        sys.exit(EXIT_FAIL_UNDER)
    return "cuda"


def _fail_on_cuda_skips(result: dict) -> None:
    """``--require-cuda``: exit 1 with one line when a test of ``result`` was skipped for want of CUDA."""
    skipped = [f"{q['id']} {t['name']}" for q in result["questions"] for t in q["tests"]
               if t["outcome"] == "skipped" and "cuda" in t["message"].lower()]
    if skipped:
        click.echo(f"--require-cuda: {len(skipped)} tests were skipped for want of CUDA ({', '.join(skipped[:3])}"
                   f"{', ...' if len(skipped) > 3 else ''}): failing", err=True)
        sys.exit(EXIT_FAIL_UNDER)


@main.command("list")
def list_sets() -> None:
    """List the exercise sets, their questions and points."""
    from rich.console import Console

    from grader.grading import collect_points

    console = Console(highlight=False)
    for name in exercises.names():
        exercise = exercises.load(name)
        points = collect_points(exercise)
        console.print(f"[bold]{name}[/] ({sum(points.values()):g} points)")
        for question in exercise.questions:
            console.print(f"  {question.id:<4} {points.get(question.id, 0):>5g}  {question.title}")


# -- instructors: batch grading, exports, learner release (grader.batch, grader.exports, grader.release) --------
@main.command("batch")
@click.argument("exercise_set")
@click.argument("submissions", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path),
              help="Results folder: <learner>/result.json, feedback.md, junit.xml; grades.csv, canvas.csv, "
                   "report.html (not needed with --dry-run).")
@click.option("-q", "--question", "questions", multiple=True, help="Grade only these questions (repeatable).")
@click.option("-j", "--jobs", type=int, help="Submissions graded in parallel (default: the number of cores).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True)
@click.option("--force", is_flag=True, help="Grade every learner again, even those already graded.")
@click.option("--memory-limit", type=float, default=4.0, show_default=True,
              help="GiB each submission's worker may grow by.")
@click.option("--timeout", type=float, default=900.0, show_default=True,
              help="Seconds one submission may take in all before it is given up.")
@click.option("--scheduler", help="Dask scheduler address (tcp://HOST:PORT): grade on that cluster.")
@click.option("--roster", type=click.Path(path_type=Path),
              help="Class list (CSV: name, id, email...): everyone on it who did not submit gets a not_submitted row.")
@click.option("--dry-run", is_flag=True, help="List the learners found and what would be graded; grade nothing.")
@click.option("--nbgrader-db", help="Also put the scores into this nbgrader gradebook (sqlite:///gradebook.db).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--no-sandbox", is_flag=True, help="Grade without the worker's sandbox (only inside a container).")
def batch_command(exercise_set, submissions, out, questions, jobs, device, force, memory_limit, timeout, scheduler,
                  roster, dry_run, nbgrader_db, no_progress, no_sandbox):
    """Grade a class: a folder or a whole-class zip of submissions (folders, zips, Canvas, Moodle, nbgrader)."""
    from grader import batch
    from grader import roster as rosters
    from grader import submissions as layouts

    exercise = exercises.load(exercise_set)
    exercise.select(tuple(questions))
    if jobs is not None and jobs < 1:
        raise click.UsageError("-j/--jobs must be at least 1")
    if out is None and not dry_run:
        raise click.UsageError("missing option --out RESULTS (the folder the results go to)")
    if out is not None and not dry_run:
        try:
            Path(out).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise click.UsageError(f"--out {out}: cannot create that folder ({error.strerror or error})") from None
    if device != "cpu" and not dry_run:
        from grader.grading import resolve_device

        device = resolve_device(device)  # `auto` is graded (and keyed) as what it resolves to here
    try:
        people = rosters.read(roster) if roster else None
        if dry_run:
            with layouts.opened(submissions) as folder:
                lines = batch.dry_run(exercise.name, folder, questions=tuple(questions), people=people)
            click.echo("\n".join(lines + [f"{sum(not line.startswith(' ') for line in lines)} learners found in "
                                           f"{submissions}; nothing was graded (--dry-run)"]))
            return
        _sandbox_or_refuse("batch", no_sandbox)
        summary = batch.run_batch(exercise.name, Path(submissions), Path(out), questions=tuple(questions), jobs=jobs,
                                  device=device, force=force, memory_limit=int(memory_limit * 2**30),
                                  timeout=timeout, scheduler=scheduler, progress=not no_progress, people=people)
        maxima = _to_nbgrader(summary.results, nbgrader_db, exercise.name) if nbgrader_db else None
    except KeyboardInterrupt:
        kept = len(list(Path(out).glob(f"*/{batch.RESULT}"))) if out else 0
        click.echo(f"interrupted: {kept} learner{'s' if kept != 1 else ''} graded so far kept in {out}/; run the same "
                   "command again to resume (only the others are graded)", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except (FileNotFoundError, rosters.RosterError, layouts.MalformedSubmission) as error:
        raise click.UsageError(str(error)) from None
    statuses = [r.get("status", "graded") for r in summary.results.values()]
    first = next(iter(summary.results.values()), {})
    skipped = f" ({first['skipped_points']:g} more points need CUDA; full {first['full_max_score']:g})" \
        if first.get("skipped_points") else ""
    click.echo(f"{len(summary.graded)} graded, {len(summary.skipped)} already graded (unchanged), "
               f"{statuses.count('malformed') + statuses.count('failed')} could not be graded, "
               f"{statuses.count('not_submitted')} not submitted; out of {first.get('max_score', 0):g} points on "
               f"{device}{skipped}; {summary.duration_s:.1f} s. Results in {out}/ (grades.csv, canvas.csv, report.html)"
               + (f"; nbgrader gradebook {nbgrader_db} (out of {maxima.get('max_score', 0):g})" if maxima else ""))


def _sandbox_or_refuse(command: str, no_sandbox: bool) -> None:
    """``--no-sandbox``: grade without it (``GRADE_SANDBOX=off``, inherited by batch judges); else refuse
    to grade other people's code where no sandbox can be applied (exit 2, one line)."""
    from grader import sandbox

    if no_sandbox:
        sandbox.disable()
    elif sandbox.unavailable():
        raise click.UsageError(f"grade {command}: no sandbox for learner code here ({sandbox.unavailable()}); "
                               "grade inside a container and pass --no-sandbox")


def _to_nbgrader(results: dict, db_url: str, assignment: str | None) -> dict:
    """``exports.to_nbgrader``, with a missing nbgrader or an unusable database as a usage error."""
    from grader import exports

    try:
        return exports.to_nbgrader(results, db_url, assignment=assignment)
    except ImportError:
        raise click.UsageError('nbgrader is not installed: pip install -e ".[nbgrader]"') from None
    except Exception as error:  # noqa: BLE001 - sqlalchemy's and nbgrader's errors name the database problem
        if not type(error).__module__.startswith(("sqlalchemy", "nbgrader")):
            raise
        raise click.UsageError(f"nbgrader gradebook {db_url}: {str(error).splitlines()[0]}") from None


@main.command("nbgrader")
@click.argument("results_folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--db", "db_url", default="sqlite:///gradebook.db", show_default=True, help="nbgrader gradebook URL.")
@click.option("--assignment", help="nbgrader assignment name (default: the exercise set).")
def nbgrader_command(results_folder, db_url, assignment):
    """Put the scores of a batch's results folder into an nbgrader gradebook."""
    import json

    results = {}
    for path in sorted(Path(results_folder).glob("*/result.json")):
        try:
            results[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise click.UsageError(f"{path} is not a result document ({error}): run `grade batch` again") from None
    if not results:
        raise click.UsageError(f"{results_folder} holds no <learner>/result.json: run `grade batch` first")
    maxima = _to_nbgrader(results, db_url, assignment)
    skipped = f"; {maxima['skipped_points']:g} points of CUDA-only tests were not graded " \
              f"(full {maxima['full_max_score']:g})" if maxima.get("skipped_points") else ""
    click.echo(f"{len(results)} learners written to {db_url}, out of {maxima.get('max_score', 0):g} points{skipped}")


@main.command("gradescope")
@click.argument("exercise_set")
@click.argument("questions", nargs=-1)
@click.option("--submission-dir", type=click.Path(path_type=Path), default=Path("/autograder/submission"),
              show_default=True, help="The learner's upload: q*_*.py files, a folder or a zip (or a zip file).")
@click.option("--results", "results_path", type=click.Path(path_type=Path),
              default=Path("/autograder/results/results.json"), show_default=True,
              help="Where to write Gradescope's results.json.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto", show_default=True)
@click.option("--hidden-visibility", type=click.Choice(["hidden", "after_due_date", "after_published", "visible"]),
              default="after_due_date", show_default=True, help="Gradescope visibility of hidden-marked tests.")
@click.option("--memory-limit", type=float, default=4.0, show_default=True,
              help="GiB the worker running the learner's code may grow by.")
@click.option("--no-sandbox", is_flag=True, help="Grade without the worker's sandbox (only inside a container).")
def gradescope_command(exercise_set, questions, submission_dir, results_path, device, hidden_visibility, memory_limit,
                       no_sandbox):
    """Run as a Gradescope autograder: grade the upload, write results.json."""
    from grader import exports, grading
    from grader import gradescope as autograder

    exercise = exercises.load(exercise_set)
    selected = exercise.select(tuple(questions))
    if not Path(submission_dir).exists():
        raise click.UsageError(f"submission folder {submission_dir} does not exist")
    results_path = writable_file(results_path, "--results")
    _sandbox_or_refuse("gradescope", no_sandbox)
    result = autograder.grade_upload(exercise, selected, Path(submission_dir), device=grading.resolve_device(device),
                                     memory_limit=int(memory_limit * 2**30))
    exports.write_gradescope(result, results_path, hidden_visibility=hidden_visibility)
    click.echo(f"{result['score']:g}/{result['max_score']:g} points; Gradescope results in {results_path}")


@main.command("gradescope-build")
@click.argument("exercise_set")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("-q", "--question", "questions", multiple=True, help="Grade only these questions (repeatable).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--no-sandbox", is_flag=True,
              help="run_autograder grades without the worker's sandbox (where Gradescope's container refuses Landlock).")
def gradescope_build_command(exercise_set, out, questions, force, no_sandbox):
    """Write the Gradescope autograder zip (setup.sh, run_autograder, the kit) to OUT."""
    from grader import gradescope as autograder

    exercise = exercises.load(exercise_set)
    selected = exercise.select(tuple(questions))
    if Path(out).suffix.lower() != ".zip":
        raise click.UsageError(f"{out}: the autograder is a zip file; name it *.zip")
    if Path(out).exists() and not force:
        raise click.UsageError(f"{out} exists (use --force to replace it)")
    summary = autograder.build_autograder(exercise, selected, writable_file(Path(out), "OUT"), sandbox=not no_sandbox)
    skipped = summary["points"] - summary["cpu_points"]
    click.echo(f"{out}: Gradescope autograder for {exercise.name} {' '.join(summary['questions'])} "
               f"({summary['files']} files, {summary['bytes'] / 2**20:.1f} MiB). Set the assignment's autograder "
               f"points to {summary['cpu_points']:g}" + (f": Gradescope grades on a CPU, where CUDA-only tests "
                                                          f"({skipped:g} of the {summary['points']:g} points) are "
                                                          "skipped." if skipped else "."))


@main.command("release")
@click.argument("exercise_set")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("-q", "--question", "questions", multiple=True, help="Release only these questions (repeatable).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def release_command(exercise_set, out, questions, force):
    """Write the learner bundle: stubs from the solutions, public tests with stored expected values, the grader."""
    from grader import release

    exercise = exercises.load(exercise_set)
    try:
        manifest = release.build(exercise, Path(out), tuple(questions), force=force)
    except click.UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - a bug in the kit or a suite: one line, never a traceback
        click.echo(f"internal error in the grading kit: release failed, nothing written to {out}: "
                   f"{type(error).__name__}: {error}".splitlines()[0], err=True)
        sys.exit(EXIT_KIT_BUG)
    withheld = "".join(f"; {qid} not released ({why})" for qid, why in manifest["withheld"].items())
    click.echo(f"learner bundle in {out}: {', '.join(manifest['released'])}, public tests worth "
               f"{manifest['public_points']:g} points; hidden tests worth {manifest['hidden_points_total']:g} "
               f"points stay with the instructor{withheld}")
