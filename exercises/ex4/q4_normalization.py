"""Q4 — Layer normalization and batch normalization by hand.

Seed 001, problem 4: implement both normalizations, their train/eval behaviour
and BatchNorm's running statistics, and see how they differ.

- LayerNorm (Ba, Kiros & Hinton 2016) normalizes each sample over its own
  features; it does not depend on the rest of the batch, and behaves the same
  in train and eval mode.
- BatchNorm (Ioffe & Szegedy 2015) normalizes each feature (channel) over the
  batch; in training it uses the batch's statistics and keeps running averages
  of them, which it uses in eval mode.

Your modules must match ``torch.nn.LayerNorm`` and ``torch.nn.BatchNorm1d``
(values, gradients and running statistics) to float32 rounding.

Allowed imports: torch, numpy, math.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LayerNorm(nn.Module):
    """Layer normalization over the trailing ``normalized_shape`` dimensions.

    ``y = gamma * (x - mean) / sqrt(var + eps) + beta``, where ``mean`` and ``var``
    are taken over the last ``len(normalized_shape)`` dims of ``x`` and ``var`` is
    the *biased* variance (divide by n, not n - 1). Note where ``eps`` goes: inside
    the square root.

    Args:
        normalized_shape: an int ``C`` (normalize over the last dim, size ``C``) or a
            tuple of ints (normalize over that many trailing dims, with those sizes).
        eps: added to the variance.

    Attributes (names and shapes are checked):
        gamma: ``nn.Parameter`` of shape ``normalized_shape``, initialised to ones.
        beta: ``nn.Parameter`` of shape ``normalized_shape``, initialised to zeros.

    Source: Ba, Kiros & Hinton 2016, "Layer Normalization"; seed 001 problem 4.
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5) -> None:
        super().__init__()
        raise NotImplementedError("LayerNorm.__init__ is not implemented yet")

    def forward(self, x: Tensor) -> Tensor:
        """Normalize ``x``.

        Args:
            x: ``(..., *normalized_shape)``, floating point.

        Returns:
            Same shape, dtype and device as ``x``.

        Raises:
            ValueError: if the trailing dims of ``x`` are not ``normalized_shape``.
        """
        raise NotImplementedError("LayerNorm.forward is not implemented yet")


class BatchNorm1D(nn.Module):
    """Batch normalization of ``(N, C)`` or ``(N, C, L)`` input, as ``torch.nn.BatchNorm1d``.

    Each channel ``c`` is normalized with a mean and variance taken over the batch
    axis (and the length axis for 3-D input):
    ``y = gamma * (x - mean) / sqrt(var + eps) + beta``.

    - Training mode (``module.train()``): use the batch mean and the *biased*
      batch variance, and update the buffers in place, without tracking gradients::

          running_mean = (1 - momentum) * running_mean + momentum * batch_mean
          running_var  = (1 - momentum) * running_var  + momentum * unbiased_batch_var

      where ``unbiased_batch_var = biased_var * n / (n - 1)`` and ``n`` is the
      number of values per channel (``N`` or ``N * L``).
    - Eval mode (``module.eval()``): use ``running_mean`` and ``running_var``; the
      buffers do not change.

    Args:
        num_features: ``C``.
        eps: added to the variance, inside the square root.
        momentum: weight of the new batch statistic in the running average (a float).

    Attributes (names and shapes are checked; ``state_dict()`` keys are exactly
    ``gamma, beta, running_mean, running_var``; no ``num_batches_tracked``):
        gamma: ``nn.Parameter`` ``(C,)``, ones.
        beta: ``nn.Parameter`` ``(C,)``, zeros.
        running_mean: buffer ``(C,)``, zeros (``self.register_buffer``).
        running_var: buffer ``(C,)``, ones.

    Source: Ioffe & Szegedy 2015, "Batch Normalization", Algorithm 1 and §3.1; seed 001 problem 4.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        raise NotImplementedError("BatchNorm1D.__init__ is not implemented yet")

    def forward(self, x: Tensor) -> Tensor:
        """Normalize ``x``.

        Args:
            x: ``(N, C)`` or ``(N, C, L)``, floating point.

        Returns:
            Same shape, dtype and device as ``x``.

        Raises:
            ValueError: if ``x`` is not 2-D or 3-D with ``C = num_features`` channels,
                or, in training mode, if there is only one value per channel
                (``N * L == 1``), as ``torch.nn.BatchNorm1d`` does.
        """
        raise NotImplementedError("BatchNorm1D.forward is not implemented yet")


def compare_normalizations(
    batch_sizes: tuple[int, ...] = (2, 8, 32), num_features: int = 16, seed: int = 0
) -> dict[str, dict]:
    """Compare what your LayerNorm and BatchNorm1D do to the same data.

    Data: ``g = torch.Generator().manual_seed(seed)``;
    ``x = torch.randn(max(batch_sizes), num_features, generator=g) * 2 + 1``
    (float32, CPU). Modules: a fresh ``LayerNorm(num_features)`` and a fresh
    ``BatchNorm1D(num_features)`` in training mode, default parameters. Run
    everything under ``torch.no_grad()``.

    For each method, with ``y = norm(x)`` on the full batch (``max(batch_sizes)`` rows):

    - ``"per_sample_mean"``: ``y.mean(dim=1)``, shape ``(max(batch_sizes),)``;
    - ``"per_sample_std"``: ``y.std(dim=1, unbiased=False)``, same shape;
    - ``"per_feature_mean"``: ``y.mean(dim=0)``, shape ``(num_features,)``;
    - ``"per_feature_std"``: ``y.std(dim=0, unbiased=False)``, same shape;
    - ``"batch_dependence"``: how much sample 0's output depends on the batch
      around it: with ``out_b = norm(x[:b])[0]`` for each ``b`` in ``batch_sizes``,
      the largest ``out_b[j] - out_b'[j]`` over all features ``j`` and pairs of
      batch sizes, i.e. ``(stack(outs).amax(0) - stack(outs).amin(0)).max()``,
      as a Python float.

    LayerNorm rows have per-sample mean ~0 and std ~1 and a batch_dependence of
    0; BatchNorm rows have per-feature mean ~0 and std ~1 and a clearly positive
    batch_dependence.

    Returns:
        ``{"layer_norm": {...}, "batch_norm": {...}}``, each with exactly the five
        keys above (four float32 tensors and one float).

    Raises:
        ValueError: if ``batch_sizes`` is empty or holds a size below 2.

    Source: seed 001 problem 4.
    """
    raise NotImplementedError("compare_normalizations is not implemented yet")
