"""A minimal post-norm Transformer encoder (ex4 q2; seed 001 problem 2).

Sources: Vaswani et al. 2017, §3.2.2 (multi-head attention), §3.3 (position-wise
feed-forward), §3.4 (embeddings scaled by sqrt(d_model)), §5.4 (residual dropout).

Mask convention: see ``reference.attention`` (bool, True = may attend,
broadcastable to (batch, n_heads, q_len, k_len); fully masked rows give zero
weights). The norms inside ``TransformerBlock`` and the encoder's final
``layer_norm`` are ``torch.nn.LayerNorm`` (parameters ``weight``, ``bias``), so
state_dict keys are pinned independently of q4.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .attention import attend
from .positional_encoding import PositionalEncoding


class MultiHeadAttention(nn.Module):
    """W_o(concat_h softmax(Q_h K_h^T / sqrt(d_k)) V_h), d_k = d_model / n_heads.

    ``attention_weights``: (batch, n_heads, q_len, k_len) of the last call, detached,
    taken before dropout (None before the first call). Dropout acts on the weights
    used for the context.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        if n_heads <= 0 or d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_heads, self.d_k = d_model, n_heads, d_model // n_heads
        self.W_q = nn.Linear(d_model, d_model)
        self.W_k = nn.Linear(d_model, d_model)
        self.W_v = nn.Linear(d_model, d_model)
        self.W_o = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.attention_weights: Tensor | None = None

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, seq_len, _ = x.shape
        return x.reshape(batch, seq_len, self.n_heads, self.d_k).transpose(1, 2)  # (batch, n_heads, seq_len, d_k)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        return attend(q, k, v, mask, self.dropout)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        """query (batch, q_len, d_model), key/value (batch, k_len, d_model) -> (batch, q_len, d_model)."""
        batch, q_len, _ = query.shape
        q = self._split_heads(self.W_q(query))  # (batch, n_heads, q_len, d_k)
        k = self._split_heads(self.W_k(key))  # (batch, n_heads, k_len, d_k)
        v = self._split_heads(self.W_v(value))  # (batch, n_heads, k_len, d_k)
        context, weights = self._attend(q, k, v, mask)  # (batch, n_heads, q_len, d_k), (.., q_len, k_len)
        self.attention_weights = weights.detach()
        context = context.transpose(1, 2).reshape(batch, q_len, self.d_model)  # (batch, q_len, d_model)
        return self.W_o(context)


class FeedForward(nn.Module):
    """linear2(dropout(relu(linear1(x)))): d_model -> d_ff -> d_model."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(batch, seq_len, d_model) -> (batch, seq_len, d_model)."""
        return self.linear2(self.dropout(torch.relu(self.linear1(x))))


class TransformerBlock(nn.Module):
    """Post-norm block: x = norm1(x + dropout(attn(x))); x = norm2(x + dropout(ff(x)))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(d_model, n_heads, dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(batch, seq_len, d_model) -> (batch, seq_len, d_model); self-attention with ``mask``."""
        x = self.norm1(x + self.dropout(self.attention(x, x, x, mask)))
        return self.norm2(x + self.dropout(self.feed_forward(x)))


class MinimalTransformerEncoder(nn.Module):
    """tokens -> embedding * sqrt(d_model) -> + PE (then dropout) -> n_layers blocks -> layer_norm."""

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
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.pos_encoding = PositionalEncoding(d_model, max_len, dropout)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)
        )
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """tokens (batch, seq_len) int64 -> (batch, seq_len, d_model)."""
        x = self.embedding(tokens) * math.sqrt(self.d_model)  # (batch, seq_len, d_model)
        x = self.pos_encoding(x)
        for block in self.transformer_blocks:
            x = block(x, mask)
        return self.layer_norm(x)
