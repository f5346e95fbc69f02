"""Q3 — Additive vs scaled dot-product attention.

Seed 001, problem 3: implement both attention mechanisms and compare their cost.

- Additive (Bahdanau, Cho & Bengio 2015):
  ``score(q, k) = v^T tanh(W_q q + W_k k)``.
- Scaled dot-product (Vaswani et al. 2017, §3.2.1):
  ``score(q, k) = q . k / sqrt(d_k)``.

Both turn scores into weights with a softmax over the keys and return the
weighted sum of the values.

Conventions:

- Batch-first: ``query (batch, q_len, d)``, ``key (batch, k_len, d)``,
  ``value (batch, k_len, d_v)``; ``context (batch, q_len, d_v)``,
  ``weights (batch, q_len, k_len)``.
- Masks are boolean, ``True`` = may attend, broadcastable to
  ``(batch, q_len, k_len)`` (e.g. a padding mask ``(batch, 1, k_len)``, a causal
  mask ``(q_len, k_len)``). A 0/1 integer mask means the same; a floating-point
  mask is refused with ``TypeError``.
- A masked position gets a weight of exactly 0. A query whose keys are all
  masked gets all-zero weights and a zero context vector (no NaN, in the output
  or the gradient); this is also what ``F.scaled_dot_product_attention`` does.

Allowed imports: torch, numpy, math, time and the standard library.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from torch.utils._python_dispatch import TorchDispatchMode


class AdditiveAttention(nn.Module):
    """Additive (Bahdanau) attention.

    ``scores[b, i, j] = v(tanh(W_q(query[b, i]) + W_k(key[b, j])))``; the weights
    are the softmax of the scores over ``j`` (the keys).

    Args:
        hidden_size: width of queries and keys.

    Attributes (names and shapes are checked):
        W_q, W_k: ``nn.Linear(hidden_size, hidden_size, bias=False)``.
        v: ``nn.Linear(hidden_size, 1, bias=False)``.

    Cost: the tanh argument is a ``(batch, q_len, k_len, hidden_size)`` tensor.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        raise NotImplementedError("AdditiveAttention.__init__ is not implemented yet")

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return ``(context, weights)``.

        Args:
            query: ``(batch, q_len, hidden_size)``.
            key: ``(batch, k_len, hidden_size)``.
            value: ``(batch, k_len, d_v)``.
            mask: ``None`` or bool/0-1 integer, ``True`` = may attend, broadcastable
                to ``(batch, q_len, k_len)``.

        Returns:
            ``context (batch, q_len, d_v)`` and ``weights (batch, q_len, k_len)``.
        """
        raise NotImplementedError("AdditiveAttention.forward is not implemented yet")


class ScaledDotProductAttention(nn.Module):
    """Scaled dot-product attention, ``softmax(Q K^T / sqrt(d_k)) V`` with ``d_k = query.size(-1)``.

    No parameters. Extra leading dimensions (e.g. heads) are allowed:
    ``(..., q_len, d_k)`` works like ``(batch, q_len, d_k)``.

    Args:
        dropout: dropout probability on the weights that multiply ``value``.

    Attributes:
        dropout: ``nn.Dropout(dropout)``.
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        raise NotImplementedError("ScaledDotProductAttention.__init__ is not implemented yet")

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return ``(context, weights)``.

        Args:
            query: ``(batch, q_len, d_k)``.
            key: ``(batch, k_len, d_k)``.
            value: ``(batch, k_len, d_v)``.
            mask: as in ``AdditiveAttention.forward``.

        Returns:
            ``context (batch, q_len, d_v)``, computed with the dropped-out weights,
            and ``weights (batch, q_len, k_len)``, taken *before* dropout.
        """
        raise NotImplementedError("ScaledDotProductAttention.forward is not implemented yet")


def benchmark_attention(
    seq_lens: list[int], hidden_size: int = 64, batch_size: int = 8, device: str = "cpu", n_runs: int = 10
) -> list[dict]:
    """Time and measure both mechanisms on self-attention inputs.

    For each mechanism in ``("additive", "scaled_dot_product")`` (outer loop) and
    each ``seq_len`` in ``seq_lens`` (inner loop, in the given order), build
    ``AdditiveAttention(hidden_size)`` or ``ScaledDotProductAttention()`` on
    ``device`` and three random float32 tensors ``query, key, value`` of shape
    ``(batch_size, seq_len, hidden_size)``, and measure under ``torch.no_grad()``:

    - ``time_ms``: mean wall-clock time of one forward call in milliseconds,
      over ``n_runs`` calls after one warm-up call (``time.perf_counter``; on
      CUDA call ``torch.cuda.synchronize()`` before reading the clock).
    - ``flops``: the total count of ``torch.utils.flop_counter.FlopCounterMode``
      (``display=False``, then ``.get_total_flops()``) over one forward call.
      (It counts matmuls only: ``(m, k) @ (k, n)`` is ``2*m*k*n``.)
    - ``peak_bytes``: the size in bytes of the largest tensor that any operator
      returns during one forward call, i.e. the maximum of
      ``t.numel() * t.element_size()`` over every tensor output seen by a
      ``torch.utils._python_dispatch.TorchDispatchMode`` whose
      ``__torch_dispatch__(self, func, types, args=(), kwargs=None)`` runs
      ``out = func(*args, **(kwargs or {}))``, records its tensors and returns ``out``.
      (On the same inputs this is device-independent; it shows the
      ``(batch, seq_len, seq_len, hidden_size)`` tensor of additive attention.)

    Returns:
        A list of ``2 * len(seq_lens)`` dicts, each with exactly the keys
        ``mechanism`` (str), ``seq_len``, ``batch_size``, ``hidden_size`` (int),
        ``time_ms`` (float), ``peak_bytes`` (int), ``flops`` (int).

    Raises:
        ValueError: if ``seq_lens`` is empty, or a size or ``n_runs`` is not positive.

    Source: seed 001 problem 3.
    """
    raise NotImplementedError("benchmark_attention is not implemented yet")
