"""Q2 — A minimal Transformer encoder, built up step by step.

Seed 001, problem 2: multi-head attention, the position-wise feed-forward
network, a post-norm Transformer block, and an encoder stacking them on top of
token embeddings and the positional encoding of Q1.

Sources: Vaswani et al. 2017, §3.2.2 (multi-head attention), §3.3 (feed-forward),
§3.4 (embeddings multiplied by sqrt(d_model)), §5.4 (residual dropout).

Conventions used throughout:

- Tensors are batch-first: ``(batch, seq_len, d_model)``; attention weights are
  ``(batch, n_heads, q_len, k_len)``; ``d_k = d_model // n_heads``.
- Masks are boolean, ``True`` = may attend, broadcastable to
  ``(batch, n_heads, q_len, k_len)`` (as in
  ``torch.nn.functional.scaled_dot_product_attention``): a causal mask is
  ``(seq_len, seq_len)``, a padding mask ``(batch, 1, 1, k_len)``. A 0/1 integer
  mask means the same (nonzero = may attend); a floating-point mask is refused
  with ``TypeError``.
- A masked position gets an attention weight of exactly 0. A query whose keys
  are all masked (a fully masked row) gets all-zero weights, so its attention
  output (before ``W_o``) is the zero vector; no NaN, in the output or the
  gradient. Hint: fill masked scores with ``torch.finfo(scores.dtype).min``
  (not ``-inf``) before the softmax, then zero the masked weights after it.
- The judge loads reference weights into your modules, so parameter names and
  shapes must be exactly as documented (``state_dict()`` keys included). The
  layer norms here are ``torch.nn.LayerNorm`` (parameters ``weight`` and
  ``bias``), not your Q4 class.
- With ``dropout=0.0``, or in ``eval()`` mode, every module is deterministic.

Allowed imports: torch, numpy, math, and your own Q1 module
(``from q1_positional_encoding import PositionalEncoding``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from q1_positional_encoding import PositionalEncoding


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017, §3.2.2).

    ``MultiHead(Q, K, V) = W_o(concat(head_1, ..., head_h))`` with
    ``head_h = softmax(Q_h K_h^T / sqrt(d_k)) V_h``, where ``Q_h`` is head ``h``'s
    slice of ``W_q(query)`` (columns ``h*d_k`` to ``(h+1)*d_k``), likewise ``K_h``
    and ``V_h``. The softmax runs over the keys.

    Args:
        d_model: model width.
        n_heads: number of heads; must divide ``d_model``.
        dropout: dropout probability on the attention weights.

    Attributes (names and shapes are checked):
        W_q, W_k, W_v, W_o: ``nn.Linear(d_model, d_model)`` (with bias).
        dropout: ``nn.Dropout(dropout)``, applied to the attention weights before
            they multiply ``V``.
        attention_weights: ``None`` until the first call, then the weights of the
            last call, ``(batch, n_heads, q_len, k_len)``, taken *before* dropout
            and detached from the graph; each unmasked row sums to 1.

    Raises:
        ValueError: if ``d_model % n_heads != 0`` (or ``n_heads`` is not positive).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        # BEGIN SOLUTION
        if n_heads < 1 or d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_k = d_model // n_heads
        self.W_q = nn.Linear(d_model, d_model)
        self.W_k = nn.Linear(d_model, d_model)
        self.W_v = nn.Linear(d_model, d_model)
        self.W_o = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.attention_weights = None
        # END SOLUTION

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attend from ``query`` to ``key``/``value``.

        Args:
            query: ``(batch, q_len, d_model)``.
            key, value: ``(batch, k_len, d_model)``.
            mask: ``None`` or bool/0-1 integer, ``True`` = may attend, broadcastable
                to ``(batch, n_heads, q_len, k_len)``.

        Returns:
            ``(batch, q_len, d_model)``, same dtype and device as ``query``.
        """
        # BEGIN SOLUTION
        batch, q_len, _ = query.shape

        def heads(x: Tensor) -> Tensor:
            return x.view(batch, -1, self.n_heads, self.d_k).transpose(1, 2)  # (batch, n_heads, len, d_k)

        Q, K, V = heads(self.W_q(query)), heads(self.W_k(key)), heads(self.W_v(value))
        scores = Q @ K.transpose(-2, -1) / math.sqrt(self.d_k)  # (batch, n_heads, q_len, k_len)
        if mask is not None:
            if mask.is_floating_point():
                raise TypeError("mask must be bool or 0/1 integer, True = may attend")
            allowed = mask.to(scores.device) != 0
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1).masked_fill(~allowed, 0.0)
        else:
            weights = torch.softmax(scores, dim=-1)
        self.attention_weights = weights.detach()
        out = self.dropout(weights) @ V  # (batch, n_heads, q_len, d_k)
        out = out.transpose(1, 2).reshape(batch, q_len, self.d_model)  # (batch, q_len, d_model)
        return self.W_o(out)
        # END SOLUTION


class FeedForward(nn.Module):
    """Position-wise feed-forward network (Vaswani et al. 2017, §3.3).

    ``linear2(dropout(relu(linear1(x))))``.

    Attributes (names and shapes are checked):
        linear1: ``nn.Linear(d_model, d_ff)``.
        linear2: ``nn.Linear(d_ff, d_model)``.
        dropout: ``nn.Dropout(dropout)``, between the ReLU and ``linear2``.
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.1) -> None:
        super().__init__()
        # BEGIN SOLUTION
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)
        # END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, seq_len, d_model)`` -> ``(batch, seq_len, d_model)``."""
        # BEGIN SOLUTION
        return self.linear2(self.dropout(torch.relu(self.linear1(x))))
        # END SOLUTION


class TransformerBlock(nn.Module):
    """One post-norm encoder block (Vaswani et al. 2017, §3.1 and §5.4).

    ::

        x = norm1(x + dropout(attention(x, x, x, mask)))
        x = norm2(x + dropout(feed_forward(x)))

    Attributes (names and shapes are checked):
        attention: ``MultiHeadAttention(d_model, n_heads, dropout)``.
        feed_forward: ``FeedForward(d_model, d_ff, dropout)``.
        norm1, norm2: ``torch.nn.LayerNorm(d_model)`` (parameters ``weight``, ``bias``).
        dropout: ``nn.Dropout(dropout)``, the residual dropout.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1) -> None:
        super().__init__()
        # BEGIN SOLUTION
        self.attention = MultiHeadAttention(d_model, n_heads, dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        # END SOLUTION

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Self-attention block: ``(batch, seq_len, d_model)`` -> same shape; ``mask`` as in MultiHeadAttention."""
        # BEGIN SOLUTION
        x = self.norm1(x + self.dropout(self.attention(x, x, x, mask)))
        x = self.norm2(x + self.dropout(self.feed_forward(x)))
        return x
        # END SOLUTION


class MinimalTransformerEncoder(nn.Module):
    """Token ids in, contextual vectors out.

    ::

        x = embedding(tokens) * sqrt(d_model)      # Vaswani et al. §3.4
        x = pos_encoding(x)                        # adds PE, then dropout
        for block in transformer_blocks: x = block(x, mask)
        return layer_norm(x)

    Attributes (names and shapes are checked):
        embedding: ``nn.Embedding(vocab_size, d_model)``.
        pos_encoding: your Q1 ``PositionalEncoding(d_model, max_len, dropout)``
            (its buffer appears in ``state_dict()`` as ``"pos_encoding.pe"``).
        transformer_blocks: ``nn.ModuleList`` of ``n_layers`` ``TransformerBlock(d_model, n_heads, d_ff, dropout)``.
        layer_norm: ``torch.nn.LayerNorm(d_model)``, the final norm.

    Raises:
        ValueError: as ``MultiHeadAttention`` (``d_model % n_heads``), and from
            ``forward`` when ``seq_len > max_len``.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_heads: int,
        n_layers: int,
        d_ff: int,
        max_len: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        # BEGIN SOLUTION
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.pos_encoding = PositionalEncoding(d_model, max_len, dropout)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)]
        )
        self.layer_norm = nn.LayerNorm(d_model)
        # END SOLUTION

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """Encode a batch of token ids.

        Args:
            tokens: ``(batch, seq_len)`` int64 ids in ``[0, vocab_size)``.
            mask: as in MultiHeadAttention, passed to every block.

        Returns:
            ``(batch, seq_len, d_model)`` float32.
        """
        # BEGIN SOLUTION
        x = self.embedding(tokens) * math.sqrt(self.d_model)  # (batch, seq_len, d_model)
        x = self.pos_encoding(x)
        for block in self.transformer_blocks:
            x = block(x, mask)
        return self.layer_norm(x)
        # END SOLUTION
