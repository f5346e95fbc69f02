"""The worker: the only process that imports and runs learner code.

One worker serves one submission. It is forked from a server that has imported
torch and nothing else (``multiprocessing`` forkserver), so it starts in tens of
milliseconds, and it serves requests from the judge until told to stop:
import a learner module, read or set an attribute, call something, run a
forward and backward pass. Results go back as plain data (``grader.protocol``);
anything else stays here behind a numbered handle.

Before the first request the worker shuts itself in: its working directory is
a copy of the submission, the kit's own folders are off ``sys.path``, imports of
``reference``, ``solutions`` and ``grader`` are refused, its address space is
capped, the sandbox (``grader.sandbox``: files, network, signals, file size) is
applied, and its stdout/stderr go, unbuffered, to ``output.log`` in its folder:
the judge reads each test's share of it (``WorkerProcess.take_output``), so what
learner code printed right before a crash is kept too.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.machinery
import io
import os
import random
import resource
import site
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from grader import figures, forkserver, learner_tests, lifecycle, measure, notebooks, protocol, sandbox
from grader.protocol import FIGURE, REMOTE, Ref

FORBIDDEN = ("reference", "solutions", "grader")
MAX_DEPTH = 8


class ImportRefused(ImportError):
    """Raised in the worker when learner code imports a trusted kit package."""


class _Blocker:
    """A meta-path finder that refuses the kit's trusted packages, and says so for packages the sandbox hides."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in FORBIDDEN:
            raise ImportRefused(
                f"import of '{fullname}' is not allowed in graded code: "
                "your submission must not use the kit's reference, solutions or grader"
            )
        if "." not in fullname:  # a package outside the sandbox's rules: one line, not a PermissionError
            spec = importlib.machinery.PathFinder.find_spec(fullname)
            origin = getattr(spec, "origin", None)
            if origin and os.path.isfile(origin):
                try:
                    open(origin, "rb").close()
                except PermissionError:
                    raise ImportRefused(f"import of '{fullname}' is not allowed in graded code: it may import "
                                        f"{sandbox.IMPORTABLE}") from None
        return None


def _shut_in(workdir: Path, kit_root: Path, memory_bytes: int | None, threads: int, sandboxed: bool) -> dict:
    """Shut this process in (see the module's docstring); return the sandbox layers that are active."""
    os.setsid()  # own process group: the judge kills it whole
    os.chdir(workdir)
    log = os.open(workdir / "output.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    for fd, name in ((1, "stdout"), (2, "stderr")):  # unbuffered, as `python -u`: nothing lost at os._exit
        setattr(sys, name, io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8",
                                            errors="backslashreplace", write_through=True))
    # an editable checkout's root leaves sys.path (its packages are refused anyway); a site-packages
    # folder stays even when it is the kit's root (a wheel install), or torch, sympy and pytest
    # would not import; so does a virtual environment inside the kit's folder (.venv/)
    kit = os.path.realpath(kit_root)
    sites = {os.path.realpath(p) for p in site.getsitepackages() + [site.getusersitepackages()]}
    sys.path[:] = [str(workdir)] + [p for p in sys.path
                                    if p and (os.path.realpath(p) != kit or os.path.realpath(p) in sites)]
    sys.meta_path[:] = [_Blocker()] + [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    for name in list(sys.modules):  # this module keeps its own references to what it needs
        if name.split(".")[0] in FORBIDDEN or name == "__mp_main__":
            del sys.modules[name]
    if memory_bytes:
        current = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (current + memory_bytes, current + memory_bytes))
    started = time.perf_counter()
    layers = sandbox.apply(workdir, kit_root, landlock=sandboxed)
    layers["setup_ms"] = round((time.perf_counter() - started) * 1000, 2)
    import torch

    torch.set_num_threads(threads)
    return layers


class Worker:
    """Request handlers and the handle table of one worker process."""

    def __init__(self, conn, workdir: Path):
        self.conn = conn
        self.workdir = workdir
        self.objects: dict[int, Any] = {}
        self.ids: dict[int, int] = {}  # id(obj) -> handle, so one object keeps one handle

    # -- encoding ---------------------------------------------------------------
    def handle(self, obj: Any) -> dict:
        key = self.ids.get(id(obj))
        if key is None or self.objects.get(key) is not obj:
            key = len(self.objects) + 1
            while key in self.objects:
                key += 1
            self.objects[key], self.ids[id(obj)] = obj, key
        text = repr(obj) if isinstance(obj, type) or callable(obj) and hasattr(obj, "__name__") else type(obj).__name__
        return {REMOTE: key, "type": type(obj).__name__, "repr": text[:200]}

    def encode(self, obj: Any, depth: int = 0) -> Any:
        import torch

        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
            return obj
        if isinstance(obj, (torch.dtype, torch.device, torch.Size)):
            return obj
        if isinstance(obj, torch.Tensor):
            return obj.detach().as_subclass(torch.Tensor).clone()
        if isinstance(obj, learner_tests.JudgeProxy):
            return {learner_tests.JUDGE: obj._handle}
        if depth < MAX_DEPTH:
            if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple) or hasattr(obj, "_fields"):
                items = [self.encode(item, depth + 1) for item in obj]
                return items if isinstance(obj, list) else tuple(items)
            if isinstance(obj, dict) and all(isinstance(k, (str, int)) for k in obj):
                return {k: self.encode(v, depth + 1) for k, v in obj.items()}
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            if isinstance(obj, numpy.generic):
                return obj.item()
            if isinstance(obj, numpy.ndarray) and obj.dtype.kind in "biuf":
                return torch.from_numpy(numpy.array(obj))
        figure = sys.modules.get("matplotlib.figure")
        if figure is not None and isinstance(obj, figure.Figure):
            description = figures.describe(obj)
            obj.clear()
            return {FIGURE: description}
        return self.handle(obj)

    def decode(self, obj: Any) -> Any:
        if isinstance(obj, Ref):
            if obj.handle not in self.objects:
                raise LookupError("this object belongs to an earlier worker that was restarted")
            return self.objects[obj.handle]
        if isinstance(obj, list):
            return [self.decode(item) for item in obj]
        if isinstance(obj, tuple):
            return tuple(self.decode(item) for item in obj)
        if isinstance(obj, dict):
            return {k: self.decode(v) for k, v in obj.items()}
        return obj

    # -- errors -----------------------------------------------------------------
    def describe_error(self, exc: BaseException) -> dict:
        frames = [
            frame for frame in traceback.extract_tb(exc.__traceback__)
            if frame.filename.startswith(str(self.workdir))
        ]
        for frame in frames:
            frame.filename = os.path.relpath(frame.filename, self.workdir)
        builtin = type(exc).__module__ == "builtins"
        maps = notebooks.line_maps(self.workdir)  # answers built from notebooks: lines named by cell and line
        where = notebooks.syntax_error_message(exc, maps) if isinstance(exc, SyntaxError) else None
        return {
            "type": type(exc).__name__,
            "builtin": builtin,
            "message": (where or str(exc))[:2000],
            "traceback": notebooks.format_frames(frames[-6:], maps),
            "origin": self.origin(exc, frames),
        }

    def origin(self, exc: BaseException, frames: list) -> str:
        """The submission file (relative) being imported when ``exc`` arose, or "".

        A SyntaxError's own file; else the file of the innermost module-level frame
        (``<module>``): q1's when ``import q2`` runs ``from q1_... import`` and q1's
        top-level code raises, q2's when q2's top-level code calls into q1 and that raises.
        """
        filename = getattr(exc, "filename", None) if isinstance(exc, SyntaxError) else None
        if isinstance(filename, str) and filename.startswith(str(self.workdir)):
            return os.path.relpath(filename, self.workdir)
        return next((frame.filename for frame in reversed(frames) if frame.name == "<module>"), "")

    # -- requests ---------------------------------------------------------------
    def find(self, name: str) -> Path:
        """The submission file of question ``name`` (``q3`` → ``q3_attention.py``)."""
        matches = sorted(self.workdir.glob(f"{name}_*.py")) or sorted(self.workdir.glob(f"{name}.py"))
        if not matches:
            raise ModuleNotFoundError(f"your submission has no file {name}_*.py")
        return matches[0]

    def op_import(self, name: str) -> Any:
        path = self.find(name)
        try:
            return importlib.import_module(path.stem)
        except SystemExit as exc:
            raise RuntimeError(f"{path.name} called sys.exit({exc.code}) while being imported") from None

    def op_getattr(self, target: Any, name: str) -> Any:
        return getattr(target, name)

    def op_setattr(self, target: Any, name: str, value: Any) -> None:
        setattr(target, name, value)

    def op_call(self, target: Any, args: tuple, kwargs: dict) -> Any:
        return target(*args, **kwargs)

    def op_list(self, target: Any) -> list:
        return list(target)

    def op_len(self, target: Any) -> int:
        return len(target)

    def op_getitem(self, target: Any, key: Any) -> Any:
        return target[key]

    def op_grad(self, target: Any, args: tuple, kwargs: dict, grad_output: Any) -> dict:
        """Forward then backward; gradients of floating-point tensor arguments and of parameters."""
        import torch

        args = tuple(
            a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in args
        )
        if isinstance(target, torch.nn.Module):
            target.zero_grad(set_to_none=True)
        output = target(*args, **kwargs)
        first = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(first, torch.Tensor) or not first.requires_grad:
            raise TypeError("the output does not depend on the inputs through autograd (was it detached?)")
        first.backward(torch.ones_like(first) if grad_output is None else grad_output)
        params = dict(target.named_parameters()) if isinstance(target, torch.nn.Module) else {}
        return {
            "output": output,
            "input_grads": [a.grad if isinstance(a, torch.Tensor) else None for a in args],
            "param_grads": {name: p.grad for name, p in params.items()},
        }

    def op_seed(self, seed: int) -> None:
        import torch

        random.seed(seed)
        torch.manual_seed(seed)
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            numpy.random.seed(seed)

    def op_reset(self) -> None:
        self.objects.clear()
        self.ids.clear()

    def op_learner_tests(self, name: str, impls: list) -> dict:
        return learner_tests.run(self, self.find(name).name, impls)

    def serve(self) -> None:
        while True:
            try:
                request = protocol.loads_request(self.conn.recv_bytes())
            except EOFError:
                return
            op = request.pop("op")
            if op == "stop":
                return
            try:
                arguments = self.decode(request)
                value = getattr(self, f"op_{op}")(**arguments)
                reply = {"ok": self.encode(value)}
            except BaseException as exc:  # noqa: BLE001 - learner code may raise anything, SystemExit included
                reply = {"error": self.describe_error(exc)}
            try:
                data = protocol.dumps_reply(reply)
            except BaseException as exc:  # noqa: BLE001
                data = protocol.dumps_reply({"error": self.describe_error(exc)})
            self.conn.send_bytes(data)

    def callback(self, request: dict) -> Any:
        """Ask the judge to run something for us (q6 implementations) and wait for its answer."""
        self.conn.send_bytes(protocol.dumps_reply({"callback": self.encode(request)}))
        reply = protocol.loads_request(self.conn.recv_bytes())
        if "error" in reply:  # a builtin exception by name, with its arguments (see WorkerProcess._answer_callback)
            name, args = reply["error"]
            kind = getattr(builtins, name, RuntimeError)
            raise (kind if isinstance(kind, type) and issubclass(kind, Exception) else RuntimeError)(*args)
        return reply["ok"]

    def op_measure(self, target: Any, name: str, args: tuple, kwargs: dict, options: dict) -> Any:
        """Run learner code ``target`` under a trusted instrument of ``grader.measure`` (imported before shut-in)."""
        return measure.run(name, target, args, kwargs, options)


def main(conn, workdir: str, kit_root: str, memory_bytes: int | None, threads: int, prefetch: bool = False,
         sandboxed: bool = True) -> None:
    """Entry point of the worker process (run by ``grader.judge.WorkerProcess``).

    The first message to the judge is ``{"sandbox": layers}`` (``grader.sandbox.apply``).
    """
    layers = _shut_in(Path(workdir), Path(kit_root), memory_bytes, threads, sandboxed)
    lifecycle.bind_worker(conn)  # dies with its judge (after shutting in: the watchdog is a thread)
    if prefetch:
        forkserver.prefetch()  # after shutting in: Landlock restricts the threads started after it
    conn.send_bytes(protocol.dumps_reply({"sandbox": layers}))
    Worker(conn, Path(workdir)).serve()
    os._exit(0)
