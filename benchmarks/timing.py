"""Wall time and machine time (CPU seconds of the whole process tree) of one command.

``grade`` is several processes: the judge, its fork server and the workers forked
from it. The fork server outlives the judge by a moment and is nobody's child once
the judge has exited, so ``time`` misses it; here the benchmark process makes itself
a *child subreaper* (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``): orphans of the tree are
re-parented to it, it reaps them, and ``getrusage(RUSAGE_CHILDREN)`` then counts
every process of the tree. Where that is not available (not Linux), machine time
is ``None``.
"""

from __future__ import annotations

import ctypes
import os
import resource
import statistics
import subprocess
import time
from dataclasses import dataclass

PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> bool:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


SUBREAPER = _become_subreaper()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _reap_orphans() -> None:
    """Wait for every process re-parented to us (a fork server finishing after its judge)."""
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


@dataclass
class Run:
    """One run: ``wall_s``, ``cpu_s`` (all processes of the tree; ``None`` without a subreaper), ``returncode``."""

    wall_s: float
    cpu_s: float | None
    returncode: int


def run(command: list[str], env: dict | None = None, cwd: str | None = None) -> Run:
    """Run ``command`` to its end (and its whole process tree), output discarded."""
    cpu = _children_cpu()
    started = time.perf_counter()
    process = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    if SUBREAPER:
        _reap_orphans()
    return Run(wall, _children_cpu() - cpu if SUBREAPER else None, process.returncode)


def load() -> str:
    """The 1-minute load average now, as ``uptime`` shows it (other work on the machine skews wall times)."""
    return f"{os.getloadavg()[0]:.1f}"


def summary(values: list[float]) -> str:
    """``min / median`` of ``values``, in seconds."""
    return f"{min(values):.2f} / {statistics.median(values):.2f}"
