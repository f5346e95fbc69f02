"""Transformer profiler: memory, time and complexity"""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from grader.checks import assert_refused, describe_difference, refusal
from reference import profiler as ref

# The models profiled here are built in the judge from torch modules only and sent to
# your code as they are (an nn.Sequential, or a torch.fx GraphModule traced from the
# class below), so the judge can count the same model's memory with the reference.


class _SelfAttention(nn.Module):
    """One explicit softmax self-attention layer: (batch, seq_len, d_model) -> same; scores are (L, L)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads, self.d_k = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x):
        b, l, d = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.n_heads, self.d_k).permute(2, 0, 3, 1, 4)  # (b, h, l, d_k) each
        w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_k), dim=-1)  # (b, h, l, l)
        return x + self.out((w @ v).transpose(1, 2).reshape(b, l, d))  # (b, l, d)


def attention_model(d_model: int = 8, n_heads: int = 4) -> nn.Module:
    """An attention-dominated model with a ``d_model`` attribute, in eval mode."""
    torch.manual_seed(0)
    model = torch.fx.symbolic_trace(_SelfAttention(d_model, n_heads))
    model.d_model = d_model
    return model.eval()


def mlp_model(d_model: int = 12, hidden: int = 24) -> nn.Module:
    """A position-wise model without a ``d_model`` attribute (pass ``d_model=``)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, d_model)).eval()


def make_input(model: nn.Module, batch_size: int, seq_len: int, d_model: int) -> torch.Tensor:
    """The input the docstring prescribes: torch.randn with a Generator seeded 0, float32, CPU."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, seq_len, d_model, generator=generator)  # (batch, seq_len, d_model)


def reference_activation(model: nn.Module, batch_size: int, seq_len: int, d_model: int) -> dict:
    """The reference's bytes saved for backward in one forward, without and with the parameters."""
    x = make_input(model, batch_size, seq_len, d_model)
    return {"activation_bytes": ref.saved_bytes(model, x, exclude=list(model.parameters())),
            "activation_with_params": ref.saved_bytes(model, x)}


def reference_peak(model: nn.Module, batch_size: int, seq_len: int, d_model: int) -> dict:
    """The reference's largest new tensor in forward + backward, and in the forward alone."""
    x = make_input(model, batch_size, seq_len, d_model)
    peak, _ = ref.largest_allocation(lambda: model(x).float().sum().backward())
    forward_only, _ = ref.largest_allocation(model, x)
    model.zero_grad(set_to_none=True)
    return {"peak_bytes": peak, "forward_only_peak": forward_only}


def memory_rows(learner, model, sizes, **kwargs):
    rows = learner.q7.TransformerProfiler().profile_memory_usage(model, sizes, **kwargs)
    what = f"profile_memory_usage(model, {sizes})"
    assert isinstance(rows, list) and len(rows) == len(sizes), (
        f"{what}: expected a list with one dict per input size ({len(sizes)}), got {rows!r:.200}")
    for row, (batch_size, seq_len) in zip(rows, sizes):
        assert isinstance(row, dict), f"{what}: rows must be dicts, got {type(row).__name__}"
        missing = [k for k in ("batch_size", "seq_len", "parameter_bytes", "activation_bytes", "peak_bytes")
                   if k not in row]
        assert not missing, f"{what}: a row is missing keys {missing} (found {sorted(row)})"
        assert (row["batch_size"], row["seq_len"]) == (batch_size, seq_len), (
            f"{what}: rows must follow input_sizes in order; expected batch_size={batch_size}, seq_len={seq_len}, "
            f"got {row['batch_size']!r}, {row['seq_len']!r}")
    return rows, what


def as_int(value, what: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    assert isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer(), (
        f"{what}: expected a whole number of bytes, got {value!r}")
    return int(value)


@pytest.mark.points(2)
def test_parameter_bytes(learner):
    model = attention_model()
    sizes = [(1, 8), (2, 16)]
    rows, what = memory_rows(learner, model, sizes)
    want = ref.parameter_bytes(model)
    n_params = sum(p.numel() for p in model.parameters())
    for row in rows:
        got = as_int(row["parameter_bytes"], f"{what}: parameter_bytes")
        if got != want:
            hint = "\nHint: bytes = numel · element_size (4 bytes per float32 value)" if got == n_params else ""
            raise AssertionError(f"{what}: parameter_bytes should be {want} (the model has {n_params} float32 "
                                 f"parameters), got {got}{hint}")


def check_activation(rows, what, model, sizes, d_model):
    for row, (batch_size, seq_len) in zip(rows, sizes):
        want = reference_activation(model, batch_size, seq_len, d_model)
        got = as_int(row["activation_bytes"], f"{what}: activation_bytes")
        if got != want["activation_bytes"]:  # a deterministic count: it must match exactly
            hint = ""
            if got == want["activation_with_params"]:
                hint = "\nHint: do not count the parameters' storages: weights are not activations"
            elif got > want["activation_bytes"]:
                hint = ("\nHint: count each storage once (key by t.untyped_storage().data_ptr()): views and a "
                        "tensor saved by several ops share one storage")
            raise AssertionError(f"{what}, batch_size={batch_size}, seq_len={seq_len}: activation_bytes should be "
                                 f"{want['activation_bytes']} (bytes saved for backward in one forward), got {got}{hint}")


@pytest.mark.points(3)
def test_activation_bytes(learner):
    model, sizes = attention_model(), [(2, 16), (1, 40)]
    rows, what = memory_rows(learner, model, sizes)
    check_activation(rows, what, model, sizes, d_model=8)
    model, sizes = mlp_model(), [(3, 5)]
    rows, what = memory_rows(learner, model, sizes, d_model=12)
    check_activation(rows, what.replace("model,", "mlp, d_model=12,"), model, sizes, d_model=12)


@pytest.mark.points(2)
def test_peak_bytes(learner):
    cases = [(attention_model(), [(2, 24)], {}, 8, "attention model"),
             (mlp_model(), [(1, 4)], {"d_model": 12}, 12, "mlp (12 -> 24 -> 12)")]
    for model, sizes, kwargs, d_model, name in cases:
        rows, what = memory_rows(learner, model, sizes, **kwargs)
        for row, (batch_size, seq_len) in zip(rows, sizes):
            want = reference_peak(model, batch_size, seq_len, d_model)
            got = as_int(row["peak_bytes"], f"{what}: peak_bytes")
            if got != want["peak_bytes"]:
                hint = ""
                if got == want["forward_only_peak"]:
                    hint = "\nHint: watch the forward AND the backward pass (output.float().sum().backward())"
                raise AssertionError(f"{what} on the {name}, batch_size={batch_size}, seq_len={seq_len}: peak_bytes "
                                     f"(largest single new tensor in forward + backward) should be "
                                     f"{want['peak_bytes']}, got {got}{hint}")


def test_time_rows(learner):
    profiler = learner.q7.TransformerProfiler()
    sizes = [(1, 8), (2, 16)]
    rows = profiler.profile_computation_time(attention_model(), sizes, n_runs=2)
    what = f"profile_computation_time(model, {sizes}, n_runs=2)"
    assert isinstance(rows, list) and len(rows) == len(sizes), f"{what}: expected {len(sizes)} rows, got {rows!r:.200}"
    for row, (batch_size, seq_len) in zip(rows, sizes):  # times are machine-dependent: never graded on value
        assert isinstance(row, dict) and (row.get("batch_size"), row.get("seq_len")) == (batch_size, seq_len), (
            f"{what}: each row is a dict labelled with its batch_size and seq_len, in order; got {row!r:.200}")
        for key in ("forward_ms", "backward_ms"):
            value = row.get(key)
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (
                f"{what}: '{key}' should be a positive float (milliseconds), got {value!r}")
    try:
        profiler.profile_computation_time(attention_model(), sizes, n_runs=0)
    except ValueError:
        pass
    else:
        raise AssertionError("profile_computation_time(model, sizes, n_runs=0) should raise ValueError")


def test_complexity_exponent(learner):
    model, seq_lens = attention_model(), [32, 64, 128]
    result = learner.q7.TransformerProfiler().analyze_complexity(model, seq_lens, n_runs=1)
    what = f"analyze_complexity(attention model, {seq_lens}, n_runs=1)"
    assert isinstance(result, dict) and {"time_exponent", "memory_exponent", "rows"} <= result.keys(), (
        f"{what}: expected a dict with time_exponent, memory_exponent, rows; got {result!r:.200}")
    rows = result["rows"]
    keys = ("batch_size", "seq_len", "parameter_bytes", "activation_bytes", "peak_bytes", "forward_ms", "backward_ms")
    assert isinstance(rows, list) and [r.get("seq_len") for r in rows if isinstance(r, dict)] == seq_lens, (
        f"{what}: 'rows' should hold one merged row per seq_len in order {seq_lens}")
    missing = [k for k in keys if k not in rows[0]]
    assert not missing, f"{what}: rows merge the memory and time rows; missing {missing}"
    memory = [reference_activation(model, 1, n, 8)["activation_bytes"] for n in seq_lens]
    want = float(np.polyfit(np.log(seq_lens), np.log(memory), 1)[0])
    got = result["memory_exponent"]
    assert isinstance(got, float) and 1.7 <= got <= 2.3, (
        f"{what}: memory_exponent of an attention-dominated model should be near 2 (1.7 to 2.3), got {got!r}; "
        f"fit log(activation_bytes) = a + e·log(seq_len) by least squares (reference: {want:.3f})")
    assert abs(got - want) < 1e-6, f"{what}: memory_exponent (least-squares fit): {describe_difference(got, want)}"
    time_exponent = result["time_exponent"]  # time is noisy: only its form is checked
    assert isinstance(time_exponent, float) and math.isfinite(time_exponent), (
        f"{what}: time_exponent should be a finite float, got {time_exponent!r}")
    profiler = learner.q7.TransformerProfiler()
    assert_refused(
        refusal(lambda: profiler.analyze_complexity(model, [64, 64], n_runs=1), "analyze_complexity(model, [64, 64])",
                ValueError, "one distinct seq_len cannot give an exponent"),
        refusal(lambda: profiler.analyze_complexity(model, [0, 8], n_runs=1), "analyze_complexity(model, [0, 8])",
                ValueError, "every seq_len must be at least 1"),
    )


def test_visualize_profiles(learner):
    memory = [{"batch_size": 1, "seq_len": n, "parameter_bytes": 1000, "activation_bytes": 3 * n * n * 1024,
               "peak_bytes": n * n * 4096} for n in (64, 128, 256)]
    times = [{"batch_size": 1, "seq_len": n, "forward_ms": n / 10, "backward_ms": n / 5} for n in (64, 128, 256)]
    fig = learner.q7.TransformerProfiler().visualize_profiles(memory, times)
    what = "visualize_profiles(memory_results, time_results)"
    assert len(fig.axes) == 2, f"{what}: expected two axes (memory, time), got {len(fig.axes)}"
    expected = [
        ("memory", "memory (MiB)", {"activation_bytes": [r["activation_bytes"] / 2**20 for r in memory],
                                    "peak_bytes": [r["peak_bytes"] / 2**20 for r in memory]}),
        ("time", "time (ms)", {"forward_ms": [r["forward_ms"] for r in times],
                               "backward_ms": [r["backward_ms"] for r in times]}),
    ]
    for ax, (title, ylabel, lines) in zip(fig.axes, expected):
        assert (ax.title, ax.xlabel, ax.ylabel) == (title, "seq_len", ylabel), (
            f"{what}: axes '{title}' should have title {title!r}, x label 'seq_len', y label {ylabel!r}; "
            f"got {ax.title!r}, {ax.xlabel!r}, {ax.ylabel!r}")
        by_label = {line["label"]: line for line in ax.lines}
        for label, ys in lines.items():
            assert label in by_label, f"{what}: axes '{title}' needs a line labelled {label!r}, found {sorted(by_label)}"
            line = by_label[label]
            assert line["x"].tolist() == [64, 128, 256], (
                f"{what}: line {label!r} should have x = the rows' seq_len [64, 128, 256], got {line['x'].tolist()}")
            if not torch.allclose(line["y"], torch.tensor(ys, dtype=torch.float64), rtol=1e-9):
                unit = " (memory is plotted in MiB: bytes / 2**20)" if title == "memory" else ""
                raise AssertionError(f"{what}: line {label!r} should have y = {ys}, got {line['y'].tolist()}{unit}")
        assert sorted(ax.legend) == sorted(lines), f"{what}: axes '{title}' needs a legend of {sorted(lines)}, got {ax.legend}"
