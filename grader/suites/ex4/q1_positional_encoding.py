"""Sinusoidal positional encoding

Hidden suite of ex4 q1 (Vaswani et al. 2017, §3.5; seed 001 problem 1): the
table ``sinusoidal_table``, the module ``PositionalEncoding`` (batch-first, buffer
``pe``), the relative-position property of the table, and ``plot_periodicity``.

Tables are compared with the tolerance the q1 docstring promises: an absolute
error of ``1e-6 + 2e-7 * pos`` in row ``pos`` (float32 angles are accepted).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from grader.checks import (assert_close, assert_dropout_in_train_mode, assert_refused, assert_tensor, hints_for,
                           matching_hint, refusal)
from reference.positional_encoding import PositionalEncoding, sinusoidal_table

TABLE_ATOL, TABLE_ATOL_PER_POS = 1e-6, 2e-7  # row pos may be off by 1e-6 + 2e-7 * pos (see the docstring)


def row_tolerance(max_len: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(max_len, 1) absolute tolerance per row."""
    return TABLE_ATOL + TABLE_ATOL_PER_POS * torch.arange(max_len, dtype=torch.float64, device=device).unsqueeze(1)


def assert_table_close(got, expected: torch.Tensor, what: str, hints=()) -> None:
    """``got`` matches the reference table row by row (|error| <= 1e-6 + 2e-7 * pos); the dtype is not checked."""
    assert_tensor(got, what, shape=tuple(expected.shape))
    if not got.is_floating_point():
        raise AssertionError(f"{what}: dtype {got.dtype}, expected a floating-point table (float32)")
    max_len = expected.shape[0]
    error = (got.double().cpu() - expected.double().cpu()).abs().nan_to_num(math.inf)  # (max_len, d_model)
    tolerance = row_tolerance(max_len)  # (max_len, 1)
    bad = error > tolerance
    if not bad.any():
        return
    pos, col = (int(i) for i in torch.nonzero(bad)[0])
    worst = tuple(int(i) for i in torch.unravel_index((error / tolerance).argmax(), error.shape))
    hint = matching_hint(got.float().cpu(), hints, rtol=0.0, atol=TABLE_ATOL + TABLE_ATOL_PER_POS * max_len)
    lines = [
        f"{what}: {int(bad.sum())} of {bad.numel()} values are off by more than 1e-6 + 2e-7*pos.",
        f"first at [pos={pos}, column {col}]: expected {expected[pos, col].item():.7g}, got {got[pos, col].item():.7g}",
        f"largest error at [pos={worst[0]}, column {worst[1]}]: {error[worst].item():.3g}",
        f"row {pos}, first columns: expected {[round(v, 5) for v in expected[pos, :6].tolist()]}, "
        f"got {[round(v, 5) for v in got[pos, :6].tolist()]}",
    ]
    raise AssertionError("\n".join(lines) + (f"\nHint: {hint}" if hint else ""))


# --------------------------------------------------------------------------- sinusoidal_table

TABLE_CASES = [
    pytest.param(50, 16, None, id="50x16", marks=pytest.mark.points(1)),
    pytest.param(9, 6, None, id="9x6", marks=pytest.mark.points(0.5)),
    pytest.param(100, 32, 100.0, id="100x32-base100", marks=pytest.mark.points(0.5)),
    pytest.param(2048, 64, None, id="2048x64", marks=pytest.mark.points(0.5)),
]


@pytest.mark.parametrize("max_len, d_model, base", TABLE_CASES)
def test_table_values(learner, max_len, d_model, base):
    if base is None:
        what, got = f"sinusoidal_table({max_len}, {d_model})", learner.q1.sinusoidal_table(max_len, d_model)
    else:
        what = f"sinusoidal_table({max_len}, {d_model}, base={base})"
        got = learner.q1.sinusoidal_table(max_len, d_model, base=base)
    base = 10000.0 if base is None else base
    hints = hints_for("sinusoidal_table", lambda f: f(max_len, d_model, base))
    if base != 10000.0:
        fixed_base = sinusoidal_table(max_len, d_model)  # computed now, so that a release records it
        hints.append(("sinusoidal_table ignores its base argument: use base ** (2i / d_model), not a fixed 10000.",
                      lambda: fixed_base))
    assert_table_close(got, sinusoidal_table(max_len, d_model, base), what, hints)


@pytest.mark.points(0.5)
def test_table_dtype(learner):
    got = learner.q1.sinusoidal_table(10, 8)
    assert_tensor(got, "sinusoidal_table(10, 8)", shape=(10, 8))
    assert got.dtype == torch.float32, (
        f"sinusoidal_table(10, 8) has dtype {got.dtype}, expected torch.float32 "
        "(compute in float64 if you like, then convert with .float())"
    )


def expect_value_error(call, what: str, why: str) -> None:
    """``call()`` (into learner code) raises ValueError; otherwise fail saying what it did instead."""
    assert_refused(refusal(call, what, ValueError, why))


@pytest.mark.points(1)
def test_table_rejects_bad_sizes(learner):
    for max_len, d_model in [(10, 7), (10, 1), (0, 8), (10, 0), (-3, 8), (10, -4)]:
        expect_value_error(lambda: learner.q1.sinusoidal_table(max_len, d_model),
                           f"sinusoidal_table({max_len}, {d_model})", "d_model must be even and both sizes positive")
    for max_len, d_model in [(10, 7), (0, 8)]:
        expect_value_error(lambda: learner.q1.PositionalEncoding(d_model, max_len),
                           f"PositionalEncoding({d_model}, max_len={max_len})",
                           "the constructor refuses the sizes sinusoidal_table refuses")
    for dims in [(0, 8), (-1,)]:
        expect_value_error(lambda: learner.q1.plot_periodicity(d_model=8, max_len=10, dims=dims),
                           f"plot_periodicity(d_model=8, max_len=10, dims={dims})", "every dim must be in [0, d_model)")


# --------------------------------------------------------------------------- PositionalEncoding


@pytest.mark.points(1)
def test_module_adds_table_batch_first(learner, device):
    d_model, max_len, batch, seq_len = 16, 60, 3, 20
    x = torch.randn(batch, seq_len, d_model, device=device)  # (batch, seq_len, d_model)
    module = learner.q1.PositionalEncoding(d_model, max_len, 0.1)
    module.to(device)
    module.eval()
    got = module(x)

    def run(cls):
        return cls(d_model, max_len, 0.1).to(device).eval()(x)

    def add_table(table_fn):  # a wrong table inside an otherwise correct module
        return x + table_fn(max_len, d_model)[:seq_len].to(device)

    expected = PositionalEncoding(d_model, max_len, 0.1).to(device).eval()(x)  # x + pe[:, :seq_len]
    assert_close(got, expected, f"PositionalEncoding({d_model}, {max_len}, dropout=0.1).eval() on x (3, 20, 16)",
                 hints=hints_for("PositionalEncoding", run) + hints_for("sinusoidal_table", add_table),
                 rtol=0.0, atol=1e-5)
    half = module(x.half())  # the output keeps x's dtype: float16 in, float16 out (one float16 rounding apart)
    assert_close(half, expected.half(), f"PositionalEncoding({d_model}, {max_len}, dropout=0.1).eval() on x "
                 "(3, 20, 16) in float16 (the output has x's dtype: convert pe with .to(x.dtype))", rtol=0.0, atol=4e-3)


@pytest.mark.points(0.5)
def test_module_dropout_in_train_mode(learner, device):
    d_model, max_len, batch, seq_len, p = 16, 60, 32, 20, 0.5
    x = torch.randn(batch, seq_len, d_model, device=device)  # (batch, seq_len, d_model)
    for dropout in (p, 0.0):
        module = learner.q1.PositionalEncoding(d_model, max_len, dropout)
        module.to(device)
        module.eval()
        evaluation = module(x)
        module.train()
        train = module(x)
        what = f"PositionalEncoding({d_model}, {max_len}, dropout={dropout}).train() on x {tuple(x.shape)}"
        assert_tensor(evaluation, f"PositionalEncoding({d_model}, {max_len}, dropout={dropout}).eval() on x "
                                  f"{tuple(x.shape)}", shape=tuple(x.shape))
        if dropout:  # forward is dropout(x + pe): a fraction p zeroed, the rest scaled by 1 / (1 - p)
            assert_dropout_in_train_mode(train, evaluation, what, p=p, site="PositionalEncoding.dropout",
                                         on_output=True)
        else:
            assert_close(train, evaluation, f"{what} (with dropout=0.0, train mode must equal eval mode)")


@pytest.mark.points(0.5)
def test_module_rejects_long_input(learner):
    module = learner.q1.PositionalEncoding(8, 10)
    expect_value_error(lambda: module(torch.zeros(2, 11, 8)), "PositionalEncoding(8, max_len=10) on x (2, 11, 8)",
                       "seq_len 11 > max_len 10")


@pytest.mark.points(1)
def test_pe_buffer(learner):
    module = learner.q1.PositionalEncoding(12, 30)
    pe = module.pe
    assert_tensor(pe, "PositionalEncoding(12, 30).pe", shape=(1, 30, 12), dtype=torch.float32)
    assert_table_close(pe[0], sinusoidal_table(30, 12), "PositionalEncoding(12, 30).pe[0]",
                       hints_for("sinusoidal_table", lambda f: f(30, 12)))
    state = module.state_dict()
    assert "pe" in state, (
        f"PositionalEncoding(12, 30).state_dict() has keys {sorted(state)}, expected 'pe': "
        'register the table with self.register_buffer("pe", ...) (persistent)'
    )
    assert tuple(state["pe"].shape) == (1, 30, 12), f"state_dict()['pe'] has shape {tuple(state['pe'].shape)}"


@pytest.mark.points(0.5)
def test_pe_buffer_moves_with_to(learner, device):
    module = learner.q1.PositionalEncoding(8, 10)
    module.to(device=device, dtype=torch.float64)
    pe = module.pe
    assert_tensor(pe, f"PositionalEncoding(8, 10).to({device.type!r}, torch.float64).pe")
    assert pe.dtype == torch.float64 and pe.device.type == device.type, (
        f"after PositionalEncoding(8, 10).to(device={device.type!r}, dtype=torch.float64), pe is "
        f"{pe.dtype} on {pe.device.type}; a buffer registered with self.register_buffer moves with .to(...), "
        "a plain tensor attribute does not"
    )


# --------------------------------------------------------------------------- relative positions


@pytest.mark.points(1)
def test_relative_position_is_a_rotation(learner):
    max_len, d_model, base = 96, 16, 10000.0
    table = learner.q1.sinusoidal_table(max_len, d_model)
    assert_tensor(table, f"sinusoidal_table({max_len}, {d_model})", shape=(max_len, d_model))
    table = table.double().cpu()
    omega = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (d_model / 2,)

    @given(pos=st.integers(0, max_len // 2 - 1), k=st.integers(1, max_len // 2))
    def check(pos: int, k: int) -> None:
        pair = table[pos].view(-1, 2)  # (d_model / 2, 2): [sin, cos] of each frequency
        angle = k * omega  # (d_model / 2,)
        c, s = torch.cos(angle), torch.sin(angle)
        rotated = torch.stack([c * pair[:, 0] + s * pair[:, 1], -s * pair[:, 0] + c * pair[:, 1]], dim=1)
        shifted = table[pos + k].view(-1, 2)
        error = (shifted - rotated).abs().max(dim=1).values  # (d_model / 2,)
        tolerance = 2 * (TABLE_ATOL + TABLE_ATOL_PER_POS * (pos + k))
        if (error > tolerance).any():
            i = int(error.argmax())
            raise AssertionError(
                f"sinusoidal_table({max_len}, {d_model}): PE(pos + k) is not PE(pos) rotated by k * omega_i "
                f"(pos={pos}, k={k}). Columns ({2 * i}, {2 * i + 1}) at pos + k = {pos + k}: "
                f"expected {[round(v, 5) for v in rotated[i].tolist()]} "
                f"= R(k * omega_{i}) @ {[round(v, 5) for v in pair[i].tolist()]}, got "
                f"{[round(v, 5) for v in shifted[i].tolist()]}. Each pair (2i, 2i+1) must be (sin, cos) of "
                f"pos * omega_i with omega_i = 1 / base^(2i/d_model), base = 10000."
            )

    check()


# --------------------------------------------------------------------------- plot_periodicity

PLOT_D_MODEL, PLOT_MAX_LEN, PLOT_DIMS = 32, 40, (0, 3, 10, 17)


def periodicity_figure(learner):
    figure = learner.q1.plot_periodicity(d_model=PLOT_D_MODEL, max_len=PLOT_MAX_LEN, dims=PLOT_DIMS)
    call = f"plot_periodicity(d_model={PLOT_D_MODEL}, max_len={PLOT_MAX_LEN}, dims={PLOT_DIMS})"
    assert hasattr(figure, "axes"), f"{call} returned {type(figure).__name__}, expected a matplotlib Figure"
    assert len(figure.axes) >= 2, (
        f"{call}: the figure has {len(figure.axes)} axes (colorbars not counted), expected 2: "
        "the heatmap first, then the curves"
    )
    return figure, call


@pytest.mark.points(0.5)
def test_plot_heatmap(learner):
    figure, call = periodicity_figure(learner)
    heat = figure.axes[0]
    assert heat.images, f"{call}: fig.axes[0] holds no image; draw the table with ax.imshow(table)"
    image = heat.images[0]
    assert tuple(image.shape) == (PLOT_MAX_LEN, PLOT_D_MODEL), (
        f"{call}: the heatmap is {tuple(image.shape)}, expected (max_len, d_model) = ({PLOT_MAX_LEN}, {PLOT_D_MODEL}): "
        "position runs down the y axis, dimension along the x axis (do not transpose the table)"
    )
    assert_table_close(image, sinusoidal_table(PLOT_MAX_LEN, PLOT_D_MODEL), f"{call}: the heatmap's data")
    missing = [name for name in ("title", "xlabel", "ylabel") if not getattr(heat, name).strip()]
    assert not missing, f"{call}: the heatmap (fig.axes[0]) has no {', '.join(missing)}"


@pytest.mark.points(1)
def test_plot_curves(learner):
    figure, call = periodicity_figure(learner)
    curves = figure.axes[1]
    lines = curves.lines
    if len(lines) > len(PLOT_DIMS):  # tolerate unlabelled helper lines (e.g. axhline) next to the curves
        lines = [line for line in lines if not line["label"].startswith("_")]
    assert len(lines) == len(PLOT_DIMS), (
        f"{call}: fig.axes[1] has {len(lines)} curves, expected one per entry of dims ({len(PLOT_DIMS)}), in order"
    )
    table = sinusoidal_table(PLOT_MAX_LEN, PLOT_D_MODEL).double()
    positions = torch.arange(PLOT_MAX_LEN, dtype=torch.float64)
    for line, dim in zip(lines, PLOT_DIMS):
        assert line["y"].shape == (PLOT_MAX_LEN,) and line["x"].shape == (PLOT_MAX_LEN,), (
            f"{call}: the curve for dim {dim} has {line['y'].numel()} points, "
            f"expected {PLOT_MAX_LEN} (one per position)"
        )
        assert torch.allclose(line["x"], positions), f"{call}: the curve for dim {dim} should have x = range(max_len)"
        error = (line["y"] - table[:, dim]).abs()
        assert bool((error <= row_tolerance(PLOT_MAX_LEN).squeeze(1)).all()), (
            f"{call}: curve number {PLOT_DIMS.index(dim)} should be column dim={dim} of the table; "
            f"its first values are {[round(v, 4) for v in line['y'][:4].tolist()]}, "
            f"expected {[round(v, 4) for v in table[:4, dim].tolist()]}"
        )
    missing = [name for name in ("title", "xlabel", "ylabel") if not getattr(curves, name).strip()]
    assert not missing, f"{call}: the curves' axes (fig.axes[1]) have no {', '.join(missing)}"
    assert curves.legend, f"{call}: the curves' axes (fig.axes[1]) have no legend (label each curve, then ax.legend())"
