"""The judge's side of the seam: a worker process and proxies to learner objects.

Hidden suites never import learner code. They get a :class:`Learner` (the
``learner`` fixture) whose attributes are the submission's modules
(``learner.q1`` is ``q1_*.py``), and every attribute read, call or method call on
what it hands out runs in the worker (``grader.worker``). Tensors and plain data
come back; other objects come back as :class:`Remote` proxies.

When learner code hangs past the time limit, crashes the process or exceeds the
memory cap, the call raises :class:`WorkerDied` with a plain-words message, the
worker is replaced, and the next request goes to a fresh one.
"""

from __future__ import annotations

import builtins
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from grader import protocol
from grader.forkserver import context as _context
from grader.figures import FigureInfo
from grader.protocol import FIGURE, REMOTE, Ref
from grader.report import printable

KIT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TIME_LIMIT = 10.0  # seconds per call into learner code
DEFAULT_MEMORY_LIMIT = 4 * 2**30  # bytes of address space / resident memory above the worker's start
MAX_SUBMISSION_BYTES = 20 * 2**20  # .py files copied into the worker's folder
MAX_OUTPUT_BYTES = 64 * 2**10  # of what learner code printed during one test (its head and tail when longer)


class LearnerError(Exception):
    """Learner code raised an exception in the worker.

    Builtin exception types are re-raised as subclasses of both this class and the
    builtin (``LearnerError[ValueError]``), so ``pytest.raises(ValueError)`` works.
    """

    origin = ""  # the submission file (relative) where the error arose, when the worker could tell

    def __init__(self, type_name: str, message: str, learner_traceback: str, call: str):
        super().__init__(message)
        self.type_name, self.message, self.learner_traceback, self.call = type_name, message, learner_traceback, call

    def __str__(self) -> str:
        return f"{self.call} raised {self.type_name}: {self.message}"


_error_types: dict[str, type] = {}


def _learner_error(info: dict, call: str) -> LearnerError:
    base = getattr(builtins, info["type"], None) if info.get("builtin") else None
    cls = LearnerError
    if isinstance(base, type) and issubclass(base, Exception) and not issubclass(base, LearnerError):
        cls = _error_types.setdefault(info["type"], type(f"Learner{info['type']}", (LearnerError, base), {}))
    error = cls.__new__(cls)
    LearnerError.__init__(error, info["type"], info["message"], info["traceback"], call)
    error.origin = info.get("origin", "")  # the submission file where it arose (see grader.worker)
    return error


class WorkerDied(Exception):
    """The worker was killed (time limit, memory cap) or ended itself (crash, ``os._exit``)."""


class ImportFailed(Exception):
    """A question module of the submission could not be imported.

    Not a :class:`LearnerError` nor a builtin exception type: a suite that expects
    learner code to raise (``except ValueError``, ``except LearnerError``) never
    takes a module that did not load for the answer it waited for. Its message is
    the learner-facing text (see :func:`import_failure`).
    """


_QUESTION_FILE = re.compile(r"(q\d+)(?:_\w*)?\.py")


def import_failure(module: str, error: LearnerError) -> ImportFailed:
    """The :class:`ImportFailed` for ``import <module>`` that raised ``error`` in the worker.

    When the error arose in another question's file (``q2_encoder.py`` runs
    ``from q1_positional_encoding import ...`` and q1 has a syntax error), the
    message's first line blames that module: ``q2 imports q1, which did not
    import: fix q1 first``; the error itself follows on the next lines.
    """
    origin = _QUESTION_FILE.fullmatch(error.origin)
    if origin and origin[1] != module:
        return ImportFailed(f"{module} imports {origin[1]}, which did not import: fix {origin[1]} first\n"
                            f"import {origin[1]} raised {error.type_name}: {error.message}")
    return ImportFailed(f"{error}" + (f"\n{error.learner_traceback.rstrip()}" if error.learner_traceback else ""))


class WorkerProcess:
    """One worker process serving one submission; restarted after it dies.

    Args:
        submission: folder holding the learner's ``q*.py`` files (copied, never run in place).
        time_limit: default seconds per call into learner code (a test's ``time_limit`` marker overrides).
        prefetch: import torch's heavy lazy modules in the background (see ``grader.forkserver.prefetch``).
        memory_limit: bytes the worker may grow by (address space on CPU, resident memory always).
        threads: torch intra-op threads in the worker (default: half the cores; the judge takes the rest).
        cap_address_space: set ``RLIMIT_AS`` (off for CUDA, which maps large address ranges).
        sandboxed: apply ``grader.sandbox`` in the worker (default: unless ``GRADE_SANDBOX=off``);
            ``self.sandbox`` holds the layers the last worker reported active.
    """

    def __init__(self, submission: Path, *, memory_limit: int = DEFAULT_MEMORY_LIMIT, threads: int = 0,
                 cap_address_space: bool = True, time_limit: float = DEFAULT_TIME_LIMIT, prefetch: bool = False,
                 sandboxed: bool | None = None):
        from grader import sandbox

        self.submission = Path(submission)
        self.sandboxed = sandbox.enabled() if sandboxed is None else sandboxed
        self.sandbox: dict | None = None
        self.memory_limit = memory_limit
        self.threads = threads or max(1, (os.cpu_count() or 2) // 2)  # the judge takes the other half
        self.cap_address_space = cap_address_space
        self.prefetch = prefetch
        self.default_time_limit = time_limit
        self.time_limit = time_limit
        self.last_call = ""  # the last call into learner code, shown with every failure
        self.failed_imports: dict[str, str] = {}  # module -> why importing it killed the worker
        self.callback: Callable[[dict], Any] | None = None
        self.generation = 0
        self.process = None
        self.conn = None
        self.workdir: Path | None = None
        self._starting: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self._printed: list[str] = []  # this test's output from workers that died during it
        self._printed_from: tuple[Path | None, int] = (None, 0)  # (log, offset) where this test's output begins

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        """Start the worker in the background (the first start also boots the fork server)."""
        self._starting = threading.Thread(target=self._start, daemon=True)
        self._starting.start()

    def _start(self) -> None:
        try:
            self._greeted = False
            self.workdir = Path(tempfile.mkdtemp(prefix="grade-worker-"))
            _copy_submission(self.submission, self.workdir)
            ours, theirs = _context.Pipe()
            from grader import worker

            self.process = _context.Process(
                target=worker.main, daemon=True,
                args=(theirs, str(self.workdir), str(KIT_ROOT), self.memory_limit if self.cap_address_space else None,
                      self.threads, self.prefetch, self.sandboxed),
            )
            self.process.start()
            theirs.close()
            self.conn = ours
            self.base_rss = _rss(self.process.pid)
            self.generation += 1
        except BaseException as exc:  # noqa: BLE001 - reported on the first request
            self._start_error = exc

    def _ready(self) -> None:
        if self._starting is None:
            self.start()
        self._starting.join()
        if self._start_error is not None:
            raise self._start_error

    def stop(self) -> None:
        """Stop the worker and remove its folder."""
        if self._starting is not None:
            self._starting.join()
        if self.process is not None and self.process.is_alive():
            try:
                self.conn.send_bytes(protocol.dumps_request({"op": "stop"}))
                self.process.join(1.0)
            except OSError:
                pass
        self._kill()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._starting = None

    def _kill(self) -> None:
        if self.process is None or self.process.pid is None:  # never started
            return
        if self.process.is_alive():
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()
        self.process.join(5.0)

    # -- what learner code printed --------------------------------------------------------
    # The worker's stdout and stderr (file descriptors 1 and 2, unbuffered) go to ``output.log``
    # in its folder; a test's share is the bytes written between its start and its record.
    def _log(self) -> Path | None:
        return None if self.workdir is None else self.workdir / "output.log"

    def begin_output(self) -> None:
        """Mark the start of a test: what learner code prints from now on is this test's."""
        self._printed = []
        log = self._log()
        self._printed_from = (log, _size(log))

    def _collect(self) -> None:
        """Move what was printed since the mark into ``_printed`` and move the mark to the end."""
        log = self._log()
        start = self._printed_from[1] if self._printed_from[0] == log else 0  # a new worker: its log from 0
        end = _size(log)
        if log is not None and end > start:
            self._printed.append(_read_slice(log, start, end))
        self._printed_from = (log, end)

    def take_output(self) -> str:
        """What learner code printed (stdout and stderr) since :meth:`begin_output`, crashed workers' too.

        Decoded as UTF-8 (invalid bytes replaced), control characters other than newline and
        tab shown as ``\\xNN`` escapes; at most ``MAX_OUTPUT_BYTES``: the head and the tail,
        with a line saying how much was left out between them.
        """
        if self._starting is not None:
            self._starting.join()  # a replacement worker may still be starting
        self._collect()
        text, self._printed = "".join(self._printed), []
        return printable(_bounded(text, MAX_OUTPUT_BYTES))

    def peak_rss(self) -> int:
        """The worker's peak resident memory in bytes (VmHWM, read from /proc)."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except (OSError, AttributeError):
            return 0
        _, found, rest = status.partition("VmHWM:")
        return int(rest.split()[0]) * 1024 if found else 0  # a zombie's status has no memory lines

    # -- requests -----------------------------------------------------------------
    def request(self, op: str, call: str, time_limit: float | None = None, **arguments: Any) -> Any:
        """Run one request in the worker and return its decoded result.

        Raises:
            LearnerError: learner code raised.
            WorkerDied: time limit, memory cap, or the process ended; the worker is replaced.
        """
        self._ready()
        limit = self.time_limit if time_limit is None else time_limit
        try:
            self.conn.send_bytes(protocol.dumps_request({"op": op, **arguments}))
        except (OSError, BrokenPipeError):
            self._died(call, "ended before it could be asked anything")
        deadline = time.monotonic() + limit
        try:
            while True:
                if self.conn.poll(0.05):
                    try:
                        data = self.conn.recv_bytes()
                    except (EOFError, OSError):
                        self._died(call, None)
                    reply = protocol.loads_reply(data)
                    if isinstance(reply, dict) and "callback" in reply:
                        self._answer_callback(reply["callback"])
                        continue
                    if isinstance(reply, dict) and "sandbox" in reply and not self._greeted:  # a worker's first message
                        self.sandbox, self._greeted = reply["sandbox"], True
                        continue
                    if not isinstance(reply, dict) or not ({"ok", "error"} & reply.keys()):
                        raise protocol.ProtocolError("the worker sent a malformed reply")
                    if "error" in reply:
                        raise _learner_error(reply["error"], call)
                    return self._wrap(reply["ok"], call)
                if not self.process.is_alive():
                    self._died(call, None)
                if time.monotonic() > deadline:
                    self._died(call, f"did not return within {limit:g} s (an endless loop?)")
                if _rss(self.process.pid) - self.base_rss > self.memory_limit:
                    self._died(call, f"used more than {self.memory_limit / 2**30:g} GiB of memory")
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (grader.cli) mid-call: the worker is busy, stop it now
            self._kill()
            raise

    def _died(self, call: str, why: str | None) -> None:
        self._kill()
        if why is None:
            code = self.process.exitcode
            if code is not None and code < 0:
                name = signal.Signals(-code).name
                why = f"crashed the worker process ({name})" + (" - out of memory?" if name == "SIGKILL" else "")
            else:
                why = f"ended the worker process (exit code {code}: os._exit or sys.exit?)"
        self._collect()  # what it printed before dying stays this test's output
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.start()  # a fresh worker (and folder) for the next request
        raise WorkerDied(f"{call}: your code {why}")

    def _answer_callback(self, request: Any) -> None:
        try:
            reply = {"ok": self.callback(request)}
        except Exception as exc:  # noqa: BLE001 - sent back to the learner's test as its exception
            # by name and plain arguments, never the object: pickling an exception may name another package
            # (distributed installs tblib's reducers), which the worker cannot import
            builtin = type(exc).__module__ == "builtins"
            plain = builtin and all(isinstance(a, (str, int, float, bool, type(None))) for a in exc.args)
            reply = {"error": (type(exc).__name__ if builtin else "RuntimeError", exc.args if plain else (str(exc),))}
        self.conn.send_bytes(protocol.dumps_request(reply))

    def _wrap(self, value: Any, call: str) -> Any:
        if isinstance(value, dict):
            if REMOTE in value:
                return Remote(self, value[REMOTE], value["type"], call)
            if FIGURE in value:
                return FigureInfo.from_description(value[FIGURE])
            return {k: self._wrap(v, call) for k, v in value.items()}
        if isinstance(value, list):
            return [self._wrap(v, call) for v in value]
        if isinstance(value, tuple):
            return tuple(self._wrap(v, call) for v in value)
        return value


def _size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


def _read_slice(path: Path, start: int, end: int) -> str:
    """Bytes ``[start, end)`` of ``path`` as text; only the head and tail when over ``MAX_OUTPUT_BYTES``."""
    half = MAX_OUTPUT_BYTES // 2
    try:
        with open(path, "rb") as stream:
            stream.seek(start)
            if end - start <= MAX_OUTPUT_BYTES:
                return stream.read(end - start).decode("utf-8", errors="replace")
            head = stream.read(half)
            stream.seek(end - half)
            tail = stream.read(half)
    except OSError:
        return ""
    return (f"{head.decode('utf-8', errors='replace')}\n"
            f"[... {end - start - 2 * half} bytes left out ...]\n{tail.decode('utf-8', errors='replace')}")


def _bounded(text: str, limit: int) -> str:
    """``text`` when it has at most ``limit`` characters, else its head and tail with a note between."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters left out ...]\n{text[-half:]}"


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def _copy_submission(source: Path, target: Path) -> None:
    """Copy the submission's Python files (sub-packages too) into the worker's folder.

    A question answered in a notebook gets the module built from it instead of its
    ``.py`` (``grader.notebooks.install``: which file is graded, and the line map).
    """
    from grader import notebooks

    total = 0
    for path in sorted(source.rglob("*.py")):
        if "__pycache__" in path.parts or any(part.startswith(".") for part in path.relative_to(source).parts):
            continue
        total += path.stat().st_size
        if total > MAX_SUBMISSION_BYTES:
            break
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
    notebooks.install(source, target)


def describe_value(value: Any) -> str:
    """Short description of an argument for feedback: ``float32[2, 10, 64]``, ``3``, ``'x'``."""
    if isinstance(value, torch.Tensor):
        text = f"{str(value.dtype).removeprefix('torch.')}{list(value.shape)}"
        return text if value.device.type == "cpu" else f"{text}@{value.device.type}"
    if isinstance(value, Remote):
        return value._call
    if isinstance(value, (list, tuple, dict)) and len(value) > 4:
        return f"{type(value).__name__} of {len(value)}"
    if type(value) in (list, tuple):  # described item by item: repr() of a tensor costs milliseconds
        text = ", ".join(describe_value(v) for v in value) + ("," if len(value) == 1 and type(value) is tuple else "")
        text = f"({text})" if type(value) is tuple else f"[{text}]"
    elif type(value) is dict:
        text = "{" + ", ".join(f"{k!r}: {describe_value(v)}" for k, v in value.items()) + "}"
    else:
        text = (repr(value).splitlines() or [""])[0]
    return text if len(text) <= 40 else text[:37] + "..."


def _signature(args: tuple, kwargs: dict) -> str:
    parts = [describe_value(a) for a in args] + [f"{k}={describe_value(v)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def _refs(value: Any) -> Any:
    if isinstance(value, Remote):
        return Ref(value._handle)
    if isinstance(value, (list, tuple)):
        return type(value)(_refs(v) for v in value)
    if isinstance(value, dict):
        return {k: _refs(v) for k, v in value.items()}
    return value


class Remote:
    """A learner object living in the worker. Attribute reads and calls run there.

    ``learner.q2.MultiHeadAttention(64, 4)`` is a Remote; calling it returns the
    output tensors. Methods are called in one round trip. ``_call`` is how the
    object was made, in the learner's terms (used in feedback).
    """

    __slots__ = ("_worker", "_handle", "_type", "_call", "_generation")

    def __init__(self, worker: WorkerProcess, handle: int, type_name: str, call: str):
        object.__setattr__(self, "_worker", worker)
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "_type", type_name)
        object.__setattr__(self, "_call", call)
        object.__setattr__(self, "_generation", worker.generation)

    def _request(self, op: str, call: str, **arguments: Any) -> Any:
        if self._generation != self._worker.generation:
            raise WorkerDied(f"{call}: this object was lost when your code crashed an earlier call")
        self._worker.last_call = call
        return self._worker.request(op, call, target=Ref(self._handle), **arguments)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._request("getattr", f"{self._call}.{name}", name=name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._request("setattr", f"{self._call}.{name} = ...", name=name, value=_refs(value))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._request("call", self._call + _signature(args, kwargs), args=_refs(args), kwargs=_refs(kwargs))

    def __iter__(self):
        return iter(self._request("list", f"list({self._call})"))

    def __len__(self) -> int:
        return self._request("len", f"len({self._call})")

    def __getitem__(self, key: Any) -> Any:
        return self._request("getitem", f"{self._call}[{key!r}]", key=_refs(key))

    def __repr__(self) -> str:
        return f"<learner {self._type}: {self._call}>"


class Learner:
    """The submission as hidden suites see it: ``learner.q1`` is the module ``q1_*.py``.

    Also: :meth:`grad` for a forward+backward pass in the worker, :meth:`load_weights`
    to copy reference weights into a learner module with a clear key-mismatch message.
    """

    def __init__(self, worker: WorkerProcess):
        self._worker = worker
        self._modules: dict[str, Remote] = {}

    def __repr__(self) -> str:
        return "learner"

    def __getattr__(self, name: str) -> Remote:
        if not (name[:1] == "q" and name[1:].isdigit()):  # only question modules: q1, q2, ...
            raise AttributeError(name)
        module = self._modules.get(name)
        if module is None or module._generation != self._worker.generation:
            self._worker.last_call = f"import {name}"
            if name in self._worker.failed_imports:  # a hang or crash at import: do not wait for it again
                raise WorkerDied(self._worker.failed_imports[name])
            try:
                module = self._worker.request("import", f"import {name}", name=name)
            except WorkerDied as died:
                self._worker.failed_imports[name] = str(died)
                raise
            except LearnerError as error:
                raise import_failure(name, error) from None
            module = Remote(self._worker, module._handle, "module", name)
            self._modules[name] = module
        return module

    def grad(self, fn: Remote, *args: Any, grad_output: torch.Tensor | None = None, **kwargs: Any) -> dict:
        """Run ``fn(*args, **kwargs)`` and backward in the worker.

        Returns:
            ``{"output": ..., "input_grads": [Tensor | None per arg], "param_grads": {name: Tensor | None}}``;
            the first output is back-propagated with ``grad_output`` (ones when None).
        """
        call = f"{fn._call}{_signature(args, kwargs)} and backward"
        return fn._request("grad", call, args=_refs(args), kwargs=_refs(kwargs), grad_output=grad_output)

    def load_weights(self, module: Remote, state_dict: dict) -> None:
        """``module.load_state_dict(state_dict)`` with a message naming expected and found keys.

        Raises:
            AssertionError: the keys or shapes differ from the reference's.
        """
        found = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        expected = {k: tuple(v.shape) for k, v in state_dict.items()}
        missing, extra = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
        if missing or extra:
            raise AssertionError(
                f"{module._call}: parameter names differ from the specification; "
                f"missing {missing or 'none'}, unexpected {extra or 'none'} (see the docstring for the names)"
            )
        shapes = [f"{k}: expected {expected[k]}, found {found[k]}" for k in expected if expected[k] != found[k]]
        if shapes:
            raise AssertionError(f"{module._call}: parameter shapes differ: " + "; ".join(shapes))
        module.load_state_dict({k: v.detach().clone() for k, v in state_dict.items()})

    def run_tests(self, name: str, implementations: list[Any]) -> dict:
        """Run the learner's own test file ``name`` (``q6`` → ``q6_*.py``) once per implementation.

        Each implementation is a judge-side namespace served to the learner's ``impl``
        fixture through ``grader.learner_tests.ImplServer``; learner code only sees
        its behaviour; the whole run gets the test's time limit (mark the test with
        ``time_limit``). Returns ``grader.learner_tests.run``'s document, with
        ``outcomes[test][i]`` for ``implementations[i]``.
        """
        from grader.learner_tests import ImplServer

        server = ImplServer(implementations)
        self._worker.callback = server
        try:
            return self._worker.request("learner_tests", f"running your tests in {name}",
                                        name=name, impls=server.handles())
        finally:
            self._worker.callback = None

    def reset(self) -> None:
        """Forget this test's learner objects and reseed the worker's RNGs (between tests)."""
        if self._worker.process is not None and self._worker.process.is_alive():
            self._worker.request("reset", "reset")
            self._worker.request("seed", "seeding", seed=0)
        self._modules.clear()
