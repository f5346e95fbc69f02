"""Q1 — Sinusoidal positional encoding.

Seed 001, problem 1: implement the positional encoding of Vaswani et al. 2017,
§3.5, and visualize how its dimensions oscillate with different periods.

For position ``pos`` (0, 1, ..., max_len - 1) and column pair ``i``
(0 <= 2i < d_model)::

    PE[pos, 2i]     = sin(pos / base ** (2i / d_model))
    PE[pos, 2i + 1] = cos(pos / base ** (2i / d_model))

Columns 2i and 2i+1 share one angle; the wavelength grows geometrically from
2*pi (columns 0 and 1) towards 2*pi*base (the last pair).

Tensors are batch-first: ``(batch, seq_len, d_model)``.

Allowed imports: torch, numpy, math, matplotlib (no pyplot needed).
"""

from __future__ import annotations

import math

import matplotlib.figure
import torch
from torch import Tensor, nn


def sinusoidal_table(max_len: int, d_model: int, base: float = 10000.0) -> Tensor:
    """Return the sinusoidal positional-encoding table.

    Args:
        max_len: number of positions (rows), >= 1.
        d_model: embedding width (columns), even and >= 2.
        base: the base of the geometric wavelength progression (10000 in the paper).

    Returns:
        Tensor of shape ``(max_len, d_model)``, dtype ``torch.float32``, on the CPU:
        ``table[pos, 2i] = sin(pos / base**(2i/d_model))`` and
        ``table[pos, 2i+1] = cos(pos / base**(2i/d_model))``.

    Raises:
        ValueError: if ``d_model`` is odd, or ``max_len`` or ``d_model`` is not positive.

    Precision: the angle ``pos / base**(2i/d_model)`` computed in float32 loses about
    ``1e-7 * pos`` (4e-4 at pos 5000). The grader accepts an absolute error of
    ``1e-6 + 2e-7 * pos`` in row ``pos``; to be exact, compute the angles in float64
    and convert the table to float32 at the end.

    Source: Vaswani et al. 2017, "Attention Is All You Need", §3.5; seed 001 problem 1.
    """
    raise NotImplementedError("sinusoidal_table is not implemented yet")


class PositionalEncoding(nn.Module):
    """Add the sinusoidal table to a batch of embeddings, then apply dropout.

    Args:
        d_model: embedding width, even.
        max_len: the longest sequence the module accepts.
        dropout: dropout probability applied after the addition (Vaswani et al. §5.4).

    Attributes:
        pe: buffer of shape ``(1, max_len, d_model)``, float32, equal to
            ``sinusoidal_table(max_len, d_model)`` with a leading batch axis.
            Register it with ``self.register_buffer("pe", ...)`` (persistent), so that
            it moves with ``.to(device)`` and appears in ``state_dict()`` as ``"pe"``.
        dropout: an ``nn.Dropout(dropout)``.

    Raises:
        ValueError: (from the constructor) for odd or non-positive sizes, as
            ``sinusoidal_table``.
    """

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0) -> None:
        super().__init__()
        raise NotImplementedError("PositionalEncoding.__init__ is not implemented yet")

    def forward(self, x: Tensor) -> Tensor:
        """Return ``dropout(x + pe[:, :seq_len])``.

        Args:
            x: ``(batch, seq_len, d_model)``, any floating dtype, on the module's device.

        Returns:
            Tensor of the same shape, dtype and device as ``x``.

        Raises:
            ValueError: if ``seq_len > max_len``.
        """
        raise NotImplementedError("PositionalEncoding.forward is not implemented yet")


def plot_periodicity(
    d_model: int = 128, max_len: int = 100, dims: tuple[int, ...] = (0, 1, 4, 5)
) -> matplotlib.figure.Figure:
    """Draw the positional-encoding table and a few of its columns.

    Build the figure with ``matplotlib.figure.Figure()`` (not ``pyplot``), so that no
    global figure is created, and add exactly two axes first, in this order:

    - ``fig.axes[0]``: the heatmap, ``ax.imshow(table)`` of
      ``table = sinusoidal_table(max_len, d_model)`` as a ``(max_len, d_model)``
      array, so position runs down the y axis and dimension along the x axis;
      a title and both axis labels (x: dimension, y: position) must be non-empty.
    - ``fig.axes[1]``: one line per entry of ``dims``, in that order, drawn with
      ``ax.plot(range(max_len), table[:, dim], label=f"dim {dim}")``; a legend,
      a title, and non-empty axis labels (x: position, y: value).

    A colorbar (or anything else) may follow as further axes.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: as ``sinusoidal_table``, or if a dim is not in ``[0, d_model)``.

    Source: seed 001 problem 1 (periodicity of the dimensions).
    """
    raise NotImplementedError("plot_periodicity is not implemented yet")
