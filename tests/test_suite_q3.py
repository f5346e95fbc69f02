"""The hidden suite of ex4 q3 (attention) catches plausible bugs and accepts correct rewrites.

Every edit is graded once (module-scoped fixture), by the real worker and suite.
"""

import pytest

from conftest import Edit, corpus_tests, messages
from reference.misconceptions import MISCONCEPTIONS, by_key

FILE = "q3_attention.py"
Q3_TARGETS = {"AdditiveAttention", "ScaledDotProductAttention"}


MECHANISMS = 'for mechanism in ("additive", "scaled_dot_product"):'
LOOPS = f"    {MECHANISMS}\n        for seq_len in seq_lens:\n"
LOOPS_SEQ_LEN_OUTER = f"    for seq_len in seq_lens:\n        {MECHANISMS}\n"


def _hint(key: str) -> str:
    return by_key(key).hint


# (edit, the misconception keys it stands for)
BUGGY_WITH_KEYS: list[tuple[Edit, tuple[str, ...]]] = [
    (Edit("additive missing tanh", FILE,
          (("self.v(torch.tanh(q + k)).squeeze(-1)", "self.v(q + k).squeeze(-1)"),),
          hint=_hint("additive_missing_tanh")), ("additive_missing_tanh",)),
    (Edit("softmax over queries", FILE,
          (("torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=-2)"),),
          hint=_hint("sdpa_softmax_over_queries")), ("sdpa_softmax_over_queries", "additive_softmax_over_queries")),
    (Edit("missing 1/sqrt(d_k)", FILE,
          ((" / math.sqrt(query.size(-1))", ""),),
          hint=_hint("sdpa_missing_scale")), ("sdpa_missing_scale",)),
    (Edit("inverted mask", FILE,
          (("allowed = mask.to(scores.device) != 0", "allowed = mask.to(scores.device) == 0"),),
          hint=_hint("sdpa_inverted_mask")), ("sdpa_inverted_mask", "additive_inverted_mask")),
    (Edit("mask after softmax", FILE,
          (("    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)\n", ""),),
          hint=_hint("sdpa_mask_after_softmax")), ("sdpa_mask_after_softmax",)),
    # more plausible bugs, with no misconception of their own
    (Edit("scale by sqrt(d_v)", FILE,
          (("math.sqrt(query.size(-1))", "math.sqrt(value.size(-1))"),)), ()),
    (Edit("W_q with a bias", FILE,
          (("self.W_q = nn.Linear(hidden_size, hidden_size, bias=False)",
            "self.W_q = nn.Linear(hidden_size, hidden_size)"),),
          hint="unexpected ['W_q.bias']"), ()),
    (Edit("-inf fill gives NaN on fully masked rows", FILE,
          (("torch.finfo(scores.dtype).min", 'float("-inf")'),
           ("torch.softmax(scores, dim=-1).masked_fill(~allowed, 0.0)", "torch.softmax(scores, dim=-1)")),
          hint="contain NaN/inf"), ()),
    (Edit("weights detached before the context", FILE,
          (("torch.matmul(self.dropout(weights), value)", "torch.matmul(self.dropout(weights.detach()), value)"),),
          hint="gradient of context"), ()),
    (Edit("flops counted by hand as multiply-adds", FILE,
          (('"flops": int(counter.get_total_flops()),',
            '"flops": (2 * batch_size * seq_len * hidden_size ** 2 if mechanism == "additive" else 0) '
            '+ 2 * batch_size * seq_len ** 2 * hidden_size,'),),
          hint="you count multiply-adds"), ()),
    (Edit("benchmark missing a mechanism", FILE,
          (('for mechanism in ("additive", "scaled_dot_product"):', 'for mechanism in ("additive",):'),),
          hint="no row for mechanism 'scaled_dot_product'"), ()),
    (Edit("peak counted in elements", FILE,
          (("self.peak = max(self.peak, t.numel() * t.element_size())", "self.peak = max(self.peak, t.numel())"),),
          hint="that is a number of elements"), ()),
    (Edit("peak taken over the returned tensors only", FILE,
          (('"peak_bytes": largest.peak,',
            '"peak_bytes": max(t.numel() * t.element_size() for t in module(q, k, v)),'),),
          hint="missed the (batch, seq_len, seq_len, hidden_size) tensor"), ()),
    (Edit("time in seconds under another key", FILE,
          (('"time_ms": time_ms,', '"time_s": time_ms / 1000.0,'),),
          hint="missing ['time_ms'], unexpected ['time_s']"), ()),
    (Edit("weights returned after dropout", FILE,
          (("return torch.matmul(self.dropout(weights), value), weights",
            "weights = self.dropout(weights)\n        return torch.matmul(weights, value), weights"),),
          hint="the returned weights are taken before dropout"), ()),
    (Edit("context without dropout", FILE,
          (("return torch.matmul(self.dropout(weights), value), weights",
            "return torch.matmul(weights, value), weights"),),
          hint="dropout in train mode is missing (ScaledDotProductAttention.dropout"), ()),
    (Edit("dropout on the scores", FILE, (
        ("weights = _masked_softmax(scores, mask)\n        return torch.matmul(self.dropout(weights), value), weights",
         "weights = _masked_softmax(scores, mask)\n"
         "        return torch.matmul(_masked_softmax(self.dropout(scores), mask), value), weights"),
    ), hint="averaged over 2000 identical samples"), ()),
    (Edit("-1e9 fill, masked weights not zeroed after the softmax", FILE, (
        ("scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)",
         "scores = scores.masked_fill(~allowed, -1e9)"),
        ("return torch.softmax(scores, dim=-1).masked_fill(~allowed, 0.0)", "return torch.softmax(scores, dim=-1)"),
    ), hint="fill masked scores with torch.finfo(dtype).min (or -inf) and zero the masked weights after the softmax"),
     ()),
    (Edit("floating-point mask accepted", FILE,
          (('    if mask.is_floating_point():\n'
            '        raise TypeError("mask must be bool or 0/1 integer, True = may attend")\n', ""),),
          hint="with a float32 0./1. mask (q_len, k_len) did not raise; expected TypeError"), ()),
    (Edit("benchmark accepts empty seq_lens", FILE,
          (("if not seq_lens or min(seq_lens) < 1", "if min(seq_lens, default=1) < 1"),),
          hint="benchmark_attention([]) did not raise; expected ValueError"), ()),
    (Edit("benchmark accepts n_runs=0", FILE, ((" or n_runs < 1:", ":"),),
          hint="benchmark_attention([3], n_runs=0) raised ZeroDivisionError"), ()),
    (Edit("benchmark labels 'scaled'", FILE, ((MECHANISMS, MECHANISMS.replace('"scaled_dot_product"', '"scaled"')),),
          hint="no row for mechanism 'scaled_dot_product' with seq_len 3"), ()),
    (Edit("benchmark loops seq_len outer", FILE, ((LOOPS, LOOPS_SEQ_LEN_OUTER),),
          hint="expected [('additive', 3), ('additive', 6), ('scaled_dot_product', 3), ('scaled_dot_product', 6)] "
               "(mechanism outer, seq_len inner)"), ()),
    # the seed's benchmark: both deviations named in one message; counts still checked under the wrong label
    (Edit("benchmark labels 'scaled', seq_len outer, flops as multiply-adds", FILE, (
        (LOOPS, LOOPS_SEQ_LEN_OUTER.replace('"scaled_dot_product"', '"scaled"')),
        ('"flops": int(counter.get_total_flops()),',
         '"flops": int(counter.get_total_flops()) // 2,'),
    ), hint="you count multiply-adds"), ()),
]
BUGGY = [edit for edit, _ in BUGGY_WITH_KEYS]

CORRECT = [
    Edit("einsum everywhere", FILE, (
        ("self.v(torch.tanh(q + k)).squeeze(-1)",
         'torch.einsum("bqkh,h->bqk", torch.tanh(q + k), self.v.weight[0])'),
        ("torch.matmul(query, key.transpose(-2, -1))", 'torch.einsum("...qd,...kd->...qk", query, key)'),
        ("torch.matmul(self.dropout(weights), value)",
         'torch.einsum("...qk,...kv->...qv", self.dropout(weights), value)'),
        ("return weights @ value, weights", 'return torch.einsum("bqk,bkv->bqv", weights, value), weights'),
    )),
    Edit("mask as a -1e9 bias through torch.where, scale folded into the query", FILE, (
        ("scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)",
         "scores = torch.where(allowed, scores, torch.full_like(scores, -1e9))"),
        ("scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(query.size(-1))",
         "scores = torch.matmul(query * query.size(-1) ** -0.5, key.transpose(-2, -1))"),
        ("q = self.W_q(query)[:, :, None, :]", "q = self.W_q(query).unsqueeze(2)"),
        ("k = self.W_k(key)[:, None, :, :]", "k = self.W_k(key).unsqueeze(1)"),
    )),
    Edit("-inf fill, masked weights zeroed after the softmax", FILE,
         (("torch.finfo(scores.dtype).min", 'float("-inf")'),)),
]


globals().update(corpus_tests("q3", BUGGY, CORRECT, full_marks=15))


def test_every_q3_misconception_has_an_edit():
    keys = {m.key for m in MISCONCEPTIONS if m.target in Q3_TARGETS}
    covered = {key for _, edit_keys in BUGGY_WITH_KEYS for key in edit_keys}
    assert keys <= covered, f"misconceptions without a buggy edit: {sorted(keys - covered)}"


def _failed(block: dict) -> set[str]:
    return {t["name"] for t in block["tests"] if t["outcome"] != "passed"}


@pytest.mark.parametrize("name", ["benchmark labels 'scaled'", "benchmark loops seq_len outer"])
def test_benchmark_label_or_order_costs_the_rows_test_only(results, name):
    assert _failed(results[name]) == {"test_benchmark_rows"}, messages(results[name])


def test_benchmark_rows_name_label_and_order_together(results):
    block = results["benchmark labels 'scaled', seq_len outer, flops as multiply-adds"]
    assert _failed(block) == {"test_benchmark_rows", "test_benchmark_flops"}, messages(block)
    rows = next(t["message"] for t in block["tests"] if t["name"] == "test_benchmark_rows")
    assert "no row for mechanism 'scaled_dot_product'" in rows and "(mechanism outer, seq_len inner)" in rows, rows


def test_dropout_bug_costs_the_dropout_test_only(results):
    assert _failed(results["weights returned after dropout"]) == {"test_dropout_returns_weights_before_dropout"}
