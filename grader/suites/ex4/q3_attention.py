"""Additive vs scaled dot-product attention

Both modules are checked against ``reference.attention`` with the same weights
(loaded with ``learner.load_weights``) on the same seeded inputs: no mask,
padding and causal masks (bool and 0/1), a fully masked query row, q_len != k_len
and d_v != d_k, then gradients, dropout (the returned weights are taken before it)
and the promised errors. ``benchmark_attention`` is checked on its rows'
structure and on its deterministic counts (FLOPs, peak bytes); its times are
only required to be positive numbers, never graded. The count tests find rows by
mechanism and seq_len whatever their order and spelling of the label, so that a
wrong label or order costs the rows test only.
"""
import math

import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from grader.checks import (assert_close, assert_dropout_in_train_mode, assert_refused, evaluated_hints, hints_for,
                           matching_hint, refusal)
from grader.replay import snapshot
from reference.attention import (
    AdditiveAttention,
    ScaledDotProductAttention,
    as_bool_mask,
    attention_flops,
    attention_peak_bytes,
)
from reference.misconceptions import by_key

BATCH, Q_LEN, K_LEN, D_K, D_V = 2, 5, 7, 16, 6
OUT = dict(rtol=1e-5, atol=1e-5)  # float32 outputs: a few roundings of values of order 1
GRAD = dict(rtol=1e-4, atol=1e-5)  # float32 gradients: sums over more terms
KEYS = {"mechanism", "seq_len", "batch_size", "hidden_size", "time_ms", "peak_bytes", "flops"}
BENCH = dict(seq_lens=[3, 6], hidden_size=8, batch_size=2)  # small: the call takes milliseconds


# --------------------------------------------------------------------------- helpers


def _inputs(device, d=D_K, d_v=D_V, q_len=Q_LEN, k_len=K_LEN, batch=BATCH):
    """query (batch, q_len, d), key (batch, k_len, d), value (batch, k_len, d_v)."""
    return (torch.randn(batch, q_len, d, device=device), torch.randn(batch, k_len, d, device=device),
            torch.randn(batch, k_len, d_v, device=device))


def _masks(device):
    """The masks every mechanism is checked with, by a name shown in feedback."""
    padding = torch.arange(K_LEN, device=device) < torch.tensor([[K_LEN], [4]], device=device)  # (batch, k_len)
    causal = torch.ones(Q_LEN, K_LEN, dtype=torch.bool, device=device).tril()  # (q_len, k_len)
    return {
        "padding mask (batch, 1, k_len), bool": padding[:, None, :],
        "causal mask (q_len, k_len), bool": causal,
        "causal mask (q_len, k_len), 0/1 int64": causal.long(),
        "padding & causal (batch, q_len, k_len), 0/1 int32": (padding[:, None, :] & causal).int(),
    }


def _additive_reference(device, hidden=D_K):
    """A reference AdditiveAttention with larger weights than the default init, so that tanh saturates."""
    ref = AdditiveAttention(hidden).to(device)
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(2.0)
    return ref


def _learner_additive(learner, ref, device):
    module = learner.q3.AdditiveAttention(ref.hidden_size)
    module.to(device.type)
    learner.load_weights(module, ref.state_dict())
    return module


def _additive_hints(ref, args, index):
    """Hints for output ``index`` (0 context, 1 weights) of AdditiveAttention on ``args``."""
    def run(cls):
        wrong = cls(ref.hidden_size).to(args[0].device)
        wrong.load_state_dict(ref.state_dict())
        return wrong(*args)[index]

    # the misconception list has this variant for dot-product attention only; computed now, so that a release
    # records the reference's scores
    query, key, value, mask = (*args, None)[:4]
    allowed = as_bool_mask(mask, query.device)
    weights = torch.softmax(ref.scores(query, key), dim=-1)  # (batch, q_len, k_len)
    weights = weights if allowed is None else weights.masked_fill(~allowed, 0.0)
    mask_after_softmax = (weights @ value, weights)[index]
    return hints_for("AdditiveAttention", run) + [(by_key("sdpa_mask_after_softmax").hint, lambda: mask_after_softmax)]


def _sdpa_hints(args, index):
    return hints_for("ScaledDotProductAttention", lambda cls: cls()(*args)[index])


def _shape(t):
    return tuple(t.shape)


def _check_pair(got, want, what, hints):
    """``got`` is ``(context, weights)`` equal to the reference's."""
    assert isinstance(got, (tuple, list)) and len(got) == 2, (
        f"{what}: expected a tuple (context, weights), got {type(got).__name__}"
        + (f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""))
    assert_close(got[1], want[1].detach(), f"{what}: weights (batch, q_len, k_len)", hints=hints(1), **OUT)
    assert_close(got[0], want[0].detach(), f"{what}: context (batch, q_len, d_v)", hints=hints(0), **OUT)


def _mechanism_of(label):
    """The mechanism a row's label names, tolerating other spellings ('scaled', 'Additive', 'dot')."""
    text = str(label).lower()
    if "add" in text or "bahdanau" in text:
        return "additive"
    if "dot" in text or "scaled" in text or "sdpa" in text:
        return "scaled_dot_product"
    return label


def _rows_by_key(rows, what):
    """Rows by (mechanism, seq_len), labels read leniently (the rows test checks them exactly)."""
    assert isinstance(rows, list), f"{what}: expected a list of dicts, got {type(rows).__name__}"
    assert all(isinstance(r, dict) for r in rows), f"{what}: every row must be a dict"
    table = {}
    for r in rows:
        table.setdefault((_mechanism_of(r.get("mechanism")), r.get("seq_len")), r)
    return table


def _row(table, mechanism, seq_len, what):
    row = table.get((mechanism, seq_len))
    assert row is not None, (f"{what}: no row for mechanism {mechanism!r} with seq_len {seq_len}; "
                             f"rows found: {sorted(table, key=str)}")
    return row


# --------------------------------------------------------------------------- values


@pytest.mark.points(2)
def test_additive_matches_reference_without_mask(learner, device):
    ref = _additive_reference(device)
    module = _learner_additive(learner, ref, device)
    args = _inputs(device)
    what = f"AdditiveAttention({D_K}) on query {_shape(args[0])}, key {_shape(args[1])}, value {_shape(args[2])}"
    _check_pair(module(*args), ref(*args), what, lambda i: _additive_hints(ref, args, i))


@pytest.mark.points(1)
def test_scaled_dot_product_matches_reference_without_mask(learner, device):
    args = _inputs(device)
    module = learner.q3.ScaledDotProductAttention()
    what = f"ScaledDotProductAttention() on query {_shape(args[0])}, key {_shape(args[1])}, value {_shape(args[2])}"
    _check_pair(module(*args), ScaledDotProductAttention()(*args), what, lambda i: _sdpa_hints(args, i))


@pytest.mark.points(2)
def test_additive_masks(learner, device):
    ref = _additive_reference(device)
    module = _learner_additive(learner, ref, device)
    q, k, v = _inputs(device)
    for name, mask in _masks(device).items():
        args = (q, k, v, mask)
        what = f"AdditiveAttention({D_K}) with a {name}, q_len={Q_LEN}, k_len={K_LEN}"
        _check_pair(module(*args), ref(*args), what, lambda i: _additive_hints(ref, args, i))


@pytest.mark.points(2)
def test_scaled_dot_product_masks(learner, device):
    module = learner.q3.ScaledDotProductAttention()
    q, k, v = _inputs(device)
    for name, mask in _masks(device).items():
        args = (q, k, v, mask)
        what = f"ScaledDotProductAttention() with a {name}, q_len={Q_LEN}, k_len={K_LEN}"
        _check_pair(module(*args), ScaledDotProductAttention()(*args), what, lambda i: _sdpa_hints(args, i))


@st.composite
def _problems(draw):
    """Sizes and a seed for a random mask with at least one allowed key per query."""
    return dict(batch=draw(st.integers(1, 3)), q_len=draw(st.integers(1, 6)), k_len=draw(st.integers(1, 6)),
                d=draw(st.integers(1, 8)), d_v=draw(st.integers(1, 5)), seed=draw(st.integers(0, 2**16)))


@pytest.mark.points(1)
@settings(report_multiple_bugs=False, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
@given(problem=_problems())
def test_weights_are_distributions_over_keys(device, learner, problem):
    # `device` comes first: hypothesis probes the first argument for a mock attribute, and any attribute
    # read on `learner` is an import in the worker.
    learner.reset()  # each example starts from the same worker RNG state: the learner's init never depends on
    # how many examples ran before, so the shrunk example's message is the same on every run and in the bundle
    g = torch.Generator().manual_seed(problem["seed"])
    batch, q_len, k_len, d, d_v = (problem[n] for n in ("batch", "q_len", "k_len", "d", "d_v"))
    q, k, v = (torch.randn(batch, n, width, generator=g).to(device)
               for n, width in ((q_len, d), (k_len, d), (k_len, d_v)))
    mask = torch.rand(batch, q_len, k_len, generator=g) < 0.6
    mask[torch.arange(batch)[:, None], torch.arange(q_len), torch.randint(k_len, (batch, q_len), generator=g)] = True
    mask = mask.to(device)
    for name, module in (("AdditiveAttention", learner.q3.AdditiveAttention(d)),
                         ("ScaledDotProductAttention", learner.q3.ScaledDotProductAttention())):
        if device.type != "cpu":
            module.to(device.type)
        what = (f"{name} on query ({batch}, {q_len}, {d}), key ({batch}, {k_len}, {d}), "
                f"value ({batch}, {k_len}, {d_v}) with a random bool mask (batch, q_len, k_len)")
        context, weights = module(q, k, v, mask)
        assert tuple(context.shape) == (batch, q_len, d_v), (
            f"{what}: context has shape {tuple(context.shape)}, expected (batch, q_len, d_v) = {(batch, q_len, d_v)}")
        assert tuple(weights.shape) == (batch, q_len, k_len), (
            f"{what}: weights have shape {tuple(weights.shape)}, expected (batch, q_len, k_len) = "
            f"{(batch, q_len, k_len)}")
        leaked = weights.masked_fill(mask, 0.0).abs().max().item()
        assert leaked == 0.0, (f"{what}: masked positions (mask False/0) must get weight exactly 0, "
                               f"found a weight of {leaked:.3g}. Hint: True (or 1) means the position MAY be "
                               "attended to; fill masked scores with the dtype's min (or -inf) before the softmax.")
        sums = weights.sum(dim=-1)
        worst = (sums - 1).abs().max().item()
        assert worst <= 1e-5, (
            f"{what}: each query's weights must sum to 1 over the keys (dim=-1); a row sums to "
            f"{sums.flatten()[(sums - 1).abs().flatten().argmax()].item():.6g}. Hint: softmax over the keys "
            "(dim=-1), with the mask applied to the scores before it, not to the weights after.")


@pytest.mark.points(1)
def test_fully_masked_query_gets_zero_weights_and_no_nan(learner, device):
    q, k, v = _inputs(device)
    mask = torch.ones(BATCH, Q_LEN, K_LEN, dtype=torch.bool, device=device).tril()
    mask[0, 2] = False  # query 2 of sample 0 may attend to nothing
    ref = _additive_reference(device)
    modules = (("AdditiveAttention", _learner_additive(learner, ref, device), ref),
               ("ScaledDotProductAttention", learner.q3.ScaledDotProductAttention(), ScaledDotProductAttention()))
    for name, module, reference in modules:
        what = f"{name} with query 2 of sample 0 fully masked (mask[0, 2, :] all False)"
        context, weights = module(q, k, v, mask)
        for label, got in (("weights", weights), ("context", context)):
            assert torch.isfinite(got).all(), (
                f"{what}: {label} contain NaN/inf. A fully masked row must give all-zero weights and a zero "
                "context. Hint: -inf everywhere in a row makes softmax 0/0 = NaN; fill with "
                "torch.finfo(dtype).min instead, and set the masked weights to 0 after the softmax.")
        row = weights[0, 2]
        if row.abs().max().item() != 0.0 or context[0, 2].abs().max().item() != 0.0:
            uniform = bool(torch.allclose(row, torch.full_like(row, 1.0 / K_LEN), rtol=0.0, atol=1e-4))
            raise AssertionError(
                f"{what}: expected all-zero weights and context for that query, got weights "
                f"{[round(w, 4) for w in row.tolist()]}"
                + ("; these are uniform (1/k_len each), what a finite fill such as -1e9 gives when every score "
                   "of a row is filled" if uniform else "")
                + ".\nHint: fill masked scores with torch.finfo(dtype).min (or -inf) and zero the masked "
                "weights after the softmax (weights.masked_fill(~mask, 0.0)).")
        want = reference(q, k, v, mask)
        args = (q, k, v, mask)
        hints = ((lambda i: _additive_hints(ref, args, i)) if reference is ref else (lambda i: _sdpa_hints(args, i)))
        assert_close(weights, want[1].detach(), f"{what}: weights", hints=hints(1), **OUT)
        assert_close(context, want[0].detach(), f"{what}: context", hints=hints(0), **OUT)
        grads = learner.grad(module, q, k, v, mask)["input_grads"]
        for label, grad in zip(("query", "key", "value"), grads):
            assert grad is not None and torch.isfinite(grad).all(), (
                f"{what}: the gradient with respect to {label} is "
                + ("missing" if grad is None else "not finite (NaN/inf)")
                + "; a fully masked row must give no NaN in the backward pass either.")


# --------------------------------------------------------------------------- gradients


@pytest.mark.points(1)
@snapshot
def _reference_gradients(name, state, q, k, v, mask, grad_output):
    """Gradients of the context of the reference ``name`` holding ``state``, and of its misconception variants.

    Returns ``{"input_grads": [query, key, value], "param_grads": {name: grad}, "hints": [[text, [query, key,
    value] or None]]}``, plain data (the learner bundle stores it).
    """
    classes = {"AdditiveAttention": AdditiveAttention, "ScaledDotProductAttention": ScaledDotProductAttention}

    def backward(cls):
        module = (cls(D_K) if name == "AdditiveAttention" else cls()).to(q.device)
        module.load_state_dict(state)
        inputs = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
        module(*inputs, mask)[0].backward(grad_output)
        return [t.grad for t in inputs], {n: p.grad for n, p in module.named_parameters()}

    with torch.random.fork_rng(devices=[]):
        inputs, params = backward(classes[name])
        found = evaluated_hints(hints_for(name, lambda cls: backward(cls)[0]))
    return {"input_grads": inputs, "param_grads": params, "hints": found}


def test_gradients_match_reference(learner, device):
    q, k, v = _inputs(device)
    mask = torch.ones(Q_LEN, K_LEN, dtype=torch.bool, device=device).tril()
    grad_output = torch.randn(BATCH, Q_LEN, D_V, device=device)
    ref = _additive_reference(device)
    cases = (("AdditiveAttention", _learner_additive(learner, ref, device), ref.state_dict()),
             ("ScaledDotProductAttention", learner.q3.ScaledDotProductAttention(), {}))
    for name, module, state in cases:
        got = learner.grad(module, q, k, v, mask, grad_output=grad_output)
        answer = _reference_gradients(name, state, q, k, v, mask, grad_output)
        params = answer["param_grads"]
        what = f"{name}: gradient of context (with a random grad_output and a causal mask) with respect to"
        for i, label in enumerate(("query", "key", "value")):
            assert got["input_grads"][i] is not None, (
                f"{what} {label}: no gradient reached {label}; is the output detached from it (.detach(), "
                ".item(), torch.no_grad(), a new tensor built from its values)?")
            hints = [(text, lambda grads=grads, i=i: grads[i]) for text, grads in answer["hints"] if grads]
            assert_close(got["input_grads"][i], answer["input_grads"][i], f"{what} {label}", hints=hints, **GRAD)
        for pname, want in params.items():
            found = got["param_grads"].get(pname)
            assert found is not None, f"{what} {pname}: no gradient reached this parameter (is it used?)"
            assert_close(found, want, f"{what} parameter {pname}", **GRAD)


# --------------------------------------------------------------------------- dropout and errors


@pytest.mark.points(0.5)
def test_dropout_returns_weights_before_dropout(learner, device):
    q, k, v = _inputs(device)
    module = learner.q3.ScaledDotProductAttention(dropout=0.5)
    module.train()
    what = (f"ScaledDotProductAttention(dropout=0.5) in training mode on query {_shape(q)}, key {_shape(k)}, "
            f"value {_shape(v)}")
    got = module(q, k, v)
    assert isinstance(got, (tuple, list)) and len(got) == 2, f"{what}: expected a tuple (context, weights)"
    context, weights = got
    assert tuple(context.shape) == (BATCH, Q_LEN, D_V), (
        f"{what}: context has shape {_shape(context)}, expected (batch, q_len, d_v) = {(BATCH, Q_LEN, D_V)}")
    want = ScaledDotProductAttention()(q, k, v)[1]  # (batch, q_len, k_len), no dropout
    hints = [("the returned weights are taken before dropout: compute the context with the dropped-out weights, "
              "self.dropout(weights) @ value, but return the softmax weights themselves",
              lambda: torch.where(weights == 0, weights, want / (1 - 0.5)))]  # dropout zeroes and rescales
    if isinstance(weights, torch.Tensor) and tuple(weights.shape) == tuple(want.shape):
        sums = weights.sum(dim=-1)
        if (sums - 1).abs().max().item() > 1e-5:
            hint = matching_hint(weights, hints, **OUT)
            raise AssertionError(
                f"{what}: each query's returned weights must sum to 1 over the keys, in training mode too; a row "
                f"sums to {sums.flatten()[(sums - 1).abs().flatten().argmax()].item():.6g}"
                + (f"\nHint: {hint}." if hint else ""))
    assert_close(weights, want, f"{what}: weights (batch, q_len, k_len), compared with dropout=0", hints=hints,
                 **OUT)


@pytest.mark.points(0.5)
def test_dropout_drops_the_weights_of_the_context(learner, device):
    copies, p = 2000, 0.5
    q, k, v = (t[:1].expand(copies, -1, -1).contiguous() for t in _inputs(device))  # identical samples
    shapes = f"query {_shape(q)}, key {_shape(k)}, value {_shape(v)} ({copies} identical samples)"
    for dropout in (p, 0.0):
        module = learner.q3.ScaledDotProductAttention(dropout=dropout)
        module.eval()
        evaluation = module(q, k, v)
        module.train()
        train = module(q, k, v)
        what = f"ScaledDotProductAttention(dropout={dropout}).train() on {shapes}: context"
        for got in (evaluation, train):
            assert isinstance(got, (tuple, list)) and len(got) == 2, f"{what}: expected a tuple (context, weights)"
        if dropout:  # context = dropout(weights) @ value: random, and on average the eval-mode context
            assert_dropout_in_train_mode(train[0], evaluation[0], what, p=p, site="ScaledDotProductAttention.dropout",
                                         unbiased=True)
        else:
            assert_close(train[0], evaluation[0], f"{what} (with dropout=0.0, train mode must equal eval mode)", **OUT)


@pytest.mark.points(1)
@pytest.mark.time_limit(30)
def test_invalid_arguments_are_refused(learner, device):
    q, k, v = _inputs(device)
    float_mask = torch.ones(Q_LEN, K_LEN, device=device).tril()  # 0./1. floats
    ref = _additive_reference(device)
    problems = [
        refusal(lambda module=module: module(q, k, v, float_mask), f"{name} with a float32 0./1. mask (q_len, k_len)",
                TypeError, "masks are bool or 0/1 integer; a float mask could mean an additive bias or weights, so it is "
                "refused")
        for name, module in (("AdditiveAttention", _learner_additive(learner, ref, device)),
                             ("ScaledDotProductAttention", learner.q3.ScaledDotProductAttention()))
    ]
    problems.append(refusal(lambda: learner.q3.benchmark_attention([], hidden_size=8, batch_size=2,
                                                                    device=device.type),
                            "benchmark_attention([])", ValueError, "seq_lens must not be empty"))
    problems.append(refusal(lambda: learner.q3.benchmark_attention([3], hidden_size=8, batch_size=2,
                                                                    device=device.type, n_runs=0),
                            "benchmark_attention([3], n_runs=0)", ValueError, "n_runs must be positive"))
    assert_refused(*problems)


# --------------------------------------------------------------------------- benchmark


@pytest.mark.points(1)
@pytest.mark.time_limit(30)
def test_benchmark_rows(learner, device):
    what = "benchmark_attention([3, 6], hidden_size=8, batch_size=2)"
    rows = learner.q3.benchmark_attention(**BENCH, device=device.type)
    assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows), (
        f"{what}: expected a list of dicts, got {type(rows).__name__}")
    expected = [(m, s) for m in ("additive", "scaled_dot_product") for s in BENCH["seq_lens"]]
    order = [(r.get("mechanism"), r.get("seq_len")) for r in rows]
    problems = []
    if len(rows) != len(expected):
        problems.append(f"expected {len(expected)} rows (one per mechanism and seq_len), got {len(rows)}")
    missing = [key for key in expected if key not in order]
    if missing:
        problems.append("no row for " + ", ".join(f"mechanism {m!r} with seq_len {s}" for m, s in missing)
                        + f"; rows found: {sorted(order, key=str)} (the labels are exactly 'additive' and "
                        "'scaled_dot_product')")
    if order != expected:
        problems.append(f"rows in order {order}, expected {expected} (mechanism outer, seq_len inner)")
    assert not problems, f"{what}: " + ";\n".join(problems)
    for row in rows:
        where = f"{what}, row {row['mechanism']!r} seq_len={row['seq_len']}"
        assert set(row) == KEYS, (f"{where}: keys {sorted(row)}, expected exactly {sorted(KEYS)}; "
                                  f"missing {sorted(KEYS - set(row))}, unexpected {sorted(set(row) - KEYS)}")
        for key in ("batch_size", "hidden_size"):
            assert row[key] == BENCH[key] and isinstance(row[key], int), (
                f"{where}: {key} is {row[key]!r}, expected the int {BENCH[key]}")
        time_ms = row["time_ms"]
        assert isinstance(time_ms, (int, float)) and not isinstance(time_ms, bool), (
            f"{where}: time_ms must be a float (milliseconds), got {type(time_ms).__name__}")
        assert math.isfinite(time_ms) and time_ms > 0, f"{where}: time_ms must be positive, got {time_ms!r}"


@pytest.mark.points(1)
@pytest.mark.time_limit(30)
def test_benchmark_flops(learner, device):
    what = "benchmark_attention([3, 6], hidden_size=8, batch_size=2)"
    table = _rows_by_key(learner.q3.benchmark_attention(**BENCH, device=device.type), what)
    b, h = BENCH["batch_size"], BENCH["hidden_size"]
    for mechanism in ("additive", "scaled_dot_product"):
        for s in BENCH["seq_lens"]:
            got = _row(table, mechanism, s, what).get("flops")
            want = attention_flops(mechanism, b, s, h)
            where = f"{what}: flops of {mechanism!r} at seq_len={s}"
            assert isinstance(got, int) and not isinstance(got, bool), (
                f"{where}: expected an int, got {type(got).__name__}")
            hint = ""
            if got * 2 == want:
                hint = " Hint: you count multiply-adds; a matmul (m, k) @ (k, n) is 2*m*k*n FLOPs."
            elif mechanism == "additive" and got == attention_flops("scaled_dot_product", b, s, h):
                hint = " Hint: that is the dot-product count; additive attention also runs W_q, W_k and v."
            elif got != want:
                hint = (" Hint: measure one forward call under torch.utils.flop_counter.FlopCounterMode"
                        "(display=False) and report .get_total_flops().")
            assert got == want, f"{where}: expected {want}, got {got}.{hint}"


@pytest.mark.points(1)
@pytest.mark.time_limit(30)
def test_benchmark_peak_bytes(learner, device):
    what = "benchmark_attention([3, 6], hidden_size=8, batch_size=2)"
    table = _rows_by_key(learner.q3.benchmark_attention(**BENCH, device=device.type), what)
    b, h = BENCH["batch_size"], BENCH["hidden_size"]
    for mechanism in ("additive", "scaled_dot_product"):
        for s in BENCH["seq_lens"]:
            got = _row(table, mechanism, s, what).get("peak_bytes")
            want = attention_peak_bytes(mechanism, b, s, h)
            where = f"{what}: peak_bytes of {mechanism!r} at seq_len={s}"
            assert isinstance(got, int) and not isinstance(got, bool), (
                f"{where}: expected an int, got {type(got).__name__}")
            hint = ""
            if got * 4 == want:
                hint = " Hint: that is a number of elements; multiply by t.element_size() (4 for float32)."
            elif mechanism == "additive" and got == b * s * max(s, h) * 4:
                hint = (" Hint: you missed the (batch, seq_len, seq_len, hidden_size) tensor "
                        "tanh(W_q q + W_k k); record every tensor an operator returns.")
            elif got != want:
                hint = (" Hint: the largest numel() * element_size() over the outputs of every operator run "
                        "in one forward call, seen by a TorchDispatchMode.")
            assert got == want, f"{where}: expected {want} bytes, got {got}.{hint}"
