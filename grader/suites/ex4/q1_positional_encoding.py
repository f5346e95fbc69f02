"""Sinusoidal positional encoding"""
import pytest
import torch

from grader.checks import assert_close, hints_for
from reference.positional_encoding import sinusoidal_table


@pytest.mark.points(2)
def test_table_values(learner):
    got = learner.q1.sinusoidal_table(50, 16)
    assert_close(got, sinusoidal_table(50, 16), "sinusoidal_table(50, 16)",
                 hints=hints_for("sinusoidal_table", lambda f: f(50, 16)), atol=1e-5)


def test_odd_d_model_raises(learner):
    with pytest.raises(ValueError):
        learner.q1.sinusoidal_table(10, 7)
