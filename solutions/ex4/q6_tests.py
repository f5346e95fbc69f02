"""Q6 — Unit tests for the components.

Seed 001, problem 6: write unit tests for the Transformer components of
Q1–Q4. Your tests are graded by running them on implementations we hold: a
correct one, and hidden buggy ones, each with exactly one plausible mistake in
one component (the mistakes the Q1–Q4 docstrings warn about). Good tests pass on
the correct implementation and fail on every buggy one.

The fixture ``impl``
--------------------

Write pytest functions (``def test_...(impl):``) that take the fixture ``impl``.
Each such test is run once per implementation. ``impl`` is a namespace holding
the Q1–Q4 API names, with the behaviour their docstrings specify:

    impl.sinusoidal_table, impl.PositionalEncoding,                        # Q1
    impl.MultiHeadAttention, impl.FeedForward, impl.TransformerBlock,
    impl.MinimalTransformerEncoder,                                        # Q2
    impl.AdditiveAttention, impl.ScaledDotProductAttention,                # Q3
    impl.LayerNorm, impl.BatchNorm1D                                       # Q4

The implementations live in the grader, not in your process; ``impl`` reaches
them through proxies:

- ``impl.LayerNorm(8)`` constructs a module there and gives you a handle to it;
  calling the handle with tensors returns tensors: ``impl.LayerNorm(8)(x)``.
  ``impl.sinusoidal_table(50, 16)`` returns the table.
- Reading an attribute returns a copy of a tensor (``bn.running_mean``,
  ``mha.attention_weights``) or plain data, or a further handle (``mha.W_q``).
  Methods work: ``.eval()``, ``.train()``, ``.state_dict()`` (a dict of
  tensor copies), ``.load_state_dict(...)``, and exceptions raised there are
  raised in your test as the same builtin type (``pytest.raises(ValueError)``).
- Tensors cross as copies, so autograd does not flow through ``impl``: test
  values, not gradients. Weights are random: read them with ``state_dict()``
  when you rebuild a computation yourself.
- Private attributes (a leading ``_``) are refused. Tensors you pass are
  limited to 2**22 elements, integer arguments to 2**14, and an object you
  construct to about 2**22 parameters. Everything runs on the CPU, in float32
  unless you pass other dtypes.

What is graded
--------------

1. Your file runs and holds at least one test taking ``impl``, none of them
   left "not implemented yet".
2. Every test passes on the correct implementation (which may be run more
   than once, at any position among the others).
3. Each hidden buggy implementation is caught: at least one of your tests that
   pass on the correct implementation fails on it (a test that fails on the
   correct implementation catches nothing). The bugs are grouped by kind (a
   positional-encoding bug, a masking bug, a scaling bug, an attention-score
   bug, a normalization bug, a running-statistics bug, a
   residual/normalization-order bug, a missing-layer bug); each kind carries
   points, earned when every hidden bug of that kind is caught, and the
   feedback names the kinds, and the components, where a bug went uncaught.

Rules
-----

- Only tests that take ``impl`` count; a test may take other fixtures and be
  parametrized too.
- No network, no files; seed your inputs (``torch.manual_seed``) so every run
  is the same, and let each test stand alone (no state kept between tests).
- Be fast: the file runs once per implementation (about 40 times), all within
  one time limit of 60 s. Keep inputs small and ``impl`` calls few (each call
  or attribute read is a round trip of about a millisecond).
- Check behaviour against an independent oracle computed in the test:
  torch built-ins (``torch.nn.LayerNorm``, ``torch.nn.BatchNorm1d``,
  ``torch.nn.functional.scaled_dot_product_attention``,
  ``torch.nn.MultiheadAttention``, ``torch.nn.TransformerEncoderLayer``, loaded
  with the weights from ``state_dict()``), formulas (the PE table), or
  properties (rows of attention weights sum to 1, masked weights are 0, running
  statistics after one step). A test that only checks shapes catches little.
- Choose inputs where a mistake shows: ``eps`` only matters when the variance
  is small; a ``(batch, seq_len)`` mix-up only shows when ``batch != seq_len``;
  a tuple ``normalized_shape``, ``(N, C, L)`` input, masks with some ``False``.

Running your tests yourself
---------------------------

``grade ex4 q6`` grades the file. To run it on your own Q1–Q4 modules, put
this in a file ``local_impl.py`` next to it (not in ``conftest.py``: that
would replace the grader's ``impl``) and run
``python -m pytest q6_tests.py -p local_impl`` in that folder::

    import types
    import pytest

    @pytest.fixture
    def impl():
        import q1_positional_encoding as q1, q2_encoder as q2, q3_attention as q3, q4_normalization as q4
        names = {q1: ["sinusoidal_table", "PositionalEncoding"],
                 q2: ["MultiHeadAttention", "FeedForward", "TransformerBlock", "MinimalTransformerEncoder"],
                 q3: ["AdditiveAttention", "ScaledDotProductAttention"], q4: ["LayerNorm", "BatchNorm1D"]}
        return types.SimpleNamespace(**{n: getattr(m, n) for m, ns in names.items() for n in ns})

``test_layer_norm_matches_torch`` below is a complete example; the other
tests are yours to write (add more if you like).

Allowed imports: torch, numpy, math, pytest.
"""

from __future__ import annotations

import math

import pytest  # noqa: F401 - for pytest.raises, pytest.mark.parametrize
import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(1)  # the tensors here are tiny: one thread is fastest (no thread wake-ups)


def assert_close(got: torch.Tensor, expected: torch.Tensor, what: str, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    """Assert that ``got`` has ``expected``'s shape and values (within tolerance); the message names ``what``."""
    assert isinstance(got, torch.Tensor), f"{what}: expected a tensor, got {type(got).__name__}"
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    expected = expected.detach().to(got.dtype)
    if not torch.allclose(got, expected, rtol=rtol, atol=atol):
        error = (got - expected).abs().nan_to_num(float("inf"))
        where = tuple(int(i) for i in (error == error.max()).nonzero()[0])  # the first largest error
        raise AssertionError(f"{what}: max abs error {error.max().item():.3g} at {where}: "
                             f"got {got[where].item():.6g}, expected {expected[where].item():.6g}")


def test_layer_norm_matches_torch(impl):
    """LayerNorm over the last dim agrees with torch.nn.LayerNorm (the example)."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8) * 3 + 1  # (batch, seq_len, d_model)
    got = impl.LayerNorm(8)(x)  # runs the implementation under test
    with torch.no_grad():
        expected = nn.LayerNorm(8)(x)  # weight = 1, bias = 0, like gamma and beta at initialisation
    assert_close(got, expected, "LayerNorm(8) on (2, 5, 8)")


# BEGIN SOLUTION
def _pe_table(max_len: int, d_model: int) -> torch.Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(same angle), in float64, as float32."""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    angle = pos / 10000.0 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (max_len, d_model/2)
    table = torch.stack([angle.sin(), angle.cos()], dim=-1)  # (max_len, d_model/2, 2): sin, cos interleaved
    return table.reshape(max_len, d_model).float()


def _torch_mha_state(w: dict, prefix: str) -> dict:
    """Our MultiHeadAttention's weights at ``prefix``, under torch.nn.MultiheadAttention's names."""
    return {
        "in_proj_weight": torch.cat([w[f"{prefix}W_{n}.weight"] for n in "qkv"]),  # (3 * d_model, d_model)
        "in_proj_bias": torch.cat([w[f"{prefix}W_{n}.bias"] for n in "qkv"]),
        "out_proj.weight": w[f"{prefix}W_o.weight"],
        "out_proj.bias": w[f"{prefix}W_o.bias"],
    }


def _torch_encoder_layer(w: dict, prefix: str, d_model: int, n_heads: int, d_ff: int) -> nn.TransformerEncoderLayer:
    """torch's post-norm TransformerEncoderLayer holding the weights of our TransformerBlock at ``prefix``."""
    layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, batch_first=True, norm_first=False)
    state = {f"self_attn.{k}": v for k, v in _torch_mha_state(w, prefix + "attention.").items()}
    for ours, theirs in [("feed_forward.linear1", "linear1"), ("feed_forward.linear2", "linear2"),
                         ("norm1", "norm1"), ("norm2", "norm2")]:
        state[f"{theirs}.weight"], state[f"{theirs}.bias"] = w[f"{prefix}{ours}.weight"], w[f"{prefix}{ours}.bias"]
    layer.load_state_dict(state)
    return layer.eval()


# END SOLUTION
def test_layer_norm_small_variance_and_tuple_shape(impl):
    """LayerNorm((4, 6)) pools over both trailing dims and puts eps inside the sqrt (small-variance input)."""
    # BEGIN SOLUTION
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6) * 1e-3  # variance 1e-6, below eps = 1e-5: where eps goes shows
    assert_close(impl.LayerNorm((4, 6))(x), F.layer_norm(x, (4, 6), eps=1e-5), "LayerNorm((4, 6)), variance 1e-6")
    # END SOLUTION


def test_batch_norm_train_step_and_running_stats(impl):
    """One training step on (N, C): output and running_mean / running_var as torch.nn.BatchNorm1d."""
    # BEGIN SOLUTION
    torch.manual_seed(0)
    x = torch.randn(6, 4) * 2 + 3  # (N, C)
    bn, expected = impl.BatchNorm1D(4), nn.BatchNorm1d(4)
    got = bn(x)
    with torch.no_grad():
        want = expected(x)
    assert_close(got, want, "BatchNorm1D(4) output in training")
    assert_close(bn.running_mean, expected.running_mean, "running_mean after one step")
    assert_close(bn.running_var, expected.running_var, "running_var after one step")
    # END SOLUTION


def test_batch_norm_eval_uses_running_stats(impl):
    """After a training step, eval() normalizes with the running statistics, as torch does."""
    # BEGIN SOLUTION
    torch.manual_seed(0)
    x, y = torch.randn(8, 3) + 2, torch.randn(5, 3)
    bn, expected = impl.BatchNorm1D(3), nn.BatchNorm1d(3)
    bn(x)
    with torch.no_grad():
        expected(x)
        want = expected.eval()(y)
    bn.eval()
    assert_close(bn(y), want, "BatchNorm1D(3) output in eval mode")
    # END SOLUTION


def test_batch_norm_3d_pools_over_batch_and_length(impl):
    """(N, C, L) input: each channel is normalized over both N and L."""
    # BEGIN SOLUTION
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5) * 2 + 1  # (N, C, L)
    with torch.no_grad():
        want = nn.BatchNorm1d(4)(x)
    assert_close(impl.BatchNorm1D(4)(x), want, "BatchNorm1D(4) on (N, C, L) = (3, 4, 5)")
    # END SOLUTION


def test_sinusoidal_table_formula(impl):
    """sinusoidal_table matches PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(same angle)."""
    # BEGIN SOLUTION
    assert_close(impl.sinusoidal_table(50, 16), _pe_table(50, 16), "sinusoidal_table(50, 16)")
    # END SOLUTION


def test_positional_encoding_adds_table_per_position(impl):
    """PositionalEncoding adds row ``pos`` of the table at sequence position ``pos`` (batch != seq_len)."""
    # BEGIN SOLUTION
    torch.manual_seed(0)
    x = torch.randn(3, 7, 16)  # (batch, seq_len, d_model)
    assert_close(impl.PositionalEncoding(16, max_len=20)(x), x + _pe_table(7, 16), "PositionalEncoding on (3, 7, 16)")
    # END SOLUTION


def test_scaled_dot_product_attention_matches_torch(impl):
    """Weights: rows sum to 1, masked weights are 0, softmax(QK^T/sqrt(d_k)); context as F.scaled_dot_product_attention."""
    # BEGIN SOLUTION
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 16), torch.randn(2, 7, 16), torch.randn(2, 7, 8)
    mask = torch.rand(2, 5, 7) > 0.4  # True = may attend
    mask[..., 0] = True  # every query keeps at least one key
    context, weights = impl.ScaledDotProductAttention()(q, k, v, mask)
    assert_close(weights.sum(-1), torch.ones(2, 5), "sums of the weight rows")
    assert (weights[~mask] == 0).all(), "masked positions must get weight 0"
    scores = (q @ k.transpose(-2, -1) / math.sqrt(16)).masked_fill(~mask, float("-inf"))
    assert_close(weights, scores.softmax(-1), "attention weights")
    assert_close(context, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), "context")
    # END SOLUTION


def test_additive_attention_matches_formula(impl):
    """AdditiveAttention: softmax over keys of v(tanh(W_q q + W_k k)), with a padding mask."""
    # BEGIN SOLUTION
    torch.manual_seed(0)
    attention = impl.AdditiveAttention(8)
    w = attention.state_dict()  # W_q.weight, W_k.weight, v.weight
    q, k, v = torch.randn(2, 4, 8) * 2, torch.randn(2, 6, 8) * 2, torch.randn(2, 6, 3)
    mask = torch.tensor([True] * 4 + [False] * 2).expand(2, 4, 6)  # the last two keys are padding
    hidden = torch.tanh((q @ w["W_q.weight"].T)[:, :, None] + (k @ w["W_k.weight"].T)[:, None])  # (2, 4, 6, 8)
    scores = (hidden @ w["v.weight"].T).squeeze(-1).masked_fill(~mask, float("-inf"))  # (2, 4, 6)
    context, weights = attention(q, k, v, mask)
    assert_close(weights, scores.softmax(-1), "additive attention weights")
    assert_close(context, scores.softmax(-1) @ v, "additive attention context")
    # END SOLUTION


def test_multi_head_attention_matches_torch(impl):
    """MultiHeadAttention (cross-attention, with a mask) agrees with torch.nn.MultiheadAttention, weights too."""
    # BEGIN SOLUTION
    torch.manual_seed(0)
    mha = impl.MultiHeadAttention(16, 4, dropout=0.0)
    expected = nn.MultiheadAttention(16, 4, batch_first=True)
    expected.load_state_dict(_torch_mha_state(mha.state_dict(), ""))
    query, key = torch.randn(2, 5, 16) * 3, torch.randn(2, 7, 16) * 3  # cross-attention: q_len 5, k_len 7
    mask = torch.rand(5, 7) > 0.4  # (q_len, k_len), True = may attend
    mask[:, 0] = True  # every query keeps at least one key
    got = mha(query, key, key, mask)
    with torch.no_grad():  # torch's attn_mask is the other way round: True = may NOT attend
        want, want_weights = expected(query, key, key, attn_mask=~mask, average_attn_weights=False)
    assert_close(got, want, "MultiHeadAttention output")
    assert_close(mha.attention_weights, want_weights, "attention_weights")  # (batch, n_heads, q_len, k_len)
    # END SOLUTION


def test_feed_forward_matches_formula(impl):
    """FeedForward is linear2(relu(linear1(x)))."""
    # BEGIN SOLUTION
    torch.manual_seed(0)
    ff = impl.FeedForward(8, 32, dropout=0.0)
    w = ff.state_dict()
    x = torch.randn(2, 5, 8)
    hidden = F.relu(F.linear(x, w["linear1.weight"], w["linear1.bias"]))
    assert_close(ff(x), F.linear(hidden, w["linear2.weight"], w["linear2.bias"]), "FeedForward(8, 32)")
    # END SOLUTION


def test_transformer_block_matches_torch_post_norm(impl):
    """TransformerBlock agrees with torch.nn.TransformerEncoderLayer(norm_first=False) holding its weights."""
    # BEGIN SOLUTION
    torch.manual_seed(0)
    block = impl.TransformerBlock(16, 4, 32, dropout=0.0)
    expected = _torch_encoder_layer(block.state_dict(), "", 16, 4, 32)
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        want = expected(x)
    assert_close(block(x), want, "TransformerBlock(16, 4, 32)")
    # END SOLUTION


def test_encoder_scales_embeddings_then_adds_positions(impl):
    """MinimalTransformerEncoder: embedding * sqrt(d_model) + PE, one block, final layer_norm."""
    # BEGIN SOLUTION
    torch.manual_seed(0)
    encoder = impl.MinimalTransformerEncoder(20, 16, 4, 1, 32, max_len=32, dropout=0.0)
    w = encoder.state_dict()
    tokens = torch.randint(0, 20, (2, 6))  # (batch, seq_len)
    x = F.embedding(tokens, w["embedding.weight"]) * math.sqrt(16) + _pe_table(6, 16)
    with torch.no_grad():
        x = _torch_encoder_layer(w, "transformer_blocks.0.", 16, 4, 32)(x)
    want = F.layer_norm(x, (16,), w["layer_norm.weight"], w["layer_norm.bias"])
    assert_close(encoder(tokens), want, "MinimalTransformerEncoder, one layer")
    # END SOLUTION
