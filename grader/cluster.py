"""Grading a batch on a Dask distributed cluster: ``grade batch ... --scheduler tcp://HOST:PORT``.

Needs the optional extra ``pip install -e ".[cluster]"`` here and on every Dask
worker (the same kit version: each result carries the worker's kit hash and a
mismatch is refused). The batch process packs each submission (its answer folder
as zip bytes), and one task per learner runs :func:`grade_packed` on a Dask
worker (an entry that cannot be graded ships no files: :func:`settle` gives its
zero result, whose totals need the suites). There a judge
process (``grader.batch.Judge``, one per Dask worker process, reused across
tasks) grades it exactly as the local pool does: every submission in its own
isolated worker process with the per-call time limit and memory cap. Results
come back as result documents and are written into the same RESULTS layout, as
each one arrives. An unreachable scheduler is a usage error within
``CONNECT_TIMEOUT`` seconds.
"""

from __future__ import annotations

import io
import socket
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from grader import batch, submissions

_judge_process: batch.Judge | None = None  # one per Dask worker process
_lock = threading.Lock()


def pack(folder: Path) -> bytes:
    """The answer folder's files as zip bytes (what is shipped to the Dask worker)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and "__pycache__" not in relative.parts:
                archive.write(path, str(relative))
    return buffer.getvalue()


CONNECT_TIMEOUT = 5.0  # seconds to reach the scheduler before giving up (a usage error)


def _judge() -> batch.Judge:
    global _judge_process
    if _judge_process is None:
        _judge_process = batch.Judge()
    return _judge_process


def grade_packed(learner: str, payload: bytes, options: dict[str, Any], kit: str) -> dict[str, Any]:
    """Run on a Dask worker: unpack ``payload`` and grade it with this process's judge.

    Raises:
        RuntimeError: this worker's kit differs from the batch's (``kit`` hash).
    """
    opts = batch.Options(**options)
    here = submissions.kit_hash(opts.exercise, opts.questions, opts.device)
    if here != kit:
        raise RuntimeError("the kit installed on this Dask worker differs from the one running the batch: "
                           "install the same version everywhere")
    with _lock, tempfile.TemporaryDirectory(prefix="grade-dask-") as scratch:
        archive = Path(scratch) / f"{learner}.zip"
        archive.write_bytes(payload)
        task = batch.Task(submissions.Entry(learner, archive, "zip"), key="", submission_hash="")
        return batch.grade_entry(_judge(), task, opts, Path(scratch) / "unpacked")


def settle(request: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Run on a Dask worker: the result of a ``malformed`` request (its totals need the suites)."""
    with _lock:
        return batch.ask(_judge(), request, batch.Options(**options))


def _probe(scheduler: str) -> None:
    """Open and close a TCP connection to a ``tcp://``/``tls://`` address (or ``HOST:PORT``).

    Raises:
        OSError: nothing answers there within ``CONNECT_TIMEOUT`` seconds (refused at once, usually).
    """
    parts = urlsplit(scheduler if "://" in scheduler else f"tcp://{scheduler}")
    if parts.scheme in ("tcp", "tls") and parts.hostname and parts.port:
        socket.create_connection((parts.hostname, parts.port), timeout=CONNECT_TIMEOUT).close()


def connect(scheduler: str):
    """A ``distributed.Client`` of the scheduler at ``scheduler``.

    Raises:
        click.UsageError: Dask is not installed, or the scheduler cannot be reached within
            ``CONNECT_TIMEOUT`` seconds (the message names the address).
    """
    import click

    try:
        _probe(scheduler)
        from distributed import Client

        return Client(scheduler, timeout=CONNECT_TIMEOUT)
    except ImportError:  # pragma: no cover - depends on the optional extra
        raise click.UsageError('--scheduler needs Dask: pip install -e ".[cluster]"') from None
    except Exception as error:  # noqa: BLE001 - whatever answers there (or not) is not a bug of the kit
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if not isinstance(error, (OSError, TimeoutError, ValueError)):
            reason = f"what answers there is not a Dask scheduler: {type(error).__name__}: {reason}"
        raise click.UsageError(f"cannot reach the Dask scheduler at {scheduler} within {CONNECT_TIMEOUT:g} s "
                               f"({reason[:200]}): is `dask scheduler` running there?") from None


def run(tasks: list[batch.Task], options: batch.Options, client,
        on_result: Callable[[batch.Task, dict], None]) -> None:
    """Grade ``tasks`` on the cluster of ``client`` (from :func:`connect`), calling ``on_result`` as each finishes.

    Raises:
        KeyboardInterrupt: interrupted; the tasks still queued are cancelled.
    """
    from distributed import as_completed

    kit = submissions.kit_hash(options.exercise, options.questions, options.device)
    futures: dict[Any, tuple[batch.Task, list[str]]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="grade-pack-") as scratch:
            for task in tasks:
                request, notes = batch.prepare(task, options, Path(scratch) / task.entry.learner)
                if request["op"] == "malformed":
                    future = client.submit(settle, request, vars(options), pure=False)
                else:
                    future = client.submit(grade_packed, task.entry.learner, pack(Path(request["folder"])),
                                           vars(options), kit, key=f"grade-{task.entry.learner}-{task.key[:12]}",
                                           pure=False)
                futures[future] = (task, notes)
        for future in as_completed(futures):
            task, notes = futures[future]
            result = future.result()
            if notes:
                result["submission_notes"] = notes
            on_result(task, result)
    except BaseException:
        client.cancel(list(futures))
        raise
