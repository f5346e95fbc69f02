"""The hidden q2 suite (minimal encoder) catches plausible bugs and accepts correct rewrites.

Each buggy ``Edit`` of the model answer must lose points and, where a misconception of
``reference.misconceptions`` fits, show its hint; each correct rewrite keeps full marks;
every hidden test fails on at least one buggy edit.
"""

from __future__ import annotations


from conftest import Edit, corpus_tests
from reference.misconceptions import by_key

FILE = "q2_encoder.py"
SCORES = "scores = Q @ K.transpose(-2, -1) / math.sqrt(self.d_k)"
HEADS = "return x.view(batch, -1, self.n_heads, self.d_k).transpose(1, 2)"
FILL = "scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)"
MERGE = "out = out.transpose(1, 2).reshape(batch, q_len, self.d_model)"
ATTN_SUBLAYER = "x = self.norm1(x + self.dropout(self.attention(x, x, x, mask)))"
FF_SUBLAYER = "x = self.norm2(x + self.dropout(self.feed_forward(x)))"


def hint(key: str) -> str:
    return by_key(key).hint


BUGGY = [
    # the misconceptions of MultiHeadAttention, FeedForward, TransformerBlock, MinimalTransformerEncoder
    Edit("softmax over queries", FILE, (("torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=-2)"),),
         hint=hint("mha_softmax_over_queries")),
    Edit("missing scale", FILE, ((SCORES, "scores = Q @ K.transpose(-2, -1)"),), hint=hint("mha_missing_scale")),
    Edit("scale by d_model", FILE, ((SCORES, "scores = Q @ K.transpose(-2, -1) / math.sqrt(self.d_model)"),),
         hint=hint("mha_scale_by_d_model")),
    Edit("inverted mask", FILE, (("allowed = mask.to(scores.device) != 0", "allowed = mask.to(scores.device) == 0"),),
         hint=hint("mha_inverted_mask")),
    Edit("mask after softmax", FILE, ((f"            {FILL}\n", ""),), hint=hint("mha_mask_after_softmax")),
    Edit("heads split wrong", FILE, ((HEADS, "return x.view(batch, self.n_heads, -1, self.d_k)"),),
         hint=hint("mha_heads_split_wrong")),
    Edit("missing W_o", FILE, (("return self.W_o(out)", "return out"),), hint=hint("mha_missing_output_projection")),
    Edit("missing ReLU", FILE, (("self.dropout(torch.relu(self.linear1(x)))", "self.dropout(self.linear1(x))"),),
         hint=hint("ffn_missing_relu")),
    Edit("missing residual", FILE, (
        (ATTN_SUBLAYER, "x = self.norm1(self.dropout(self.attention(x, x, x, mask)))"),
        (FF_SUBLAYER, "x = self.norm2(self.dropout(self.feed_forward(x)))"),
    ), hint=hint("block_missing_residual")),
    Edit("pre-norm", FILE, (
        (ATTN_SUBLAYER, "h = self.norm1(x)\n        x = x + self.dropout(self.attention(h, h, h, mask))"),
        (FF_SUBLAYER, "x = x + self.dropout(self.feed_forward(self.norm2(x)))"),
    ), hint=hint("block_pre_norm")),
    Edit("missing embedding scale", FILE, (
        ("x = self.embedding(tokens) * math.sqrt(self.d_model)", "x = self.embedding(tokens)"),
    ), hint=hint("encoder_missing_embedding_scale")),
    Edit("scale after PE", FILE, (
        ("x = self.embedding(tokens) * math.sqrt(self.d_model)", "x = self.embedding(tokens)"),
        ("x = self.pos_encoding(x)\n", "x = self.pos_encoding(x) * math.sqrt(self.d_model)\n"),
    ), hint=hint("encoder_scale_after_pe")),
    # other plausible bugs
    Edit("no mask support", FILE, (("        if mask is not None:\n", "        if False:\n"),),
         hint="changing the token at position"),
    Edit("encoder drops the mask", FILE, (("x = block(x, mask)", "x = block(x)"),), hint="changing the token"),
    Edit("weights detached before V", FILE, ((
        "        self.attention_weights = weights.detach()\n",
        "        weights = weights.detach()\n        self.attention_weights = weights\n",
    ),), hint="is the graph cut"),
    Edit("-inf fill, no zeroing", FILE, (
        (FILL, 'scores = scores.masked_fill(~allowed, float("-inf"))'),
        ("weights = torch.softmax(scores, dim=-1).masked_fill(~allowed, 0.0)",
         "weights = torch.softmax(scores, dim=-1)"),
    ), hint="all-zero weights"),
    Edit("softmax over batch", FILE, (("torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=0)"),),
         hint="samples must not interact"),
    Edit("no divisibility check", FILE, ((
        '            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")\n',
        "            pass\n",
    ),), hint="did not raise; expected ValueError"),
    Edit("float mask accepted", FILE, ((
        "            if mask.is_floating_point():\n"
        '                raise TypeError("mask must be bool or 0/1 integer, True = may attend")\n', ""),),
        hint="with a float32 0./1. causal mask did not raise; expected TypeError"),
    Edit("W_o renamed", FILE, (
        ("self.W_o = nn.Linear(d_model, d_model)", "self.out_proj = nn.Linear(d_model, d_model)"),
        ("return self.W_o(out)", "return self.out_proj(out)"),
    ), hint="missing ['W_o.bias', 'W_o.weight'], unexpected ['out_proj.bias', 'out_proj.weight']"),
    Edit("heads merged without transpose", FILE, ((MERGE, "out = out.reshape(batch, q_len, self.d_model)"),),
         hint="not permutation-equivariant"),
    Edit("key split with q_len", FILE, (
        (HEADS, "return x.view(batch, q_len, self.n_heads, self.d_k).transpose(1, 2)"),
    )),
    Edit("dropout on in eval", FILE, ((
        "out = self.dropout(weights) @ V", "out = torch.nn.functional.dropout(weights, self.dropout.p) @ V",
    ),)),
    # each documented dropout removed (it changes nothing in eval mode)
    Edit("attention dropout missing", FILE, (("out = self.dropout(weights) @ V", "out = weights @ V"),),
         hint="dropout in train mode is missing (MultiHeadAttention.dropout"),
    Edit("attention dropout on the output", FILE, (
        ("out = self.dropout(weights) @ V", "out = weights @ V"),
        ("return self.W_o(out)", "return self.dropout(self.W_o(out))"),
    ), hint="dropout is applied to the output, not inside the module"),
    Edit("attention dropout on the scores", FILE, (
        ("            weights = torch.softmax(scores, dim=-1)\n",
         "            weights = torch.softmax(self.dropout(scores), dim=-1)\n"),
        ("out = self.dropout(weights) @ V", "out = weights @ V"),
    ), hint="averaged over 2000 identical samples"),
    Edit("attention weights stored after dropout", FILE, (
        ("        self.attention_weights = weights.detach()\n        out = self.dropout(weights) @ V",
         "        weights = self.dropout(weights)\n        self.attention_weights = weights.detach()\n"
         "        out = weights @ V"),
    ), hint="store the weights before dropout"),
    Edit("attention_weights not initialised", FILE, (("        self.attention_weights = None\n", ""),),
         hint="attention_weights before the first call should be None"),
    Edit("feed-forward dropout missing", FILE, (
        ("return self.linear2(self.dropout(torch.relu(self.linear1(x))))",
         "return self.linear2(torch.relu(self.linear1(x)))"),
    ), hint="dropout in train mode is missing (FeedForward.dropout"),
    Edit("residual dropout missing", FILE, (
        (ATTN_SUBLAYER, "x = self.norm1(x + self.attention(x, x, x, mask))"),
        (FF_SUBLAYER, "x = self.norm2(x + self.feed_forward(x))"),
    ), hint="dropout in train mode is missing (TransformerBlock.dropout"),
    Edit("positional dropout skipped", FILE, (
        ("x = self.pos_encoding(x)\n", "x = x + self.pos_encoding.pe[:, : x.size(1)]\n"),
    ), hint="dropout in train mode is missing (MinimalTransformerEncoder.pos_encoding.dropout"),
    Edit("dropout not passed to the sub-layers", FILE, (
        ("self.feed_forward = FeedForward(d_model, d_ff, dropout)", "self.feed_forward = FeedForward(d_model, d_ff)"),
        ("self.pos_encoding = PositionalEncoding(d_model, max_len, dropout)",
         "self.pos_encoding = PositionalEncoding(d_model, max_len)"),
    ), hint="expected p = 0.3 everywhere"),
    Edit("GELU instead of ReLU", FILE, (("torch.relu(self.linear1(x))", "torch.nn.functional.gelu(self.linear1(x))"),)),
    Edit("norm1 used twice", FILE, ((FF_SUBLAYER, "x = self.norm1(x + self.dropout(self.feed_forward(x)))"),)),
    Edit("no final layer_norm", FILE, (("        return self.layer_norm(x)\n", "        return x\n"),)),
]

LOOP_OVER_HEADS = '''        Q, K, V = self.W_q(query), self.W_k(key), self.W_v(value)  # (batch, len, d_model)
        if mask is not None and mask.dtype not in (torch.bool, torch.int64, torch.int32, torch.uint8):
            raise TypeError(f"mask must be bool or 0/1 integer, got {mask.dtype}")
        allowed = None if mask is None else mask != 0
        outs, all_weights = [], []
        for h in range(self.n_heads):
            cols = slice(h * self.d_k, (h + 1) * self.d_k)
            q, k, v = Q[..., cols], K[..., cols], V[..., cols]  # (batch, len, d_k)
            s = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)  # (batch, q_len, k_len)
            if allowed is not None:
                a = allowed.expand(batch, self.n_heads, q_len, k.size(1))[:, h]  # (batch, q_len, k_len)
                w = torch.softmax(s.masked_fill(~a, -1e9), dim=-1).masked_fill(~a, 0.0)
            else:
                w = torch.softmax(s, dim=-1)
            all_weights.append(w)
            outs.append(self.dropout(w) @ v)  # (batch, q_len, d_k)
        self.attention_weights = torch.stack(all_weights, dim=1).detach()  # (batch, n_heads, q_len, k_len)
        return self.W_o(torch.cat(outs, dim=-1))  # (batch, q_len, d_model)
'''

CORRECT = [
    Edit("einsum", FILE, (
        (SCORES, "scores = torch.einsum('bhqd,bhkd->bhqk', Q, K) / math.sqrt(self.d_k)"),
        ("out = self.dropout(weights) @ V", "out = torch.einsum('bhqk,bhkd->bhqd', self.dropout(weights), V)"),
        ("return self.linear2(self.dropout(torch.relu(self.linear1(x))))",
         "h = torch.einsum('bsd,fd->bsf', x, self.linear1.weight) + self.linear1.bias\n"
         "        return self.linear2(self.dropout(h.clamp_min(0)))"),
    )),
    Edit("float64 internals cast back", FILE, (
        (SCORES, "scores = Q.double() @ K.double().transpose(-2, -1) / math.sqrt(self.d_k)"),
        ("        self.attention_weights = weights.detach()\n",
         "        weights = weights.to(query.dtype)\n        self.attention_weights = weights.detach()\n"),
        ("x = self.embedding(tokens) * math.sqrt(self.d_model)",
         "x = (self.embedding(tokens).double() * math.sqrt(self.d_model)).float()"),
    )),
    Edit("loop over heads", FILE, ((
        "        Q, K, V = heads(self.W_q(query)), heads(self.W_k(key)), heads(self.W_v(value))\n",
        LOOP_OVER_HEADS + "\n",  # returns; the original lines after it are never reached
    ),)),
]


globals().update(corpus_tests("q2", BUGGY, CORRECT, full_marks=20))
