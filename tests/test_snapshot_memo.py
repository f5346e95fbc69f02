"""``grader.replay.snapshot`` in the kit computes each snapshot once per process, exactly.

A judge grading many submissions calls the same snapshots (reference outputs on
fixed inputs) for every one of them. A repeated call with the same inputs and the
same random-generator states returns a copy of the first result and leaves the
generators where a fresh run would have left them; anything else runs again.
"""

from __future__ import annotations

import random

import torch

from grader.replay import snapshot

calls: list[str] = []


@snapshot
def draws(n: int) -> dict:
    """Consumes the test's generators, like a seeded reference module's initialisation."""
    calls.append("draws")
    return {"values": torch.randn(n), "python": random.random()}


@snapshot
def scaled(x: torch.Tensor, factor: float) -> torch.Tensor:
    calls.append("scaled")
    return x * factor


@snapshot
def applied(fn, x: torch.Tensor) -> torch.Tensor:
    calls.append("applied")
    return fn(x)


@snapshot
def with_grad(x: torch.Tensor) -> torch.Tensor:
    calls.append("with_grad")
    return x.clone().requires_grad_(True)


def seeded(function, *args):
    """``function(*args)`` from seed 0, then the next draws of both generators."""
    torch.manual_seed(0)
    random.seed(0)
    result = function(*args)
    return result, torch.randn(3), random.random()


def test_a_repeated_call_is_a_copy_and_leaves_the_generators_as_a_fresh_run():
    calls.clear()
    first, torch_next, random_next = seeded(draws, 4)
    again, torch_again, random_again = seeded(draws, 4)
    assert calls == ["draws"], "the second call with the same inputs and seeds ran again"
    assert torch.equal(first["values"], again["values"]) and first["python"] == again["python"]
    assert torch.equal(torch_next, torch_again) and random_next == random_again, "generators left elsewhere"


def test_another_generator_state_or_input_runs_again():
    calls.clear()
    first, _, _ = seeded(draws, 6)
    torch.manual_seed(1)
    random.seed(0)
    other = draws(6)
    seeded(draws, 7)
    assert calls == ["draws", "draws", "draws"]
    assert not torch.equal(other["values"], first["values"])


def test_the_kept_result_cannot_be_changed_by_a_caller():
    calls.clear()
    x = torch.arange(3.0)
    scaled(x, 2.0).add_(100)
    again = scaled(x, 2.0)
    again.add_(100)
    assert torch.equal(scaled(x, 2.0), x * 2) and calls == ["scaled"]
    assert scaled(x, 3.0).tolist() == [0.0, 3.0, 6.0] and calls == ["scaled", "scaled"]


def test_opaque_inputs_and_results_that_need_grad_are_not_kept():
    calls.clear()
    x = torch.ones(2)
    applied(lambda t: t + 1, x)
    assert applied(lambda t: t * 5, x).tolist() == [5.0, 5.0], "two different callables were taken for one"
    with_grad(x)
    with_grad(x)
    assert calls == ["applied", "applied", "with_grad", "with_grad"]
