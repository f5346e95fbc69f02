"""Trusted measurements of learner code, taken inside the worker by kit code.

Some properties can only be observed while learner code runs: the largest
tensor its operators produce, the FLOPs of its matrix products, the operators it
calls, the bytes autograd saves for backward, the dtypes its modules see under
autocast, what it does with an inf gradient. The judge cannot install hooks or
dispatch modes in another process, and it must not trust numbers learner code
reports about itself. So the worker imports this module *before* it shuts
itself in (``grader.worker`` keeps the reference), and one request,
``op_measure``, runs a learner callable under one of the instruments below and
sends back plain numbers.

Judge side: :func:`remote` (``measure.remote("largest_allocation", fn, q, k, v)``
with ``fn`` a ``grader.judge.Remote``).

Residual risk: learner code shares the worker process, so a submission that
monkeypatches torch internals (dispatch modes, autograd hooks) could still fool
an instrument. Suites therefore also check values against the reference computed
in the judge, so such a cheat must at least produce correct results.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.autograd.graph import saved_tensors_hooks
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

# ---------------------------------------------------------------------------- instruments


class _LargestTensor(TorchDispatchMode):
    """The largest fresh tensor (not sharing an input's storage) any operator returns."""

    def __init__(self) -> None:
        super().__init__()
        self.nbytes, self.shape = 0, ()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                nbytes = t.untyped_storage().nbytes()
                if nbytes > self.nbytes:
                    self.nbytes, self.shape = nbytes, tuple(t.shape)
        return out


class _DispatchedOps(TorchDispatchMode):
    """Names of the aten operators that reach the dispatcher (``aten._scaled_dot_product_flash_attention_for_cpu``)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(f"aten.{func.overloadpacket.__name__}")
        return func(*args, **(kwargs or {}))


class _CalledFunctions(TorchFunctionMode):
    """Names of the torch functions called (``scaled_dot_product_attention``), before any decomposition."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.add(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def _float_inputs(args: tuple, requires_grad: bool) -> tuple:
    return tuple(
        a.detach().clone().requires_grad_(requires_grad) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
        for a in args
    )


def largest_allocation(fn: Callable, args: tuple, kwargs: dict, no_grad: bool = True) -> dict:
    """``{"bytes", "shape"}`` of the largest tensor any operator produces while ``fn(*args, **kwargs)`` runs."""
    with torch.set_grad_enabled(not no_grad), _LargestTensor() as mode:
        fn(*args, **kwargs)
    return {"bytes": int(mode.nbytes), "shape": list(mode.shape)}


def matmul_flops(fn: Callable, args: tuple, kwargs: dict) -> int:
    """FLOPs of the matrix products of ``fn(*args, **kwargs)`` (FlopCounterMode; fused attention on MATH)."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def operators(fn: Callable, args: tuple, kwargs: dict) -> dict:
    """``{"functions": [...], "aten": [...]}``: torch functions called and aten operators dispatched, sorted."""
    with torch.no_grad(), _CalledFunctions() as functions, _DispatchedOps() as dispatched:
        fn(*args, **kwargs)
    return {"functions": sorted(functions.names), "aten": sorted(dispatched.names)}


def saved_bytes(fn: Callable, args: tuple, kwargs: dict, requires_grad: bool = True) -> int:
    """Bytes autograd saves for backward while ``fn`` runs (each storage once; parameters of ``fn`` excluded).

    Floating-point tensor arguments are fresh leaves with ``requires_grad``; grad mode is on.
    """
    args = _float_inputs(args, requires_grad)
    params = fn.parameters() if isinstance(fn, torch.nn.Module) else ()
    skip = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}
    kept: list[torch.Tensor] = []  # keeps storages alive, so no address is reused while counting

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        kept.append(t)
        return t

    with torch.enable_grad(), saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args, **kwargs)
    del out, kept
    return int(sum(seen.values()))


def forward_dtypes(fn: Callable, args: tuple, kwargs: dict, module: torch.nn.Module) -> dict:
    """Run ``fn`` with a forward hook on every submodule of ``module``.

    Returns:
        ``{"result": what fn returned, "calls": [{"module": qualified name, "type": class name,
        "dtype": output dtype as str, "autocast": torch.is_autocast_enabled(output device type)}]}``.
    """
    calls: list[dict] = []

    def hook(name: str):
        def record(mod, inputs, output):
            first = next((t for t in tree_leaves(output) if isinstance(t, torch.Tensor)), None)
            if first is not None:
                calls.append({
                    "module": name, "type": type(mod).__name__, "dtype": str(first.dtype).removeprefix("torch."),
                    "autocast": bool(torch.is_autocast_enabled(first.device.type)),
                })
        return record

    handles = [sub.register_forward_hook(hook(name)) for name, sub in module.named_modules() if name]
    try:
        result = fn(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return {"result": result, "calls": calls}


def with_inf_gradient(fn: Callable, args: tuple, kwargs: dict, module: torch.nn.Module, parameter: str) -> Any:
    """Run ``fn`` while a gradient hook on ``module.get_parameter(parameter)`` puts inf in its first element."""

    def poison(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad.view(-1)[0] = float("inf")
        return grad

    handle = module.get_parameter(parameter).register_hook(poison)
    try:
        return fn(*args, **kwargs)
    finally:
        handle.remove()


def elapsed_ms(fn: Callable, args: tuple, kwargs: dict, repeats: int = 5) -> float:
    """Mean milliseconds per call of ``fn`` after one warm-up call (CUDA events on a GPU, else wall clock).

    Reported next to grades, never graded: timings depend on the machine.
    """
    import time

    tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    cuda = any(t.is_cuda for t in tensors)
    with torch.no_grad():
        fn(*args, **kwargs)
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(repeats):
                fn(*args, **kwargs)
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / repeats
        started = time.perf_counter()
        for _ in range(repeats):
            fn(*args, **kwargs)
        return (time.perf_counter() - started) * 1000 / repeats


MEASURES: dict[str, Callable] = {
    "elapsed_ms": elapsed_ms,
    "largest_allocation": largest_allocation,
    "matmul_flops": matmul_flops,
    "operators": operators,
    "saved_bytes": saved_bytes,
    "forward_dtypes": forward_dtypes,
    "with_inf_gradient": with_inf_gradient,
}


def run(name: str, target: Callable, args: tuple, kwargs: dict, options: dict) -> Any:
    """Worker side of ``op_measure``: ``MEASURES[name](target, args, kwargs, **options)``."""
    if name not in MEASURES:
        raise LookupError(f"unknown measurement {name!r}")
    return MEASURES[name](target, tuple(args), dict(kwargs), **options)


# ---------------------------------------------------------------------------- judge side


def remote(name: str, fn: Any, *args: Any, options: dict | None = None, **kwargs: Any) -> Any:
    """Judge side: measure the learner callable ``fn`` (a ``grader.judge.Remote``) in the worker.

    ``options`` go to the instrument (e.g. ``{"module": trainer.model, "parameter": "0.weight"}``;
    Remotes among them are passed as references). The result crosses back as plain data.
    """
    from grader.judge import _refs, _signature

    call = f"{fn._call}{_signature(args, kwargs)}"
    return fn._request("measure", call, name=name, args=_refs(args), kwargs=_refs(kwargs),
                       options=_refs(options or {}))
