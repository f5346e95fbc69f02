"""Checks that hidden suites use to compare learner results with the reference.

Every check fails with an ``AssertionError`` whose message is written for the
learner: what was checked, shape/dtype/NaN problems before values, the largest
error and where it occurs, a few expected vs got values, and, when the learner's
output matches a known wrong variant of the reference, a hint naming the mistake.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Callable, Iterable

import torch

from grader.judge import LearnerError
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


def evaluated_hints(hints: Iterable[Hint]) -> list[list]:
    """``[[text, wrong output or None]]``: each hint's wrong variant run now, as plain data for a snapshot.

    A variant that cannot run on this input gives ``None`` (and no hint).
    """
    found = []
    for text, thunk in hints:
        try:
            found.append([text, thunk()])
        except Exception:  # noqa: BLE001 - a variant that cannot run on this input gives no hint
            found.append([text, None])
    return found


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
            f"largest error at index {index}: {describe_difference(got[index].item(), expected[index].item())}\n"
            f"first values: expected {[round(v, 5) for v in flat_expected]}, got {[round(v, 5) for v in flat_got]}"
        )
        _fail(what, detail, matching_hint(got, hints, **tolerance))


def describe_difference(got: float, expected: float) -> str:
    """How far ``got`` is from ``expected``, with digits enough to see it, and float32 rounding named.

    Both numbers get 6 significant digits, or one more than the first digit where
    they differ: ``"expected 1.7917595, got 1.7917596: off by 1.4e-07 (relative
    7.9e-08) — looks like float32 precision ..."`` (the caller prefixes what was checked).
    """
    digits = next((n for n in range(6, 17) if f"{expected:.{n}g}" != f"{got:.{n}g}"), 16)
    if digits > 6:  # one digit past the first that differs
        digits += 1
    difference = abs(got - expected)
    text = f"expected {expected:.{digits}g}, got {got:.{digits}g}: off by {difference:.2g}"
    if expected and math.isfinite(difference):
        text += f" (relative {difference / abs(expected):.2g})"
    if looks_like_float32(got, expected):
        text += (" — looks like float32 precision: the value is a float32 number within a few float32 steps of "
                 "the expected one; compute in float64 (torch.float64 / .double()) as the docstring asks")
    return text


def looks_like_float32(got: float, expected: float) -> bool:
    """``got`` differs from ``expected``, is exactly a float32 number, and is within 8 float32 steps of it."""
    if got == expected or not (math.isfinite(got) and math.isfinite(expected)) or abs(got) >= 3.4e38:
        return False
    step = 2.0 ** (math.frexp(expected)[1] - 24) if expected else 2.0 ** -126  # float32 spacing near expected
    return struct.unpack("f", struct.pack("f", got))[0] == got and abs(got - expected) <= 8 * step


def assert_allclose_number(got: Any, expected: float, what: str, *, rtol: float = 1e-6, atol: float = 1e-9,
                           hint: str | None = None) -> None:
    """A number (int/float or 0-d tensor) within tolerance of ``expected``.

    Raises:
        AssertionError: naming ``what``, the expected and got values, the absolute and
            relative difference, float32 rounding when that explains it, and ``hint``.
    """
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        _fail(what, f"expected a number, got {type(got).__name__}")
    if math.isnan(got) and not math.isnan(expected):
        _fail(what, f"expected {expected!r}, got nan", hint)
    if not abs(got - expected) <= atol + rtol * abs(expected):
        _fail(what, describe_difference(float(got), float(expected)), hint)


# --------------------------------------------------------------------------- dropout in train mode


def assert_dropout_in_train_mode(train: Any, evaluation: torch.Tensor, what: str, *, p: float, site: str,
                                 on_output: bool = False, unbiased: bool = False) -> None:
    """``train`` (the output in train mode, dropout ``p`` at ``site``) shows that dropout ran.

    ``evaluation`` is the same module's output on the same input in eval mode. Checks:
    the outputs differ; without ``on_output`` (dropout inside the module) at most
    ``p / 2`` of the output values are exactly 0; with ``on_output`` (dropout is the
    last step) a fraction near ``p`` is zeroed and the rest is ``evaluation / (1 - p)``;
    with ``unbiased`` (dropout feeds a linear map, so the expected output is the eval
    output) the input holds identical samples along dim 0 and their mean is the eval
    output within 6 standard errors. The caller seeds nothing: the worker is seeded
    before every test, so the draw, and the verdict, are the same on every run.

    Raises:
        AssertionError: in the learner's terms, saying which dropout is missing or wrong.
    """
    assert_tensor(train, what, shape=tuple(evaluation.shape))
    train, evaluation = train.detach().double().cpu(), evaluation.detach().double().cpu()
    missing = (f"the output equals the eval-mode output: dropout in train mode is missing ({site} = "
               f"nn.Dropout(p={p:g}) must be applied in forward; it zeroes values only after module.train())")
    if torch.allclose(train, evaluation, rtol=1e-5, atol=1e-6):
        _fail(what, missing)
    live = evaluation != 0  # (values the eval output does not already zero)
    zeroed = float(((train == 0) & live).sum() / live.sum().clamp_min(1))
    if not on_output and zeroed > p / 2:
        _fail(what, f"{zeroed:.1%} of the output values are exactly 0: dropout is applied to the output, not "
                    f"inside the module where the docstring puts {site}")
    if on_output:
        if abs(zeroed - p) > 0.05:
            _fail(what, f"{zeroed:.1%} of the values are zeroed, expected about p = {p:.0%}: {site} should be "
                        f"the last step, nn.Dropout(p) applied to the whole output")
        kept = (train != 0) & live
        ratio = train[kept] / evaluation[kept]
        worst = float((ratio - 1 / (1 - p)).abs().max()) if kept.any() else 0.0
        if worst > 1e-4:
            _fail(what, f"the values dropout keeps should be the eval-mode values times 1/(1 - p) = {1 / (1 - p):g}; "
                        f"a ratio is off by {worst:.3g} (median ratio {float(ratio.median()):.4g}). nn.Dropout "
                        "rescales for you; is dropout applied before the last step, or twice?")
    if unbiased:
        copies = train.shape[0]
        mean, error = train.mean(dim=0), train.std(dim=0) / math.sqrt(copies)  # over identical samples
        gap = (mean - evaluation[0]).abs()
        bad = gap > 6 * error + 1e-6
        if bad.any():
            index = tuple(int(i) for i in bad.nonzero()[0])
            _fail(what, f"averaged over {copies} identical samples, the train-mode output should equal the "
                        f"eval-mode output (dropout keeps the expected value), but at index {index} the mean is "
                        f"{float(mean[index]):.5g}, the eval value {float(evaluation[0][index]):.5g}: {site} is "
                        "not where the docstring puts it, or kept values are not scaled by 1/(1 - p) "
                        "(nn.Dropout does both)")


def sub_module(module: Any, path: str, call: str) -> Any:
    """The learner's sub-module of ``module`` at the documented attribute path (``"blocks.0.dropout"``).

    Raises:
        AssertionError: the path does not exist, named in the learner's terms (``call``).
    """
    for part in path.split("."):
        try:
            module = module[int(part)] if part.isdigit() else getattr(module, part)
        except LearnerError as error:
            if isinstance(error, NotImplementedError):
                raise
            _fail(f"{call}.{path}", f"{error.type_name}: {error.message}; the docstring documents this attribute")
    return module


def refusal(call: Callable[[], Any], what: str, error: type[BaseException], why: str) -> str | None:
    """``None`` when ``call()`` (into learner code) raises ``error``, else the problem in one sentence.

    A learner's ``NotImplementedError`` propagates (the question is not done yet).
    """
    try:
        call()
    except error:
        return None
    except LearnerError as raised:
        if isinstance(raised, NotImplementedError):
            raise
        return f"{what} raised {raised.type_name}: {raised.message}; expected {error.__name__} ({why})"
    return f"{what} did not raise; expected {error.__name__} ({why})"


def assert_refused(*refusals: str | None) -> None:
    """Fail with every problem ``refusal`` found, one per line."""
    problems = [problem for problem in refusals if problem]
    if problems:
        raise AssertionError("\n".join(problems))
