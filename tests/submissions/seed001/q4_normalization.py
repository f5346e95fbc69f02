"""Seed 001, problem 4 (LayerNorm and BatchNorm by hand), as a learner would hand it in.

The seed's code, adapted only as far as the ex4 API requires; see README.md.
"""

import torch
import torch.nn as nn
import numpy as np
import matplotlib.pyplot as plt


class LayerNorm(nn.Module):
    """Layer Normalization の手動実装"""

    def __init__(self, normalized_shape, eps=1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(normalized_shape))
        self.beta = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps

    def forward(self, x):
        # 最後の次元で正規化
        mean = x.mean(dim=-1, keepdim=True)
        std = x.std(dim=-1, keepdim=True, unbiased=False)

        return self.gamma * (x - mean) / (std + self.eps) + self.beta


class BatchNorm1D(nn.Module):
    """Batch Normalization の手動実装"""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(num_features))
        self.beta = nn.Parameter(torch.zeros(num_features))
        self.eps = eps
        self.momentum = momentum

        # 実行時統計
        self.register_buffer('running_mean', torch.zeros(num_features))
        self.register_buffer('running_var', torch.ones(num_features))

    def forward(self, x):
        if self.training:
            # バッチ次元で正規化
            mean = x.mean(dim=0)
            var = x.var(dim=0, unbiased=False)

            # 実行時統計を更新
            self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * mean
            self.running_var = (1 - self.momentum) * self.running_var + self.momentum * var
        else:
            mean = self.running_mean
            var = self.running_var

        return self.gamma * (x - mean) / torch.sqrt(var + self.eps) + self.beta


def compare_normalizations(batch_sizes=(2, 8, 32), num_features=16, seed=0):
    """正規化手法の比較"""

    # ダミーデータ生成 (the docstring's data instead of the seed's (32, 50, 128) tensor)
    g = torch.Generator().manual_seed(seed)
    features = num_features
    x = torch.randn(max(batch_sizes), features, generator=g) * 2 + 1

    # 正規化手法
    layer_norm = LayerNorm(features)
    batch_norm = BatchNorm1D(features)

    results = {}
    for name, norm in (('layer_norm', layer_norm), ('batch_norm', batch_norm)):
        y = norm(x)
        # the seed's printed statistics, as dict entries
        outs = torch.stack([norm(x[:b])[0] for b in batch_sizes])
        results[name] = {
            'per_sample_mean': y.mean(dim=-1),
            'per_sample_std': y.std(dim=-1),
            'per_feature_mean': y.mean(dim=0),
            'per_feature_std': y.mean(dim=0).std(),
            'batch_dependence': float((outs.amax(0) - outs.amin(0)).max()),
        }

    return results
