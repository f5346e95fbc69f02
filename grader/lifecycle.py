"""Processes that never outlive the process they serve.

A worker's parent is the fork server, not its judge, and ``multiprocessing``
hands every worker a copy of the fork server's "alive" pipe (so that a worker
could start processes of its own through the same server). That copy is why a
killed judge used to leave its fork server and a looping worker behind: the
server exits when every copy of the pipe is closed, and the worker kept one.

The chain now, whatever ends the judge (SIGTERM, SIGKILL, a crash):

1. the judge's end of the alive pipe closes, and no worker holds a copy
   (:func:`bind_worker` closes it), so the fork server sees end-of-file and exits;
2. each worker dies with its parent, the fork server (``PR_SET_PDEATHSIG``: the
   kernel sends SIGKILL, which learner code cannot catch, even in a loop in C
   that holds the GIL), and so do the processes learner code forks (the same
   signal, set in every child :func:`os.fork` makes);
3. a watchdog thread in each worker also ends it as soon as the judge's end of
   its connection closes (:func:`exit_when_closed`), which covers a fork server
   that died before the worker set its death signal.

A batch judge runs the same watchdog on its standard input, the batch's pipe,
so a killed batch leaves no judge grading on (``grader.batch.serve``). And
``grade`` stops on SIGTERM as on Ctrl-C (:func:`terminate_as_interrupt`): its
workers stopped, one line, exit 130.

Not covered: a program learner code starts with ``subprocess`` in a session of its
own (no fork hook runs there; possible only with ``--no-sandbox``: in the sandbox no
program but the interpreter may run, and it cannot start), and a forked child in a
session of its own that clears its death signal (``prctl``) on purpose. Landlock's signal scope does not
stop any of this chain: the kernel sends a death signal on behalf of the parent.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import threading
from typing import Iterator

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
EXIT_ORPHANED = 70  # the exit code of a process whose judge (or batch) is gone; nobody reads it


def die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when its parent thread ends (Linux; elsewhere nothing).

    Returns whether the death signal is set. Not inherited by children: see :func:`bind_worker`.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0


def exit_when_closed(fd: int) -> threading.Thread:
    """Start a daemon thread that ends this process (``os._exit``) once the other end of ``fd`` is closed.

    ``fd`` is a socket or the read end of a pipe. The thread sleeps in ``poll`` for a
    hang-up only (data waiting to be read does not wake it), so it costs nothing
    until then; it needs the GIL for a moment to exit, which Python code running in
    another thread gives up within milliseconds.
    """
    poller = select.poll()
    fd = os.dup(fd)  # its own copy: what later replaces ``fd`` (pytest puts /dev/null over stdin) cannot blind it
    poller.register(fd, getattr(select, "POLLRDHUP", 0))  # POLLHUP, POLLERR and POLLNVAL are always reported

    def watch() -> None:
        while True:
            if any(events & ~select.POLLIN for _, events in poller.poll()):
                os._exit(EXIT_ORPHANED)

    thread = threading.Thread(target=watch, name="judge-watchdog", daemon=True)
    thread.start()
    return thread


def bind_worker(conn) -> None:
    """Tie this worker's life to its judge's (the chain in the module's docstring); called once, in the worker.

    Call it after the sandbox is applied (``grader.worker.main``): Landlock restricts
    only the threads started after it, and the watchdog is one.
    """
    from multiprocessing import forkserver

    alive = forkserver._forkserver._forkserver_alive_fd
    if alive is not None:  # the fork server's alive pipe: the judge's copy must be the last one
        os.close(alive)
        forkserver._forkserver._forkserver_alive_fd = None
    if die_with_parent():
        os.register_at_fork(after_in_child=die_with_parent)
    exit_when_closed(conn.fileno())


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside, SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does (``grader.cli``); the handler is restored after.

    Only a program's main thread can set signal handlers: elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
