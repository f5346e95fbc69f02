"""Grading a batch on a Dask distributed cluster: ``grade batch ... --scheduler tcp://HOST:PORT``.

Needs the optional extra ``pip install -e ".[cluster]"`` here and on every Dask
worker (the same kit version: each result carries the worker's kit hash and a
mismatch is refused). The batch process packs each submission (its answer folder
as zip bytes; malformed entries are settled locally and never shipped), and one
task per learner runs :func:`grade_packed` on a Dask worker. There a judge
process (``grader.batch.Judge``, one per Dask worker process, reused across
tasks) grades it exactly as the local pool does: every submission in its own
isolated worker process with the per-call time limit and memory cap. Results
come back as result documents and are written into the same RESULTS layout, as
each one arrives.
"""

from __future__ import annotations

import io
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any, Callable

from grader import batch, submissions

_judge: batch.Judge | None = None
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


def grade_packed(learner: str, payload: bytes, options: dict[str, Any], kit: str) -> dict[str, Any]:
    """Run on a Dask worker: unpack ``payload`` and grade it with this process's judge.

    Raises:
        RuntimeError: this worker's kit differs from the batch's (``kit`` hash).
    """
    global _judge
    opts = batch.Options(**options)
    here = submissions.kit_hash(opts.exercise, opts.questions, opts.device)
    if here != kit:
        raise RuntimeError("the kit installed on this Dask worker differs from the one running the batch: "
                           "install the same version everywhere")
    with _lock, tempfile.TemporaryDirectory(prefix="grade-dask-") as scratch:
        archive = Path(scratch) / f"{learner}.zip"
        archive.write_bytes(payload)
        if _judge is None:
            _judge = batch.Judge()
        task = batch.Task(submissions.Entry(learner, archive, "zip"), key="", submission_hash="")
        return batch.grade_entry(_judge, task, opts, Path(scratch) / "unpacked")


def run(tasks: list[batch.Task], options: batch.Options, scheduler: str,
        on_result: Callable[[batch.Task, dict], None]) -> None:
    """Grade ``tasks`` on the cluster at ``scheduler``, calling ``on_result`` as each finishes."""
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - depends on the optional extra
        import click

        raise click.UsageError('--scheduler needs Dask: pip install -e ".[cluster]"') from None
    kit = submissions.kit_hash(options.exercise, options.questions, options.device)
    local: list[tuple[batch.Task, dict]] = []
    with Client(scheduler) as client:
        futures = {}
        with tempfile.TemporaryDirectory(prefix="grade-pack-") as scratch:
            for task in tasks:
                try:
                    folder = submissions.materialize(task.entry, Path(scratch) / task.entry.learner)
                except submissions.MalformedSubmission as error:
                    local.append((task, str(error)))
                    continue
                future = client.submit(grade_packed, task.entry.learner, pack(folder), vars(options), kit,
                                       key=f"grade-{task.entry.learner}-{task.key[:12]}", pure=False)
                futures[future] = task
        if local:
            # malformed entries: the zero result needs the question points, which one judge task gives
            for task, reason in local:
                result = client.submit(_malformed, reason, vars(options), pure=False).result()
                on_result(task, result)
        for future in as_completed(futures):
            on_result(futures[future], future.result())


def _malformed(reason: str, options: dict[str, Any]) -> dict[str, Any]:
    global _judge
    opts = batch.Options(**options)
    with _lock:
        if _judge is None:
            _judge = batch.Judge()
        reply = _judge.ask({"op": "malformed", "exercise": opts.exercise, "questions": list(opts.questions),
                            "reason": reason}, opts.timeout)
    if "ok" not in reply:
        raise RuntimeError(reply.get("error", "malformed result failed"))
    return reply["ok"]
