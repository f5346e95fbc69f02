"""The pytest plugin that runs hidden suites in the judge.

Order: markers → fixtures → hooks. Registered by ``grader.grading`` for one run:

- markers ``points(n)`` (default 1), ``hidden`` (visibility: never in the learner
  bundle; still reported by name and message), ``cuda`` (skipped unless grading
  on a GPU, with the reason shown), ``time_limit(seconds)`` (per call into learner
  code, default 10 s);
- fixtures ``learner`` (the submission, through proxies; see ``grader.judge``) and
  ``device`` (the ``torch.device`` being graded on); every test is seeded;
- a report hook that turns each test's outcome into a record with a message
  in the learner's terms: the exception message, never the hidden test's source;
  values a test reports with pytest's ``record_property`` (timings, ratios) become
  the record's ``notes``, shown but never graded;
- what learner code printed during the test (the worker's stdout and stderr, a
  crashed worker's too) becomes the record's ``output`` when there is any.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from grader import replay
from grader.judge import ImportFailed, LearnerError, Learner, WorkerDied, WorkerProcess

MARKERS = {
    "points(n)": "points the test carries (default 1)",
    "hidden": "hidden visibility: left out of the learner bundle",
    "cuda": "needs a CUDA GPU; skipped when grading on the CPU",
    "time_limit(seconds)": "time limit per call into learner code (default 10 s)",
}


def use_grading_profile() -> None:
    """Load hypothesis's ``grading`` profile: derandomized, no deadline, no database, 20 examples.

    Must run before a suite module is imported: ``@settings(...)`` on a test inherits
    the profile in force at import time (``grade list`` imports the suites too).
    """
    from hypothesis import HealthCheck, Phase, settings

    settings.register_profile(
        "grading", derandomize=True, deadline=None, database=None, max_examples=20, print_blob=False,
        report_multiple_bugs=False, suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    )
    settings.load_profile("grading")


def points_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("points")
    return float(marker.args[0]) if marker else 1.0


def question_of(item: pytest.Item) -> str:
    """``q3`` for a test in ``q3_attention.py``."""
    return item.path.stem.split("_", 1)[0]


class GradingPlugin:
    """Collects one record per hidden test while pytest runs the suites."""

    def __init__(self, worker: WorkerProcess, device: torch.device):
        self.worker = worker
        self.torch_device = device
        self.records: list[dict[str, Any]] = []
        self.collection_errors: list[str] = []

    # -- configuration -------------------------------------------------------------
    def pytest_configure(self, config: pytest.Config) -> None:
        for name, text in MARKERS.items():
            config.addinivalue_line("markers", f"{name}: {text}")
        use_grading_profile()

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        if self.torch_device.type != "cuda":
            skip = pytest.mark.skip(reason=f"needs a CUDA GPU (grading on {self.torch_device.type})")
            for item in items:
                if item.get_closest_marker("cuda"):
                    item.add_marker(skip)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collection_errors.append(f"{report.nodeid}: {report.longreprtext[-2000:]}")

    # -- fixtures --------------------------------------------------------------------
    @pytest.fixture
    def learner(self, request: pytest.FixtureRequest):
        marker = request.node.get_closest_marker("time_limit")
        default = self.worker.default_time_limit
        # a marker raises the limit for slow-but-correct work; it never exceeds what the grader was given x10
        self.worker.time_limit = min(float(marker.args[0]), 10 * default) if marker else default
        submission = Learner(self.worker)
        submission.reset()
        yield submission
        self.worker.time_limit = default

    @pytest.fixture
    def device(self) -> torch.device:
        return self.torch_device

    @pytest.fixture(autouse=True)
    def _seeded(self):
        random.seed(0)
        torch.manual_seed(0)
        replay.new_test()  # recorded expected values are looked up per test (a judge grades many submissions)
        self.worker.last_call = ""

    # -- reports ---------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.worker.begin_output()  # what learner code prints from here on is this test's

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = (yield).get_result()
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self.records.append(self._record(item, call, report))

    def _record(self, item: pytest.Item, call: pytest.CallInfo, report: pytest.TestReport) -> dict[str, Any]:
        points = points_of(item)
        record = {
            "question": question_of(item),
            "name": item.name,
            "points": points if report.passed else 0.0,
            "max_points": points,
            "visibility": "hidden" if item.get_closest_marker("hidden") else "visible",
            "duration_s": round(report.duration, 4),
        }
        if report.user_properties:  # figures a test reports without grading them (``record_property``)
            record["notes"] = {str(k): v if isinstance(v, (int, float)) else str(v) for k, v in report.user_properties}
        if output := self.worker.take_output():
            record["output"] = output
        if report.passed:
            return {**record, "outcome": "passed", "message": ""}
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            return {**record, "outcome": "skipped", "message": reason.removeprefix("Skipped: ")}
        outcome, message = describe_failure(call.excinfo.value if call.excinfo else None, self.worker.last_call)
        return {**record, "outcome": outcome, "message": message}


def describe_failure(error: BaseException | None, last_call: str) -> tuple[str, str]:
    """Outcome (``failed`` or ``error``) and a learner-facing message for a failing test.

    ``failed`` is the learner's: a failed check, an exception from learner code, a
    crash or a time-out. ``error`` means the grader itself broke on the submission's
    result (e.g. got a list where a tensor was promised), and says so.
    """
    notes = "\n".join(getattr(error, "__notes__", []) or [])
    if isinstance(error, LearnerError) and isinstance(error, NotImplementedError):
        return "failed", f"not implemented yet ({error.call})"
    if isinstance(error, LearnerError):
        trace = f"\n{error.learner_traceback.rstrip()}" if error.learner_traceback else ""
        return "failed", f"{error}{trace}"
    if isinstance(error, (WorkerDied, ImportFailed)):
        return "failed", str(error)
    if isinstance(error, AssertionError):
        message = str(error) or "check failed"
        if last_call and last_call not in message:
            message += f"\n(last call into your code: {last_call})"
        return "failed", message + (f"\n{notes}" if notes else "")
    text = f"{type(error).__name__}: {error}" if error is not None else "unknown failure"
    where = f" after {last_call}" if last_call else ""
    return "error", f"the grader could not check your result{where}: {text}" + (f"\n{notes}" if notes else "")
