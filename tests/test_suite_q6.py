"""The hidden q6 suite (the learner's own unit tests) scores test files by what they catch.

The learner's file is run on the reference and on every misconception of
``reference.misconceptions``. The model answer gets full marks; a file that
catches nothing, catches only some kinds, fails on the correct implementation,
crashes, hangs or peeks at the implementations' internals loses exactly the
points it should, and the rest of the grade is still produced; every hidden
test fails on at least one of these files; the untouched stub scores 0.
"""

from __future__ import annotations

import ast

import pytest

from conftest import (EXERCISES, SOLUTIONS, Edit, assert_every_test_catches_a_bug, grade, make_submission, messages,
                      question)

FILE = "q6_tests.py"
SOURCE = (SOLUTIONS / FILE).read_text()


def _tests_of_solution() -> dict[str, str]:
    tree = ast.parse(SOURCE)
    return {node.name: ast.get_source_segment(SOURCE, node) for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


TESTS = _tests_of_solution()
HEADER = SOURCE[: SOURCE.index("\ndef test_")]  # imports, assert_close and the model answer's helpers


def learner_file(*tests: str, extra: str = "") -> str:
    """A test file made of the model answer's header, some of its tests (by name) and ``extra`` code."""
    return "\n\n\n".join([HEADER, *(TESTS[t] for t in tests), extra]) + "\n"


def file_edit(name: str, text: str, hint: str | None = None) -> Edit:
    return Edit(name, FILE, (), hint=hint, extra_files={FILE: text})


LAYER_NORM_TESTS = ("test_layer_norm_matches_torch", "test_layer_norm_small_variance_and_tuple_shape")
NORMALIZATION_TESTS = LAYER_NORM_TESTS + (
    "test_batch_norm_train_step_and_running_stats", "test_batch_norm_eval_uses_running_stats",
    "test_batch_norm_3d_pools_over_batch_and_length")

CHEATS = '''
import inspect


def test_peek_module(impl):
    assert impl.LayerNorm.__module__ == "reference.normalization"


def test_peek_private(impl):
    assert not impl.LayerNorm(8)._unbiased


def test_peek_flags(impl):  # the variants' switches are private, so this reads the same everywhere
    assert not hasattr(impl.LayerNorm(8), "unbiased") and not hasattr(impl.BatchNorm1D(4), "momentum_reversed")


def test_peek_mro(impl):  # impl names are plain functions: no class to inspect
    assert len(impl.MultiHeadAttention.mro()) == 3


def test_peek_source(impl):
    assert "finfo" in inspect.getsource(impl.ScaledDotProductAttention)


def test_peek_repr(impl):
    assert "Bug" not in repr(impl.LayerNorm(8)) + type(impl.BatchNorm1D(4)).__name__


def test_peek_too_big(impl):  # a construction over the size cap is refused
    impl.sinusoidal_table(16384, 16384)
'''

BUGGY = [
    file_edit("assert true only", "def test_nothing(impl):\n    assert True\n",
              hint="not caught by any of your tests that pass on the correct implementation"),
    file_edit("layer norm only", learner_file(*LAYER_NORM_TESTS), hint="a normalization bug in BatchNorm1D"),
    file_edit("normalization only", learner_file(*NORMALIZATION_TESTS), hint="a masking bug in MultiHeadAttention"),
    Edit("fails on correct", FILE, ((  # the expected value of the feed-forward test forgets the ReLU
        'hidden = F.relu(F.linear(x, w["linear1.weight"], w["linear1.bias"]))',
        'hidden = F.linear(x, w["linear1.weight"], w["linear1.bias"])',
    ),), hint="1 of your 13 tests fail on a correct implementation: test_feed_forward_matches_formula"),
    file_edit("peeks at internals", learner_file("test_layer_norm_matches_torch", extra=CHEATS),
              hint="fail on a correct implementation: test_peek_module, test_peek_mro, test_peek_private, "
                   "test_peek_source, test_peek_too_big"),
    file_edit("os._exit at import", "import os\nos._exit(0)\n\n\ndef test_nothing(impl):\n    assert True\n",
              hint="ended the worker process"),
]
LOOPING = file_edit("endless test", learner_file("test_layer_norm_matches_torch",
                                                 extra="def test_loop(impl):\n    while True:\n        pass\n"),
                    hint="did not return within 5 s")

CORRECT = [
    # more tests, written differently: parametrized, a test without impl, pytest.raises, properties only
    Edit("extra tests", FILE, (), extra_files={FILE: SOURCE + '''

@pytest.mark.parametrize("max_len, d_model", [(10, 4), (33, 32)])
def test_table_shape_and_range(impl, max_len, d_model):
    table = impl.sinusoidal_table(max_len, d_model)
    assert table.shape == (max_len, d_model) and table.dtype == torch.float32
    assert table.abs().max() <= 1.0 and (table[0, 1::2] == 1).all()


def test_odd_d_model_is_refused(impl):
    with pytest.raises(ValueError):
        impl.sinusoidal_table(10, 7)


def test_my_helper():
    assert_close(torch.ones(2), torch.ones(2), "ones")


class TestProperties:
    def test_layer_norm_rows_are_standardized(self, impl):
        y = impl.LayerNorm(16)(torch.randn(4, 16) * 5 + 2)
        assert_close(y.mean(-1), torch.zeros(4), "row means", atol=1e-5)
        assert_close(y.var(-1, unbiased=False), torch.ones(4), "row variances", atol=1e-3)
'''}),
]

POINTS = {"test_file_runs": 1.0, "test_all_pass_on_correct_implementation": 3.0}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("q6")
    graded = {"solutions": question(grade(SOLUTIONS, "q6"), "q6")}
    for edit in BUGGY + CORRECT:
        questions = ("q1", "q6") if edit.name == "os._exit at import" else ("q6",)
        result = grade(make_submission(root, edit), *questions)
        graded[edit.name] = question(result, "q6")
        if len(questions) == 2:
            graded["q1 beside os._exit"] = question(result, "q1")
    # a shorter time limit per call (the q6 marker is capped at 10x it), so the endless test costs 5 s
    graded[LOOPING.name] = question(grade(make_submission(root, LOOPING), "q6", time_limit=0.5), "q6")
    return graded


def score_of(block: dict, prefix: str) -> float:
    return sum(t["points"] for t in block["tests"] if t["name"].startswith(prefix))


def test_solutions_get_full_marks(results):
    block = results["solutions"]
    assert block["score"] == block["max_score"] == 15.0, messages(block)


@pytest.mark.parametrize("edit", BUGGY + [LOOPING], ids=lambda e: e.name)
def test_buggy_file_loses_points(results, edit):
    block = results[edit.name]
    assert block["score"] < block["max_score"], f"{edit.name}: full marks"
    assert edit.hint in messages(block), f"{edit.name}: {edit.hint!r} not in\n{messages(block)}"


def test_catching_nothing_scores_only_for_running(results):
    block = results["assert true only"]
    assert block["score"] == 4.0, messages(block)
    for kind in ("positional-encoding", "masking", "scaling", "attention-score", "normalization",
                 "running-statistics", "residual/normalization-order", "missing-layer"):
        assert f"{kind} bug" in messages(block), kind


def test_partial_files_get_partial_credit(results):
    layer_norm, normalization = results["layer norm only"], results["normalization only"]
    assert layer_norm["score"] == 4.0, messages(layer_norm)  # LayerNorm's bugs are only part of a kind
    assert "in LayerNorm" not in messages(layer_norm)
    assert normalization["score"] == 4.0 + 1.5 + 1.5, messages(normalization)  # normalization, running statistics


def test_a_test_failing_on_correct_code_counts_for_nothing(results):
    block = results["fails on correct"]
    failed = {t["name"] for t in block["tests"] if t["outcome"] != "passed"}
    # the broken test fails on correct code and passes on the missing-ReLU bug: it catches nothing
    assert failed == {"test_all_pass_on_correct_implementation", "test_catches_bugs[missing-layer]"}, messages(block)
    assert "a missing-layer bug in FeedForward" in messages(block)


def test_peeking_at_internals_gains_nothing(results):
    block = results["peeks at internals"]
    assert score_of(block, "test_catches_bugs") == 0.0, messages(block)
    assert "test_peek_flags" not in messages(block)  # it passes everywhere, so it is valid and catches nothing


def test_crashing_or_endless_files_score_zero_and_break_nothing(results):
    for name in ("os._exit at import", "endless test"):
        block = results[name]
        assert block["score"] == 0.0, messages(block)
        assert all(t["outcome"] == "failed" for t in block["tests"]), messages(block)
    beside = results["q1 beside os._exit"]
    assert beside["score"] == beside["max_score"], messages(beside)


@pytest.mark.parametrize("edit", CORRECT, ids=lambda e: e.name)
def test_correct_rewrite_keeps_full_marks(results, edit):
    block = results[edit.name]
    assert block["score"] == block["max_score"], f"{edit.name}:\n{messages(block)}"


def test_every_test_catches_a_bug(results):
    assert_every_test_catches_a_bug(results, BUGGY + [LOOPING])


def test_untouched_stub_scores_zero():
    block = question(grade(EXERCISES, "q6"), "q6")
    assert block["score"] == 0.0, messages(block)
    assert all(t["outcome"] == "failed" for t in block["tests"])
    assert "not implemented yet" in messages(block)


def test_implementations_hide_their_identity():
    """No public attribute tells a buggy variant from the reference; the order is fixed and mixed."""
    from grader.suites.ex4 import q6_tests as suite
    from reference.misconceptions import MISCONCEPTIONS

    for m in MISCONCEPTIONS:
        reference = suite.API[m.target]
        if isinstance(m.impl, type):
            public = {n for n in dir(m.impl) if not n.startswith("_")}
            assert public == {n for n in dir(reference) if not n.startswith("_")}, m.key
    assert {m.kind for m in MISCONCEPTIONS} == {kind for kind, _, _ in suite.KINDS}, "a kind without its hidden test"
    entries = suite.implementations()
    assert entries == suite.implementations()
    assert len(entries) == len(suite.GRADED) + suite.N_CORRECT and entries[0] is not None
    assert {m.kind for m in entries if m} == {m.kind for m in MISCONCEPTIONS}, "every kind is graded"
    assert not any(isinstance(getattr(suite.namespace(e), n), type) for e in entries[:3] for n in suite.API)


def test_the_judges_exceptions_reach_the_learners_tests_however_the_judge_pickles(tmp_path):
    """A judge on a Dask worker has tblib's exception reducers installed (``distributed`` installs them): the
    correct implementation's ValueError still reaches the learner's ``pytest.raises(ValueError)`` as one."""
    pytest.importorskip("tblib.pickling_support").install()
    edit = next(e for e in CORRECT if e.name == "extra tests")
    block = question(grade(make_submission(tmp_path, edit), "q6"), "q6")
    assert block["score"] == block["max_score"], messages(block)
