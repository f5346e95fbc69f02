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


# BEGIN SOLUTION
def _checked_layer(layers: list, layer_idx: int) -> tuple[str, torch.Tensor]:
    """``layers[layer_idx]``, or an IndexError naming the valid range."""
    if not -len(layers) <= layer_idx < len(layers):
        raise IndexError(f"layer_idx {layer_idx} out of range: {len(layers)} layer(s) added")
    return layers[layer_idx]
# END SOLUTION


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
        # BEGIN SOLUTION
        if weights.dim() != 4:
            raise ValueError(
                "attention weights must be (batch, n_heads, q_len, k_len), "
                f"got shape {tuple(weights.shape)}"
            )
        self.layers.append((layer_name, weights.detach().cpu()))
        # END SOLUTION

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
        # BEGIN SOLUTION
        name, weights = _checked_layer(self.layers, layer_idx)
        if not -weights.shape[0] <= sample_idx < weights.shape[0]:
            raise IndexError(f"sample_idx {sample_idx} out of range: batch size {weights.shape[0]}")
        n_heads = weights.shape[1]
        cols = min(4, n_heads)
        rows = math.ceil(n_heads / cols)
        fig = Figure(figsize=(3 * cols, 3 * rows), layout="constrained")
        for h in range(n_heads):
            ax = fig.add_subplot(rows, cols, h + 1)
            ax.imshow(weights[sample_idx, h].float().numpy(), cmap="Blues", vmin=0.0)
            ax.set_title(f"head {h}")
            ax.set_xlabel("key position")
            ax.set_ylabel("query position")
        fig.suptitle(name)
        return fig
        # END SOLUTION

    def analyze_attention_patterns(self, layer_idx: int = 0) -> list[dict]:
        """Per-head statistics of one layer (definitions in the module docstring).

        Returns:
            one dict per head, in head order:
            ``{"head": h (int), "entropy": float, "diag_strength": float, "locality": float}``.

        Raises:
            IndexError: ``layer_idx`` out of range (negative counts from the end).
        """
        # BEGIN SOLUTION
        _, weights = _checked_layer(self.layers, layer_idx)
        w = weights.double()  # (batch, n_heads, q_len, k_len)
        q_len, k_len = w.shape[-2:]
        entropy = -torch.xlogy(w, w).sum(-1).mean(dim=(0, 2))  # (n_heads,)
        diag = w.diagonal(dim1=-2, dim2=-1).mean(dim=(0, 2))  # (n_heads,)
        distance = (torch.arange(q_len)[:, None] - torch.arange(k_len)[None, :]).abs()  # (q_len, k_len)
        locality = (w * torch.exp(-distance.double())).sum(-1).mean(dim=(0, 2))  # (n_heads,)
        return [
            {
                "head": h,
                "entropy": entropy[h].item(),
                "diag_strength": diag[h].item(),
                "locality": locality[h].item(),
            }
            for h in range(w.shape[1])
        ]
        # END SOLUTION

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
        # BEGIN SOLUTION
        if len(self.layers) < 2:
            raise ValueError(
                f"compare_layers needs at least two layers, {len(self.layers)} added: "
                "call add_attention_weights once per layer first"
            )
        names = [name for name, _ in self.layers]
        per_layer = [self.analyze_attention_patterns(i) for i in range(len(self.layers))]
        fig = Figure(figsize=(4 * len(STATISTICS), 3.5), layout="constrained")
        for s, stat in enumerate(STATISTICS):
            ax = fig.add_subplot(1, len(STATISTICS), s + 1)
            means = [sum(head[stat] for head in heads) / len(heads) for heads in per_layer]
            ax.bar(range(len(names)), means, color=f"C{s}")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names)
            ax.set_title(stat)
            ax.set_xlabel("layer")
            ax.set_ylabel(f"mean {stat} over heads")
        return fig
        # END SOLUTION
