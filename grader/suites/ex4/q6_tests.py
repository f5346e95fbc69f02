"""Unit tests for the components

The learner's ``q6_tests.py`` is run (in the worker, by ``learner.run_tests``)
once per implementation namespace built here: the reference (twice, at
shuffled positions) and one buggy namespace per misconception in
``reference.misconceptions`` (the reference with one name replaced). A bug is
caught when a learner test that passes on every correct copy fails on it.

The file is run once per grading (the first test that needs it runs it; the
result, failure included, is kept in ``config.stash``). The namespaces hold
plain functions, never the classes themselves, so a learner test cannot tell
the variants apart by their type (``mro()``) and constructors are capped in size.
"""

from __future__ import annotations

import inspect
import math
import random
import types
from dataclasses import dataclass, field

import pytest
import torch

from grader.judge import LearnerError, WorkerDied
from grader.learner_tests import MAX_ELEMENTS
from reference import attention, encoder, normalization, positional_encoding
from reference.misconceptions import Misconception, by_key

TIME_LIMIT = 60.0  # seconds for the learner's whole file, run on every implementation (the time_limit marker)
N_CORRECT = 2  # copies of the correct implementation; every test must pass on each
_ORDER_SEED = 80_613_457  # secret: the order of the implementations (and where the correct copies are)

# hidden: grading a learner's tests needs the live reference and its buggy variants,
# which a learner bundle (grade release) does not contain
pytestmark = [pytest.mark.time_limit(TIME_LIMIT), pytest.mark.hidden]

API = {
    "sinusoidal_table": positional_encoding.sinusoidal_table,
    "PositionalEncoding": positional_encoding.PositionalEncoding,
    "MultiHeadAttention": encoder.MultiHeadAttention,
    "FeedForward": encoder.FeedForward,
    "TransformerBlock": encoder.TransformerBlock,
    "MinimalTransformerEncoder": encoder.MinimalTransformerEncoder,
    "AdditiveAttention": attention.AdditiveAttention,
    "ScaledDotProductAttention": attention.ScaledDotProductAttention,
    "LayerNorm": normalization.LayerNorm,
    "BatchNorm1D": normalization.BatchNorm1D,
}


def _block(d_model, n_heads, d_ff, dropout=0.1):
    return 4 * d_model * d_model + 2 * d_model * d_ff


SIZES = {  # elements a call allocates up front, from its arguments (a learner test may not ask for more)
    "sinusoidal_table": lambda max_len, d_model, base=1e4: max_len * d_model,
    "PositionalEncoding": lambda d_model, max_len=5000, dropout=0.0: max_len * d_model,
    "MultiHeadAttention": lambda d_model, n_heads, dropout=0.1: 4 * d_model * d_model,
    "FeedForward": lambda d_model, d_ff, dropout=0.1: 2 * d_model * d_ff,
    "TransformerBlock": _block,
    "MinimalTransformerEncoder": lambda vocab_size, d_model, n_heads, n_layers, d_ff, max_len=512, dropout=0.1:
        (vocab_size + max_len) * d_model + n_layers * _block(d_model, n_heads, d_ff),
    "AdditiveAttention": lambda hidden_size: 2 * hidden_size * hidden_size,
    "ScaledDotProductAttention": lambda dropout=0.0: 0,
    "LayerNorm": lambda normalized_shape, eps=1e-5:
        normalized_shape if isinstance(normalized_shape, int) else math.prod(normalized_shape),
    "BatchNorm1D": lambda num_features, eps=1e-5, momentum=0.1: 4 * num_features,
}

KINDS = [  # (kind, points, test id); the catching part is 11 of the question's 15 points
    ("a positional-encoding bug", 1.5, "positional-encoding"),
    ("a masking bug", 1.5, "masking"),
    ("a scaling bug", 1.5, "scaling"),
    ("an attention-score bug", 1.5, "attention-score"),
    ("a normalization bug", 1.5, "normalization"),
    ("a running-statistics bug", 1.5, "running-statistics"),
    ("a residual/normalization-order bug", 1.0, "residual-order"),
    ("a missing-layer bug", 1.0, "missing-layer"),
]


def _guarded(name: str, impl):
    """``impl`` behind a plain function that refuses oversized constructions."""
    signature = inspect.signature(API[name])

    def call(*args, **kwargs):
        try:
            arguments = signature.bind(*args, **kwargs).arguments
            size = SIZES[name](**arguments)
        except Exception:  # noqa: BLE001 - bad arguments: let the implementation raise its own error
            size = 0
        if isinstance(size, (int, float)) and size > MAX_ELEMENTS:
            raise ValueError(f"{name}{tuple(args)}: objects built through impl are limited to "
                             f"{MAX_ELEMENTS} elements (this needs {size}); use smaller sizes")
        return impl(*args, **kwargs)

    return call


# The buggy implementations a learner's tests must catch: every misconception the
# hints of q1-q4 name, and at least one of every kind. (All 34 variants would cost
# the learner's file 36 runs instead of 22; these 20 cover the same ground.)
GRADED = (
    "pe_sin_cos_swapped", "pe_halves_not_interleaved", "pe_base_1000", "encoder_missing_embedding_scale",
    "mha_softmax_over_queries", "mha_missing_scale", "mha_inverted_mask", "mha_missing_output_projection",
    "sdpa_mask_after_softmax", "additive_missing_tanh", "ffn_missing_relu",
    "block_missing_residual", "block_pre_norm",
    "layernorm_unbiased_variance", "layernorm_eps_on_std", "batchnorm_over_feature_axis",
    "batchnorm_running_var_biased", "batchnorm_momentum_reversed", "batchnorm_eval_uses_batch_stats",
    "layernorm_over_batch_axis",
)


def implementations() -> list[Misconception | None]:
    """What each namespace holds, in grading order: ``None`` for a correct copy, else its misconception."""
    entries: list[Misconception | None] = [None] * N_CORRECT + [by_key(key) for key in GRADED]
    random.Random(_ORDER_SEED).shuffle(entries)
    return entries


def namespace(entry: Misconception | None) -> types.SimpleNamespace:
    """The reference names, with ``entry``'s target replaced by its wrong variant."""
    return types.SimpleNamespace(**{
        name: _guarded(name, entry.impl if entry is not None and entry.target == name else reference)
        for name, reference in API.items()
    })


@dataclass
class Graded:
    """What running the learner's file on every implementation showed."""

    entries: list[Misconception | None]
    error: str | None = None  # the file could not be run at all (crash, time limit, no file)
    collection_errors: list[str] = field(default_factory=list)
    outcomes: dict[str, dict[int, str]] = field(default_factory=dict)  # test -> implementation index -> outcome
    not_implemented: list[str] = field(default_factory=list)

    @property
    def correct(self) -> list[int]:
        return [i for i, entry in enumerate(self.entries) if entry is None]

    def passes_on_correct(self, test: str) -> bool:
        return all(self.outcomes[test].get(i) == "passed" for i in self.correct)

    @property
    def failing_on_correct(self) -> list[str]:
        return sorted(t for t in self.outcomes if not self.passes_on_correct(t))

    @property
    def caught(self) -> set[str]:
        """Keys of the misconceptions some test that passes on the correct implementation fails on."""
        valid = [t for t in self.outcomes if self.passes_on_correct(t)]
        return {entry.key for i, entry in enumerate(self.entries)
                if entry is not None and any(self.outcomes[t].get(i) == "failed" for t in valid)}

    def require_run(self, brief: bool = False) -> None:
        """Fail (with the reason, or a pointer to it when ``brief``) when there is nothing to grade."""
        problem = self.error or ("your test file could not be collected:\n" + self.collection_errors[0]
                                 if self.collection_errors else None)
        if problem is None and not self.outcomes:
            problem = ("your file has no test that takes the fixture impl "
                       "(write def test_something(impl): ... and use impl.LayerNorm etc. inside)")
        if problem is not None:
            raise AssertionError("your tests did not run, so nothing could be checked (see test_file_runs)"
                                 if brief else problem)


_RESULT = pytest.StashKey[Graded]()


def run(learner) -> Graded:
    """Run the learner's file on every implementation; never raises for the learner's faults."""
    entries = implementations()
    graded = Graded(entries)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the implementations see tiny tensors: one thread avoids thread wake-ups
    try:
        report = learner.run_tests("q6", [namespace(e) for e in entries])
        graded.collection_errors = [str(e) for e in report["errors"]]
        graded.outcomes = {str(t): {int(i): str(o) for i, o in by_impl.items()}
                           for t, by_impl in report["outcomes"].items()}
    except WorkerDied as exc:
        graded.error = f"your tests could not be run to the end: {exc}"
        return graded
    except LearnerError as exc:
        graded.error = f"your tests could not be run: {exc}"
        return graded
    except Exception as exc:  # noqa: BLE001 - e.g. a file that tampered with the test run's report
        graded.error = f"the results of your tests could not be read ({type(exc).__name__}: {exc})"
        return graded
    finally:
        torch.set_num_threads(threads)
    graded.not_implemented = _not_implemented(learner, graded.failing_on_correct)
    return graded


def _not_implemented(learner, tests: list[str]) -> list[str]:
    """The tests among ``tests`` that are still stubs: called with ``impl=None`` they raise NotImplementedError."""
    found = []
    for name in sorted({t.split("[", 1)[0] for t in tests})[:20]:
        try:
            getattr(learner.q6, name)(None)
        except NotImplementedError:
            found.append(name)
        except WorkerDied:
            break
        except Exception:  # noqa: BLE001 - anything else: the test is written
            continue
    return found


@pytest.fixture
def graded(learner, request) -> Graded:
    stash = request.config.stash
    if _RESULT not in stash:
        stash[_RESULT] = run(learner)
    return stash[_RESULT]


def _plural(kind: str, n: int, target: str) -> str:
    noun = kind.split(" ", 1)[1]  # "masking bug"
    return f"{kind} in {target}" if n == 1 else f"{n} {noun}s in {target}"


@pytest.mark.points(1)
def test_file_runs(graded):
    graded.require_run()
    assert not graded.not_implemented, (
        f"not implemented yet: {', '.join(graded.not_implemented)} (write these tests, or delete the ones you do not want)"
    )


@pytest.mark.points(3)
def test_all_pass_on_correct_implementation(graded):
    graded.require_run(brief=True)
    failing = graded.failing_on_correct
    stubs = set(graded.not_implemented)
    named = [f"{t} (not implemented yet)" if t.split("[", 1)[0] in stubs else t for t in failing[:12]]
    more = f" and {len(failing) - 12} more" if len(failing) > 12 else ""
    assert not failing, (
        f"{len(failing)} of your {len(graded.outcomes)} tests fail on a correct implementation: "
        f"{', '.join(named)}{more}. "
        "A test must pass on code that meets the Q1-Q4 specifications; check your expected values "
        "(torch's own modules, the formulas) and tolerances. A test that fails on correct code catches no bug."
    )


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.points(p), id=i) for k, p, i in KINDS])
def test_catches_bugs(graded, kind):
    graded.require_run(brief=True)
    assert len(graded.outcomes) > len(graded.failing_on_correct), (
        f"none of your tests passes on the correct implementation, so none can catch {kind}"
    )
    bugs = [e for e in graded.entries if e is not None and e.kind == kind]
    caught = graded.caught
    missed: dict[str, int] = {}
    for bug in bugs:
        if bug.key not in caught:
            missed[bug.target] = missed.get(bug.target, 0) + 1
    assert not missed, (
        f"not caught by any of your tests that pass on the correct implementation: "
        f"{'; '.join(_plural(kind, n, target) for target, n in sorted(missed.items()))} "
        f"({len(bugs) - sum(missed.values())} of {len(bugs)} such bugs caught). "
        f"Write a test that compares that component with an independent oracle on an input where the mistake shows."
    )
