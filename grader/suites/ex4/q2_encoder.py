"""A minimal Transformer encoder

Hidden suite of ex4 q2 (Vaswani et al. 2017, §3.2.2-§3.4; seed 001 problem 2).
Reference weights are loaded into the learner's modules (``learner.load_weights``),
then outputs and gradients are compared with ``reference.encoder`` in eval mode
(computed on fixed weights and inputs by the ``snapshot`` functions, so the learner
bundle holds them as data),
with no mask, padding masks and causal masks (bool and 0/1 int). Metamorphic
checks: permutation equivariance of self-attention, causality of the encoder under
a causal mask, and independence of the samples of a batch. Dropout in train mode: each documented
``nn.Dropout`` on its own (the others at p = 0) must change the output, without
bias where it feeds a linear map, and ``dropout`` must reach every sub-layer.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from grader.checks import (assert_close, assert_dropout_in_train_mode, assert_refused, assert_tensor, evaluated_hints,
                           hints_for, matching_hint, refusal, sub_module)
from grader.replay import snapshot
from reference.encoder import FeedForward, MinimalTransformerEncoder, MultiHeadAttention, TransformerBlock

D_MODEL, N_HEADS, D_FF, N_LAYERS, VOCAB, MAX_LEN, DROPOUT = 16, 4, 32, 2, 50, 20, 0.1
BATCH, SEQ_LEN = 2, 5

# float32 throughout; a few matmuls and a softmax deep, learners may sum in another order.
OUT_TOL = dict(rtol=1e-4, atol=1e-5)
GRAD_TOL = dict(rtol=1e-4, atol=1e-5)

MHA_ARGS, FF_ARGS = (D_MODEL, N_HEADS, DROPOUT), (D_MODEL, D_FF, DROPOUT)
BLOCK_ARGS = (D_MODEL, N_HEADS, D_FF, DROPOUT)
ENCODER_ARGS = (VOCAB, D_MODEL, N_HEADS, N_LAYERS, D_FF, MAX_LEN, DROPOUT)
REFERENCE = {
    "MultiHeadAttention": (MultiHeadAttention, MHA_ARGS),
    "FeedForward": (FeedForward, FF_ARGS),
    "TransformerBlock": (TransformerBlock, BLOCK_ARGS),
    "MinimalTransformerEncoder": (MinimalTransformerEncoder, ENCODER_ARGS),
}


# --------------------------------------------------------------------------- helpers


def reference_module(name: str, device: torch.device) -> nn.Module:
    """The seeded reference ``name`` in eval mode, with random (not identity) LayerNorm parameters."""
    cls, args = REFERENCE[name]
    module = cls(*args)
    with torch.no_grad():
        for norm in (m for m in module.modules() if isinstance(m, nn.LayerNorm)):
            norm.weight.copy_(1 + 0.2 * torch.randn_like(norm.weight))
            norm.bias.copy_(0.2 * torch.randn_like(norm.bias))
    return module.to(device).eval()


@snapshot
def reference_state(name: str) -> dict[str, torch.Tensor]:
    """The state_dict of the seeded reference ``name`` (drawn from the test's random generator)."""
    return reference_module(name, torch.device("cpu")).state_dict()


def learner_module(learner, name: str, state: dict[str, torch.Tensor], device: torch.device):
    """The learner's ``name`` built like the reference, moved to ``device``, in eval mode, holding ``state``."""
    _, args = REFERENCE[name]
    module = getattr(learner.q2, name)(*args)
    module.to(device)
    module.eval()
    learner.load_weights(module, state)
    return module


def variant(impl: type, reference: nn.Module, *, mha: type | None = None, ff: type | None = None,
            block: type | None = None) -> nn.Module:
    """``impl`` built like ``reference`` (optionally with wrong sub-layers), holding its weights, in eval mode.

    Misconception variants replace one class only; ``mha``/``ff``/``block`` put a wrong
    sub-layer inside a correct outer module, so a block or encoder test can name it.
    """
    name = type(reference).__name__
    _, args = REFERENCE[name]
    module = impl(*args)
    blocks = module.transformer_blocks if name == "MinimalTransformerEncoder" else [module]
    if block is not None:
        module.transformer_blocks = nn.ModuleList(block(*BLOCK_ARGS) for _ in range(N_LAYERS))
        blocks = module.transformer_blocks
    for b in blocks:
        if mha is not None:
            b.attention = mha(*MHA_ARGS)
        if ff is not None:
            b.feed_forward = ff(*FF_ARGS)
    module.load_state_dict(reference.state_dict())
    return module.to(next(reference.parameters()).device).eval()


def hints(reference: nn.Module, run: Callable[[nn.Module], Any]) -> list:
    """Misconception hints for ``reference``'s class and for the sub-layers inside it.

    ``run(module)`` computes the checked quantity with a module built like ``reference``.
    """
    name = type(reference).__name__
    found = hints_for(name, lambda impl: run(variant(impl, reference)))
    cls = type(reference)
    if name in ("TransformerBlock", "MinimalTransformerEncoder"):
        found += [(f"(in your MultiHeadAttention) {text}", thunk) for text, thunk in
                  hints_for("MultiHeadAttention", lambda impl: run(variant(cls, reference, mha=impl)))]
        found += [(f"(in your FeedForward) {text}", thunk) for text, thunk in
                  hints_for("FeedForward", lambda impl: run(variant(cls, reference, ff=impl)))]
    if name == "MinimalTransformerEncoder":
        found += [(f"(in your TransformerBlock) {text}", thunk) for text, thunk in
                  hints_for("TransformerBlock", lambda impl: run(variant(cls, reference, block=impl)))]
    return found


@snapshot
def answers(name: str, state: dict[str, torch.Tensor], args: tuple, kind: str = "output",
            grad_output: torch.Tensor | None = None) -> dict:
    """The reference ``name`` holding ``state``, run on ``args``, and each misconception variant, as plain data.

    ``kind``: ``"output"`` (quantity ``output``), ``"weights"`` (``weights``: ``attention_weights``
    after the call) or ``"grad"`` (``output``, ``input_grads.<i>`` and ``param_grads.<name>`` for
    ``grad_output``). Returns ``{"expected": {quantity: tensor}, "hints": [[text, {quantity: tensor}
    or None when the variant cannot run]]}``; the caller's random generator is left untouched.
    """
    device = next(a.device for a in args if torch.is_tensor(a))
    with torch.random.fork_rng(devices=[]):
        reference = reference_module(name, device)
        reference.load_state_dict(state)

        def measure(module: nn.Module) -> dict[str, torch.Tensor]:
            if kind == "grad":
                result = reference_grad(module, *args, grad_output=grad_output)
                leaves = {"output": result["output"]}
                leaves.update({f"input_grads.{i}": g for i, g in enumerate(result["input_grads"]) if g is not None})
                leaves.update({f"param_grads.{n}": g for n, g in result["param_grads"].items() if g is not None})
                return leaves
            output = module(*args).detach()
            return {"weights": module.attention_weights.detach()} if kind == "weights" else {"output": output}

        expected = measure(reference)
        found = evaluated_hints(hints(reference, measure))
    return {"expected": expected, "hints": found}


def hint_list(answer: dict, quantity: str) -> list:
    """The hints of an ``answers`` result for one quantity, in the form ``grader.checks`` takes."""
    return [(text, lambda value=leaves[quantity]: value) for text, leaves in answer["hints"]
            if leaves and quantity in leaves]


def reference_grad(module: nn.Module, *args: Any, grad_output: torch.Tensor) -> dict:
    """What ``learner.grad(module, *args, grad_output=...)`` returns, computed on the reference."""
    args = tuple(a.detach().clone().requires_grad_(True) if torch.is_tensor(a) and a.is_floating_point() else a
                 for a in args)
    module.zero_grad(set_to_none=True)
    output = module(*args)
    output.backward(grad_output)
    return {
        "output": output.detach(),
        "input_grads": [a.grad if torch.is_tensor(a) else None for a in args],
        "param_grads": {name: p.grad for name, p in module.named_parameters()},
    }


def assert_grads_close(got: dict, name: str, state: dict, args: tuple, grad_output: torch.Tensor, what: str,
                       arg_names: tuple[str, ...]) -> None:
    """Output, input gradients and parameter gradients of a ``learner.grad`` call match the reference ``name``."""
    answer = answers(name, state, args, "grad", grad_output)
    expected = answer["expected"]
    assert_close(got["output"], expected["output"], f"{what}: output", hints=hint_list(answer, "output"), **OUT_TOL)
    for i, arg in enumerate(arg_names):
        quantity = f"input_grads.{i}"
        if quantity not in expected:
            continue
        grad = got["input_grads"][i]
        assert grad is not None, f"{what}: no gradient reached the input {arg} (is the graph cut, e.g. by .detach()?)"
        assert_close(grad, expected[quantity], f"{what}: gradient of {arg}", hints=hint_list(answer, quantity),
                     **GRAD_TOL)
    for quantity, grad in expected.items():
        if not quantity.startswith("param_grads."):
            continue
        parameter = quantity.removeprefix("param_grads.")
        mine = got["param_grads"].get(parameter)
        assert mine is not None, (
            f"{what}: parameter {parameter} got no gradient (is the graph cut, e.g. by .detach() or torch.no_grad()?)"
        )
        assert_close(mine, grad, f"{what}: gradient of parameter {parameter}", hints=hint_list(answer, quantity),
                     **GRAD_TOL)


def padding_mask(batch: int, k_len: int, pad: int, device: torch.device) -> torch.Tensor:
    """(batch, 1, 1, k_len) bool: the last ``pad`` keys of sample 1 are padding (False)."""
    mask = torch.ones(batch, 1, 1, k_len, dtype=torch.bool, device=device)
    mask[1, ..., k_len - pad:] = False
    return mask


def causal_mask(seq_len: int, device: torch.device, dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """(seq_len, seq_len): query i may attend to keys j <= i."""
    return torch.tril(torch.ones(seq_len, seq_len, device=device)).to(dtype)


def describe_mask(kind: str) -> str:
    return {"none": "no mask", "padding": "a (batch, 1, 1, k_len) bool padding mask",
            "causal": "a (seq_len, seq_len) bool causal mask",
            "causal_int": "a (seq_len, seq_len) 0/1 int64 causal mask"}[kind]


def make_mask(kind: str, seq_len: int, device: torch.device) -> torch.Tensor | None:
    if kind == "none":
        return None
    if kind == "padding":
        return padding_mask(BATCH, seq_len, 2, device)
    return causal_mask(seq_len, device, torch.int64 if kind == "causal_int" else torch.bool)


# --------------------------------------------------------------------------- names and errors


@pytest.mark.points(1)
def test_parameter_names(learner):
    for name in REFERENCE:
        _, args = REFERENCE[name]
        learner.load_weights(getattr(learner.q2, name)(*args), reference_state(name))


@pytest.mark.points(0.5)
def test_bad_arguments_are_refused(learner, device):
    problems = [refusal(lambda: learner.q2.MultiHeadAttention(d_model, n_heads),
                        f"MultiHeadAttention({d_model}, {n_heads})", ValueError, "d_model must be divisible by n_heads")
                for d_model, n_heads in [(10, 3), (16, 5)]]
    mha = learner.q2.MultiHeadAttention(*MHA_ARGS)
    mha.to(device)
    x = torch.randn(BATCH, SEQ_LEN, D_MODEL, device=device)
    float_mask = causal_mask(SEQ_LEN, device, torch.float32)  # 0./1. floats
    problems.append(refusal(lambda: mha(x, x, x, float_mask),
                            f"MultiHeadAttention{MHA_ARGS} with a float32 0./1. causal mask", TypeError,
                            "masks are bool or 0/1 integer; a float mask could mean an additive bias, so it is "
                            "refused"))
    encoder = learner.q2.MinimalTransformerEncoder(*ENCODER_ARGS)
    encoder.to(device)
    too_long = tokens_for(1, MAX_LEN + 1, device)
    problems.append(refusal(lambda: encoder(too_long), f"MinimalTransformerEncoder{ENCODER_ARGS} on tokens "
                            f"{tuple(too_long.shape)}", ValueError, f"seq_len {MAX_LEN + 1} > max_len {MAX_LEN}"))
    assert_refused(*problems)


# --------------------------------------------------------------------------- MultiHeadAttention

MHA_CASES = [
    pytest.param("none", 5, 5, id="self-no-mask"),
    pytest.param("padding", 3, 6, id="cross-padding-mask"),
    pytest.param("causal", 5, 5, id="self-causal-bool"),
    pytest.param("causal_int", 5, 5, id="self-causal-int"),
]


@pytest.mark.points(0.75)
@pytest.mark.parametrize("mask_kind, q_len, k_len", MHA_CASES)
def test_mha_output(learner, device, mask_kind, q_len, k_len):
    state = reference_state("MultiHeadAttention")
    mha = learner_module(learner, "MultiHeadAttention", state, device)
    query = torch.randn(BATCH, q_len, D_MODEL, device=device)  # (batch, q_len, d_model)
    key = query if q_len == k_len else torch.randn(BATCH, k_len, D_MODEL, device=device)  # (batch, k_len, d_model)
    mask = make_mask(mask_kind, k_len, device)
    got = mha(query, key, key, mask)
    answer = answers("MultiHeadAttention", state, (query, key, key, mask))
    what = (f"MultiHeadAttention{MHA_ARGS}.eval() on query ({BATCH}, {q_len}, {D_MODEL}), key = value "
            f"({BATCH}, {k_len}, {D_MODEL}) with {describe_mask(mask_kind)}")
    assert_close(got, answer["expected"]["output"], what, hints=hint_list(answer, "output"), **OUT_TOL)


@pytest.mark.points(1)
def test_mha_attention_weights(learner, device):
    state = reference_state("MultiHeadAttention")
    mha = learner_module(learner, "MultiHeadAttention", state, device)
    try:
        before = type(mha.attention_weights).__name__
    except AttributeError:
        before = "no such attribute"
    assert before == "NoneType", (f"MultiHeadAttention{MHA_ARGS}.attention_weights before the first call should be "
                                  f"None, got {before} (set self.attention_weights = None in __init__)")
    for kind, q_len, k_len in [("causal", 5, 5), ("padding", 3, 6)]:
        query = torch.randn(BATCH, q_len, D_MODEL, device=device)
        key = query if q_len == k_len else torch.randn(BATCH, k_len, D_MODEL, device=device)
        mask = make_mask(kind, k_len, device)
        mha(query, key, key, mask)
        weights = mha.attention_weights
        what = f"MultiHeadAttention.attention_weights after a call with {describe_mask(kind)}"

        answer = answers("MultiHeadAttention", state, (query, key, key, mask), "weights")
        found = hint_list(answer, "weights")
        assert_tensor(weights, what, shape=(BATCH, N_HEADS, q_len, k_len))
        allowed = mask.bool().expand(BATCH, N_HEADS, q_len, k_len)
        sums = weights.double().sum(dim=-1)  # (batch, n_heads, q_len)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-5):
            index = tuple(int(i) for i in torch.unravel_index((sums - 1).abs().argmax(), sums.shape))
            hint = matching_hint(weights, found, **OUT_TOL)
            raise AssertionError(
                f"{what}: each query's weights should sum to 1 over the keys (last axis); "
                f"[batch {index[0]}, head {index[1]}, query {index[2]}] sums to {sums[index].item():.4f}"
                + (f"\nHint: {hint}" if hint else "")
            )
        leaked = weights.masked_fill(allowed, 0.0).abs()
        if leaked.max() > 0:
            index = tuple(int(i) for i in leaked.nonzero()[0])
            hint = matching_hint(weights, found, **OUT_TOL)
            raise AssertionError(
                f"{what}: masked positions must get weight exactly 0; [batch {index[0]}, head {index[1]}, "
                f"query {index[2]}, key {index[3]}] is masked but has weight {weights[index].item():.4g}"
                + (f"\nHint: {hint}" if hint else "")
            )
        assert_close(weights, answer["expected"]["weights"], what, hints=found, **OUT_TOL)


@pytest.mark.points(0.5)
def test_mha_fully_masked_row(learner, device):
    state = reference_state("MultiHeadAttention")
    mha = learner_module(learner, "MultiHeadAttention", state, device)
    x = torch.randn(BATCH, 4, D_MODEL, device=device)
    mask = torch.ones(BATCH, 1, 1, 4, dtype=torch.bool, device=device)
    mask[1] = False  # every key of sample 1 is padding
    what = "MultiHeadAttention on x (2, 4, 16) with a padding mask that masks every key of sample 1"
    grad_output = torch.randn(BATCH, 4, D_MODEL, device=device)
    got = learner.grad(mha, x, x, x, mask, grad_output=grad_output)
    weights = mha.attention_weights
    assert_tensor(weights, f"{what}: attention_weights", shape=(BATCH, N_HEADS, 4, 4))
    assert bool(torch.isfinite(weights).all()) and bool((weights[1] == 0).all()), (
        f"{what}: a query whose keys are all masked must get all-zero weights (no NaN); got weights[1, 0, 0] = "
        f"{weights[1, 0, 0].tolist()}. Fill masked scores with torch.finfo(scores.dtype).min, not -inf, "
        "and zero the masked weights after the softmax"
    )
    assert_grads_close(got, "MultiHeadAttention", state, (x, x, x, mask), grad_output, what,
                       ("query", "key", "value"))


MHA_GRAD_CASES = [
    pytest.param("padding", 3, 6, id="cross-padding-mask"),
    pytest.param("causal", 5, 5, id="self-causal-bool"),
]


@pytest.mark.points(1)
@pytest.mark.parametrize("mask_kind, q_len, k_len", MHA_GRAD_CASES)
def test_mha_gradients(learner, device, mask_kind, q_len, k_len):
    state = reference_state("MultiHeadAttention")
    mha = learner_module(learner, "MultiHeadAttention", state, device)
    query = torch.randn(BATCH, q_len, D_MODEL, device=device)
    key = torch.randn(BATCH, k_len, D_MODEL, device=device)
    value = torch.randn(BATCH, k_len, D_MODEL, device=device)
    mask = make_mask(mask_kind, k_len, device)
    grad_output = torch.randn(BATCH, q_len, D_MODEL, device=device)
    got = learner.grad(mha, query, key, value, mask, grad_output=grad_output)
    what = f"MultiHeadAttention forward and backward with {describe_mask(mask_kind)}"
    assert_grads_close(got, "MultiHeadAttention", state, (query, key, value, mask), grad_output, what,
                       ("query", "key", "value"))


@pytest.mark.points(1)
def test_mha_permutation_equivariance(learner, device):
    mha = learner.q2.MultiHeadAttention(*MHA_ARGS)
    mha.to(device)
    mha.eval()
    seq_len = 6
    x = torch.randn(BATCH, seq_len, D_MODEL, device=device)
    base = mha(x, x, x)
    assert_tensor(base, "MultiHeadAttention(16, 4).eval()(x, x, x)", shape=(BATCH, seq_len, D_MODEL))

    @given(order=st.permutations(range(seq_len)))
    def check(order: list[int]) -> None:
        perm = torch.tensor(order, device=device)
        got = mha(x[:, perm], x[:, perm], x[:, perm])
        error = (got - base[:, perm]).abs().max().item()
        assert error <= 1e-5, (
            f"MultiHeadAttention(16, 4) self-attention without a mask is not permutation-equivariant: "
            f"permuting the positions of x by {order} should permute the output the same way "
            f"(max difference {error:.3g}). Attention has no notion of position; check how you split "
            "and merge the heads: (batch, seq_len, d_model) -> (batch, seq_len, n_heads, d_k) -> transpose(1, 2)"
        )

    check()


# --------------------------------------------------------------------------- FeedForward


@pytest.mark.points(1)
def test_feed_forward_output(learner, device):
    state = reference_state("FeedForward")
    ff = learner_module(learner, "FeedForward", state, device)
    x = torch.randn(BATCH, SEQ_LEN, D_MODEL, device=device)
    answer = answers("FeedForward", state, (x,))
    assert_close(ff(x), answer["expected"]["output"], f"FeedForward{FF_ARGS}.eval() on x (2, 5, 16)",
                 hints=hint_list(answer, "output"), **OUT_TOL)


@pytest.mark.points(0.5)
def test_feed_forward_gradients(learner, device):
    state = reference_state("FeedForward")
    ff = learner_module(learner, "FeedForward", state, device)
    x = torch.randn(BATCH, SEQ_LEN, D_MODEL, device=device)
    grad_output = torch.randn(BATCH, SEQ_LEN, D_MODEL, device=device)
    got = learner.grad(ff, x, grad_output=grad_output)
    assert_grads_close(got, "FeedForward", state, (x,), grad_output, "FeedForward forward and backward", ("x",))


# --------------------------------------------------------------------------- TransformerBlock


@pytest.mark.points(0.75)
@pytest.mark.parametrize("mask_kind", ["none", "padding", "causal"])
def test_block_output(learner, device, mask_kind):
    state = reference_state("TransformerBlock")
    block = learner_module(learner, "TransformerBlock", state, device)
    x = torch.randn(BATCH, SEQ_LEN, D_MODEL, device=device)
    mask = make_mask(mask_kind, SEQ_LEN, device)
    answer = answers("TransformerBlock", state, (x, mask))
    assert_close(block(x, mask), answer["expected"]["output"],
                 f"TransformerBlock{BLOCK_ARGS}.eval() on x (2, 5, 16) with {describe_mask(mask_kind)}",
                 hints=hint_list(answer, "output"), **OUT_TOL)


@pytest.mark.points(1)
def test_block_gradients(learner, device):
    state = reference_state("TransformerBlock")
    block = learner_module(learner, "TransformerBlock", state, device)
    x = torch.randn(BATCH, SEQ_LEN, D_MODEL, device=device)
    mask = make_mask("padding", SEQ_LEN, device)
    grad_output = torch.randn(BATCH, SEQ_LEN, D_MODEL, device=device)
    got = learner.grad(block, x, mask, grad_output=grad_output)
    assert_grads_close(got, "TransformerBlock", state, (x, mask), grad_output,
                       f"TransformerBlock forward and backward with {describe_mask('padding')}", ("x",))


# --------------------------------------------------------------------------- MinimalTransformerEncoder

ENCODER_SEQ_LEN = 7


def tokens_for(batch: int, seq_len: int, device: torch.device) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq_len), device=device)  # (batch, seq_len) int64


@pytest.mark.points(0.75)
@pytest.mark.parametrize("mask_kind", ["none", "padding", "causal_int"])
def test_encoder_output(learner, device, mask_kind):
    state = reference_state("MinimalTransformerEncoder")
    encoder = learner_module(learner, "MinimalTransformerEncoder", state, device)
    tokens = tokens_for(BATCH, ENCODER_SEQ_LEN, device)
    mask = make_mask(mask_kind, ENCODER_SEQ_LEN, device)
    answer = answers("MinimalTransformerEncoder", state, (tokens, mask))
    assert_close(encoder(tokens, mask), answer["expected"]["output"],
                 f"MinimalTransformerEncoder{ENCODER_ARGS}.eval() on tokens (2, 7) with {describe_mask(mask_kind)}",
                 hints=hint_list(answer, "output"), **OUT_TOL)


@pytest.mark.points(0.5)
def test_encoder_gradients(learner, device):
    state = reference_state("MinimalTransformerEncoder")
    encoder = learner_module(learner, "MinimalTransformerEncoder", state, device)
    tokens = tokens_for(BATCH, ENCODER_SEQ_LEN, device)
    mask = make_mask("causal", ENCODER_SEQ_LEN, device)
    grad_output = torch.randn(BATCH, ENCODER_SEQ_LEN, D_MODEL, device=device)
    got = learner.grad(encoder, tokens, mask, grad_output=grad_output)
    assert_grads_close(got, "MinimalTransformerEncoder", state, (tokens, mask), grad_output,
                       f"MinimalTransformerEncoder forward and backward with {describe_mask('causal')}", ())


@pytest.mark.points(0.5)
def test_encoder_causality(learner, device):
    encoder = learner.q2.MinimalTransformerEncoder(*ENCODER_ARGS)
    encoder.to(device)
    encoder.eval()
    seq_len = 8
    tokens = tokens_for(BATCH, seq_len, device)
    mask = causal_mask(seq_len, device)
    base = encoder(tokens, mask)
    assert_tensor(base, "MinimalTransformerEncoder(...)(tokens (2, 8), causal mask)", shape=(BATCH, seq_len, D_MODEL))

    @given(position=st.integers(1, seq_len - 1), shift=st.integers(1, VOCAB - 1))
    def check(position: int, shift: int) -> None:
        changed = tokens.clone()
        changed[:, position] = (changed[:, position] + shift) % VOCAB
        got = encoder(changed, mask)
        error = (got[:, :position] - base[:, :position]).abs().amax(dim=(0, 2))  # (position,)
        assert bool((error <= 1e-5).all()), (
            f"MinimalTransformerEncoder with a causal mask: changing the token at position {position} changed the "
            f"output at earlier position {int((error > 1e-5).nonzero()[0])} (by {error.max().item():.3g}); "
            "with a causal mask, position p only sees tokens 0..p. Is the mask passed to every block and applied "
            "before the softmax?"
        )

    check()


@pytest.mark.points(0.5)
def test_encoder_batch_independence(learner, device):
    encoder = learner.q2.MinimalTransformerEncoder(*ENCODER_ARGS)
    encoder.to(device)
    encoder.eval()
    batch = 3
    tokens = tokens_for(batch, ENCODER_SEQ_LEN, device)
    mask = torch.ones(batch, 1, 1, ENCODER_SEQ_LEN, dtype=torch.bool, device=device)
    mask[1, ..., -3:] = False  # (batch, 1, 1, seq_len) padding mask
    together = encoder(tokens, mask)
    assert_tensor(together, "MinimalTransformerEncoder on tokens (3, 7)", shape=(batch, ENCODER_SEQ_LEN, D_MODEL))
    for b in range(batch):
        alone = encoder(tokens[b:b + 1], mask[b:b + 1])
        error = (alone - together[b:b + 1]).abs().max().item()
        assert error <= 1e-5, (
            f"MinimalTransformerEncoder: sample {b} encoded alone (tokens[{b}:{b + 1}], mask[{b}:{b + 1}]) differs "
            f"from the same sample inside a batch of 3 (max difference {error:.3g}); samples must not interact "
            "(softmax over the keys, dim=-1, never over the batch)"
        )


# --------------------------------------------------------------------------- dropout in train mode

DROPOUT_P, DROPOUT_COPIES = 0.5, 2000
BLOCK_DROPOUTS = ("dropout", "attention.dropout", "feed_forward.dropout")
DROPOUT_PATHS = {  # every documented nn.Dropout of each module, by attribute path
    "MultiHeadAttention": ("dropout",),
    "FeedForward": ("dropout",),
    "TransformerBlock": BLOCK_DROPOUTS,
    "MinimalTransformerEncoder": ("pos_encoding.dropout",) + tuple(
        f"transformer_blocks.{i}.{path}" for i in range(N_LAYERS) for path in BLOCK_DROPOUTS),
}


def dropout_inputs(name: str, device: torch.device) -> tuple:
    """Inputs for ``name``: identical samples along the batch for the modules whose dropout is unbiased."""
    if name == "MinimalTransformerEncoder":
        return (tokens_for(8, ENCODER_SEQ_LEN, device),)
    x = torch.randn(1, SEQ_LEN, D_MODEL, device=device)
    x = x.expand(DROPOUT_COPIES if name in ("MultiHeadAttention", "FeedForward") else 8, -1, -1).contiguous()
    return (x, x, x) if name == "MultiHeadAttention" else (x,)


DROPOUT_SITES = [
    pytest.param("MultiHeadAttention", "dropout", id="attention-weights"),
    pytest.param("FeedForward", "dropout", id="feed-forward-hidden"),
    pytest.param("TransformerBlock", "dropout", id="block-residual"),
    pytest.param("MinimalTransformerEncoder", "pos_encoding.dropout", id="encoder-positional"),
]


@pytest.mark.points(0.5)
@pytest.mark.parametrize("name, site", DROPOUT_SITES)
def test_dropout_in_train_mode(learner, device, name, site):
    _, args = REFERENCE[name]
    call = f"{name}{args}"
    module = getattr(learner.q2, name)(*args)
    module.to(device)
    for path in DROPOUT_PATHS[name]:  # only `site` drops; the others are switched off
        sub_module(module, path, call).p = DROPOUT_P if path == site else 0.0
    inputs = dropout_inputs(name, device)
    module.eval()
    evaluation = module(*inputs)
    module.train()
    train = module(*inputs)
    shape = tuple(inputs[0].shape)
    what = f"{call}.train() with only {site} active (p={DROPOUT_P}, the other dropouts at 0) on input {shape}"
    assert_tensor(evaluation, f"{call}.eval() on input {shape}")
    assert_dropout_in_train_mode(train, evaluation, what, p=DROPOUT_P, site=f"{name}.{site}",
                                 unbiased=name in ("MultiHeadAttention", "FeedForward"))
    if name == "MultiHeadAttention":  # the stored weights are taken before dropout: rows still sum to 1
        weights = module.attention_weights
        assert_tensor(weights, f"{what}: attention_weights", shape=(DROPOUT_COPIES, N_HEADS, SEQ_LEN, SEQ_LEN))
        sums = weights.double().sum(dim=-1)
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5), (
            f"{what}: attention_weights rows sum to {sums.min().item():.4g}..{sums.max().item():.4g}, expected 1: "
            "store the weights before dropout (self.attention_weights = weights.detach(), then self.dropout(weights) "
            "@ V)")
    for path in DROPOUT_PATHS[name]:
        sub_module(module, path, call).p = 0.0
    assert_close(module(*inputs), evaluation, f"{call}.train() with every dropout at p=0 (must equal eval mode)",
                 **OUT_TOL)


@pytest.mark.points(0.5)
def test_dropout_reaches_every_layer(learner):
    args = (VOCAB, D_MODEL, N_HEADS, N_LAYERS, D_FF, MAX_LEN, 0.3)
    call = f"MinimalTransformerEncoder{args}"
    encoder = learner.q2.MinimalTransformerEncoder(*args)
    found = {path: sub_module(encoder, path, call).p for path in DROPOUT_PATHS["MinimalTransformerEncoder"]}
    wrong = [f"{path}.p = {p!r}" for path, p in found.items() if p != 0.3]
    assert not wrong, (f"{call}: {', '.join(wrong)}; expected p = 0.3 everywhere: pass dropout on to "
                       "PositionalEncoding and every TransformerBlock, and from each block to its MultiHeadAttention "
                       "and FeedForward")
