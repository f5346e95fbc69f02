"""The worker's sandbox (grader/sandbox.py): hostile submissions graded with it on gain nothing and harm no one.

Each probe runs learner code that tries what a determined learner would (read the
reference, the hidden suites, the model answers, another learner's folder; connect to
a port; write outside its folder; signal the judge; a 10 GB file; many processes) and
prints what happened; the tests check that each attempt failed in the kernel
(PermissionError) and left no trace. One probe is also graded without the sandbox
(``GRADE_SANDBOX=off``) to show that the test tells the difference.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import time

import pytest
from click.testing import CliRunner

from conftest import EXERCISES, ROOT, SOLUTIONS, Edit, grade, make_submission, messages, question
from grader import sandbox

pytestmark = pytest.mark.skipif(sandbox.unavailable() is not None,
                                reason=f"no Landlock sandbox here: {sandbox.unavailable()}")

Q1, Q4 = "q1_positional_encoding.py", "q4_normalization.py"
IMPORTS = "import torch\n"
TRY = '''
def _try(what, action):
    try:
        action()
        print("GOT", what, flush=True)
    except OSError as error:
        print("DENIED", what, type(error).__name__, flush=True)
'''


def at_import(code: str) -> tuple[tuple[str, str], ...]:
    return ((IMPORTS, IMPORTS + TRY + code + "\n"),)


def printed(block: dict) -> str:
    return "\n".join(t.get("output", "") for t in block["tests"])


# ------------------------------------------------------------------ exec the reference from disk
STEAL = TRY + f'''
import glob, re, sysconfig
_paths = [{str(ROOT / "reference" / "normalization.py")!r}]
for _finder in glob.glob(sysconfig.get_paths()["purelib"] + "/__editable__*finder.py"):  # the editable install's map
    _try("finder", lambda: _paths.extend(m + "/normalization.py" for m in
         re.findall(r"'reference': '([^']+)'", open(_finder).read())))
for _path in _paths:
    _try("reference source", lambda: exec(compile(open(_path).read(), _path, "exec"), globals()))
'''


@pytest.fixture(scope="module")
def stub_q4():
    return question(grade(EXERCISES, "q4"), "q4")


def test_exec_of_the_reference_scores_what_a_stub_scores(tmp_path, stub_q4, monkeypatch):
    stub = (EXERCISES / Q4).read_text()
    folder = make_submission(tmp_path, Edit("steal", Q4, ((stub, stub + STEAL),)), source=EXERCISES)
    q4 = question(grade(folder, "q4"), "q4")
    assert q4["score"] == stub_q4["score"] < q4["max_score"], messages(q4)
    assert "DENIED reference source PermissionError" in printed(q4) and "GOT" not in printed(q4)
    monkeypatch.setenv(sandbox.ENV, "off")  # the same code without the sandbox: the theft works
    unsandboxed = grade(folder, "q4")
    assert unsandboxed["sandbox"]["files"] is False
    assert question(unsandboxed, "q4")["score"] > stub_q4["score"]


# ------------------------------------------------------------------ one submission, many attempts at import
HARMLESS = ["hidden suite", "model answer", "editable finder", "connect", "write outside", "judge command line",
            "list processes"]  # harmless to this test run when they succeed (graded without the sandbox too)


def _probe(root, harmful: bool) -> dict:
    """Grade q1 and q3 with probes at q1's import; what it printed, whether the listener saw a connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    outside = root / "outside.txt"
    code = f'''
import glob, os, signal, socket, sys, sysconfig, threading
_try("hidden suite", lambda: open({str(next((ROOT / "grader" / "suites" / "ex4").glob("q1_*.py")))!r}).read())
_try("model answer", lambda: open({str(SOLUTIONS / Q4)!r}).read())
_try("editable finder", lambda: [open(p).read() for p in
     glob.glob(sysconfig.get_paths()["purelib"] + "/__editable__*") or [{str(ROOT / "README.md")!r}]])
_try("connect", lambda: socket.create_connection(("127.0.0.1", {listener.getsockname()[1]}), timeout=2))
_try("write outside", lambda: open({str(outside)!r}, "w").write("x"))
_try("judge command line", lambda: open("/proc/{os.getpid()}/cmdline").read())
_try("list processes", lambda: os.listdir("/proc"))
if {harmful}:
    _try("write home", lambda: open({os.path.expanduser("~/grade-sandbox-probe.txt")!r}, "w").write("x"))
    _try("signal fork server", lambda: os.kill(os.getppid(), signal.SIGTERM))
    _try("signal judge", lambda: os.kill({os.getpid()}, 0))
def _ten_gb():
    with open("big.bin", "wb") as file:
        for gb in range(10):  # sparse: 1 MiB at each GiB, so a failure writes 10 MiB, not 10 GB
            file.seek(gb * 2**30)
            file.write(b"x" * 2**20)
_try("ten GB file", _ten_gb)
_try("write own folder", lambda: open("mine.txt", "w").write("x"))
for _thread in threading.enumerate():
    if _thread.name == "prefetch":
        _thread.join()
print("PREFETCHED", "torch._dynamo" in sys.modules, flush=True)
'''
    folder = make_submission(root, Edit("probe", Q1, at_import(code)))
    result = grade(folder, "q1", "q3", time_limit=5.0)
    listener.settimeout(0.5)
    try:
        listener.accept()
        connected = True
    except socket.timeout:
        connected = False
    listener.close()
    return {"result": result, "printed": printed(question(result, "q1")), "outside": outside, "connected": connected}


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    return _probe(tmp_path_factory.mktemp("probe"), harmful=True)


def test_without_the_sandbox_the_probes_get_through(tmp_path, monkeypatch):
    """The probes below can tell: with ``GRADE_SANDBOX=off`` each harmless one succeeds."""
    monkeypatch.setenv(sandbox.ENV, "off")
    unsandboxed = _probe(tmp_path, harmful=False)
    for what in HARMLESS:
        assert f"GOT {what}" in unsandboxed["printed"], unsandboxed["printed"]
    assert unsandboxed["outside"].exists() and unsandboxed["connected"]
    assert "DENIED ten GB file OSError" in unsandboxed["printed"]  # the limits stay


@pytest.mark.parametrize("what", [w for w in HARMLESS if w != "connect"])
def test_files_outside_the_allowed_ones_are_refused(probed, what):
    assert f"DENIED {what} PermissionError" in probed["printed"], probed["printed"]


def test_no_trace_outside_and_the_own_folder_is_writable(probed):
    assert not probed["outside"].exists()
    assert not os.path.exists(os.path.expanduser("~/grade-sandbox-probe.txt"))
    assert "DENIED write home PermissionError" in probed["printed"]
    assert "GOT write own folder" in probed["printed"]


def test_no_tcp_connection(probed):
    assert "DENIED connect PermissionError" in probed["printed"]
    assert not probed["connected"]


def test_no_signal_to_the_judge_or_the_fork_server(probed):
    assert "DENIED signal fork server PermissionError" in probed["printed"]
    assert "DENIED signal judge PermissionError" in probed["printed"]


def test_a_file_stops_at_the_size_limit(probed):
    assert "DENIED ten GB file OSError" in probed["printed"]  # EFBIG: File too large


def test_the_submission_is_graded_as_usual_with_every_layer_recorded(probed):
    result = probed["result"]
    assert result["sandbox"]["files"] and result["sandbox"]["network"] and result["sandbox"]["limits"]
    assert result["sandbox"]["signals"] == (sandbox.abi() >= 6)
    assert result["sandbox"]["landlock_abi"] == sandbox.abi()
    for qid in ("q1", "q3"):
        block = question(result, qid)
        assert block["score"] == block["max_score"], messages(block)
    assert "PREFETCHED True" in probed["printed"]  # torch's heavy modules import in a thread started after it


# ------------------------------------------------------------------ processes
def test_processes_the_code_starts_end_with_it(tmp_path):
    bomb = ("    import os, time\n    pids = []\n    for _ in range(16):  # bounded: a shared machine\n"
            "        pid = os.fork()\n        if pid == 0:\n            time.sleep(600)\n            os._exit(0)\n"
            "        pids.append(pid)\n    print('FORKED', *pids, flush=True)\n    while True: time.sleep(0.01)\n")
    edit = Edit("fork bomb", Q1, (("\n    # BEGIN SOLUTION\n", f"\n    # BEGIN SOLUTION\n{bomb}"),))
    q1 = question(grade(make_submission(tmp_path, edit), "q1", time_limit=1.0), "q1")
    assert q1["score"] == 0 and "did not return within" in messages(q1)
    pids = [int(p) for line in printed(q1).splitlines() if line.startswith("FORKED") for p in line.split()[1:]]
    assert len(pids) >= 16
    for _ in range(100):  # reaped by init once the judge has killed the worker's process group
        alive = [p for p in pids if _alive(p)]
        if not alive:
            break
        time.sleep(0.05)
    assert not alive


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------ a batch: other learners' folders and results
def test_in_a_batch_other_learners_are_out_of_reach(tmp_path):
    from grader import batch

    subs, out = tmp_path / "subs", tmp_path / "out"
    solution = (SOLUTIONS / Q1).read_text()
    attack = f'''
import glob
_try("other learner's answer", lambda: open({str(subs / "alice" / Q1)!r}).read())
_try("list submissions", lambda: glob.glob({str(subs)!r} + "/*") or open({str(subs / "alice" / Q1)!r}))
_try("overwrite result", lambda: open({str(out / "alice" / "result.json")!r}, "w").write('{{"score": 0}}'))
_try("overwrite grades", lambda: open({str(out / "grades.csv")!r}, "w").write("alice,0\\n"))
import os, signal
_try("kill the fork server", lambda: os.kill(os.getppid(), signal.SIGTERM))  # the worker's parent
_try("kill the judge", lambda: os.kill(os.getpgid(os.getppid()), signal.SIGTERM))  # the fork server's group: its judge
_try("signal the batch", lambda: os.kill({os.getpid()}, 0))  # 0: a regression fails this test, not the run
'''
    for name, text in {"alice": solution, "mallory": solution.replace(IMPORTS, IMPORTS + TRY + attack, 1),
                       "zoe": solution}.items():
        (subs / name).mkdir(parents=True)
        (subs / name / Q1).write_text(text)
    summary = batch.run_batch("ex4", subs, out, questions=("q1",), jobs=1, progress=False)
    results = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/result.json")}
    assert sorted(results) == ["alice", "mallory", "zoe"] and len(summary.results) == 3
    for name in results:
        assert results[name]["score"] == results[name]["max_score"] > 0, name
        assert results[name]["sandbox"]["files"], name
    said = printed(question(results["mallory"], "q1"))
    for what in ("other learner's answer", "list submissions", "overwrite result", "overwrite grades",
                 "kill the fork server", "kill the judge", "signal the batch"):
        assert f"DENIED {what} PermissionError" in said, said
    with open(out / "grades.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    assert len(rows) == 3 and all(float(row["total"]) > 0 for row in rows), rows


# ------------------------------------------------------------------ the model answers and the command line
def test_model_answers_keep_full_marks_in_the_sandbox():
    result = grade(SOLUTIONS)
    assert result["sandbox"]["files"] and result["sandbox"]["network"]
    assert result["score"] == result["max_score"], [(q["id"], messages(q)) for q in result["questions"]
                                                    if q["score"] < q["max_score"]]


@pytest.mark.parametrize("command", [["batch", "ex4", "subs", "--out", "out"], ["gradescope", "ex4"]])
def test_batch_and_gradescope_refuse_without_a_sandbox(command, monkeypatch, tmp_path):
    from grader.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "subs").mkdir()
    monkeypatch.setattr(sandbox, "unavailable", lambda: "this kernel has no Landlock")
    if command[0] == "gradescope":
        command = command + ["--submission-dir", "subs", "--results", "results.json"]
    outcome = CliRunner().invoke(main, command)
    assert outcome.exit_code == 2, outcome.output
    assert outcome.output == (f"Error: grade {command[0]}: no sandbox for learner code here (this kernel has no "
                              "Landlock); grade inside a container and pass --no-sandbox\n")


def test_a_learner_grades_without_a_sandbox_with_a_notice(monkeypatch):
    from grader.cli import main

    monkeypatch.setattr(sandbox, "unavailable", lambda: "Landlock is Linux-only (this is darwin)")
    outcome = CliRunner().invoke(main, ["ex4", "q8", "--solutions"])
    assert outcome.exit_code == 0, outcome.output
    notice = [line for line in outcome.output.splitlines() if "sandbox" in line]
    assert notice == ["note: no sandbox here (Landlock is Linux-only (this is darwin)): your code runs with your own "
                      "rights"], outcome.output


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to become an unprivileged user (nobody) in a child")
def test_an_unprivileged_worker_cannot_fork_without_bound(monkeypatch):
    """As a user other than root, RLIMIT_NPROC stops a fork bomb (root is never limited: the kernel's rule)."""
    monkeypatch.setattr(sandbox, "PROCESS_ALLOWANCE", 16)  # fewer forks on a shared machine
    with open("/proc/loadavg") as loadavg:  # the tasks on the machine: nobody's limit is this + 16
        bound = int(loadavg.read().split()[3].split("/")[1]) + 16 + 256  # + 256: tasks started meanwhile
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nobody, limited, forks sleepers until refused (at most the limit + 1 times)
        os.close(read)
        children, outcome = [], "not refused"
        try:
            os.setgid(65534)
            os.setuid(65534)
            sandbox._limits()
            for _ in range(bound):
                child = os.fork()
                if child == 0:
                    time.sleep(60)
                    os._exit(0)
                children.append(child)
        except BlockingIOError:
            outcome = "refused"
        finally:
            for child in children:
                os.kill(child, 9)
                os.waitpid(child, 0)
            os.write(write, outcome.encode())
            os._exit(0)
    os.close(write)
    outcome = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    assert outcome == "refused"


def test_a_package_outside_the_sandbox_is_refused_in_one_line(tmp_path):
    """click is installed (the kit uses it) but is no package learner code may use."""
    edit = Edit("import click", Q1, ((IMPORTS, IMPORTS + "import click\n"),))
    q1 = question(grade(make_submission(tmp_path, edit), "q1"), "q1")
    assert q1["score"] == 0
    assert "import of 'click' is not allowed in graded code: it may import the standard library, torch" in messages(q1)
    assert "PermissionError" not in messages(q1)


def test_no_sandbox_grades_anyway(monkeypatch, tmp_path):
    from grader.cli import main

    monkeypatch.setenv(sandbox.ENV, "on")  # restored afterwards: --no-sandbox sets it to off in this process
    monkeypatch.setattr(sandbox, "unavailable", lambda: "this kernel has no Landlock")
    outcome = CliRunner().invoke(main, ["gradescope", "ex4", "q8", "--submission-dir", str(SOLUTIONS), "--results",
                                        str(tmp_path / "results.json"), "--device", "cpu", "--no-sandbox"])
    assert outcome.exit_code == 0, outcome.output
    assert os.environ[sandbox.ENV] == "off" and (tmp_path / "results.json").exists()
