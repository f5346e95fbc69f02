"""Sinusoidal positional encoding (ex4 q1; Vaswani et al. 2017, §3.5; seed 001 problem 1).

    PE[pos, 2i]     = sin(pos / base^(2i / d_model))
    PE[pos, 2i + 1] = cos(pos / base^(2i / d_model))

The angles are computed in float64 and the table is returned as float32, so the
reference is exact to float32 rounding. A learner computing the angles in
float32 is off by about 8e-8 * pos (4e-4 at pos 5000); suites compare tables
with ``atol = 1e-6 + 2e-7 * pos`` (the tolerance the q1 docstring promises).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def sinusoidal_table(max_len: int, d_model: int, base: float = 10000.0) -> Tensor:
    """Return the (max_len, d_model) float32 table; ValueError for odd or non-positive sizes."""
    if max_len <= 0 or d_model <= 0:
        raise ValueError(f"max_len and d_model must be positive, got max_len={max_len}, d_model={d_model}")
    if d_model % 2:
        raise ValueError(f"d_model must be even (sin/cos pairs), got {d_model}")
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)  # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d_model / 2,)
    angle = pos / base ** (two_i / d_model)  # (max_len, d_model / 2)
    table = torch.empty(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table.to(torch.float32)


class PositionalEncoding(nn.Module):
    """Adds ``pe[:, :seq_len]`` to a batch-first input, then dropout.

    Buffer ``pe``: (1, max_len, d_model) float32, persistent (in ``state_dict``).
    """

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0) -> None:
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.register_buffer("pe", sinusoidal_table(max_len, d_model).unsqueeze(0))  # (1, max_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, seq_len, d_model) -> same shape and dtype as x."""
        seq_len = x.size(1)
        if seq_len > self.max_len:
            raise ValueError(f"seq_len {seq_len} exceeds max_len {self.max_len}")
        return self.dropout(x + self.pe[:, :seq_len].to(x.dtype))  # (batch, seq_len, d_model)
