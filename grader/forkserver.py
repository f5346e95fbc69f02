"""One fork server per grading process, preloaded with torch, that workers fork from.

Forking a worker from it costs tens of milliseconds instead of a fresh
interpreter and a torch import (seconds). The server itself never computes, so
its children do not inherit a busy OpenMP pool (which would hang them).
This module imports nothing heavy: ``grade`` calls :func:`boot` first thing, and
the server imports torch while the grading process imports it too.
The server exits when its grading process does, whatever ends it, and takes its
workers with it (``grader.lifecycle``).

As with any ``multiprocessing`` start method other than fork, a program that
starts workers must guard its main module with ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import threading
from multiprocessing import forkserver

# Imported by torch on first use of a dispatch mode, FlopCounterMode or checkpoint
# (torch._dynamo, ~3 s) and of backward with an explicit gradient (sympy, ~1 s).
HEAVY_MODULES = ("torch._dynamo", "torch.fx.experimental.symbolic_shapes")

os.environ.setdefault("MPLBACKEND", "Agg")  # figures are described, never shown
context = multiprocessing.get_context("forkserver")
# matplotlib.figure: most learner modules import it; grader.frozen last: gc.freeze() once all is loaded
PRELOAD = ["torch", "matplotlib.figure", "grader.worker", "grader.frozen"]
context.set_forkserver_preload(PRELOAD)  # whoever starts the first worker, without boot() too


def boot(heavy: bool = False) -> None:
    """Start the fork server now (idempotent; returns at once, the server loads in the background).

    ``heavy`` also preloads ``HEAVY_MODULES``: right for a process that forks many
    workers (a batch judge), where it saves seconds per submission; a single grade
    imports them in the worker instead (see :func:`prefetch`).
    """
    heavy_modules = list(HEAVY_MODULES) if heavy else []
    context.set_forkserver_preload(PRELOAD[:-1] + heavy_modules + PRELOAD[-1:])  # no effect once running
    forkserver.ensure_running()


_prefetching: threading.Thread | None = None


def prefetch() -> None:
    """Import ``HEAVY_MODULES`` in a background thread (a worker does this while the judge works).

    Python 3.11's ``ast`` is not thread-safe ("AST constructor recursion depth
    mismatch"), and importing torch._dynamo parses signatures with ``ast.parse``; so
    while the thread runs, ``ast.parse`` takes a lock, and code that builds ASTs
    another way (pytest's assertion rewriting) calls :func:`wait_for_prefetch` first.
    """
    global _prefetching
    import ast

    parse, lock = ast.parse, threading.Lock()

    def locked_parse(*args, **kwargs):
        with lock:
            return parse(*args, **kwargs)

    def load() -> None:
        try:
            for name in HEAVY_MODULES:
                importlib.import_module(name)
        finally:
            ast.parse = parse

    ast.parse = locked_parse
    _prefetching = threading.Thread(target=load, name="prefetch", daemon=True)
    _prefetching.start()


def wait_for_prefetch() -> None:
    """Block until a :func:`prefetch` in this process has finished (no-op without one)."""
    if _prefetching is not None:
        _prefetching.join()
