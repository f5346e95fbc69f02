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
result of 0 with the reason (``status: malformed``), and everyone on the roster
who did not submit gets one too (``status: not_submitted``); both have the same
totals as a graded learner on the same device. The batch goes on.

Interrupted (Ctrl-C), the batch kills its judges and their workers at once, keeps
every learner already written, and raises ``KeyboardInterrupt``: a rerun resumes.
"""

from __future__ import annotations

import contextlib
import functools
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

from grader import lifecycle, roster, submissions
from grader.report import failures_markdown, write_atomic, write_json

DEFAULT_TIMEOUT = 900.0  # seconds one submission may take in a judge before the judge is replaced
RESULT = "result.json"


# ----------------------------------------------------------------------------- the judge process
def serve() -> None:
    """Judge loop (``python -c 'from grader.batch import serve; serve()'``): JSON lines in, JSON lines out.

    Requests: ``{"op": "grade", "exercise", "questions", "folder", "device", "memory_limit", "threads"}``
    and ``{"op": "malformed", "exercise", "questions", "device", "reason", "status"}``; each answer is
    ``{"ok": result}`` or ``{"error": text}``. Anything printed goes to stderr, never
    into the answers.
    """
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    lifecycle.exit_when_closed(sys.stdin.fileno())  # the batch is gone (even killed): so is this judge
    from grader import exercises, forkserver, grading

    forkserver.boot(heavy=True)  # this judge forks a worker per submission: load torch's lazy modules once

    configured_threads = None
    for line in sys.stdin:
        try:
            request = json.loads(line)
            exercise = exercises.load(request["exercise"])
            questions = exercise.select(tuple(request.get("questions") or ()))
            if request["op"] == "malformed":
                device = grading.resolve_device(request.get("device", "cpu"))
                reply = {"ok": malformed_result(exercise.name, [(q.id, q.title) for q in questions],
                                                grading.collect_points(exercise), request["reason"],
                                                status=request.get("status", "malformed"),
                                                graded_points=grading.collect_points(exercise, device))}
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
            traceback.print_exc()  # into the judge's log (RESULTS/.logs/judge-N.log)
            reply = {"error": f"{type(error).__name__}: {error}\n{traceback.format_exc()[-3000:]}"}
        replies.write(json.dumps(reply) + "\n")


def malformed_result(exercise: str, questions: list[tuple[str, str]], points: dict[str, float],
                     reason: str, status: str = "malformed",
                     graded_points: dict[str, float] | None = None) -> dict[str, Any]:
    """A result of 0 points for a submission that could not be graded (or was not submitted), with ``reason``.

    Args:
        points: all points per question (``grading.collect_points(exercise)``).
        graded_points: the points graded on this device (``collect_points(exercise, device)``;
            default ``points``), so that the totals match a graded learner's on the same device.
        status: ``malformed``, ``not_submitted`` or ``failed`` (the grading process died).
    """
    from grader import __version__
    from grader.scoring import question_block, totals

    graded_points = points if graded_points is None else graded_points
    blocks = [question_block(qid, title, [], score=0.0, max_score=float(graded_points.get(qid, 0.0)),
                             full_max_score=float(points.get(qid, 0.0))) for qid, title in questions]
    return {"exercise": exercise, "status": status, **totals(blocks), "kit_version": __version__, "error": reason,
            "questions": blocks}


class JudgeFailed(RuntimeError):
    """The judge process died or did not answer in time (it has been replaced)."""


class Interrupted(RuntimeError):
    """The batch is stopping (Ctrl-C): no judge may start."""


def _process_tree(root: int) -> set[int]:
    """``root``'s descendants now, from ``/proc`` (workers live in their own sessions, so a process
    group does not reach them); empty where there is no ``/proc``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, stack = set(), [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except (ProcessLookupError, PermissionError):
        pass


def kill_tree(pid: int) -> None:
    """Kill process ``pid`` and all its descendants at once: stop them all first (so none forks or
    is orphaned while the tree is read), then ``SIGKILL`` each."""
    _signal(pid, signal.SIGSTOP)
    stopped: set[int] = set()
    while found := _process_tree(pid) - stopped:
        for child in found:
            _signal(child, signal.SIGSTOP)
        stopped |= found
    for process in stopped | {pid}:
        _signal(process, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class Judge:
    """A judge process of the batch, restarted when it dies or hangs (never once ``stopping`` is set)."""

    def __init__(self, log: Path | None = None, stopping: threading.Event | None = None):
        self.log = log
        self.stopping = stopping or threading.Event()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the judge process.

        Raises:
            Interrupted: the batch is stopping.
        """
        if self.stopping.is_set():
            raise Interrupted("the batch was interrupted")
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
            Interrupted: the batch is stopping.
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
        if self.stopping.is_set():
            raise Interrupted("the batch was interrupted")
        if not line:
            code = self.process.poll()
            self.stop()
            raise JudgeFailed(f"the grading process ended unexpectedly (exit code {code})")
        return json.loads(line)

    def stop(self) -> None:
        """Let the judge finish (its stdin closed), killing it and its workers after 3 s."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            try:
                process.stdin.close()
                process.wait(3.0)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if process.poll() is None:
            kill_tree(process.pid)
            process.wait(5.0)
        self.process = None

    def kill(self) -> None:
        """Kill the judge and every process under it now (Ctrl-C); safe from another thread."""
        process = self.process
        if process is not None and process.poll() is None:
            kill_tree(process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5.0)


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


def _malformed_request(options: Options, reason: str, status: str = "malformed") -> dict[str, Any]:
    return {"op": "malformed", "exercise": options.exercise, "questions": list(options.questions),
            "device": options.device, "reason": reason, "status": status}


def prepare(task: Task, options: Options, scratch: Path) -> tuple[dict[str, Any], list[str]]:
    """The judge request for one learner (``grade`` with the unpacked folder, or ``malformed``) and the
    notes about their files (an older copy set aside, a file matching no question)."""
    if task.entry.kind == MISSING:
        return _malformed_request(options, task.entry.problem, status="not_submitted"), []
    try:
        folder = submissions.materialize(task.entry, scratch)
    except submissions.MalformedSubmission as error:
        return _malformed_request(options, str(error)), list(task.entry.notes)
    notes = submissions.plan_files(task.entry, folder, _modules(options)).notes
    return {"op": "grade", "exercise": options.exercise, "questions": list(options.questions),
            "folder": str(folder), "device": options.device, "memory_limit": options.memory_limit,
            "threads": options.threads}, notes


def grade_entry(judge: Judge, task: Task, options: Options, scratch: Path) -> dict[str, Any]:
    """The result document of one learner (never raises for a problem of the submission).

    Raises:
        Interrupted: the batch is stopping.
        RuntimeError: the judge reported a bug in the kit.
    """
    started = time.perf_counter()
    request, notes = prepare(task, options, scratch)
    result = ask(judge, request, options)
    if notes:
        result["submission_notes"] = notes
    result["duration_s"] = round(time.perf_counter() - started, 3)
    return result


def ask(judge: Judge, request: dict[str, Any], options: Options) -> dict[str, Any]:
    """The judge's result for ``request``; a judge that dies or hangs gives a ``failed`` result saying so.

    Raises:
        RuntimeError: the judge reported a bug in the kit (first line of its error).
    """
    try:
        reply = judge.ask(request, options.timeout)
    except JudgeFailed as error:
        reply = judge.ask(_malformed_request(options, str(error), status="failed"), options.timeout)
    if "ok" not in reply:
        raise RuntimeError(f"a judge failed ({reply['error'].splitlines()[0]}); its traceback is in "
                           "RESULTS/.logs/judge-N.log")
    return reply["ok"]


def _modules(options: Options) -> dict[str, str]:
    """Question id → module of the questions graded (``q1`` → ``q1_positional_encoding``)."""
    return dict(_question_modules(options.exercise, tuple(options.questions)))


@functools.lru_cache(maxsize=8)
def _question_modules(exercise: str, questions: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    from grader import exercises

    return tuple((q.id, q.module) for q in exercises.load(exercise).select(questions))


def feedback_markdown(result: dict[str, Any]) -> str:
    """The learner's feedback file: total, a line per question, the failing tests grouped by cause (messages)."""
    lines = [f"# {result['exercise']}: {result['score']:g}/{result['max_score']:g} points", ""]
    if result.get("skipped_points"):
        lines += [f"{result['skipped_points']:g} more points of tests that need a CUDA GPU were not graded "
                  f"here (out of {result['full_max_score']:g} in all).", ""]
    if result.get("error"):
        lines += ["**Your submission could not be graded:** " + result["error"], ""]
    if result.get("submission_notes"):
        lines += ["About your files:", "", *[f"- {note}" for note in result["submission_notes"]], ""]
    lines += ["| question | title | score | tests passed |", "|---|---|---|---|"]
    for question in result["questions"]:
        counted = [t for t in question["tests"] if t["outcome"] != "skipped"]
        passed = sum(t["outcome"] == "passed" for t in counted)
        lines.append(f"| {question['id']} | {question['title']} | {question['score']:g}/{question['max_score']:g} "
                     f"| {passed}/{len(counted)} |")
    for question in result["questions"]:
        if failures := failures_markdown(question, {q["id"] for q in result["questions"]}):
            lines += ["", f"## {question['id']} {question['title']}", *failures]
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
MISSING = "missing"  # the kind of an entry made for a roster row with no submission


@dataclass
class Summary:
    """What one ``run_batch`` did."""

    total: int = 0
    graded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # malformed, not gradable or not submitted
    duration_s: float = 0.0
    results: dict[str, dict] = field(default_factory=dict)  # learner folder -> result document (+ roster fields)


def entries(root: Path, exercise: str, people: list[roster.Person] | None = None
            ) -> tuple[list[submissions.Entry], dict[str, roster.Person]]:
    """The learners of the batch folder ``root``, plus one ``missing`` entry per roster row nobody
    submitted for; and the roster row of each learner matched."""
    found = submissions.discover(root, exercise)
    if not people:
        return found, {}
    matched, missing = roster.match(people, found)
    taken = {e.learner for e in found}
    for person in missing:
        key = submissions.learner_id(f"{person.name or person.id}_{person.id}" if person.id else person.name)
        while key in taken:
            key += "-roster"
        taken.add(key)
        found.append(submissions.Entry(key, Path(person.name or person.id), MISSING, name=person.name,
                                       lms_id=person.id, lms="roster", problem="no submission was found"))
        matched[key] = person
    return sorted(found, key=lambda e: e.learner), matched


def plan(exercise: str, root: Path, out: Path, *, questions: tuple[str, ...] = (), device: str = "cpu",
         force: bool = False, people: list[roster.Person] | None = None) -> tuple[list[Task], list[str]]:
    """The learners to grade now, and those already graded with the same key (skipped)."""
    kit = submissions.kit_hash(exercise, questions, device)
    todo, done = [], []
    for entry in entries(root, exercise, people)[0]:
        digest = submissions.entry_hash(entry) if entry.kind != MISSING else \
            hashlib.sha256(f"{MISSING}|{entry.display_name}|{entry.lms_id}".encode()).hexdigest()
        key = hashlib.sha256(f"{digest}|{kit}".encode()).hexdigest()
        previous = read_result(out, entry.learner)
        if not force and previous is not None and previous.get("batch", {}).get("key") == key:
            done.append(entry.learner)
        else:
            todo.append(Task(entry, key, digest))
    return todo, done


def dry_run(exercise: str, root: Path, *, questions: tuple[str, ...] = (),
            people: list[roster.Person] | None = None) -> list[str]:
    """What ``run_batch`` would grade, one learner per line (and a note per line under it); grades nothing."""
    options = Options(exercise, tuple(questions))
    modules = _modules(options)
    found, _ = entries(root, exercise, people)
    lines = []
    with tempfile.TemporaryDirectory(prefix="grade-dry-run-") as scratch:
        for entry in found:
            who = ", ".join(filter(None, [entry.lms if entry.lms != "plain" else "",
                                          f"id {entry.lms_id}" if entry.lms_id else "",
                                          "late" if entry.late else ""]))
            head = f"{entry.learner}: {entry.display_name}" + (f" ({who})" if who else "")
            if entry.kind == MISSING:
                lines.append(f"{head}: not submitted (on the roster)")
                continue
            try:
                folder = submissions.materialize(entry, Path(scratch) / entry.learner)
            except submissions.MalformedSubmission as error:
                lines.append(f"{head}: cannot be graded: {error}")
                continue
            mapped = submissions.plan_files(entry, folder, modules)
            shown = "; ".join(f"{qid} <- {mapped.questions[qid]}" if qid in mapped.questions else f"{qid}: no file"
                              for qid in modules)
            lines.append(f"{head}: {shown}")
            lines += [f"    note: {note}" for note in mapped.notes]
    return lines


def _run_local(tasks: list[Task], options: Options, jobs: int, out: Path,
               on_result: Callable[[Task, dict], None]) -> None:
    pending: queue.Queue = queue.Queue()
    for task in tasks:
        pending.put(task)
    errors: list[BaseException] = []
    stopping = threading.Event()
    logs = out / ".logs"
    logs.mkdir(parents=True, exist_ok=True)
    judges = [Judge(logs / f"judge-{i}.log", stopping) for i in range(max(1, min(jobs, len(tasks))))]

    def run(judge: Judge) -> None:
        try:
            with tempfile.TemporaryDirectory(prefix="grade-batch-") as scratch:
                while not errors and not stopping.is_set():
                    try:
                        task = pending.get_nowait()
                    except queue.Empty:
                        return
                    result = grade_entry(judge, task, options, Path(scratch) / task.entry.learner)
                    if stopping.is_set():
                        return
                    on_result(task, result)
        except Interrupted:
            return
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            errors.append(error)
        finally:
            if not stopping.is_set():
                judge.stop()

    threads = [threading.Thread(target=run, args=(judge,), daemon=True) for judge in judges]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except BaseException:
        stopping.set()
        for judge in judges:
            judge.kill()
        raise
    if errors:
        raise errors[0]


def run_batch(exercise: str, root: Path, out: Path, *, questions: tuple[str, ...] = (), jobs: int | None = None,
              device: str = "cpu", force: bool = False, memory_limit: int = 4 * 2**30,
              timeout: float = DEFAULT_TIMEOUT, scheduler: str | None = None, progress: bool = True,
              reports: bool = True, people: list[roster.Person] | None = None) -> Summary:
    """Grade every entry of ``root`` (a folder, or a whole-class zip) into ``out``; see the module docstring.

    Args:
        jobs: judges working in parallel (default: the number of cores).
        scheduler: a Dask scheduler address (``tcp://host:8786``): grade there instead of locally.
        progress: show a progress bar (done/total, failures, time left) on stderr.
        people: the roster: everyone on it who did not submit gets a ``not_submitted`` result.

    Raises:
        FileNotFoundError: ``root`` is neither a folder nor a zip.
        submissions.MalformedSubmission: the whole-class zip cannot be read.
        KeyboardInterrupt: interrupted; every learner written so far is kept (a rerun resumes).
    """
    started = time.perf_counter()
    with submissions.opened(root) as folder:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        jobs = jobs or os.cpu_count() or 1
        tasks, skipped = plan(exercise, folder, out, questions=questions, device=device, force=force, people=people)
        options = Options(exercise, tuple(questions), device, memory_limit,
                          threads=max(1, (os.cpu_count() or 1) // jobs), timeout=timeout)
        summary = Summary(total=len(tasks) + len(skipped), skipped=skipped)
        _grade(tasks, options, out, summary, jobs=jobs, scheduler=scheduler, progress=progress)
        found, matched = entries(folder, exercise, people)
    for entry in found:
        result = read_result(out, entry.learner)
        if result is not None:
            person = matched.get(entry.learner)
            summary.results[entry.learner] = {**result, **{k: v for k, v in person.fields().items() if v}} \
                if person else result
    summary.duration_s = round(time.perf_counter() - started, 3)
    if reports:
        from grader import class_report, exports

        exports.write_csv(summary.results, out / "grades.csv")
        exports.write_canvas_csv(summary.results, out / "canvas.csv", assignment=exercise)
        class_report.write(summary.results, out, title=f"{exercise} class report")
    return summary


def _grade(tasks: list[Task], options: Options, out: Path, summary: Summary, *, jobs: int, scheduler: str | None,
           progress: bool) -> None:
    """Grade ``tasks`` locally or on the Dask cluster, writing each learner as it is done."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    lock = threading.Lock()
    bar = Progress(TextColumn("[bold]grading[/]"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(), TextColumn("left"),
                   TimeRemainingColumn(), console=Console(stderr=True), disable=not progress, transient=False)
    handle = bar.add_task("grading", total=len(tasks), failed=0)

    def on_result(task: Task, result: dict[str, Any]) -> None:
        result.update(task.entry.identity())
        result["batch"] = {"key": task.key, "submission_hash": task.submission_hash,
                           "entry": task.entry.source, "graded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_learner(out, task.entry.learner, result)
        with lock:
            summary.graded.append(task.entry.learner)
            if result.get("error"):
                summary.failed.append(task.entry.learner)
            bar.update(handle, advance=1, failed=len(summary.failed))

    if scheduler:
        from grader import cluster

        with cluster.connect(scheduler) as client, bar:  # connected (or a usage error) before the bar shows
            cluster.run(tasks, options, client, on_result)
    else:
        with bar:
            _run_local(tasks, options, jobs, out, on_result)
