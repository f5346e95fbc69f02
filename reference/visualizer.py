"""Reference for ex4 q5: per-head statistics of attention weights.

Attention weights are (batch, n_heads, q_len, k_len), each row a distribution
over keys. Every statistic is computed in float64 and returned per head as a
tensor of shape (n_heads,). Source: seed 001 problem 5.
"""

from __future__ import annotations

import torch


def _check(weights: torch.Tensor) -> torch.Tensor:
    if weights.dim() != 4:
        raise ValueError(f"expected (batch, n_heads, q_len, k_len), got {tuple(weights.shape)}")
    return weights.detach().to(torch.float64)


def entropy(weights: torch.Tensor) -> torch.Tensor:
    """−Σ_j w_ij log w_ij in nats (0·log 0 = 0), mean over batch and queries: (n_heads,)."""
    w = _check(weights)
    per_row = -torch.xlogy(w, w).sum(dim=-1)  # (batch, n_heads, q_len)
    return per_row.mean(dim=(0, 2))


def diag_strength(weights: torch.Tensor) -> torch.Tensor:
    """Mean of w_ii over batch and i < min(q_len, k_len): (n_heads,)."""
    w = _check(weights)
    diag = torch.diagonal(w, dim1=-2, dim2=-1)  # (batch, n_heads, min(q_len, k_len))
    return diag.mean(dim=(0, 2))


def locality(weights: torch.Tensor) -> torch.Tensor:
    """Σ_j w_ij·exp(−|i − j|), mean over batch and queries: (n_heads,)."""
    w = _check(weights)
    q_len, k_len = w.shape[-2:]
    i = torch.arange(q_len, dtype=torch.float64).unsqueeze(1)  # (q_len, 1)
    j = torch.arange(k_len, dtype=torch.float64).unsqueeze(0)  # (1, k_len)
    near = torch.exp(-(i - j).abs())  # (q_len, k_len)
    return (w * near).sum(dim=-1).mean(dim=(0, 2))


def analyze_attention_patterns(weights: torch.Tensor) -> list[dict]:
    """One dict per head: {"head": int, "entropy", "diag_strength", "locality": float}."""
    ent, diag, loc = entropy(weights), diag_strength(weights), locality(weights)
    return [
        {"head": h, "entropy": float(ent[h]), "diag_strength": float(diag[h]), "locality": float(loc[h])}
        for h in range(ent.numel())
    ]
