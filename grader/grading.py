"""Grade one submission: start its worker, run the hidden suites, build the result.

The judge (this process) imports the suites and ``reference``; the submission
only ever runs in the worker. The worker is started first, in the background,
so its fork server imports torch while this process imports pytest and the suites.
Importing this module is cheap (no torch, pytest or hypothesis): ``grade`` checks
its arguments with :func:`check_submission` before anything heavy starts.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import io
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from grader.exercises import SUITES, ExerciseSet, Question

if TYPE_CHECKING:
    from grader.judge import WorkerProcess

# pytest's own plugins the hidden suites do not need; ``unraisableexception`` and
# ``threadexception`` run a full ``gc.collect()`` at every session's end (0.1 s). ``--assert=plain`` in
# every session: a suite module stays imported for the process, and one imported by a session with
# assertion rewriting (a --collect-only one too) would add pytest's "+ where" lines to the learner's messages.
PYTEST_OPTIONS = ("-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:unraisableexception",
                  "-p", "no:threadexception", "--assert=plain", "--import-mode=importlib",
                  "-c", str(SUITES / "pytest.ini"), "--rootdir", str(SUITES))


def _session_options() -> tuple[str, ...]:
    """``PYTEST_OPTIONS``, and no plugin of other packages but hypothesis's where pytest can say so (8.4+).

    Importing the installed plugins (xdist, anyio, ...) costs 0.1 s per session and they play no part.
    """
    import pytest

    if pytest.version_tuple >= (8, 4):
        return (*PYTEST_OPTIONS, "--disable-plugin-autoload", "-p", "_hypothesis_pytestplugin")
    return PYTEST_OPTIONS


class KitError(RuntimeError):
    """A hidden suite could not be collected: a bug in the kit, not in the submission."""


def resolve_device(name: str) -> str:
    """``cpu``/``cuda``/``auto`` → ``cpu`` or ``cuda``.

    Raises:
        click.UsageError: ``cuda`` asked for and no GPU is present.
    """
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda: no CUDA GPU is visible to torch here (use --device cpu or auto)")
    return name


def check_submission(path: Path) -> Path:
    """The submission folder, resolved.

    Raises:
        click.UsageError: it does not exist or holds no ``q*.py`` nor ``q*.ipynb`` file.
    """
    from grader.notebooks import has_answers

    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise click.UsageError(f"submission folder {path} does not exist")
    if not has_answers(path):
        raise click.UsageError(f"{path} holds no q*.py files (nor q*.ipynb notebooks): point --submission at "
                               "the folder with your answers")
    return path


def grade(exercise: ExerciseSet, questions: tuple[Question, ...], submission: Path, *, device: str = "cpu",
          memory_limit: int | None = None, time_limit: float | None = None, threads: int = 0,
          worker: WorkerProcess | None = None) -> dict[str, Any]:
    """Grade ``submission`` on ``questions`` of ``exercise`` and return the result document.

    Args:
        device: ``cpu`` or ``cuda`` (already resolved); reference and learner code both run there.
        memory_limit: bytes the worker may grow by; time_limit: seconds per call into learner code
            (``None``: ``grader.judge``'s defaults, 4 GiB and 10 s).
        threads: torch threads for the judge and for the worker each (default: half the cores).
        worker: an already-started worker to use (it is stopped afterwards either way).

    Raises:
        KitError: a hidden suite failed to import.
    """
    from grader.judge import DEFAULT_MEMORY_LIMIT, DEFAULT_TIME_LIMIT, WorkerProcess

    started = time.perf_counter()
    memory_limit = DEFAULT_MEMORY_LIMIT if memory_limit is None else memory_limit
    time_limit = DEFAULT_TIME_LIMIT if time_limit is None else time_limit
    threads = threads or max(1, (os.cpu_count() or 2) // 2)  # judge and worker each take this many
    worker = worker or WorkerProcess(submission, memory_limit=memory_limit, threads=threads, time_limit=time_limit,
                                     cap_address_space=device != "cuda", prefetch=len(questions) > 1)
    if worker._starting is None:
        worker.start()
    import pytest
    import torch

    from grader.plugin import GradingPlugin
    from grader.scoring import build_result

    if not gc.get_freeze_count():  # once per process: torch and pytest live as long as it does, and the
        gc.freeze()                # collector need not walk them again at every collection (nor at exit)

    plugin = GradingPlugin(worker, torch.device(device))
    judge_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    arguments = [str(q.suite) for q in questions] + [*_session_options(), "--tb=no",
                                                      "-W", "ignore::DeprecationWarning"]
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            code = pytest.main(arguments, plugins=[plugin])
        peak_rss = worker.peak_rss()
    finally:
        worker.stop()
        torch.set_num_threads(judge_threads)
    if plugin.collection_errors or code in (pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR):
        raise KitError("hidden suite failed: " + ("\n".join(plugin.collection_errors) or output.getvalue()[-3000:]))
    if code == pytest.ExitCode.INTERRUPTED:  # Ctrl-C or SIGTERM (pytest stopped the session): no partial result
        raise KeyboardInterrupt
    result = build_result(
        exercise, questions, plugin.records,
        submission=str(submission), device=device, duration_s=round(time.perf_counter() - started, 3),
        worker_peak_rss_mb=round(peak_rss / 2**20, 1),
        sandbox=worker.sandbox,  # the layers the worker reported active (grader.sandbox); None: no worker answered
    )
    from grader.notebooks import describe

    files = describe(submission)  # per question: graded_file (.py or .ipynb) and file_notes
    for block in result["questions"]:
        block.update(files.get(block["id"], {}))
    return result


def collect_points(exercise: ExerciseSet, device: str | None = None) -> dict[str, float]:
    """Points per question, from the ``points`` markers of the collected hidden tests.

    Args:
        device: ``None`` for all the points (the full maximum); ``cpu`` or ``cuda`` for
            the points graded there: tests marked ``cuda`` are skipped on a CPU
            (``grader.plugin``) and count toward neither score nor maximum.
    """
    points = _collected_points(exercise)
    return {qid: round(full - (cuda if device is not None and device != "cuda" else 0.0), 4)
            for qid, (full, cuda) in points.items()}


@functools.lru_cache(maxsize=None)
def _collected_points(exercise: ExerciseSet) -> dict[str, tuple[float, float]]:
    """``{question: (all points, points of tests marked cuda)}``; collected once per process."""
    import pytest

    from grader.plugin import MARKERS, points_of, question_of, use_grading_profile

    totals: dict[str, tuple[float, float]] = {}

    class Collector:
        def pytest_configure(self, config):
            for name, text in MARKERS.items():
                config.addinivalue_line("markers", f"{name}: {text}")
            use_grading_profile()

        def pytest_collection_finish(self, session):
            for item in session.items:
                full, cuda = totals.get(question_of(item), (0.0, 0.0))
                points = points_of(item)
                totals[question_of(item)] = (full + points, cuda + (points if item.get_closest_marker("cuda") else 0.0))

    with contextlib.redirect_stdout(io.StringIO()):
        pytest.main([str(q.suite) for q in exercise.questions] + ["--collect-only", *_session_options()],
                    plugins=[Collector()])
    return totals
