"""No process outlives ``grade`` or ``grade batch``, however they end (``grader.lifecycle``).

A learner's ``sinusoidal_table`` forks a child (which leaves the worker's session, out
of reach of the judge's ``killpg``), marks a file in its worker's folder and loops
forever, child and worker both at full CPU. Once every worker is looping,
``grade`` is killed with SIGTERM (it stops as on Ctrl-C: one line, exit 130) or
SIGKILL (nothing of it runs any more), and ``grade batch`` with SIGKILL; then no
process that the run started may remain: judges, fork servers, resource trackers,
workers and what learner code forked are found by a marker in their environment
(``conftest.marked_processes``). The waits are liveness deadlines, not timings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import Edit, make_submission, marked_processes

ROOT = Path(__file__).resolve().parent.parent
Q1 = "q1_positional_encoding.py"
SIGNATURE = "def sinusoidal_table(max_len: int, d_model: int, base: float = 10000.0) -> Tensor:\n"
LOOP = Edit("endless loop", Q1, ((SIGNATURE, SIGNATURE + (
    "    import os\n"
    "    if os.fork() == 0:  # a child of the learner's own, looping too, in a session of its own\n"
    "        os.setsid()\n"
    "    open(f'looping-{os.getpid()}', 'w').close()  # in the worker's folder\n"
    "    while True:\n"
    "        pass\n")),))
STARTED = 60  # seconds: a fresh interpreter imports torch on a loaded machine
GONE = 10  # seconds for every process to be gone once the run is killed

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's /proc")


def _start_looping(tmp_path: Path, *args: str, workers: int) -> tuple[subprocess.Popen, str]:
    """Start ``grade *args`` (its temporary folders in ``tmp_path/tmp``) and wait until ``workers`` loop."""
    marker = f"GRADE_TEST_{uuid.uuid4().hex}"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with open(tmp_path / "stderr", "w") as stderr:  # a file, not a pipe: what is left behind may hold it open
        run = subprocess.Popen([sys.executable, "-c", "from grader.cli import main; main()", *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                               env={**os.environ, marker: "1", "TMPDIR": str(scratch)})
    deadline = time.monotonic() + STARTED
    try:
        while len(list(scratch.glob("grade-worker-*/looping-*"))) < 2 * workers:  # each worker and its child
            assert run.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr").read_text()
            time.sleep(0.05)
    except BaseException:
        _left_after_kill(run, marker, signal.SIGKILL)  # nothing keeps running after a failed start
        raise
    return run, marker


def _left_after_kill(run: subprocess.Popen, marker: str, sig: signal.Signals) -> list[str]:
    """Send ``sig`` to the run; the command lines of its processes still alive ``GONE`` s later (then killed)."""
    os.kill(run.pid, sig)
    run.wait(GONE)
    deadline = time.monotonic() + GONE
    while marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = []
    for pid in marked_processes(marker):
        try:
            left.append(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:100])
            os.kill(pid, signal.SIGKILL)  # never leave a loop burning the machine's CPU
        except OSError:
            continue
    return left


@pytest.fixture(scope="module")
def looping(tmp_path_factory) -> Path:
    return make_submission(tmp_path_factory.mktemp("lifecycle"), LOOP)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_grade_leaves_no_worker_nor_fork_server(tmp_path, looping, sig):
    run, marker = _start_looping(tmp_path, "ex4", "q1", "--submission", str(looping), workers=1)
    assert len(marked_processes(marker)) >= 4, "grade, its fork server, a worker and its child should be running"
    assert _left_after_kill(run, marker, sig) == []
    if sig == signal.SIGTERM:  # stopped as on Ctrl-C: one line, no partial report
        assert (run.returncode, (tmp_path / "stderr").read_text()) == (130, "interrupted\n")
    else:
        assert run.returncode == -signal.SIGKILL


def test_killed_batch_leaves_no_judge_nor_worker(tmp_path, looping):
    subs = tmp_path / "subs"
    for learner in ("ann", "ben"):
        (subs / learner).mkdir(parents=True)
        (subs / learner / Q1).write_text((looping / Q1).read_text())
    run, marker = _start_looping(tmp_path, "batch", "ex4", str(subs), "--out", str(tmp_path / "results"), "-q", "q1",
                                 "-j", "2", "--no-progress", workers=2)
    assert _left_after_kill(run, marker, signal.SIGKILL) == []
    assert not list((tmp_path / "results").glob("*/result.json"))  # nobody was graded: a rerun grades both
