"""One fork server per grading process, preloaded with torch, that workers fork from.

Forking a worker from it costs tens of milliseconds instead of a fresh
interpreter and a torch import (seconds). The server itself never computes, so
its children do not inherit a busy OpenMP pool (which would hang them).
This module imports nothing heavy: ``grade`` calls :func:`boot` first thing, and
the server imports torch while the grading process imports it too.

As with any ``multiprocessing`` start method other than fork, a program that
starts workers must guard its main module with ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing import forkserver

context = multiprocessing.get_context("forkserver")
context.set_forkserver_preload(["torch", "grader.worker"])


def boot() -> None:
    """Start the fork server now (idempotent; returns at once, the server loads in the background)."""
    forkserver.ensure_running()
