"""README cannot go stale: each example command it shows is run, and ends as README says it ends.

Regenerate the examples after a change in output: ``python tests/readme_examples.py --write``.
"""

from __future__ import annotations

import pytest

from readme_examples import closing_line, examples, run

EXAMPLES = examples()


def test_readme_has_examples_and_shows_no_crash():
    assert len(EXAMPLES) >= 2
    for example in EXAMPLES:
        for marker in ("Traceback", "INTERNALERROR", "internal error in the grading kit"):
            assert marker not in example.output, f"README's `{example.command}` shows a crash"


def test_closing_line_ignores_timings():
    assert closing_line("a\n\nTotal: 7/10  (2.1 s)\n\n") == "Total: 7/10  (… s)"


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.command for e in EXAMPLES])
def test_readme_example_ends_as_shown(example):
    assert closing_line(run(example.command)) == example.closing_line
