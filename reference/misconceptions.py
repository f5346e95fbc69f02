"""Known-wrong variants of the ex4 q1-q4 reference names.

Each ``Misconception`` stands in for one API name (``target``): ``impl`` has the
same constructor and call signature as the reference (a subclass overriding one
method, or a function for ``sinusoidal_table``) and differs from it in exactly
one plausible way. Suites use them two ways:

- hints: when a learner's output matches a variant's output on the same input
  (and weights), the feedback shows the variant's ``hint``;
- q6: a learner's test suite must catch each variant; ``kind`` names the bug's
  category in the feedback when it does not.

Variants of a class are built like the reference and load the reference's
state_dict (same parameter and buffer names). Only the target itself is
replaced: e.g. the encoder variants still use the reference blocks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .attention import AdditiveAttention, ScaledDotProductAttention, as_bool_mask
from .encoder import FeedForward, MinimalTransformerEncoder, MultiHeadAttention, TransformerBlock
from .normalization import BatchNorm1D, LayerNorm
from .positional_encoding import PositionalEncoding, sinusoidal_table


@dataclass(frozen=True)
class Misconception:
    key: str  # unique id, e.g. "layernorm_unbiased_variance"
    target: str  # the API name it replaces, e.g. "LayerNorm"
    kind: str  # short category, e.g. "a normalization bug"
    hint: str  # one learner-facing sentence naming the mistake
    impl: Callable  # drop-in replacement for the reference ``target``


# --------------------------------------------------------------------------- q1


def _table_sin_cos_swapped(max_len: int, d_model: int, base: float = 10000.0) -> Tensor:
    table = sinusoidal_table(max_len, d_model, base)
    return torch.stack([table[:, 1::2], table[:, 0::2]], dim=-1).reshape(max_len, d_model)  # cos even, sin odd


def _table_halves(max_len: int, d_model: int, base: float = 10000.0) -> Tensor:
    table = sinusoidal_table(max_len, d_model, base)
    return torch.cat([table[:, 0::2], table[:, 1::2]], dim=1)  # (max_len, d_model): sins, then coss


def _table_base_1000(max_len: int, d_model: int, base: float = 10000.0) -> Tensor:
    return sinusoidal_table(max_len, d_model, 1000.0)


def _table_odd_column_frequency(max_len: int, d_model: int, base: float = 10000.0) -> Tensor:
    table = sinusoidal_table(max_len, d_model, base).double()
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)  # (max_len, 1)
    odd = torch.arange(1, d_model, 2, dtype=torch.float64)  # exponent (2i+1)/d instead of 2i/d
    table[:, 1::2] = torch.cos(pos / base ** (odd / d_model))
    return table.float()


class _PESeqFirstSlicing(PositionalEncoding):
    """The seed's seq-first ``x + pe[:x.size(0)]`` applied to batch-first input."""

    def forward(self, x: Tensor) -> Tensor:
        if x.size(1) > self.max_len:
            raise ValueError(f"seq_len {x.size(1)} exceeds max_len {self.max_len}")
        return self.dropout(x + self.pe[0, : x.size(0)].unsqueeze(1).to(x.dtype))  # (batch, 1, d_model)


# --------------------------------------------------------------------------- attention cores


def _buggy_softmax(
    scores: Tensor, mask: Tensor | None, *, dim: int = -1, invert: bool = False, after: bool = False
) -> Tensor:
    mask = as_bool_mask(mask, scores.device)
    if mask is None:
        return torch.softmax(scores, dim=dim)
    if invert:
        mask = ~mask
    if after:  # zero the masked weights without renormalizing
        return torch.softmax(scores, dim=dim).masked_fill(~mask, 0.0)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=dim).masked_fill(~mask, 0.0)


def _buggy_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: nn.Module, *, divisor: float | None, **softmax_bug
) -> tuple[Tensor, Tensor]:
    scores = q @ k.transpose(-2, -1)  # (..., q_len, k_len)
    if divisor is not None:
        scores = scores / divisor
    weights = _buggy_softmax(scores, mask, **softmax_bug)
    return dropout(weights) @ v, weights


def _mha(name: str, **bug) -> type[MultiHeadAttention]:
    def _attend(self, q, k, v, mask):
        divisor = bug.get("divisor", lambda m: math.sqrt(m.d_k))(self)
        softmax_bug = {key: value for key, value in bug.items() if key != "divisor"}
        return _buggy_attention(q, k, v, mask, self.dropout, divisor=divisor, **softmax_bug)

    return type(name, (MultiHeadAttention,), {"_attend": _attend})


def _sdpa(name: str, **bug) -> type[ScaledDotProductAttention]:
    def forward(self, query, key, value, mask=None):
        divisor = bug.get("divisor", lambda q: math.sqrt(q.size(-1)))(query)
        softmax_bug = {key_: v for key_, v in bug.items() if key_ != "divisor"}
        return _buggy_attention(query, key, value, mask, self.dropout, divisor=divisor, **softmax_bug)

    return type(name, (ScaledDotProductAttention,), {"forward": forward})


class _MHAHeadsSplitWrong(MultiHeadAttention):
    def _split_heads(self, x: Tensor) -> Tensor:
        batch, seq_len, _ = x.shape
        return x.reshape(batch, self.n_heads, seq_len, self.d_k)  # no transpose: mixes positions and heads


class _MHANoOutputProjection(MultiHeadAttention):
    def forward(self, query, key, value, mask=None):
        batch, q_len, _ = query.shape
        q, k, v = (self._split_heads(w(t)) for w, t in ((self.W_q, query), (self.W_k, key), (self.W_v, value)))
        context, weights = self._attend(q, k, v, mask)
        self.attention_weights = weights.detach()
        return context.transpose(1, 2).reshape(batch, q_len, self.d_model)  # W_o never applied


class _AdditiveNoTanh(AdditiveAttention):
    def scores(self, query: Tensor, key: Tensor) -> Tensor:
        return self.v(self.W_q(query).unsqueeze(2) + self.W_k(key).unsqueeze(1)).squeeze(-1)


def _additive(name: str, **softmax_bug) -> type[AdditiveAttention]:
    def forward(self, query, key, value, mask=None):
        weights = _buggy_softmax(self.scores(query, key), mask, **softmax_bug)
        return weights @ value, weights

    return type(name, (AdditiveAttention,), {"forward": forward})


# --------------------------------------------------------------------------- q2 layers


class _FFNoReLU(FeedForward):
    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.linear1(x)))


class _BlockNoResidual(TransformerBlock):
    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.norm1(self.dropout(self.attention(x, x, x, mask)))
        return self.norm2(self.dropout(self.feed_forward(x)))


class _BlockPreNorm(TransformerBlock):
    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.norm1(x)
        x = x + self.dropout(self.attention(h, h, h, mask))
        return x + self.dropout(self.feed_forward(self.norm2(x)))


class _EncoderNoScale(MinimalTransformerEncoder):
    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.pos_encoding(self.embedding(tokens))
        for block in self.transformer_blocks:
            x = block(x, mask)
        return self.layer_norm(x)


class _EncoderScaleAfterPE(MinimalTransformerEncoder):
    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.pos_encoding(self.embedding(tokens)) * math.sqrt(self.d_model)
        for block in self.transformer_blocks:
            x = block(x, mask)
        return self.layer_norm(x)


# --------------------------------------------------------------------------- q4


class _LayerNormBug(LayerNorm):
    _unbiased = False
    _eps_on_std = False
    _axes = "trailing"  # or "batch" (dim 0) or "last" (dim -1 only)

    def forward(self, x: Tensor) -> Tensor:
        k = len(self.normalized_shape)
        dims = {"trailing": tuple(range(-k, 0)), "batch": (0,), "last": (-1,)}[self._axes]
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, keepdim=True, unbiased=self._unbiased)
        denom = var.sqrt() + self.eps if self._eps_on_std else torch.sqrt(var + self.eps)
        return self.gamma * (x - mean) / denom + self.beta


class _BatchNormBug(BatchNorm1D):
    _running_var_biased = False
    _momentum_reversed = False
    _eval_batch_stats = False
    _normalize_unbiased = False
    _axes = "channel"  # or "feature" (per sample, like LayerNorm) or "batch_only" (dim 0 of (N, C, L))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in (2, 3) or x.size(1) != self.num_features:
            raise ValueError(f"expected (N, {self.num_features}) or (N, {self.num_features}, L), got {tuple(x.shape)}")
        channel = (0,) if x.dim() == 2 else (0, 2)
        shape = (1, -1) if x.dim() == 2 else (1, -1, 1)
        if self.training:
            n = x.numel() // self.num_features
            if n < 2:
                raise ValueError("expected more than 1 value per channel when training")
            with torch.no_grad():
                mean, var = x.mean(dim=channel), x.var(dim=channel, unbiased=not self._running_var_biased)
                keep, new = 1 - self.momentum, self.momentum
                if self._momentum_reversed:
                    keep, new = new, keep
                self.running_mean.mul_(keep).add_(new * mean)
                self.running_var.mul_(keep).add_(new * var)
        if self.training or self._eval_batch_stats:
            dims = {"channel": channel, "feature": tuple(range(1, x.dim())), "batch_only": (0,)}[self._axes]
            mu = x.mean(dim=dims, keepdim=True)
            var = x.var(dim=dims, keepdim=True, unbiased=self._normalize_unbiased)
        else:
            mu, var = self.running_mean.view(shape), self.running_var.view(shape)
        return self.gamma.view(shape) * (x - mu) / torch.sqrt(var + self.eps) + self.beta.view(shape)


def _variant(base: type, name: str, **flags) -> type:
    # flags become private class attributes (``_unbiased``), so a q6 test cannot read them through ``impl``
    return type(name, (base,), {f"_{flag}": value for flag, value in flags.items()})


# --------------------------------------------------------------------------- the list

_PE, _MASK, _SCALE, _SCORE = "a positional-encoding bug", "a masking bug", "a scaling bug", "an attention-score bug"
_NORM, _RUNNING, _ORDER, _LAYER = (
    "a normalization bug",
    "a running-statistics bug",
    "a residual/normalization-order bug",
    "a missing-layer bug",
)

MISCONCEPTIONS: list[Misconception] = [
    # q1 sinusoidal_table / PositionalEncoding
    Misconception("pe_sin_cos_swapped", "sinusoidal_table", _PE,
                  "Your sin and cos are swapped: even columns 2i hold sin, odd columns 2i+1 hold cos.",
                  _table_sin_cos_swapped),
    Misconception("pe_halves_not_interleaved", "sinusoidal_table", _PE,
                  "You put all the sines in the first half of the columns and the cosines in the second; "
                  "they interleave: column 2i is sin, column 2i+1 is cos of the same angle.",
                  _table_halves),
    Misconception("pe_base_1000", "sinusoidal_table", _PE,
                  "Your frequencies use base 1000; the wavelengths grow as base^(2i/d_model) with base=10000 "
                  "(use the base argument).",
                  _table_base_1000),
    Misconception("pe_odd_column_frequency", "sinusoidal_table", _PE,
                  "Your cos columns use exponent (2i+1)/d_model; columns 2i and 2i+1 share the angle "
                  "pos / base^(2i/d_model).",
                  _table_odd_column_frequency),
    Misconception("pe_seq_first_slicing", "PositionalEncoding", _PE,
                  "You slice pe by x.size(0), the batch axis; input is batch-first, so add pe[:, :seq_len] "
                  "with seq_len = x.size(1).",
                  _PESeqFirstSlicing),
    # q2 MultiHeadAttention
    Misconception("mha_softmax_over_queries", "MultiHeadAttention", _SCORE,
                  "Your softmax runs over the query axis; each query's weights must sum to 1 over the keys (dim=-1).",
                  _mha("_MHASoftmaxOverQueries", dim=-2)),
    Misconception("mha_missing_scale", "MultiHeadAttention", _SCALE,
                  "Your scores are not divided by sqrt(d_k); scale Q K^T by 1/sqrt(d_k) before the softmax.",
                  _mha("_MHAMissingScale", divisor=lambda m: None)),
    Misconception("mha_scale_by_d_model", "MultiHeadAttention", _SCALE,
                  "You scale by sqrt(d_model); each head uses its own width d_k = d_model / n_heads, "
                  "so divide by sqrt(d_k).",
                  _mha("_MHAScaleByDModel", divisor=lambda m: math.sqrt(m.d_model))),
    Misconception("mha_inverted_mask", "MultiHeadAttention", _MASK,
                  "Your mask is inverted: True (or 1) means the position MAY be attended to.",
                  _mha("_MHAInvertedMask", invert=True)),
    Misconception("mha_mask_after_softmax", "MultiHeadAttention", _MASK,
                  "You zero the masked weights after the softmax, so rows no longer sum to 1; "
                  "fill masked scores with -inf (or the dtype's min) before the softmax.",
                  _mha("_MHAMaskAfterSoftmax", after=True)),
    Misconception("mha_heads_split_wrong", "MultiHeadAttention", _SCORE,
                  "You split heads with a direct view to (batch, n_heads, seq_len, d_k), which mixes positions; "
                  "view as (batch, seq_len, n_heads, d_k), then transpose(1, 2).",
                  _MHAHeadsSplitWrong),
    Misconception("mha_missing_output_projection", "MultiHeadAttention", _LAYER,
                  "You return the concatenated heads without the output projection W_o.",
                  _MHANoOutputProjection),
    # q2 FeedForward / TransformerBlock / MinimalTransformerEncoder
    Misconception("ffn_missing_relu", "FeedForward", _LAYER,
                  "Your feed-forward network has no ReLU between linear1 and linear2, so it is a single linear map.",
                  _FFNoReLU),
    Misconception("block_missing_residual", "TransformerBlock", _ORDER,
                  "Your block drops the residual connections: normalize x + sublayer(x), not sublayer(x) alone.",
                  _BlockNoResidual),
    Misconception("block_pre_norm", "TransformerBlock", _ORDER,
                  "Your block is pre-norm (x + sublayer(norm(x))); this block is post-norm: "
                  "x = norm1(x + dropout(attn(x))), then x = norm2(x + dropout(ff(x))).",
                  _BlockPreNorm),
    Misconception("encoder_missing_embedding_scale", "MinimalTransformerEncoder", _SCALE,
                  "Your embeddings are not multiplied by sqrt(d_model) before the positional encoding is added.",
                  _EncoderNoScale),
    Misconception("encoder_scale_after_pe", "MinimalTransformerEncoder", _SCALE,
                  "You multiply by sqrt(d_model) after adding the positional encoding; scale only the embeddings, "
                  "then add PE.",
                  _EncoderScaleAfterPE),
    # q3 ScaledDotProductAttention / AdditiveAttention
    Misconception("sdpa_softmax_over_queries", "ScaledDotProductAttention", _SCORE,
                  "Your softmax runs over the query axis; each query's weights must sum to 1 over the keys (dim=-1).",
                  _sdpa("_SDPASoftmaxOverQueries", dim=-2)),
    Misconception("sdpa_missing_scale", "ScaledDotProductAttention", _SCALE,
                  "Your scores are not divided by sqrt(d_k); scale Q K^T by 1/sqrt(d_k) before the softmax.",
                  _sdpa("_SDPAMissingScale", divisor=lambda q: None)),
    Misconception("sdpa_inverted_mask", "ScaledDotProductAttention", _MASK,
                  "Your mask is inverted: True (or 1) means the position MAY be attended to.",
                  _sdpa("_SDPAInvertedMask", invert=True)),
    Misconception("sdpa_mask_after_softmax", "ScaledDotProductAttention", _MASK,
                  "You zero the masked weights after the softmax, so rows no longer sum to 1; "
                  "fill masked scores with -inf (or the dtype's min) before the softmax.",
                  _sdpa("_SDPAMaskAfterSoftmax", after=True)),
    Misconception("additive_missing_tanh", "AdditiveAttention", _SCORE,
                  "Your additive score has no tanh: score = v(tanh(W_q q + W_k k)).",
                  _AdditiveNoTanh),
    Misconception("additive_softmax_over_queries", "AdditiveAttention", _SCORE,
                  "Your softmax runs over the query axis; each query's weights must sum to 1 over the keys (dim=-1).",
                  _additive("_AdditiveSoftmaxOverQueries", dim=-2)),
    Misconception("additive_inverted_mask", "AdditiveAttention", _MASK,
                  "Your mask is inverted: True (or 1) means the position MAY be attended to.",
                  _additive("_AdditiveInvertedMask", invert=True)),
    # q4 LayerNorm
    Misconception("layernorm_unbiased_variance", "LayerNorm", _NORM,
                  "Your variance looks unbiased (divides by n-1); LayerNorm uses the biased variance (divide by n).",
                  _variant(_LayerNormBug, "_LNUnbiased", unbiased=True)),
    Misconception("layernorm_eps_on_std", "LayerNorm", _NORM,
                  "You add eps to the standard deviation; it goes inside the square root: "
                  "(x - mean) / sqrt(var + eps).",
                  _variant(_LayerNormBug, "_LNEpsOnStd", eps_on_std=True)),
    Misconception("layernorm_over_batch_axis", "LayerNorm", _NORM,
                  "You normalize over the batch axis (dim 0); LayerNorm normalizes each sample over its trailing "
                  "normalized_shape dims.",
                  _variant(_LayerNormBug, "_LNOverBatch", axes="batch")),
    Misconception("layernorm_last_axis_only", "LayerNorm", _NORM,
                  "You normalize over the last axis only; with a tuple normalized_shape the statistics pool over "
                  "all of its trailing dims.",
                  _variant(_LayerNormBug, "_LNLastAxisOnly", axes="last")),
    # q4 BatchNorm1D
    Misconception("batchnorm_running_var_biased", "BatchNorm1D", _RUNNING,
                  "Your running_var is updated with the biased batch variance; torch updates it with the unbiased "
                  "one (times n/(n-1)), while normalizing with the biased one.",
                  _variant(_BatchNormBug, "_BNRunningVarBiased", running_var_biased=True)),
    Misconception("batchnorm_momentum_reversed", "BatchNorm1D", _RUNNING,
                  "Your momentum is applied the wrong way round: running = (1 - momentum) * running "
                  "+ momentum * batch_stat.",
                  _variant(_BatchNormBug, "_BNMomentumReversed", momentum_reversed=True)),
    Misconception("batchnorm_eval_uses_batch_stats", "BatchNorm1D", _RUNNING,
                  "In eval mode you still normalize with the batch statistics; eval must use running_mean "
                  "and running_var.",
                  _variant(_BatchNormBug, "_BNEvalBatchStats", eval_batch_stats=True)),
    Misconception("batchnorm_normalize_unbiased", "BatchNorm1D", _NORM,
                  "You normalize with the unbiased batch variance; normalization uses the biased one (divide by n), "
                  "only running_var gets the unbiased one.",
                  _variant(_BatchNormBug, "_BNNormalizeUnbiased", normalize_unbiased=True)),
    Misconception("batchnorm_over_feature_axis", "BatchNorm1D", _NORM,
                  "You normalize each sample over its features (that is LayerNorm); BatchNorm normalizes each "
                  "channel over the batch.",
                  _variant(_BatchNormBug, "_BNOverFeatures", axes="feature")),
    Misconception("batchnorm_3d_batch_axis_only", "BatchNorm1D", _NORM,
                  "For (N, C, L) input you average over the batch axis only; BatchNorm1d pools each channel "
                  "over both N and L (dims 0 and 2).",
                  _variant(_BatchNormBug, "_BNBatchAxisOnly", axes="batch_only")),
]


def variants_of(target: str) -> list[Misconception]:
    """The misconceptions standing in for the API name ``target`` (e.g. "LayerNorm"), in list order."""
    return [m for m in MISCONCEPTIONS if m.target == target]


def by_key(key: str) -> Misconception:
    """The misconception with this ``key``; KeyError if none."""
    for m in MISCONCEPTIONS:
        if m.key == key:
            return m
    raise KeyError(key)
