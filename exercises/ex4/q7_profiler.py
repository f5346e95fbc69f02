"""Q7 — Transformer profiler.

Measure what a model costs as the input grows: parameter memory, memory kept
for the backward pass, the largest single tensor, and forward/backward time;
then fit how memory and time scale with the sequence length (seed 001
problem 7; for self-attention both grow as seq_len², Vaswani et al. 2017, §4).

Memory is counted, not sampled, so the numbers are the same on every run and
every machine (times are not):

- ``parameter_bytes``: Σ over ``model.parameters()`` of numel · element_size.
- ``activation_bytes``: the bytes autograd saves for backward during ONE
  forward pass. Wrap the forward in
  ``torch.autograd.graph.saved_tensors_hooks(pack, unpack)``: ``pack`` sees
  every tensor saved for backward. Count each distinct storage once, keyed by
  ``t.untyped_storage().data_ptr()``, with size ``t.untyped_storage().nbytes()``
  (views and a tensor saved by several ops share one storage), and do not
  count the storages of the model's parameters (weights are not activations).
  The input tensor, if an op saves it, does count.
- ``peak_bytes``: the size of the LARGEST SINGLE TENSOR any operator produces
  during one forward + backward (``model(x)``, then ``backward`` of the sum of
  the output). Watch the operators with a
  ``torch.utils._python_dispatch.TorchDispatchMode``: in ``__torch_dispatch__``
  run ``func(*args, **kwargs)`` and look at every tensor it returns; one that
  shares its storage with an input of that op (a view, an in-place result) is
  not new memory and does not count; the size of the others is
  ``untyped_storage().nbytes()``. This is a lower bound on the true peak, the
  same on CPU and CUDA, and it shows the (batch, n_heads, seq_len, seq_len)
  score matrix of attention at once.

Inputs: the model is called as ``model(x)`` with ``x`` a float tensor
(batch_size, seq_len, d_model) drawn from ``torch.randn`` with a
``torch.Generator`` seeded with 0 (the global RNG is left alone), created on the
CPU and moved to the device and dtype of the model's first parameter.
``d_model`` is the argument of that name, or, when it is None, the model's
``d_model`` attribute; ValueError when neither is there. If the model returns a
tuple or list, its first element is the output. The backward pass is
``output.float().sum().backward()``. The model is used in the mode it is in
(call ``model.eval()`` first to leave dropout out) and its gradients are reset
to None afterwards.

Rows are plain dicts; all sizes in bytes, all times in milliseconds.
Figures are built with ``matplotlib.figure.Figure`` directly (never pyplot).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
from matplotlib.figure import Figure
from torch.autograd.graph import saved_tensors_hooks
from torch.utils._python_dispatch import TorchDispatchMode

MIB = 2**20  # bytes per MiB, the unit of the memory plot




class TransformerProfiler:
    """Memory and time profiles of a model that maps (batch, seq_len, d_model) to a tensor.

    Example::

        profiler = TransformerProfiler()
        mem = profiler.profile_memory_usage(model, [(2, 64), (2, 128)])
        times = profiler.profile_computation_time(model, [(2, 64), (2, 128)], n_runs=5)
        fit = profiler.analyze_complexity(model, [64, 128, 256])
        fig = profiler.visualize_profiles(mem, times)
    """

    def make_input(self, model: nn.Module, batch_size: int, seq_len: int,
                   d_model: int | None = None) -> torch.Tensor:
        """The input ``x`` (batch_size, seq_len, d_model) described in the module docstring (given).

        Raises:
            ValueError: ``d_model`` is None and the model has no ``d_model`` attribute.
        """
        if d_model is None:
            d_model = getattr(model, "d_model", None)
            if d_model is None:
                raise ValueError("cannot tell the input size: pass d_model= or give the model a d_model attribute")
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
        dtype = first.dtype if first is not None else torch.float32
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(batch_size, seq_len, d_model, generator=generator)  # (batch, seq_len, d_model)
        return x.to(device=device, dtype=dtype)

    def profile_memory_usage(self, model: nn.Module, input_sizes: list[tuple[int, int]],
                             d_model: int | None = None) -> list[dict]:
        """Memory per input size.

        For each (batch_size, seq_len): ``x = self.make_input(model, batch_size,
        seq_len, d_model)``; one forward under saved_tensors_hooks gives
        activation_bytes; one forward + backward under a TorchDispatchMode
        gives peak_bytes.

        Args:
            model: called as ``model(x)``, x (batch_size, seq_len, d_model).
            input_sizes: list of (batch_size, seq_len).
            d_model: feature size of x; None reads ``model.d_model``.

        Returns:
            one dict per input size, in order, with keys
            ``batch_size, seq_len`` (ints), ``parameter_bytes``,
            ``activation_bytes``, ``peak_bytes`` (ints, bytes; definitions in
            the module docstring).

        Raises:
            ValueError: no d_model can be found.
        """
        raise NotImplementedError("TransformerProfiler.profile_memory_usage is not implemented yet")

    def profile_computation_time(self, model: nn.Module, input_sizes: list[tuple[int, int]],
                                 n_runs: int = 10, d_model: int | None = None) -> list[dict]:
        """Wall-clock time of forward and backward per input size.

        For each size, with ``x = self.make_input(model, batch_size, seq_len,
        d_model)``: one untimed warm-up forward + backward, then ``n_runs``
        timed ones with ``time.perf_counter``: forward is ``model(x)``,
        backward is ``output.float().sum().backward()``. On CUDA,
        ``torch.cuda.synchronize()`` runs before each clock reading.

        Returns:
            one dict per input size, in order, with keys ``batch_size, seq_len``
            (ints), ``forward_ms``, ``backward_ms`` (floats, mean over the
            n_runs timed runs, milliseconds).

        Raises:
            ValueError: ``n_runs < 1``, or no d_model can be found.
        """
        raise NotImplementedError("TransformerProfiler.profile_computation_time is not implemented yet")

    def analyze_complexity(self, model: nn.Module, seq_lens: list[int], batch_size: int = 1,
                           n_runs: int = 3, d_model: int | None = None) -> dict:
        """Fit the growth of memory and time with seq_len as a power law.

        Profiles memory and time at each seq_len (with ``batch_size`` and
        ``n_runs``), then fits log(metric) = a + e · log(seq_len) by least
        squares (e.g. ``numpy.polyfit(log L, log y, 1)``). The memory metric is
        ``activation_bytes``; the time metric ``forward_ms + backward_ms``.
        Self-attention gives exponents near 2; a position-wise layer near 1.

        Returns:
            ``{"time_exponent": float, "memory_exponent": float, "rows": [...]}``
            where each row holds ``batch_size, seq_len, parameter_bytes,
            activation_bytes, peak_bytes, forward_ms, backward_ms`` (the two
            profiles' rows merged), one per seq_len in the given order.

        Raises:
            ValueError: fewer than two distinct seq_lens, or one below 1.
        """
        raise NotImplementedError("TransformerProfiler.analyze_complexity is not implemented yet")

    def visualize_profiles(self, memory_results: list[dict], time_results: list[dict]) -> Figure:
        """Memory and time against seq_len, side by side.

        Layout: two axes.

        - axes 0, title ``"memory"``: x label ``"seq_len"``, y label
          ``"memory (MiB)"``; two lines with x = the rows' seq_len (in row
          order): label ``"activation_bytes"`` with y = activation_bytes / 2**20,
          and label ``"peak_bytes"`` with y = peak_bytes / 2**20.
        - axes 1, title ``"time"``: x label ``"seq_len"``, y label
          ``"time (ms)"``; two lines: label ``"forward_ms"`` and label
          ``"backward_ms"``, y the row values.

        Each axes has a legend.
        """
        raise NotImplementedError("TransformerProfiler.visualize_profiles is not implemented yet")
