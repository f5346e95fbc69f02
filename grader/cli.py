"""The ``grade`` command (Click; rich for terminal output).

Each command parses its options and hands off to one module:
``grade <set> [QUESTION...]`` → ``grader.grading``; ``grade list`` → collection of
the suites. Usage errors exit 2 with a one-line message; a finished grade exits
0 whatever the score (1 with ``--fail-under`` and a lower score).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from grader import __version__, exercises

EXIT_FAIL_UNDER = 1
EXIT_KIT_BUG = 3


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
    @click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the result document here.")
    @click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="Write JUnit XML here (for CI).")
    @click.option("--fail-under", type=float, help="Exit 1 when the score is below this.")
    @click.option("--memory-limit", type=float, default=4.0, show_default=True,
                  help="GiB the worker running your code may grow by.")
    @click.option("--time-limit", type=float, default=10.0, show_default=True,
                  help="Seconds each call into your code may take.")
    @click.option("-v", "--verbose", is_flag=True, help="Show every test, passed ones too.")
    def command(questions, submission, solutions, device, json_path, junit_path, fail_under, memory_limit, time_limit,
                verbose):
        from grader import forkserver

        forkserver.boot()  # the workers' fork server imports torch while we import it here
        from grader import grading, report

        exercise = exercises.load(name)
        selected = exercise.select(tuple(questions))
        if solutions and submission:
            raise click.UsageError("use either --solutions or --submission, not both")
        folder = exercise.solutions() if solutions else submission or exercise.default_submission()
        folder = grading.check_submission(folder)
        device = grading.resolve_device(device)
        try:
            result = grading.grade(exercise, selected, folder, device=device, memory_limit=int(memory_limit * 2**30),
                                   time_limit=time_limit)
        except Exception as error:  # noqa: BLE001 - a bug in the kit: one line, never a traceback
            click.echo(f"internal error in the grading kit (not your code): {type(error).__name__}: {error}", err=True)
            sys.exit(EXIT_KIT_BUG)
        report.render(result, Console(highlight=False), verbose=verbose)
        if json_path:
            report.write_json(result, json_path)
        if junit_path:
            report.write_junit(result, junit_path)
        if fail_under is not None and result["score"] < fail_under:
            click.echo(f"score {result['score']:g} is below --fail-under {fail_under:g}", err=True)
            sys.exit(EXIT_FAIL_UNDER)

    return command


@main.command("list")
def list_sets() -> None:
    """List the exercise sets, their questions and points."""
    from grader.grading import collect_points

    console = Console(highlight=False)
    for name in exercises.names():
        exercise = exercises.load(name)
        points = collect_points(exercise)
        console.print(f"[bold]{name}[/] ({sum(points.values()):g} points)")
        for question in exercise.questions:
            console.print(f"  {question.id:<4} {points.get(question.id, 0):>5g}  {question.title}")
