"""Layer and batch normalization by hand (ex4 q4; seed 001 problem 4).

Sources: Ba, Kiros & Hinton 2016 (LayerNorm); Ioffe & Szegedy 2015 (BatchNorm).
Both match their torch counterparts: ``nn.LayerNorm`` and ``nn.BatchNorm1d``
(default affine=True, track_running_stats=True), except that ``BatchNorm1D``
keeps no ``num_batches_tracked`` buffer and takes a float momentum only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LayerNorm(nn.Module):
    """gamma * (x - mean) / sqrt(var + eps) + beta over the trailing ``normalized_shape`` dims.

    Parameters ``gamma`` (ones) and ``beta`` (zeros), both of shape ``normalized_shape``;
    ``var`` is the biased variance (divide by n).
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor) -> Tensor:
        """(..., *normalized_shape) -> same shape; ValueError if the trailing dims differ."""
        k = len(self.normalized_shape)
        if x.dim() < k or tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(f"expected trailing dims {self.normalized_shape}, got input of shape {tuple(x.shape)}")
        dims = tuple(range(-k, 0))
        mean = x.mean(dim=dims, keepdim=True)  # (..., 1, ..., 1)
        var = (x - mean).pow(2).mean(dim=dims, keepdim=True)  # biased
        return self.gamma * (x - mean) / torch.sqrt(var + self.eps) + self.beta


class BatchNorm1D(nn.Module):
    """Per-channel normalization over the batch (and length) axes of (N, C) or (N, C, L) input.

    Training: normalize with the batch mean and biased variance, then update
    running = (1 - momentum) * running + momentum * batch_stat, with the
    *unbiased* batch variance for ``running_var``. Eval: normalize with the
    running statistics. Parameters ``gamma``, ``beta`` (C,); buffers
    ``running_mean`` (zeros), ``running_var`` (ones), (C,); no ``num_batches_tracked``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.gamma = nn.Parameter(torch.ones(num_features))
        self.beta = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C) or (N, C, L) -> same shape."""
        if x.dim() not in (2, 3) or x.size(1) != self.num_features:
            raise ValueError(f"expected (N, {self.num_features}) or (N, {self.num_features}, L), got {tuple(x.shape)}")
        dims = (0,) if x.dim() == 2 else (0, 2)
        shape = (1, -1) if x.dim() == 2 else (1, -1, 1)  # broadcast (C,) over N (and L)
        if self.training:
            n = x.numel() // self.num_features
            if n < 2:
                raise ValueError(f"expected more than 1 value per channel when training, got input {tuple(x.shape)}")
            mean = x.mean(dim=dims)  # (C,)
            var = x.var(dim=dims, unbiased=False)  # (C,) biased, to normalize
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * n / (n - 1))
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return self.gamma.view(shape) * x_hat + self.beta.view(shape)
