"""The q8 hidden suite catches plausible bugs in flash attention, checkpointing and AMP, and keeps full marks for correct rewrites."""

from __future__ import annotations


from conftest import Edit, corpus_tests

FILE = "q8_optimized.py"
WORK = "    work = torch.float64 if q.dtype == torch.float64 else torch.float32\n"
NAIVE = """    scores = (q.to(torch.float32) @ k.to(torch.float32).transpose(-1, -2)) / math.sqrt(d_head)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, -math.inf)  # (batch, n_heads, q_len, k_len): all at once
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return (weights @ v.to(torch.float32)).to(q.dtype)
"""

BUGGY = [
    Edit("no online-softmax rescale", FILE, (
        ("l[n] = alpha * l[n] + p.sum(dim=-1, keepdim=True)", "l[n] = l[n] + p.sum(dim=-1, keepdim=True)"),
        ("acc[n] = alpha * acc[n] + p @ v_blk", "acc[n] = acc[n] + p @ v_blk"),
    ), hint="rescale the old"),
    Edit("mask ignored", FILE, (("            if mask is not None:\n                scores = scores.masked_fill(",
                                 "            if False:\n                scores = scores.masked_fill("),),
         hint="the mask is ignored"),
    Edit("mask inverted", FILE, (("kj:kj + block_size] == 0, -math.inf)", "kj:kj + block_size] != 0, -math.inf)"),),
         hint="the mask is inverted"),
    Edit("materializing full scores", FILE, ((WORK, NAIVE + WORK),), hint="never build a (q_len, k_len) tensor"),
    Edit("calling F.scaled_dot_product_attention", FILE, (
        (WORK, "    return F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask != 0)\n"
               + WORK),
    )),
    Edit("scores computed twice", FILE, (
        ("new_max = torch.maximum(m[n], scores.amax(dim=-1, keepdim=True).detach())",
         "new_max = torch.maximum(m[n], torch.maximum(scores, (q_blk @ k_blk.transpose(-1, -2)) * scale)"
         ".amax(dim=-1, keepdim=True).detach())"),
    ), hint="compute each score tile once"),
    Edit("detached scores", FILE, (("scores = (q_blk @ k_blk.transpose(-1, -2)) * scale",
                                    "scores = (q_blk @ k_blk.transpose(-1, -2)).detach() * scale"),),
         hint="only the running max may be detached"),
    Edit("q and k swapped in the qkv split", FILE,
         (("q, k, v = qkv.permute(2, 0, 3, 1, 4)", "k, q, v = qkv.permute(2, 0, 3, 1, 4)"),)),
    # each documented dropout removed (it changes nothing in eval mode)
    Edit("attention output dropout missing", FILE, (
        ("return self.dropout(self.out_proj(merged))", "return self.out_proj(merged)"),
    ), hint="dropout in train mode is missing (FlashMultiHeadAttention.dropout"),
    Edit("SwiGLU dropout missing", FILE, (
        ("return self.w2(self.dropout(gate * self.w3(x)))", "return self.w2(gate * self.w3(x))"),
    ), hint="dropout in train mode is missing (OptimizedFeedForward.dropout"),
    Edit("embedding dropout missing", FILE, (
        ("x = self.dropout(self.embedding(tokens) + self.pos_embedding(positions))",
         "x = self.embedding(tokens) + self.pos_embedding(positions)"),
    ), hint="dropout in train mode is missing (OptimizedTransformer.dropout"),
    Edit("dropout not passed to the blocks", FILE, (
        ("[OptimizedTransformerBlock(d_model, n_heads, d_ff, dropout, use_checkpoint) for _ in range(n_layers)]",
         "[OptimizedTransformerBlock(d_model, n_heads, d_ff, use_checkpoint=use_checkpoint)"
         " for _ in range(n_layers)]"),
    ), hint="blocks.0.attention.dropout.p = 0.1"),
    Edit("no max_len check", FILE, ((
        '            raise ValueError(f"sequence of length {seq_len} is longer than max_len={self.max_len}")\n',
        "            pass\n"),), hint="on tokens (1, 25) raised IndexError"),
    Edit("SwiGLU with ReLU", FILE, (("gate = F.silu(self.w1(x))", "gate = F.relu(self.w1(x))"),), hint="not ReLU"),
    Edit("post-norm block", FILE, (
        ("            x = x + self.attention(self.norm1(x), mask)\n            return x + self.feed_forward(self.norm2(x))",
         "            x = self.norm1(x + self.attention(x, mask))\n            return self.norm2(x + self.feed_forward(x))"),
    )),
    Edit("no checkpoint", FILE, (("if self.use_checkpoint and self.training and torch.is_grad_enabled():",
                                  "if False:"),), hint="torch.utils.checkpoint.checkpoint"),
    Edit("no autocast", FILE, (("dtype=self.dtype, enabled=self.enabled):", "dtype=self.dtype, enabled=False):"),),
         hint="outside torch.autocast"),
    Edit("clip before unscale", FILE, (
        ("        self.scaler.unscale_(self.optimizer)\n", ""),
        ("        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)\n",
         "        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)\n"
         "        self.scaler.unscale_(self.optimizer)\n"),
    ), hint="BEFORE clip_grad_norm_"),
    Edit("no clipping", FILE,
         (("        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)\n", ""),),
         hint="clip with clip_grad_norm_"),
    Edit("not skipping on inf", FILE, (("self.scaler.step(self.optimizer)  # skips", "self.optimizer.step()  # skips"),),
         hint="use scaler.step(optimizer)"),
    Edit("no GradScaler", FILE, (("self.scaler = torch.amp.GradScaler(device_type, enabled=enabled)",
                                  "self.scaler = torch.amp.GradScaler(device_type, enabled=False)"),),
         hint="should halve"),
]

CORRECT = [
    Edit("einsum, unbind and a scale-based skip flag", FILE, (
        ("scores = (q_blk @ k_blk.transpose(-1, -2)) * scale",
         "scores = torch.einsum('bhqd,bhkd->bhqk', q_blk * scale, k_blk)"),
        ("acc[n] = alpha * acc[n] + p @ v_blk", "acc[n] = alpha * acc[n] + torch.einsum('bhqk,bhkd->bhqd', p, v_blk)"),
        ("q, k, v = qkv.permute(2, 0, 3, 1, 4)", "q, k, v = (t.transpose(1, 2) for t in qkv.unbind(dim=2))"),
        ("gate = F.silu(self.w1(x))", "h = self.w1(x)\n        gate = h * torch.sigmoid(h)"),
        ("""        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # skips by itself when a gradient is inf/nan
        elif not bad:
            self.optimizer.step()
        self.scaler.update()
        self.last_step_skipped = bad""", """        scale = self.scaler.get_scale()
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.last_step_skipped = self.scaler.get_scale() < scale
        else:
            self.last_step_skipped = bad
            if not bad:
                self.optimizer.step()"""),
    )),
    Edit("float64 internals", FILE, ((WORK, "    work = torch.float64\n"),)),
]


globals().update(corpus_tests("q8", BUGGY, CORRECT, full_marks=20))
