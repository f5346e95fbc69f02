"""Grading a folder of submissions: ``grade batch ex4 SUBMISSIONS --out RESULTS``.

- Judges: ``jobs`` long-lived judge processes (:class:`Judge`), each importing
  torch, pytest and the hidden suites once and then grading one submission after
  another with ``grader.grading.grade``; every submission still runs in its own
  worker process with the per-call time limit and the memory cap, so one
  submission's crash, hang or memory blow-up never touches another's grade. A
  judge that stops answering (past ``timeout`` seconds for one submission) or dies
  is killed and replaced; that submission gets a result saying so.
- Results: ``RESULTS/<learner>/result.json``, ``feedback.md`` and ``junit.xml``,
  written atomically as soon as the learner is graded (``result.json`` last: it
  marks the learner done). A rerun skips every learner whose ``result.json``
  carries the same key (hash of the submission and of the kit), unless ``force``.
- At the end: ``grades.csv``, ``report.html``/``report.md`` (``grader.class_report``).

Entries that cannot be graded (``grader.submissions.MalformedSubmission``) get a
result of 0 with the reason; the batch goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from grader import submissions
from grader.report import write_atomic, write_json

DEFAULT_TIMEOUT = 900.0  # seconds one submission may take in a judge before the judge is replaced
RESULT = "result.json"


# ----------------------------------------------------------------------------- the judge process
def serve() -> None:
    """Judge loop (``python -c 'from grader.batch import serve; serve()'``): JSON lines in, JSON lines out.

    Requests: ``{"op": "grade", "exercise", "questions", "folder", "device", "memory_limit", "threads"}``
    and ``{"op": "malformed", "exercise", "questions", "reason"}``; each answer is
    ``{"ok": result}`` or ``{"error": text}``. Anything printed goes to stderr, never
    into the answers.
    """
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    from grader import exercises, forkserver, grading

    forkserver.boot(heavy=True)  # this judge forks a worker per submission: load torch's lazy modules once

    points: dict[str, dict[str, float]] = {}
    configured_threads = None
    for line in sys.stdin:
        try:
            request = json.loads(line)
            exercise = exercises.load(request["exercise"])
            questions = exercise.select(tuple(request.get("questions") or ()))
            if request["op"] == "malformed":
                if exercise.name not in points:
                    points[exercise.name] = grading.collect_points(exercise)
                reply = {"ok": malformed_result(exercise.name, [(q.id, q.title) for q in questions],
                                                points[exercise.name], request["reason"])}
            else:
                threads = int(request.get("threads") or 1)
                if threads != configured_threads:
                    import torch

                    torch.set_num_threads(threads)
                    configured_threads = threads
                device = grading.resolve_device(request.get("device", "cpu"))
                result = grading.grade(exercise, questions, Path(request["folder"]), device=device,
                                       memory_limit=int(request["memory_limit"]), threads=threads)
                reply = {"ok": result}
        except BaseException as error:  # noqa: BLE001 - reported to the batch, which records it
            if isinstance(error, KeyboardInterrupt):
                raise
            reply = {"error": f"{type(error).__name__}: {error}\n{traceback.format_exc()[-3000:]}"}
        replies.write(json.dumps(reply) + "\n")


def malformed_result(exercise: str, questions: list[tuple[str, str]], points: dict[str, float],
                     reason: str, status: str = "malformed") -> dict[str, Any]:
    """A result of 0 points for a submission that could not be graded, with ``reason``."""
    blocks = [{"id": qid, "title": title, "score": 0.0, "max_score": float(points.get(qid, 0.0)), "tests": []}
              for qid, title in questions]
    from grader import __version__

    return {"exercise": exercise, "score": 0.0, "max_score": round(sum(b["max_score"] for b in blocks), 4),
            "kit_version": __version__, "status": status, "error": reason, "questions": blocks}


class JudgeFailed(RuntimeError):
    """The judge process died or did not answer in time (it has been replaced)."""


class Judge:
    """A judge process of the batch, restarted when it dies or hangs."""

    def __init__(self, log: Path | None = None):
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        stderr = open(self.log, "ab") if self.log else subprocess.DEVNULL
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from grader.batch import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, start_new_session=True,
            env=environment, text=True, bufsize=1,
        )
        if self.log:
            stderr.close()

    def ask(self, request: dict, timeout: float) -> dict:
        """Send one request and wait up to ``timeout`` s for the answer.

        Raises:
            JudgeFailed: the judge died or did not answer; it is stopped (a later ask restarts it).
        """
        if self.process is None or self.process.poll() is not None:
            self.start()
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            self.stop()
            raise JudgeFailed("the grading process ended unexpectedly") from None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                self.stop()
                raise JudgeFailed(f"grading this submission did not finish within {timeout:g} s")
        line = self.process.stdout.readline()
        if not line:
            code = self.process.poll()
            self.stop()
            raise JudgeFailed(f"the grading process ended unexpectedly (exit code {code})")
        return json.loads(line)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(3.0)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()
            self.process.wait(5.0)
        self.process = None


# ----------------------------------------------------------------------------- one learner
@dataclass
class Task:
    """One learner to grade: its entry and the key its result will carry."""

    entry: submissions.Entry
    key: str
    submission_hash: str


@dataclass
class Options:
    exercise: str
    questions: tuple[str, ...] = ()
    device: str = "cpu"
    memory_limit: int = 4 * 2**30
    threads: int = 1
    timeout: float = DEFAULT_TIMEOUT


def grade_entry(judge: Judge, task: Task, options: Options, scratch: Path) -> dict[str, Any]:
    """The result document of one learner (never raises for a problem of the submission)."""
    base = {"exercise": options.exercise, "questions": list(options.questions)}
    started = time.perf_counter()
    folder = None
    try:
        folder = submissions.materialize(task.entry, scratch)
    except submissions.MalformedSubmission as error:
        request = {**base, "op": "malformed", "reason": str(error)}
    else:
        request = {**base, "op": "grade", "folder": str(folder), "device": options.device,
                   "memory_limit": options.memory_limit, "threads": options.threads}
    try:
        reply = judge.ask(request, options.timeout)
    except JudgeFailed as error:
        reply = judge.ask({**base, "op": "malformed", "reason": str(error)}, options.timeout)
        if "ok" in reply:
            reply["ok"]["status"] = "failed"
    if "ok" not in reply:
        raise RuntimeError(f"internal error in the grading kit while grading {task.entry.learner}: {reply['error']}")
    result = reply["ok"]
    result["duration_s"] = round(time.perf_counter() - started, 3)
    return result


def feedback_markdown(result: dict[str, Any]) -> str:
    """The learner's feedback file: total, a line per question, every failing test with its message."""
    lines = [f"# {result['exercise']}: {result['score']:g}/{result['max_score']:g} points", ""]
    if result.get("error"):
        lines += ["**Your submission could not be graded:** " + result["error"], ""]
    lines += ["| question | title | score | tests passed |", "|---|---|---|---|"]
    for question in result["questions"]:
        counted = [t for t in question["tests"] if t["outcome"] != "skipped"]
        passed = sum(t["outcome"] == "passed" for t in counted)
        lines.append(f"| {question['id']} | {question['title']} | {question['score']:g}/{question['max_score']:g} "
                     f"| {passed}/{len(counted)} |")
    for question in result["questions"]:
        failing = [t for t in question["tests"] if t["outcome"] in ("failed", "error")]
        if not failing:
            continue
        lines += ["", f"## {question['id']} {question['title']}"]
        for test in failing:
            lines += ["", f"### {test['name']} ({test['points']:g}/{test['max_points']:g})", "", "```",
                      test["message"].strip() or test["outcome"], "```"]
    return "\n".join(lines) + "\n"


def write_learner(out: Path, learner: str, result: dict[str, Any]) -> None:
    """Feedback, JUnit XML, then ``result.json`` (the marker that this learner is done), all atomic."""
    from grader.report import write_junit

    folder = out / learner
    write_atomic(folder / "feedback.md", feedback_markdown(result))
    write_junit(result, folder / "junit.xml")
    write_json(result, folder / RESULT)


def read_result(out: Path, learner: str) -> dict[str, Any] | None:
    try:
        return json.loads((out / learner / RESULT).read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- the batch
@dataclass
class Summary:
    """What one ``run_batch`` did."""

    total: int = 0
    graded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # malformed or not gradable
    duration_s: float = 0.0
    results: dict[str, dict] = field(default_factory=dict)


def plan(exercise: str, root: Path, out: Path, *, questions: tuple[str, ...] = (), device: str = "cpu",
         force: bool = False) -> tuple[list[Task], list[str]]:
    """The learners to grade now, and those already graded with the same key (skipped)."""
    kit = submissions.kit_hash(exercise, questions, device)
    todo, done = [], []
    for entry in submissions.discover(root, exercise):
        digest = submissions.entry_hash(entry)
        key = hashlib.sha256(f"{digest}|{kit}".encode()).hexdigest()
        previous = read_result(out, entry.learner)
        if not force and previous is not None and previous.get("batch", {}).get("key") == key:
            done.append(entry.learner)
        else:
            todo.append(Task(entry, key, digest))
    return todo, done


def _run_local(tasks: list[Task], options: Options, jobs: int, out: Path,
               on_result: Callable[[Task, dict], None]) -> None:
    pending: queue.Queue = queue.Queue()
    for task in tasks:
        pending.put(task)
    errors: list[BaseException] = []
    logs = out / ".logs"
    logs.mkdir(parents=True, exist_ok=True)

    def run(index: int) -> None:
        judge = Judge(logs / f"judge-{index}.log")
        try:
            with tempfile.TemporaryDirectory(prefix="grade-batch-") as scratch:
                while not errors:
                    try:
                        task = pending.get_nowait()
                    except queue.Empty:
                        return
                    place = Path(scratch) / task.entry.learner
                    result = grade_entry(judge, task, options, place)
                    on_result(task, result)
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            errors.append(error)
        finally:
            judge.stop()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(max(1, min(jobs, len(tasks))))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        errors.append(KeyboardInterrupt())
        raise
    if errors:
        raise errors[0]


def run_batch(exercise: str, root: Path, out: Path, *, questions: tuple[str, ...] = (), jobs: int | None = None,
              device: str = "cpu", force: bool = False, memory_limit: int = 4 * 2**30,
              timeout: float = DEFAULT_TIMEOUT, scheduler: str | None = None, progress: bool = True,
              reports: bool = True) -> Summary:
    """Grade every entry of ``root`` into ``out``; see the module docstring.

    Args:
        jobs: judges working in parallel (default: the number of cores).
        scheduler: a Dask scheduler address (``tcp://host:8786``): grade there instead of locally.
        progress: show a progress bar (done/total, failures, time left) on stderr.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 1
    tasks, skipped = plan(exercise, root, out, questions=questions, device=device, force=force)
    options = Options(exercise, tuple(questions), device, memory_limit,
                      threads=max(1, (os.cpu_count() or 1) // jobs), timeout=timeout)
    summary = Summary(total=len(tasks) + len(skipped), skipped=skipped)
    lock = threading.Lock()
    bar = Progress(TextColumn("[bold]grading[/]"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(), TextColumn("left"),
                   TimeRemainingColumn(), console=Console(stderr=True), disable=not progress, transient=False)
    handle = bar.add_task("grading", total=len(tasks), failed=0)

    def on_result(task: Task, result: dict[str, Any]) -> None:
        result["learner"] = task.entry.learner
        result["batch"] = {"key": task.key, "submission_hash": task.submission_hash,
                           "entry": task.entry.path.name, "graded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_learner(out, task.entry.learner, result)
        with lock:
            summary.graded.append(task.entry.learner)
            if result.get("error"):
                summary.failed.append(task.entry.learner)
            bar.update(handle, advance=1, failed=len(summary.failed))

    with bar:
        if scheduler:
            from grader import cluster

            cluster.run(tasks, options, scheduler, on_result)
        else:
            _run_local(tasks, options, jobs, out, on_result)
    learners = [e.learner for e in submissions.discover(root, exercise)]
    summary.results = {name: r for name in learners if (r := read_result(out, name)) is not None}
    summary.duration_s = round(time.perf_counter() - started, 3)
    if reports:
        from grader import class_report, exports

        exports.write_csv(summary.results, out / "grades.csv")
        class_report.write(summary.results, out, title=f"{exercise} class report")
    return summary
