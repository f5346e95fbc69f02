"""Checks that hidden suites use to compare learner results with the reference.

Every check fails with an ``AssertionError`` whose message is written for the
learner: what was checked, shape/dtype/NaN problems before values, the largest
error and where it occurs, a few expected vs got values, and, when the learner's
output matches a known wrong variant of the reference, a hint naming the mistake.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from reference.misconceptions import variants_of

Hint = tuple[str, Callable[[], Any]]  # (hint text, thunk computing the wrong variant's output)


def tolerances(dtype: torch.dtype) -> dict[str, float]:
    """``rtol``/``atol`` per dtype (``torch.testing.assert_close``'s defaults), for hints too."""
    return {
        torch.float64: dict(rtol=1e-7, atol=1e-7),
        torch.float32: dict(rtol=1.3e-6, atol=1e-5),
        torch.bfloat16: dict(rtol=1.6e-2, atol=1e-5),
        torch.float16: dict(rtol=1e-3, atol=1e-5),
    }.get(dtype, dict(rtol=0.0, atol=0.0))


def hints_for(target: str, run: Callable[[Any], Any]) -> list[Hint]:
    """Hints from ``reference.misconceptions`` for the API name ``target``.

    ``run(impl)`` computes, with a wrong variant ``impl`` in place of the reference
    name, the same quantity the suite is checking; it is only called on failure.
    """
    return [(m.hint, lambda m=m: run(m.impl)) for m in variants_of(target)]


def matching_hint(got: Any, hints: Iterable[Hint], **tolerance: float) -> str | None:
    """The first hint whose wrong variant reproduces ``got`` (within tolerance), if any."""
    for text, thunk in hints:
        try:
            wrong = thunk()
            if isinstance(wrong, tuple):
                wrong = wrong[0]
            if isinstance(got, torch.Tensor) and isinstance(wrong, torch.Tensor) and got.shape == wrong.shape:
                if torch.allclose(got.double(), wrong.to(got.device).double(), equal_nan=True, **tolerance):
                    return text
        except Exception:  # noqa: BLE001 - a variant that cannot run on this input gives no hint
            continue
    return None


def _fail(what: str, problem: str, hint: str | None = None) -> None:
    raise AssertionError(f"{what}: {problem}" + (f"\nHint: {hint}" if hint else ""))


def assert_tensor(got: Any, what: str, *, shape: tuple | None = None, dtype: torch.dtype | None = None) -> None:
    """``got`` is a tensor (of ``shape`` and ``dtype`` when given)."""
    if not isinstance(got, torch.Tensor):
        _fail(what, f"expected a tensor, got {type(got).__name__}")
    if shape is not None and tuple(got.shape) != tuple(shape):
        extra = ""
        if sorted(got.shape) == sorted(shape):
            extra = " (same sizes in another order: tensors are batch-first, e.g. (batch, seq_len, d_model))"
        _fail(what, f"shape {tuple(got.shape)}, expected {tuple(shape)}{extra}")
    if dtype is not None and got.dtype != dtype:
        _fail(what, f"dtype {got.dtype}, expected {dtype}")


def assert_close(got: Any, expected: torch.Tensor, what: str = "output", *, hints: Iterable[Hint] = (),
                 rtol: float | None = None, atol: float | None = None, check_dtype: bool = True) -> None:
    """``got`` equals the reference's ``expected`` within per-dtype tolerances.

    Checks, in order: a tensor, the shape, the dtype, the device, no NaN/inf where
    the reference is finite, then values (``torch.testing.assert_close``). On a value
    mismatch the message gives the largest absolute and relative error, the index,
    a few expected vs got values, and the first matching hint.

    Raises:
        AssertionError: with the message above.
    """
    assert_tensor(got, what, shape=tuple(expected.shape), dtype=expected.dtype if check_dtype else None)
    if got.device.type != expected.device.type:
        _fail(what, f"on device {got.device.type}, expected {expected.device.type} (follow the input's device)")
    tolerance = tolerances(expected.dtype)
    tolerance.update({k: v for k, v in dict(rtol=rtol, atol=atol).items() if v is not None})
    bad = ~torch.isfinite(got) & torch.isfinite(expected)
    if bad.any():
        index = tuple(int(i) for i in bad.nonzero()[0])
        _fail(what, f"{int(bad.sum())} non-finite values (NaN/inf), first at index {index}: got {got[index].item()}, "
                    f"expected {expected[index].item()}", matching_hint(got, hints, **tolerance))
    expected = expected.to(got.device, got.dtype)
    if torch.isclose(got, expected, equal_nan=True, **tolerance).all():
        return  # same criterion as torch.testing.assert_close, without its first-call import cost (~1 s)
    try:
        torch.testing.assert_close(got, expected, equal_nan=True, **tolerance)
    except AssertionError as error:
        difference = (got.double() - expected.double()).abs().nan_to_num(0.0)
        index = tuple(int(i) for i in torch.unravel_index(difference.argmax(), difference.shape))
        flat_got, flat_expected = got.flatten()[:4].tolist(), expected.flatten()[:4].tolist()
        detail = (
            f"values differ.\n{str(error).strip()}\n"
            f"at index {index}: expected {expected[index].item():.6g}, got {got[index].item():.6g}\n"
            f"first values: expected {[round(v, 5) for v in flat_expected]}, got {[round(v, 5) for v in flat_got]}"
        )
        _fail(what, detail, matching_hint(got, hints, **tolerance))


def assert_allclose_number(got: Any, expected: float, what: str, *, rtol: float = 1e-6, atol: float = 1e-9) -> None:
    """A number (int/float or 0-d tensor) within tolerance of ``expected``."""
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        _fail(what, f"expected a number, got {type(got).__name__}")
    if abs(got - expected) > atol + rtol * abs(expected):
        _fail(what, f"expected {expected:.6g}, got {got:.6g}")
