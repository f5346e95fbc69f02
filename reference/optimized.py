"""Reference for ex4 q8: blockwise (flash) attention, a checkpointed pre-norm block, AMP training.

Sources: Dao et al. 2022, "FlashAttention", §3.1 (tiling with an online softmax);
Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost" (gradient
checkpointing); Micikevicius et al. 2018, "Mixed Precision Training" (loss
scaling); Shazeer 2020, "GLU Variants Improve Transformer" (SwiGLU); seed 001
problem 8. Everything is device-agnostic and batch-first.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    block_size: int = 64,
) -> torch.Tensor:
    """softmax(q kᵀ / √d_head) v, tiled over queries and keys with an online softmax.

    q: (batch, n_heads, q_len, d_head), k: (batch, n_heads, k_len, d_head),
    v: (batch, n_heads, k_len, d_v). mask: bool (True = may attend) or 0/1
    integer, broadcastable to (batch, n_heads, q_len, k_len). Returns
    (batch, n_heads, q_len, d_v) in q's dtype; a query row with no allowed key
    gives zeros (as F.scaled_dot_product_attention does). Running max, running
    sum and the output accumulator are kept in float32 (or float64 for float64
    inputs); no (q_len, k_len) tensor is ever made, the largest intermediate
    being one (batch, n_heads, block_size, block_size) score tile.
    Plain torch ops: autograd flows through the loop.

    Raises:
        ValueError: wrong ranks, mismatched shapes, block_size < 1, or a mask
            that does not broadcast.
        TypeError: a floating-point (additive) mask.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k, v must be 4-D (batch, n_heads, len, d_head)")
    batch, n_heads, q_len, d_head = q.shape
    k_len, d_v = k.size(2), v.size(3)
    if k.shape != (batch, n_heads, k_len, d_head) or v.shape != (batch, n_heads, k_len, d_v):
        raise ValueError(f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if mask is not None:
        if mask.is_floating_point() or mask.is_complex():
            raise TypeError("mask must be bool (True = may attend) or 0/1 integer, not floating point")
        try:
            mask = mask.expand(batch, n_heads, q_len, k_len)  # a view: nothing materialized
        except RuntimeError as err:
            raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to "
                             f"{(batch, n_heads, q_len, k_len)}") from err

    acc_dtype = torch.promote_types(q.dtype, torch.float32)
    scale = 1.0 / math.sqrt(d_head)
    blocks = []
    for i in range(0, q_len, block_size):
        q_i = q[:, :, i:i + block_size].to(acc_dtype) * scale  # (batch, n_heads, bq, d_head)
        bq = q_i.size(2)
        m_i = q_i.new_full((batch, n_heads, bq, 1), float("-inf"))  # running max
        l_i = q_i.new_zeros((batch, n_heads, bq, 1))  # running sum of exp
        acc = q_i.new_zeros((batch, n_heads, bq, d_v))  # running un-normalized output
        for j in range(0, k_len, block_size):
            k_j = k[:, :, j:j + block_size].to(acc_dtype)  # (batch, n_heads, bk, d_head)
            v_j = v[:, :, j:j + block_size].to(acc_dtype)  # (batch, n_heads, bk, d_v)
            s = q_i @ k_j.transpose(-2, -1)  # (batch, n_heads, bq, bk)
            if mask is not None:
                allowed = mask[:, :, i:i + block_size, j:j + block_size].bool()
                s = s.masked_fill(~allowed, float("-inf"))
            # The shift cancels in the softmax, so it carries no gradient.
            m_new = torch.maximum(m_i, s.detach().amax(dim=-1, keepdim=True))
            m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)  # rows with nothing allowed yet
            p = torch.exp(s - m_safe)  # (batch, n_heads, bq, bk)
            alpha = torch.exp(m_i - m_safe)  # rescales what was accumulated so far
            l_i = alpha * l_i + p.sum(dim=-1, keepdim=True)
            acc = alpha * acc + p.to(acc.dtype) @ v_j
            m_i = m_new
        blocks.append(acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i)))
    if not blocks:
        return q.new_zeros((batch, n_heads, 0, d_v))
    return torch.cat(blocks, dim=2).to(q.dtype)  # (batch, n_heads, q_len, d_v)


class FlashMultiHeadAttention(nn.Module):
    """Self-attention whose core is `flash_attention`.

    qkv: Linear(d_model, 3·d_model, bias=False); its output splits along the
    last dim into q, k, v (in that order, d_model each), and each of those into
    n_heads consecutive slices of d_k = d_model // n_heads (head h uses columns
    h·d_k:(h+1)·d_k). out_proj: Linear(d_model, d_model). Dropout is applied
    to the output of out_proj.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.1, block_size: int = 64):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model, self.n_heads, self.d_k = d_model, n_heads, d_model // n_heads
        self.block_size = block_size
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (batch, seq_len, d_model) -> (batch, seq_len, d_model)."""
        if x.dim() != 3 or x.size(-1) != self.d_model:
            raise ValueError(f"expected (batch, seq_len, {self.d_model}), got {tuple(x.shape)}")
        batch, seq_len, _ = x.shape
        q, k, v = self.qkv(x).split(self.d_model, dim=-1)  # 3 x (batch, seq_len, d_model)
        q = q.view(batch, seq_len, self.n_heads, self.d_k).transpose(1, 2)  # (batch, n_heads, seq_len, d_k)
        k = k.view(batch, seq_len, self.n_heads, self.d_k).transpose(1, 2)  # (batch, n_heads, seq_len, d_k)
        v = v.view(batch, seq_len, self.n_heads, self.d_k).transpose(1, 2)  # (batch, n_heads, seq_len, d_k)
        y = flash_attention(q, k, v, mask, self.block_size)  # (batch, n_heads, seq_len, d_k)
        y = y.transpose(1, 2).reshape(batch, seq_len, self.d_model)  # (batch, seq_len, d_model)
        return self.dropout(self.out_proj(y))


class OptimizedFeedForward(nn.Module):
    """SwiGLU (Shazeer 2020): w2(dropout(silu(w1 x) * w3 x)); no biases."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.1):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq_len, d_model) -> (batch, seq_len, d_model)."""
        return self.w2(self.dropout(F.silu(self.w1(x)) * self.w3(x)))


class OptimizedTransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + ff(norm2(x)).

    With use_checkpoint, in training mode with grad enabled, the whole block
    runs under torch.utils.checkpoint.checkpoint(use_reentrant=False): only its
    input is kept and the inside is recomputed during backward (Chen et al. 2016).
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1,
                 use_checkpoint: bool = False):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.attention = FlashMultiHeadAttention(d_model, n_heads, dropout)
        self.feed_forward = OptimizedFeedForward(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def _block(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), mask)
        return x + self.feed_forward(self.norm2(x))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, seq_len, d_model) -> (batch, seq_len, d_model)."""
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._block, x, mask, use_reentrant=False)
        return self._block(x, mask)


class OptimizedTransformer(nn.Module):
    """Decoder-style stack: token + learned position embeddings, pre-norm blocks, final norm, lm_head.

    embedding: Embedding(vocab_size, d_model); pos_embedding: Embedding(max_len,
    d_model) (learned, GPT-2 style; no √d_model scaling); blocks: ModuleList of
    OptimizedTransformerBlock; norm: LayerNorm(d_model); lm_head: Linear(d_model,
    vocab_size, bias=False), not tied to the embedding. No causal mask is added:
    pass one for language modelling.
    """

    def __init__(self, vocab_size: int, d_model: int, n_heads: int, n_layers: int, d_ff: int,
                 max_len: int = 512, dropout: float = 0.1, use_checkpoint: bool = False):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.pos_embedding = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            OptimizedTransformerBlock(d_model, n_heads, d_ff, dropout, use_checkpoint)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: (batch, seq_len) int64 -> logits (batch, seq_len, vocab_size)."""
        seq_len = tokens.size(1)
        if seq_len > self.max_len:
            raise ValueError(f"seq_len={seq_len} exceeds max_len={self.max_len}")
        pos = torch.arange(seq_len, device=tokens.device)  # (seq_len,)
        x = self.dropout(self.embedding(tokens) + self.pos_embedding(pos))  # (batch, seq_len, d_model)
        for block in self.blocks:
            x = block(x, mask)
        return self.lm_head(self.norm(x))  # (batch, seq_len, vocab_size)


class MixedPrecisionTrainer:
    """One AMP training step (Micikevicius et al. 2018): autocast forward, scaled backward.

    train_step: zero grads; forward and loss under torch.autocast(device_type,
    dtype, enabled); scaler.scale(loss).backward(); scaler.unscale_(optimizer);
    clip_grad_norm_(max_grad_norm); scaler.step(optimizer) (skipped when a
    gradient is inf/nan); scaler.update(). After the step, p.grad holds the
    unscaled, clipped gradients. last_step_skipped says whether the step was
    skipped. With enabled=False the scaler is a pass-through and the step is
    skipped by hand on a non-finite gradient norm.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, enabled: bool = True,
                 device_type: str = "cuda", dtype: torch.dtype = torch.float16,
                 max_grad_norm: float = 1.0):
        self.model, self.optimizer = model, optimizer
        self.enabled, self.device_type, self.dtype = enabled, device_type, dtype
        self.max_grad_norm = max_grad_norm
        self.scaler = torch.amp.GradScaler(device_type, enabled=enabled)
        self.last_step_skipped = False

    def _loss(self, outputs: torch.Tensor, targets: torch.Tensor, criterion) -> torch.Tensor:
        if outputs.dim() == targets.dim() + 1:  # token-level classification: flatten to (N, C), (N,)
            return criterion(outputs.reshape(-1, outputs.size(-1)), targets.reshape(-1))
        return criterion(outputs, targets)

    def train_step(self, x: torch.Tensor, targets: torch.Tensor, criterion) -> float:
        """One optimizer step on (x, targets); returns the (unscaled) loss as a float."""
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device_type, dtype=self.dtype, enabled=self.enabled):
            loss = self._loss(self.model(x), targets, criterion)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        if self.scaler.is_enabled():
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.last_step_skipped = self.scaler.get_scale() < scale  # the scale backs off only on inf/nan
        else:
            self.last_step_skipped = not bool(torch.isfinite(norm))
            if not self.last_step_skipped:
                self.optimizer.step()
        return loss.item()
