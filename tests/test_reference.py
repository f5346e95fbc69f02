"""The ex4 q1-q4 reference against PyTorch built-ins, its misconceptions, and the model answers.

The reference is the oracle of the hidden suites, so it is checked here against
independent implementations (``nn.MultiheadAttention``, ``F.scaled_dot_product_attention``,
``nn.TransformerEncoderLayer``, ``nn.LayerNorm``, ``nn.BatchNorm1d``,
``FlopCounterMode``). Tolerances are per test and dtype.
"""

from __future__ import annotations

import copy
import importlib
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from reference.attention import (
    AdditiveAttention,
    ScaledDotProductAttention,
    attention_flops,
    attention_peak_bytes,
)
from reference.encoder import FeedForward, MinimalTransformerEncoder, MultiHeadAttention, TransformerBlock
from reference.misconceptions import MISCONCEPTIONS, Misconception, by_key, variants_of
from reference.normalization import BatchNorm1D, LayerNorm
from reference.positional_encoding import PositionalEncoding, sinusoidal_table

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions" / "ex4"
Q_MODULES = ("q1_positional_encoding", "q2_encoder", "q3_attention", "q4_normalization")
F32 = dict(atol=1e-5, rtol=1e-5)
F64 = dict(atol=1e-10, rtol=1e-10)
cuda = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one thread is fastest, and immune to a busy neighbour's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sol():
    """The model answers, imported by bare name from solutions/ex4 (as the worker does)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(SOLUTIONS))
        for name in Q_MODULES:
            mp.delitem(sys.modules, name, raising=False)
        modules = {name.split("_")[0]: importlib.import_module(name) for name in Q_MODULES}
        yield SimpleNamespace(**modules)
        for name in Q_MODULES:
            sys.modules.pop(name, None)


def _randomize(module: nn.Module, scale: float = 0.5) -> nn.Module:
    """Perturb every parameter, so gamma/beta and biases are not at their defaults."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def _masks(batch: int, q_len: int, k_len: int) -> dict[str, torch.Tensor]:
    """Masks (True = may attend) with no fully masked row."""
    keep = torch.ones(batch, k_len, dtype=torch.bool)
    keep[0, -2:] = False  # padding in sample 0
    random = torch.rand(batch, 1, q_len, k_len) > 0.4
    random[..., 0] = True  # every query may attend to key 0
    return {
        "causal": torch.ones(q_len, k_len, dtype=torch.bool).tril(),
        "padding": keep[:, None, None, :],  # (batch, 1, 1, k_len)
        "random": random,
    }


def _masks_3d(batch: int, q_len: int, k_len: int) -> dict[str, torch.Tensor]:
    """The same masks for (batch, q_len, k_len) scores (q3)."""
    return {k: (m.squeeze(1) if m.dim() == 4 else m) for k, m in _masks(batch, q_len, k_len).items()}


# --------------------------------------------------------------------------- q1


def test_sinusoidal_table_spot_values():
    table = sinusoidal_table(50, 8)
    assert table.shape == (50, 8) and table.dtype == torch.float32
    assert torch.equal(table[0], torch.tensor([0.0, 1.0] * 4))
    for pos, i in [(1, 0), (7, 1), (49, 3), (23, 2)]:
        angle = pos / 10000.0 ** (2 * i / 8)
        assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-7)
        assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-7)
    assert sinusoidal_table(3, 4, base=100.0)[2, 2].item() == pytest.approx(math.sin(2 / 10.0), abs=1e-7)
    far = sinusoidal_table(5000, 512)[4999, 100].item()  # exact to float32 rounding even far out
    assert far == pytest.approx(math.sin(4999 / 10000.0 ** (100 / 512)), abs=1e-7)


@pytest.mark.parametrize("args", [(10, 7), (0, 8), (10, 0), (-1, 8), (10, -2)])
def test_sinusoidal_table_rejects_bad_sizes(args):
    with pytest.raises(ValueError):
        sinusoidal_table(*args)


def test_positional_encoding_adds_the_table():
    pe = PositionalEncoding(16, max_len=20)
    assert pe.pe.shape == (1, 20, 16) and "pe" in pe.state_dict()
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    out = pe(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, x + sinusoidal_table(20, 16)[:7].double(), **F64)
    with pytest.raises(ValueError):
        pe(torch.randn(1, 21, 16))


# --------------------------------------------------------------------------- q2


def _torch_mha(ref: MultiHeadAttention) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(ref.d_model, ref.n_heads, dropout=0.0, batch_first=True)
    mha = mha.to(ref.W_q.weight.dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([ref.W_q.weight, ref.W_k.weight, ref.W_v.weight]))
        mha.in_proj_bias.copy_(torch.cat([ref.W_q.bias, ref.W_k.bias, ref.W_v.bias]))
        mha.out_proj.weight.copy_(ref.W_o.weight)
        mha.out_proj.bias.copy_(ref.W_o.bias)
    return mha.eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask_name", [None, "causal", "padding", "random"])
def test_multihead_attention_matches_torch(mask_name, dtype):
    batch, q_len, k_len, d_model, n_heads = 2, 5, 5, 16, 4
    ref = MultiHeadAttention(d_model, n_heads, dropout=0.0).to(dtype).eval()
    mha = _torch_mha(ref)
    x = torch.randn(batch, q_len, d_model, dtype=dtype)
    mask = None if mask_name is None else _masks(batch, q_len, k_len)[mask_name]
    kwargs = {}
    if mask_name == "causal":
        kwargs["attn_mask"] = ~mask  # torch: True = NOT allowed
    elif mask_name == "padding":
        kwargs["key_padding_mask"] = ~mask[:, 0, 0, :]
    elif mask_name == "random":
        kwargs["attn_mask"] = ~mask.expand(batch, n_heads, q_len, k_len).reshape(batch * n_heads, q_len, k_len)
    want, want_w = mha(x, x, x, need_weights=True, average_attn_weights=False, **kwargs)
    got = ref(x, x, x, mask)
    tol = F32 if dtype == torch.float32 else F64
    torch.testing.assert_close(got, want, **tol)
    torch.testing.assert_close(ref.attention_weights, want_w, **tol)
    assert ref.attention_weights.shape == (batch, n_heads, q_len, k_len)
    assert not ref.attention_weights.requires_grad


def test_multihead_attention_cross_lengths_and_integer_mask():
    ref = MultiHeadAttention(12, 3, dropout=0.0).eval()
    mha = _torch_mha(ref)
    q, kv = torch.randn(2, 4, 12), torch.randn(2, 6, 12)
    allowed = torch.rand(4, 6) > 0.3
    allowed[:, 0] = True
    want, want_w = mha(q, kv, kv, attn_mask=~allowed, average_attn_weights=False)
    torch.testing.assert_close(ref(q, kv, kv, allowed), want, **F32)
    torch.testing.assert_close(ref(q, kv, kv, allowed.long()), want, **F32)  # 0/1 integer mask
    torch.testing.assert_close(ref.attention_weights, want_w, **F32)
    with pytest.raises(TypeError):
        ref(q, kv, kv, allowed.float())
    with pytest.raises(ValueError):
        MultiHeadAttention(10, 3)


def test_fully_masked_row_gives_zero_weights_and_no_nan():
    ref = MultiHeadAttention(8, 2, dropout=0.0)
    x = torch.randn(2, 3, 8, requires_grad=True)
    mask = torch.ones(2, 1, 3, 3, dtype=torch.bool)
    mask[1, :, 2, :] = False  # sample 1, query 2 sees nothing
    out = ref(x, x, x, mask)
    w = ref.attention_weights
    assert torch.equal(w[1, :, 2], torch.zeros(2, 3))
    torch.testing.assert_close(out[1, 2], ref.W_o.bias.detach(), **F32)  # zero context -> W_o bias
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def _torch_layer(block: TransformerBlock) -> nn.TransformerEncoderLayer:
    d_model, d_ff = block.feed_forward.linear1.in_features, block.feed_forward.linear1.out_features
    layer = nn.TransformerEncoderLayer(d_model, block.attention.n_heads, d_ff, dropout=0.0, batch_first=True)
    layer.self_attn = _torch_mha(block.attention)
    layer.linear1.load_state_dict(block.feed_forward.linear1.state_dict())
    layer.linear2.load_state_dict(block.feed_forward.linear2.state_dict())
    layer.norm1.load_state_dict(block.norm1.state_dict())
    layer.norm2.load_state_dict(block.norm2.state_dict())
    return layer.eval()


def test_transformer_block_matches_torch_encoder_layer():
    block = _randomize(TransformerBlock(16, 4, 32, dropout=0.0)).eval()
    layer = _torch_layer(block)
    x = torch.randn(2, 6, 16)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    with torch.no_grad():
        torch.testing.assert_close(block(x), layer(x), **F32)
        torch.testing.assert_close(block(x, causal), layer(x, src_mask=~causal), **F32)
    assert set(block.state_dict()) >= {"norm1.weight", "norm1.bias", "norm2.weight", "attention.W_q.weight",
                                      "feed_forward.linear1.weight", "feed_forward.linear2.bias"}


def test_encoder_matches_torch_encoder():
    vocab, d_model, n_heads, n_layers, d_ff = 50, 16, 4, 2, 32
    enc = _randomize(MinimalTransformerEncoder(vocab, d_model, n_heads, n_layers, d_ff, max_len=20, dropout=0.0))
    enc.eval()
    torch_enc = nn.TransformerEncoder(
        _torch_layer(enc.transformer_blocks[0]), n_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
    )
    for layer, block in zip(torch_enc.layers, enc.transformer_blocks):
        layer.load_state_dict(_torch_layer(block).state_dict())
    torch_enc.norm.load_state_dict(enc.layer_norm.state_dict())
    torch_enc.eval()
    tokens = torch.randint(0, vocab, (3, 9))
    x = enc.embedding(tokens) * math.sqrt(d_model) + sinusoidal_table(20, d_model)[:9]
    keep = torch.ones(3, 9, dtype=torch.bool)
    keep[1, 6:] = False
    with torch.no_grad():
        torch.testing.assert_close(enc(tokens), torch_enc(x), **F32)
        torch.testing.assert_close(enc(tokens, keep[:, None, None, :]), torch_enc(x, src_key_padding_mask=~keep), **F32)
    keys = set(enc.state_dict())
    assert {"embedding.weight", "pos_encoding.pe", "layer_norm.weight", "transformer_blocks.1.norm2.bias"} <= keys
    assert isinstance(enc.transformer_blocks, nn.ModuleList)


def test_feed_forward_is_linear_relu_linear():
    ff = FeedForward(8, 16, dropout=0.0)
    x = torch.randn(2, 3, 8)
    want = F.linear(torch.relu(F.linear(x, ff.linear1.weight, ff.linear1.bias)), ff.linear2.weight, ff.linear2.bias)
    torch.testing.assert_close(ff(x), want, **F32)


# --------------------------------------------------------------------------- q3


@pytest.mark.parametrize("mask_name", [None, "causal", "padding", "random"])
def test_scaled_dot_product_matches_torch(mask_name):
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 7, 8), torch.randn(2, 7, 3)
    mask = None if mask_name is None else _masks_3d(2, 5, 7)[mask_name]
    context, weights = ScaledDotProductAttention()(q, k, v, mask)
    torch.testing.assert_close(context, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **F32)
    assert weights.shape == (2, 5, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5), **F32)
    if mask is not None:
        assert (weights.masked_select(~mask.expand_as(weights)) == 0).all()


def test_scaled_dot_product_fully_masked_row_matches_torch():
    q, k, v = (torch.randn(2, 4, 8, requires_grad=True) for _ in range(3))
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[0, 1] = False
    context, weights = ScaledDotProductAttention()(q, k, v, mask)
    assert torch.equal(weights[0, 1], torch.zeros(4)) and torch.equal(context[0, 1], torch.zeros(8))
    torch.testing.assert_close(context, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **F32)
    context.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("mask_name", [None, "causal", "random"])
def test_additive_attention_matches_a_loop(mask_name):
    attn = AdditiveAttention(6).double()
    q, k, v = torch.randn(2, 3, 6).double(), torch.randn(2, 4, 6).double(), torch.randn(2, 4, 5).double()
    mask = None if mask_name is None else _masks_3d(2, 3, 4)[mask_name]
    context, weights = attn(q, k, v, mask)
    scores = torch.empty(2, 3, 4, dtype=torch.float64)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                scores[b, i, j] = attn.v.weight[0] @ torch.tanh(attn.W_q.weight @ q[b, i] + attn.W_k.weight @ k[b, j])
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf)
    want_w = torch.softmax(scores, dim=-1)
    torch.testing.assert_close(weights, want_w.detach(), **F64)
    torch.testing.assert_close(context, (want_w @ v).detach(), **F64)


class _Largest(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.peak = max(self.peak, t.numel() * t.element_size())
        return out


@pytest.mark.parametrize("mechanism", ["additive", "scaled_dot_product"])
@pytest.mark.parametrize("batch,seq_len,hidden", [(2, 5, 8), (3, 16, 4), (1, 1, 1), (4, 7, 33)])
def test_attention_flops_and_peak_bytes_match_measurement(mechanism, batch, seq_len, hidden):
    module = AdditiveAttention(hidden) if mechanism == "additive" else ScaledDotProductAttention()
    q, k, v = (torch.randn(batch, seq_len, hidden) for _ in range(3))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(q, k, v)
    with torch.no_grad(), _Largest() as largest:
        module(q, k, v)
    assert counter.get_total_flops() == attention_flops(mechanism, batch, seq_len, hidden)
    assert largest.peak == attention_peak_bytes(mechanism, batch, seq_len, hidden)
    with pytest.raises(ValueError):
        attention_flops("dot", batch, seq_len, hidden)


# --------------------------------------------------------------------------- q4


@pytest.mark.parametrize(
    "shape,normalized",
    [((4, 8), 8), ((2, 3, 8), (8,)), ((2, 3, 4, 5), (4, 5)), ((6, 2), 2)],
)
@pytest.mark.parametrize("kind", ["random", "tiny_variance", "constant"])
def test_layer_norm_matches_torch(shape, normalized, kind):
    x = {"random": torch.randn(shape) * 3 + 2, "tiny_variance": 1e-3 * torch.randn(shape),
         "constant": torch.full(shape, -1.5)}[kind].requires_grad_()
    ours = _randomize(LayerNorm(normalized))
    theirs = nn.LayerNorm(normalized, eps=1e-5)
    theirs.load_state_dict({"weight": ours.gamma.detach(), "bias": ours.beta.detach()})
    x2 = x.detach().clone().requires_grad_()
    y, y2 = ours(x), theirs(x2)
    torch.testing.assert_close(y, y2, **F32)
    w = torch.randn(shape)
    (y * w).sum().backward()
    (y2 * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-4 if kind == "tiny_variance" else 1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.gamma.grad, theirs.weight.grad, **F32)
    torch.testing.assert_close(ours.beta.grad, theirs.bias.grad, **F32)


def test_layer_norm_rejects_wrong_trailing_dims():
    with pytest.raises(ValueError):
        LayerNorm((4, 5))(torch.randn(2, 5, 4))
    assert set(LayerNorm(3).state_dict()) == {"gamma", "beta"}


@pytest.mark.parametrize("shape", [(8, 6), (4, 6, 5)])
def test_batch_norm_matches_torch(shape):
    ours = _randomize(BatchNorm1D(6, momentum=0.2))
    theirs = nn.BatchNorm1d(6, momentum=0.2)
    theirs.load_state_dict({"weight": ours.gamma.detach(), "bias": ours.beta.detach()}, strict=False)
    for step in range(4):
        x = (torch.randn(shape) * (step + 1) + step).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        y, y2 = ours(x), theirs(x2)
        torch.testing.assert_close(y, y2, **F32)
        w = torch.randn(shape)
        (y * w).sum().backward()
        (y2 * w).sum().backward()
        torch.testing.assert_close(x.grad, x2.grad, **F32)
        torch.testing.assert_close(ours.running_mean, theirs.running_mean, **F32)
        torch.testing.assert_close(ours.running_var, theirs.running_var, **F32)
    torch.testing.assert_close(ours.gamma.grad, theirs.weight.grad, atol=1e-4, rtol=1e-5)  # sums over 4 steps
    ours.eval(), theirs.eval()
    x = torch.randn(shape) * 2
    before = ours.running_var.clone()
    torch.testing.assert_close(ours(x), theirs(x), **F32)
    assert torch.equal(ours.running_var, before)


def test_batch_norm_errors_and_keys():
    bn = BatchNorm1D(3)
    assert set(bn.state_dict()) == {"gamma", "beta", "running_mean", "running_var"}
    with pytest.raises(ValueError):
        bn(torch.randn(1, 3))  # one value per channel in training
    with pytest.raises(ValueError):
        bn(torch.randn(4, 2))
    bn.eval()
    assert bn(torch.randn(1, 3)).shape == (1, 3)


# --------------------------------------------------------------------------- misconceptions


def _probe(target: str, impl, ref_cls) -> list[torch.Tensor]:
    """Outputs of ``impl`` (built like the reference, loaded with its weights) on fixed inputs."""
    torch.manual_seed(1)
    if target == "sinusoidal_table":
        return [impl(40, 16), impl(6, 4, base=50.0)]
    args = {
        "PositionalEncoding": (16, 30),
        "MultiHeadAttention": (16, 4, 0.0),
        "FeedForward": (16, 32, 0.0),
        "TransformerBlock": (16, 4, 32, 0.0),
        "MinimalTransformerEncoder": (50, 16, 4, 2, 32, 20, 0.0),
        "ScaledDotProductAttention": (),
        "AdditiveAttention": (8,),
        "LayerNorm": ((4, 6),),
        "BatchNorm1D": (6,),
    }[target]
    reference = _randomize(ref_cls(*args))
    module = impl(*args)
    module.load_state_dict(reference.state_dict())
    x = torch.randn(3, 7, 16)
    masks = [None, *_masks(3, 7, 7).values()]
    if target in ("PositionalEncoding", "FeedForward"):
        return [module(x)]
    if target == "MultiHeadAttention":
        return [t for m in masks for t in (module(x, x, x, m), module.attention_weights)]
    if target == "TransformerBlock":
        return [module(x, m) for m in masks]
    if target == "MinimalTransformerEncoder":
        return [module(torch.randint(0, 50, (3, 7)), m) for m in masks]
    if target in ("ScaledDotProductAttention", "AdditiveAttention"):
        q, k, v = torch.randn(3, 5, 8), torch.randn(3, 7, 8), torch.randn(3, 7, 4)
        return [t for m in [None, *_masks_3d(3, 5, 7).values()] for t in module(q, k, v, m)]
    if target == "LayerNorm":
        return [module(torch.randn(3, 4, 6) * 2 + 1), module(1e-3 * torch.randn(5, 4, 6))]
    outs = []  # BatchNorm1D: train steps on (N, C, L) and (N, C), buffers, then eval
    for shape in [(8, 6, 5), (8, 6), (8, 6, 5)]:
        outs.append(module(torch.randn(shape) * 2 + 1))
        outs += [module.running_mean.clone(), module.running_var.clone()]
    module.eval()
    return outs + [module(torch.randn(8, 6, 5))]


REFERENCE_CLASSES = {
    "PositionalEncoding": PositionalEncoding,
    "MultiHeadAttention": MultiHeadAttention,
    "FeedForward": FeedForward,
    "TransformerBlock": TransformerBlock,
    "MinimalTransformerEncoder": MinimalTransformerEncoder,
    "ScaledDotProductAttention": ScaledDotProductAttention,
    "AdditiveAttention": AdditiveAttention,
    "LayerNorm": LayerNorm,
    "BatchNorm1D": BatchNorm1D,
}


@pytest.mark.parametrize("m", MISCONCEPTIONS, ids=lambda m: m.key)
def test_misconception_differs_from_reference(m: Misconception):
    ref = sinusoidal_table if m.target == "sinusoidal_table" else REFERENCE_CLASSES[m.target]
    with torch.no_grad():
        want, got = _probe(m.target, ref, ref), _probe(m.target, m.impl, ref)
    assert len(want) == len(got)
    gap = max((w - g).abs().max().item() if w.shape == g.shape else math.inf for w, g in zip(want, got))
    assert gap > 1e-3, f"{m.key} is indistinguishable from the reference (max gap {gap:.2e})"


def test_misconception_catalogue():
    keys = [m.key for m in MISCONCEPTIONS]
    assert len(keys) == len(set(keys))
    assert {m.target for m in MISCONCEPTIONS} == {"sinusoidal_table", *REFERENCE_CLASSES}
    for m in MISCONCEPTIONS:
        assert m.hint.endswith(".") and m.kind.startswith(("a ", "an "))
        if m.target != "sinusoidal_table":
            assert issubclass(m.impl, REFERENCE_CLASSES[m.target])
    assert [m.key for m in variants_of("LayerNorm")][:2] == ["layernorm_unbiased_variance", "layernorm_eps_on_std"]
    assert by_key("block_pre_norm").target == "TransformerBlock"
    with pytest.raises(KeyError):
        by_key("nope")


# --------------------------------------------------------------------------- model answers


def test_solution_q1(sol):
    for max_len, d_model, base in [(100, 128, 10000.0), (5000, 64, 10000.0), (7, 6, 30.0)]:
        torch.testing.assert_close(
            sol.q1.sinusoidal_table(max_len, d_model, base), sinusoidal_table(max_len, d_model, base), atol=1e-6, rtol=0
        )
    for bad in [(10, 7), (0, 8), (10, -2)]:
        with pytest.raises(ValueError):
            sol.q1.sinusoidal_table(*bad)
    ref, ours = PositionalEncoding(16, 30), sol.q1.PositionalEncoding(16, 30)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 9, 16)
    torch.testing.assert_close(ours(x), ref(x), **F32)
    with pytest.raises(ValueError):
        ours(torch.randn(1, 31, 16))


def test_solution_plot_periodicity(sol):
    d_model, max_len, dims = 16, 12, (0, 3, 15)
    fig = sol.q1.plot_periodicity(d_model=d_model, max_len=max_len, dims=dims)
    table = sinusoidal_table(max_len, d_model).numpy()
    heat, curves = fig.axes[:2]
    assert heat.images[0].get_array().shape == (max_len, d_model)
    assert (heat.images[0].get_array() == table).all()
    assert heat.get_title() and heat.get_xlabel() and heat.get_ylabel()
    assert [line.get_label() for line in curves.lines] == [f"dim {d}" for d in dims]
    for line, dim in zip(curves.lines, dims):
        assert list(line.get_xdata()) == list(range(max_len))
        assert (line.get_ydata() == table[:, dim]).all()
    assert curves.get_title() and curves.get_xlabel() and curves.get_ylabel()
    assert len(sol.q1.plot_periodicity().axes[1].lines) == 4
    with pytest.raises(ValueError):
        sol.q1.plot_periodicity(d_model=8, dims=(8,))


def _load(ours: nn.Module, ref: nn.Module) -> nn.Module:
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    return ours


def test_solution_q2(sol):
    x, kv = torch.randn(3, 7, 16), torch.randn(3, 4, 16)
    masks = [None, *_masks(3, 7, 7).values()]
    ref = _randomize(MultiHeadAttention(16, 4, 0.0))
    ours = _load(sol.q2.MultiHeadAttention(16, 4, 0.0), ref)
    for m in masks:
        torch.testing.assert_close(ours(x, x, x, m), ref(x, x, x, m), **F32)
        torch.testing.assert_close(ours.attention_weights, ref.attention_weights, **F32)
    torch.testing.assert_close(ours(x, kv, kv), ref(x, kv, kv), **F32)
    int_mask = torch.ones(7, 7, dtype=torch.long).tril()
    torch.testing.assert_close(ours(x, x, x, int_mask), ref(x, x, x, int_mask), **F32)
    full = torch.ones(3, 1, 7, 7, dtype=torch.bool)
    full[0, 0, 3] = False
    torch.testing.assert_close(ours(x, x, x, full), ref(x, x, x, full), **F32)
    torch.testing.assert_close(ours.attention_weights, ref.attention_weights, atol=0, rtol=0)
    with pytest.raises(ValueError):
        sol.q2.MultiHeadAttention(10, 4)

    ref = _randomize(FeedForward(16, 32, 0.0))
    torch.testing.assert_close(_load(sol.q2.FeedForward(16, 32, 0.0), ref)(x), ref(x), **F32)
    ref = _randomize(TransformerBlock(16, 4, 32, 0.0))
    ours = _load(sol.q2.TransformerBlock(16, 4, 32, 0.0), ref)
    for m in masks:
        torch.testing.assert_close(ours(x, m), ref(x, m), **F32)
    ref = _randomize(MinimalTransformerEncoder(50, 16, 4, 2, 32, max_len=20, dropout=0.0))
    ours = _load(sol.q2.MinimalTransformerEncoder(50, 16, 4, 2, 32, max_len=20, dropout=0.0), ref)
    tokens = torch.randint(0, 50, (3, 7))
    for m in masks:
        torch.testing.assert_close(ours(tokens, m), ref(tokens, m), **F32)
    with pytest.raises(ValueError):
        ours(torch.randint(0, 50, (1, 21)))


def test_solution_q3(sol):
    q, k, v = torch.randn(3, 5, 8), torch.randn(3, 7, 8), torch.randn(3, 7, 4)
    full = torch.ones(3, 5, 7, dtype=torch.bool)
    full[1, 2] = False
    masks = [None, *_masks_3d(3, 5, 7).values(), full, full.int()]
    ref = _randomize(AdditiveAttention(8))
    pairs = [(_load(sol.q3.AdditiveAttention(8), ref), ref),
             (sol.q3.ScaledDotProductAttention(), ScaledDotProductAttention())]
    for ours, ref in pairs:
        for m in masks:
            for got, want in zip(ours(q, k, v, m), ref(q, k, v, m)):
                torch.testing.assert_close(got, want, **F32)


def test_solution_benchmark_rows(sol):
    rows = sol.q3.benchmark_attention([4, 9], hidden_size=8, batch_size=2, n_runs=2)
    keys = {"mechanism", "seq_len", "batch_size", "hidden_size", "time_ms", "peak_bytes", "flops"}
    assert [(r["mechanism"], r["seq_len"]) for r in rows] == [
        ("additive", 4), ("additive", 9), ("scaled_dot_product", 4), ("scaled_dot_product", 9)]
    for r in rows:
        assert set(r) == keys and r["time_ms"] > 0
        assert r["flops"] == attention_flops(r["mechanism"], 2, r["seq_len"], 8)
        assert r["peak_bytes"] == attention_peak_bytes(r["mechanism"], 2, r["seq_len"], 8)
    with pytest.raises(ValueError):
        sol.q3.benchmark_attention([])


def test_solution_q4(sol):
    for shape, normalized in [((4, 8), 8), ((2, 3, 4, 5), (4, 5)), ((3, 8), 8)]:
        ref = _randomize(LayerNorm(normalized))
        ours = _load(sol.q4.LayerNorm(normalized), ref)
        for x in (torch.randn(shape) * 3 + 1, 1e-3 * torch.randn(shape)):
            torch.testing.assert_close(ours(x), ref(x), **F32)
    with pytest.raises(ValueError):
        sol.q4.LayerNorm((4, 5))(torch.randn(2, 5, 4))
    for shape in [(8, 6), (4, 6, 5)]:
        ref = _randomize(BatchNorm1D(6, momentum=0.3))
        ours = _load(sol.q4.BatchNorm1D(6, momentum=0.3), ref)
        for step in range(3):
            x = torch.randn(shape) * (step + 1) + step
            torch.testing.assert_close(ours(x), ref(x), **F32)
            torch.testing.assert_close(ours.running_var, ref.running_var, **F32)
            torch.testing.assert_close(ours.running_mean, ref.running_mean, **F32)
        ours.eval(), ref.eval()
        torch.testing.assert_close(ours(x), ref(x), **F32)
    with pytest.raises(ValueError):
        sol.q4.BatchNorm1D(6)(torch.randn(1, 6))


def test_solution_compare_normalizations(sol):
    got = sol.q4.compare_normalizations(batch_sizes=(2, 5, 12), num_features=7, seed=3)
    x = torch.randn(12, 7, generator=torch.Generator().manual_seed(3)) * 2 + 1
    for name, norm in [("layer_norm", LayerNorm(7)), ("batch_norm", BatchNorm1D(7))]:
        row = got[name]
        assert set(row) == {"per_sample_mean", "per_sample_std", "per_feature_mean", "per_feature_std",
                            "batch_dependence"}
        y = norm(x).detach()
        torch.testing.assert_close(row["per_sample_mean"], y.mean(1), **F32)
        torch.testing.assert_close(row["per_sample_std"], y.std(1, unbiased=False), **F32)
        torch.testing.assert_close(row["per_feature_mean"], y.mean(0), **F32)
        torch.testing.assert_close(row["per_feature_std"], y.std(0, unbiased=False), **F32)
        outs = torch.stack([norm(x[:b])[0].detach() for b in (2, 5, 12)])
        assert row["batch_dependence"] == pytest.approx((outs.amax(0) - outs.amin(0)).max().item(), abs=1e-6)
    assert got["layer_norm"]["batch_dependence"] < 1e-6 < 0.1 < got["batch_norm"]["batch_dependence"]
    assert isinstance(got["batch_norm"]["batch_dependence"], float)


# --------------------------------------------------------------------------- CUDA


def _cuda_cases():
    x, tokens = torch.randn(2, 6, 16), torch.randint(0, 50, (2, 6))
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 3)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    return [
        (PositionalEncoding(16, 30), (x,)),
        (MultiHeadAttention(16, 4, 0.0), (x, x, x, causal)),
        (TransformerBlock(16, 4, 32, 0.0), (x, causal)),
        (MinimalTransformerEncoder(50, 16, 4, 2, 32, 20, 0.0), (tokens, causal)),
        (AdditiveAttention(8), (q, k, v, causal[:5])),
        (ScaledDotProductAttention(), (q, k, v, causal[:5])),
        (LayerNorm((6, 16)), (x,)),
        (BatchNorm1D(6), (x,)),
    ]


@pytest.mark.parametrize("case", range(8))
@cuda[0]
@cuda[1]
def test_reference_on_cuda_matches_cpu(case):
    module, args = _cuda_cases()[case]
    module = _randomize(module)
    module_gpu = copy.deepcopy(module).to("cuda")
    with torch.no_grad():
        want = module(*args)
        got = module_gpu(*(a.to("cuda") for a in args))
    want, got = (want, got) if isinstance(want, tuple) else ((want,), (got,))
    for w, g in zip(want, got):
        assert g.device.type == "cuda" and g.dtype == w.dtype
        torch.testing.assert_close(g.cpu(), w, atol=1e-5, rtol=1e-5)
    for w, g in zip(module.buffers(), module_gpu.buffers()):  # BatchNorm running stats, PE table
        torch.testing.assert_close(g.cpu(), w, atol=1e-6, rtol=1e-6)


@cuda[0]
@cuda[1]
@pytest.mark.parametrize("mechanism", ["additive", "scaled_dot_product"])
def test_attention_counts_on_cuda(mechanism):
    module = (AdditiveAttention(8) if mechanism == "additive" else ScaledDotProductAttention()).to("cuda")
    q, k, v = (torch.randn(2, 9, 8, device="cuda") for _ in range(3))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(q, k, v)
    with torch.no_grad(), _Largest() as largest:
        module(q, k, v)
    assert counter.get_total_flops() == attention_flops(mechanism, 2, 9, 8)
    assert largest.peak == attention_peak_bytes(mechanism, 2, 9, 8)
