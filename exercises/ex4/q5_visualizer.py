"""Q5 — Attention visualizer.

Collect the attention weights of several layers, draw one heatmap per head, and
summarise each head with three numbers that tell attention patterns apart
(seed 001 problem 5):

- ``entropy``: how spread out a query's attention is, in nats.
  For one query row i: H_i = −Σ_j w_ij · ln w_ij, with 0 · ln 0 = 0
  (use ``torch.xlogy``). A head that puts all weight on one key has 0; a head
  spreading evenly over k keys has ln k. Reported as the mean of H_i over the
  batch and over all queries.
- ``diag_strength``: how much a position attends to itself: the mean of the
  diagonal entries w_ii over the batch and over i < min(q_len, k_len).
- ``locality``: how much weight lands near the query:
  Σ_j w_ij · exp(−|i − j|) for each query i (i, j are 0-based positions),
  then the mean over the batch and over all queries. It is 1 when every query
  attends only to itself.

Statistics are Python floats, computed in float64 from the stored weights.
Figures are ``matplotlib.figure.Figure`` objects built directly (never
``pyplot``), so nothing is shown or kept open.

Attention weights are tensors of shape (batch, n_heads, q_len, k_len), each
row a distribution over keys (as ``MultiHeadAttention.attention_weights`` of q2).

Example::

    viz = AttentionVisualizer()
    viz.add_attention_weights(weights_layer0, "layer 0")
    viz.add_attention_weights(weights_layer1, "layer 1")
    fig = viz.visualize_head_patterns(layer_idx=0, sample_idx=0)
    stats = viz.analyze_attention_patterns(layer_idx=1)  # [{"head": 0, ...}, ...]
    fig = viz.compare_layers()
"""

from __future__ import annotations

import math

import torch
from matplotlib.figure import Figure

STATISTICS = ("entropy", "diag_strength", "locality")




class AttentionVisualizer:
    """Store attention weights layer by layer; plot and summarise them.

    Attributes:
        layers: list of ``(layer_name, weights)`` in the order they were added;
            ``weights`` is the detached CPU copy, shape (batch, n_heads, q_len, k_len),
            dtype as given.
    """

    def __init__(self) -> None:
        """Start with no layers (``self.layers == []``)."""
        self.layers: list[tuple[str, torch.Tensor]] = []

    def add_attention_weights(self, weights: torch.Tensor, layer_name: str) -> None:
        """Append ``(layer_name, weights)`` to ``self.layers``.

        Args:
            weights: tensor (batch, n_heads, q_len, k_len); stored detached
                (no autograd graph) and moved to the CPU.
            layer_name: label used in figure titles.

        Raises:
            ValueError: ``weights`` is not 4-dimensional.
        """
        raise NotImplementedError("AttentionVisualizer.add_attention_weights is not implemented yet")

    def visualize_head_patterns(self, layer_idx: int = 0, sample_idx: int = 0) -> Figure:
        """One heatmap per head of one sample of one layer.

        Layout: exactly n_heads axes (no colorbars or empty axes), in a grid
        of min(4, n_heads) columns, in head order. Axes h shows
        ``ax.imshow(weights[sample_idx, h])`` (a (q_len, k_len) float array),
        title ``f"head {h}"``, x label ``"key position"``, y label
        ``"query position"``. The figure's suptitle is the layer name.

        Raises:
            IndexError: ``layer_idx`` or ``sample_idx`` out of range (indices
                work as for a list: negative ones count from the end).
        """
        raise NotImplementedError("AttentionVisualizer.visualize_head_patterns is not implemented yet")

    def analyze_attention_patterns(self, layer_idx: int = 0) -> list[dict]:
        """Per-head statistics of one layer (definitions in the module docstring).

        Returns:
            one dict per head, in head order:
            ``{"head": h (int), "entropy": float, "diag_strength": float, "locality": float}``.

        Raises:
            IndexError: ``layer_idx`` out of range (negative counts from the end).
        """
        raise NotImplementedError("AttentionVisualizer.analyze_attention_patterns is not implemented yet")

    def compare_layers(self) -> Figure:
        """Compare the layers' statistics, averaged over heads.

        Layout: three axes, one per statistic in the order entropy,
        diag_strength, locality; each axes' title is the statistic's name
        (``"entropy"``, ``"diag_strength"``, ``"locality"``). In each, one bar
        per layer in the order added (x positions 0, 1, ..., tick labels the
        layer names), its height the mean over heads of that statistic
        (as returned by ``analyze_attention_patterns``).

        Raises:
            ValueError: fewer than two layers were added.
        """
        raise NotImplementedError("AttentionVisualizer.compare_layers is not implemented yet")
