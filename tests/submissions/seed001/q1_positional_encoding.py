"""Seed 001, problem 1 (positional encoding), as a learner would hand it in.

The seed's code, adapted only as far as the ex4 API requires; see README.md.
"""

import math  # the seed uses math.log without importing it

import torch
import torch.nn as nn
import matplotlib.pyplot as plt
import numpy as np


def sinusoidal_table(max_len, d_model, base=10000.0):
    # the seed's table code, lifted out of PositionalEncoding.__init__
    pe = torch.zeros(max_len, d_model)
    position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)

    # 周波数の計算
    div_term = torch.exp(torch.arange(0, d_model, 2).float() *
                       (-math.log(base) / d_model))

    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


class PositionalEncoding(nn.Module):
    def __init__(self, d_model=512, max_len=5000, dropout=0.0):
        super().__init__()

        pe = sinusoidal_table(max_len, d_model)

        # batch-first: (1, max_len, d_model) instead of the seed's (max_len, 1, d_model)
        self.register_buffer('pe', pe.unsqueeze(0))

    def forward(self, x):
        # batch-first: slice the sequence axis (the seed: self.pe[:x.size(0), :])
        return x + self.pe[:, :x.size(1)]


def plot_periodicity(d_model=128, max_len=100, dims=(0, 1, 4, 5)):
    # 可視化 (the seed's two figures, drawn into one returned figure)
    pos_enc = PositionalEncoding(d_model=d_model, max_len=max_len)
    pe_data = pos_enc.pe.squeeze(0).numpy()

    rows = (len(dims) + 1) // 2
    fig = plt.figure(figsize=(12, 8 + 4 * rows))

    # 異なる次元での周期性
    dimensions = list(dims)
    for i, dim in enumerate(dimensions):
        ax = fig.add_subplot(rows + 1, 2, i + 1)
        ax.plot(pe_data[:100, dim])
        ax.set_title(f'Dimension {dim} ({"sin" if dim%2==0 else "cos"})')
        ax.set_xlabel('Position')
        ax.set_ylabel('Value')
        ax.grid(True)

    # ヒートマップ（全体）
    ax = fig.add_subplot(rows + 1, 1, rows + 1)
    image = ax.imshow(pe_data[:100, :64].T, cmap='viridis', aspect='auto')
    fig.colorbar(image, ax=ax)
    ax.set_title('Positional Encoding Heatmap')
    ax.set_xlabel('Position')
    ax.set_ylabel('Dimension')

    fig.tight_layout()
    return fig
