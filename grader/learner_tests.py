"""Running a learner's own test file (ex4 q6) against hidden implementations.

The learner's tests run in the worker (they are learner code). Their ``impl``
fixture is not code in the worker: it is a :class:`JudgeProxy` for a namespace
that lives in the judge (:class:`ImplServer`), so constructing, calling and
reading attributes of ``impl.LayerNorm`` run the trusted (or deliberately buggy)
implementation in the judge, and only tensors and plain data reach the
learner's process. A test file therefore cannot read which implementation it
is looking at; it can only observe behaviour.

Worker side: :func:`run`. Judge side: :class:`ImplServer`.
"""

from __future__ import annotations

from typing import Any

from grader import forkserver  # imported with the worker, before it shuts itself in

JUDGE = "__grader_judge__"
MAX_ELEMENTS = 2**22  # largest tensor (elements) a learner test may pass to, or build in, the judge
MAX_SIZE_ARGUMENT = 2**14  # largest integer constructor argument (d_model, max_len, ...)


class JudgeProxy:
    """Worker-side stand-in for a judge-side object (used by learner tests)."""

    __slots__ = ("_worker", "_handle", "_name")

    def __init__(self, worker: Any, handle: int, name: str):
        object.__setattr__(self, "_worker", worker)
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "_name", name)

    def _ask(self, op: str, **arguments: Any) -> Any:
        return _wrap(self._worker, self._worker.callback({"op": op, "handle": self._handle, **arguments}),
                     f"{self._name}")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(f"{self._name} has no attribute {name!r} (private attributes are not shared)")
        return _wrap(self._worker, self._worker.callback({"op": "getattr", "handle": self._handle, "name": name}),
                     f"{self._name}.{name}")

    def __setattr__(self, name: str, value: Any) -> None:
        self._ask("setattr", name=name, value=value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ask("call", args=args, kwargs=kwargs)

    def __iter__(self):
        return iter(self._ask("list"))

    def __repr__(self) -> str:
        return f"<impl {self._name}>"


def _wrap(worker: Any, value: Any, name: str) -> Any:
    if isinstance(value, dict) and JUDGE in value:
        return JudgeProxy(worker, value[JUDGE], name)
    if isinstance(value, list):
        return [_wrap(worker, v, name) for v in value]
    if isinstance(value, tuple):
        return tuple(_wrap(worker, v, name) for v in value)
    if isinstance(value, dict):
        return {k: _wrap(worker, v, name) for k, v in value.items()}
    return value


def run(worker: Any, path: str, impls: list[int]) -> dict:
    """Run the learner's test file once per implementation; worker side.

    Args:
        path: the test file, relative to the worker's folder.
        impls: judge handles of the implementation namespaces, in grading order.

    Returns:
        ``{"collected": int, "errors": [str], "outcomes": {test_id: {impl_index: "passed"|"failed"}}}``
        where ``test_id`` is the test's name without the implementation parameter.
    """
    import pytest

    forkserver.wait_for_prefetch()  # pytest builds ASTs; Python 3.11's ast is not thread-safe
    from hypothesis import settings

    # the learner's property tests run derandomized too: the same file gets the same score every run
    settings.register_profile("learner-tests", derandomize=True, deadline=None, database=None)
    settings.load_profile("learner-tests")
    outcomes: dict[str, dict[int, str]] = {}
    errors: list[str] = []

    class ImplPlugin:
        @pytest.fixture(params=range(len(impls)), ids=[f"impl{i}" for i in range(len(impls))])
        def impl(self, request):
            return JudgeProxy(worker, impls[request.param], "impl")

        def pytest_collectreport(self, report):
            if report.failed:
                errors.append(str(report.longrepr)[-1500:])

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(self, item, call):
            report = (yield).get_result()
            params = dict(getattr(getattr(item, "callspec", None), "params", {}))
            index = params.pop("impl", None)
            if index is None or report.skipped or not (report.when == "call" or report.failed):
                return  # a test without ``impl`` says nothing about the implementations
            rest = ",".join(f"{k}={v!r}" for k, v in sorted(params.items()))
            name = f"{item.originalname}[{rest}]" if rest else item.originalname
            if outcomes.setdefault(name, {}).get(index) != "failed":
                outcomes[name][index] = "passed" if report.passed else "failed"

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny ops: a second thread only adds hand-off latency
    code = pytest.main(
        [path, "-p", "no:terminal", "-p", "no:cacheprovider", "-p", "no:randomly", "-o", f"python_files={path}",
         "-o", "python_functions=test_*", "--rootdir", ".", "--confcutdir", ".",  # nothing above the worker's folder: no
         "-c", "/dev/null", "-W", "ignore"],  # conftest.py from there, and the sandbox lets no folder above be listed
        plugins=[ImplPlugin()],
    )
    torch.set_num_threads(threads)
    return {"exit_code": int(code), "errors": errors, "outcomes": outcomes}


class ImplServer:
    """Judge side: answers a learner test's requests on a list of implementation namespaces.

    Only public attributes can be read; tensors passed in or created are capped in
    size so a test cannot make the judge allocate without bound.
    """

    def __init__(self, namespaces: list[Any]):
        self.objects: dict[int, Any] = dict(enumerate(namespaces, 1))

    def handles(self) -> list[int]:
        return list(self.objects)

    def __call__(self, request: Any) -> Any:
        import torch

        if not isinstance(request, dict) or request.get("handle") not in self.objects:
            raise ValueError("unknown implementation object")
        target = self.objects[request["handle"]]
        op = request.get("op")
        if op == "getattr":
            name = request.get("name", "")
            if not isinstance(name, str) or name.startswith("_"):
                raise AttributeError(f"no attribute {name!r}")
            return self._encode(getattr(target, name))
        if op == "call":
            args, kwargs = self._decode(request.get("args", ())), self._decode(request.get("kwargs", {}))
            self._check_sizes((args, kwargs))
            with torch.random.fork_rng(devices=[]):
                return self._encode(target(*args, **kwargs))
        if op == "setattr":
            name = request.get("name", "")
            if not isinstance(name, str) or name.startswith("_"):
                raise AttributeError(f"cannot set {name!r}")
            setattr(target, name, self._decode(request.get("value")))
            return None
        if op == "list":
            return self._encode(list(target))
        raise ValueError(f"unsupported request {op!r}")

    def _check_sizes(self, value: Any) -> None:
        import torch

        if isinstance(value, torch.Tensor) and value.numel() > MAX_ELEMENTS:
            raise ValueError(f"tensors passed to impl are limited to {MAX_ELEMENTS} elements")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SIZE_ARGUMENT:
            raise ValueError(f"integer arguments to impl are limited to {MAX_SIZE_ARGUMENT}")
        if isinstance(value, (list, tuple)):
            for item in value:
                self._check_sizes(item)
        if isinstance(value, dict):
            for item in value.values():
                self._check_sizes(item)

    def _decode(self, value: Any) -> Any:
        if isinstance(value, dict) and JUDGE in value:
            return self.objects[value[JUDGE]]
        if isinstance(value, (list, tuple)):
            return type(value)(self._decode(v) for v in value)
        if isinstance(value, dict):
            return {k: self._decode(v) for k, v in value.items()}
        return value

    def _encode(self, value: Any) -> Any:
        import torch

        if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device, torch.Size)):
            return value
        if isinstance(value, torch.Tensor):
            return value.detach().as_subclass(torch.Tensor).clone()
        if isinstance(value, (list, tuple)):
            return type(value)(self._encode(v) for v in value) if type(value) in (list, tuple) else \
                tuple(self._encode(v) for v in value)
        if isinstance(value, dict):
            return {k: self._encode(v) for k, v in value.items()}
        handle = max(self.objects) + 1
        self.objects[handle] = value
        return {JUDGE: handle}
