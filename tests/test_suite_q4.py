"""The hidden suite of ex4 q4 (normalization) catches plausible bugs and accepts correct rewrites.

Every edit is graded once (module-scoped fixture), by the real worker and suite.
"""


from conftest import Edit, corpus_tests, messages
from reference.misconceptions import MISCONCEPTIONS, by_key

FILE = "q4_normalization.py"
Q4_TARGETS = {"LayerNorm", "BatchNorm1D"}

LN_DIMS = "dims = tuple(range(x.dim() - n, x.dim()))"
LN_VAR = "var = x.var(dim=dims, keepdim=True, unbiased=False)"
LN_OUT = "return self.gamma * (x - mean) * torch.rsqrt(var + self.eps) + self.beta"
BN_VAR = "var = flat.var(dim=0, unbiased=False)"
BN_RUNNING_VAR = "(var * n / (n - 1))"
BN_EVAL = "mean, var = self.running_mean, self.running_var"
BN_FLAT = "flat = x.transpose(1, -1).reshape(-1, self.num_features) if x.dim() == 3 else x"
BN_TOO_FEW = """            if n < 2:
                raise ValueError("expected more than 1 value per channel when training")
"""
BN_OUT = """        shape = (1, -1, 1) if x.dim() == 3 else (1, -1)
        scale = self.gamma / torch.sqrt(var + self.eps)  # (C,)
        return (x - mean.view(shape)) * scale.view(shape) + self.beta.view(shape)
"""


def _hint(key: str) -> str:
    return by_key(key).hint


def _bn_normalize_over(dims: str) -> str:
    """BN_OUT with training-mode normalization statistics over ``dims`` (running statistics stay right)."""
    return f"""        shape = (1, -1, 1) if x.dim() == 3 else (1, -1)
        if self.training:
            dims = {dims}
            mu = x.mean(dim=dims, keepdim=True)
            sigma2 = x.var(dim=dims, keepdim=True, unbiased=False)
            return self.gamma.view(shape) * (x - mu) / torch.sqrt(sigma2 + self.eps) + self.beta.view(shape)
        scale = self.gamma / torch.sqrt(var + self.eps)  # (C,)
        return (x - mean.view(shape)) * scale.view(shape) + self.beta.view(shape)
"""


# (edit, the misconception keys it stands for)
BUGGY_WITH_KEYS: list[tuple[Edit, tuple[str, ...]]] = [
    # LayerNorm
    (Edit("layernorm unbiased variance", FILE, ((LN_VAR, LN_VAR.replace("False", "True")),),
          hint=_hint("layernorm_unbiased_variance")), ("layernorm_unbiased_variance",)),
    (Edit("layernorm eps on std", FILE,
          ((LN_OUT, "return self.gamma * (x - mean) / (var.sqrt() + self.eps) + self.beta"),),
          hint=_hint("layernorm_eps_on_std")), ("layernorm_eps_on_std",)),
    (Edit("layernorm over the batch axis", FILE, ((LN_DIMS, "dims = (0,)"),),
          hint=_hint("layernorm_over_batch_axis")), ("layernorm_over_batch_axis",)),
    (Edit("layernorm over the last axis only", FILE, ((LN_DIMS, "dims = (-1,)"),),
          hint=_hint("layernorm_last_axis_only")), ("layernorm_last_axis_only",)),
    (Edit("layernorm eps hard-coded", FILE, ((LN_OUT, LN_OUT.replace("self.eps", "1e-5")),),
          hint="eps matters here"), ()),
    (Edit("layernorm mean detached", FILE,
          (("mean = x.mean(dim=dims, keepdim=True)", "mean = x.mean(dim=dims, keepdim=True).detach()"),),
          hint="gradient (random grad_output) of the input x"), ()),
    # BatchNorm1D
    (Edit("batchnorm running_var biased", FILE, ((BN_RUNNING_VAR, "var"),),
          hint=_hint("batchnorm_running_var_biased")), ("batchnorm_running_var_biased",)),
    (Edit("batchnorm momentum reversed", FILE, (("self.momentum)", "1 - self.momentum)"),),
          hint=_hint("batchnorm_momentum_reversed")), ("batchnorm_momentum_reversed",)),
    (Edit("batchnorm eval uses batch statistics", FILE,
          ((BN_EVAL, "mean, var = flat.mean(dim=0), flat.var(dim=0, unbiased=False)"),),
          hint=_hint("batchnorm_eval_uses_batch_stats")), ("batchnorm_eval_uses_batch_stats",)),
    (Edit("batchnorm normalizes with the unbiased variance", FILE,
          ((BN_VAR, BN_VAR.replace("False", "True")), (BN_RUNNING_VAR, "var")),
          hint=_hint("batchnorm_normalize_unbiased")), ("batchnorm_normalize_unbiased",)),
    (Edit("batchnorm over the feature axis", FILE, ((BN_OUT, _bn_normalize_over("tuple(range(1, x.dim()))")),),
          hint=_hint("batchnorm_over_feature_axis")), ("batchnorm_over_feature_axis",)),
    (Edit("batchnorm (N, C, L) over the batch axis only", FILE, ((BN_OUT, _bn_normalize_over("(0,)")),),
          hint=_hint("batchnorm_3d_batch_axis_only")), ("batchnorm_3d_batch_axis_only",)),
    (Edit("batchnorm momentum hard-coded", FILE, (("self.momentum)", "0.1)"),),
          hint="momentum=0.3"), ()),
    (Edit("batchnorm (N, C, L) statistics over dim 0 only", FILE, ((BN_FLAT, "flat = x"),),
          hint="for (N, C, L) input pool each channel over dims 0 and 2"), ()),
    (Edit("layernorm accepts any shape", FILE, (
        ('            raise ValueError(f"input {tuple(x.shape)} does not end with {self.normalized_shape}")\n', ""),
        ("        if tuple(x.shape[-n:]) != self.normalized_shape or x.dim() < n:\n", ""),
    ), hint="LayerNorm((4, 5)) on x of shape (3, 5, 4) raised RuntimeError"), ()),
    (Edit("batchnorm accepts any shape", FILE, (
        ("        if x.dim() not in (2, 3) or x.shape[1] != self.num_features:\n"
         '            raise ValueError(f"expected (N, {self.num_features}) or (N, {self.num_features}, L), '
         'got {tuple(x.shape)}")\n', ""),
    ), hint="BatchNorm1D(6) on x of shape (4, 7) raised RuntimeError"), ()),
    (Edit("batchnorm running statistics tracked by autograd", FILE, (
        ("            with torch.no_grad():\n"
         "                self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)\n"
         "                self.running_var.lerp_((var * n / (n - 1)).to(self.running_var.dtype), self.momentum)\n",
         "            self.running_mean = torch.lerp(self.running_mean, mean, self.momentum)\n"
         "            self.running_var = torch.lerp(self.running_var, var * n / (n - 1), self.momentum)\n"),
    ), hint="so that they carry no autograd graph"), ()),
    (Edit("batchnorm trains on one value per channel", FILE, ((BN_TOO_FEW, ""),),
          hint="BatchNorm1D(6) in training mode on x of shape (1, 6) did not raise; expected ValueError"), ()),
    (Edit("batchnorm (N, C, L) reshaped without moving the channel axis", FILE,
          (("x.transpose(1, -1).reshape(-1, self.num_features)", "x.reshape(-1, self.num_features)"),),
          hint="on x of shape (4, 6, 5)"), ()),
    (Edit("batchnorm running statistics as parameters", FILE, (
        ('self.register_buffer("running_mean", torch.zeros(num_features))',
         "self.running_mean = nn.Parameter(torch.zeros(num_features), requires_grad=False)"),
        ('self.register_buffer("running_var", torch.ones(num_features))',
         "self.running_var = nn.Parameter(torch.ones(num_features), requires_grad=False)"),
    ), hint="running statistics are buffers, not parameters"), ()),
    (Edit("batchnorm keeps num_batches_tracked", FILE,
          (('self.register_buffer("running_var", torch.ones(num_features))',
            'self.register_buffer("running_var", torch.ones(num_features))\n'
            '        self.register_buffer("num_batches_tracked", torch.tensor(0))'),),
          hint="unexpected ['num_batches_tracked']"), ()),
    # compare_normalizations
    (Edit("compare with batchnorm in eval mode", FILE, (("norm.train()", "norm.eval()"),),
          hint="Is your BatchNorm1D in training mode?"), ()),
    (Edit("compare with the unbiased per-sample std", FILE,
          (('"per_sample_std": y.std(dim=1, unbiased=False)', '"per_sample_std": y.std(dim=1)'),),
          hint="['per_sample_std']: values differ"), ()),
    (Edit("compare with the unbiased per-feature std", FILE,
          (('"per_feature_std": y.std(dim=0, unbiased=False)', '"per_feature_std": y.std(dim=0)'),),
          hint="your per_feature_std is sqrt(n / (n - 1)) = 1.0541 times the expected one (n = 10)"), ()),
    (Edit("compare batch_dependence as a mean over features", FILE,
          (("float((outs.amax(0) - outs.amin(0)).max())", "float((outs.amax(0) - outs.amin(0)).mean())"),),
          hint="compare_normalizations(): BatchNorm's batch_dependence: expected"), ()),
    (Edit("compare and batchnorm check no sizes", FILE, (
        ("if not batch_sizes or min(batch_sizes) < 2:", "if not batch_sizes:"),
        (BN_TOO_FEW, ""),
    ), hint="compare_normalizations(batch_sizes=(1, 8)) did not raise; expected ValueError"), ()),
    (Edit("compare ignores the seed", FILE,
          (("torch.Generator().manual_seed(seed)", "torch.Generator().manual_seed(0)"),),
          hint="seed=3"), ()),
]
BUGGY = [edit for edit, _ in BUGGY_WITH_KEYS]

CORRECT = [
    Edit("variance as mean of squares minus squared mean", FILE, (
        (LN_VAR, "var = (x * x).mean(dim=dims, keepdim=True) - mean * mean"),
        (BN_VAR, "var = (flat * flat).mean(dim=0) - mean * mean"),
    )),
    Edit("float64 internals cast back", FILE, (
        (LN_OUT, "x64 = x.double()\n"
                 "        mean = x64.mean(dim=dims, keepdim=True)\n"
                 "        var = x64.var(dim=dims, keepdim=True, unbiased=False)\n"
                 "        y = (x64 - mean) / torch.sqrt(var + self.eps)\n"
                 "        return (self.gamma.double() * y + self.beta.double()).to(x.dtype)"),
        ("mean = flat.mean(dim=0)\n", "mean = flat.double().mean(dim=0)\n"),
        (BN_VAR, "var = flat.double().var(dim=0, unbiased=False)"),
        ("return (x - mean.view(shape)) * scale.view(shape) + self.beta.view(shape)",
         "return ((x.double() - mean.view(shape)) * scale.view(shape) + self.beta.view(shape)).to(x.dtype)"),
    )),
    Edit("permute, running statistics by mul_/add_ with the unbiased var, gamma applied last", FILE, (
        ("flat = x.transpose(1, -1).reshape(-1, self.num_features) if x.dim() == 3 else x",
         "flat = x.permute(0, 2, 1).reshape(-1, self.num_features) if x.dim() == 3 else x"),
        ("self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)",
         "self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)"),
        ("self.running_var.lerp_((var * n / (n - 1)).to(self.running_var.dtype), self.momentum)",
         "self.running_var.mul_(1 - self.momentum).add_(self.momentum * flat.var(dim=0, unbiased=True))"),
        (LN_OUT, "return (x - mean) / torch.sqrt(var + self.eps) * self.gamma + self.beta"),
    )),
]


globals().update(corpus_tests("q4", BUGGY, CORRECT, full_marks=15))


def test_every_q4_misconception_has_an_edit():
    keys = {m.key for m in MISCONCEPTIONS if m.target in Q4_TARGETS}
    covered = {key for _, edit_keys in BUGGY_WITH_KEYS for key in edit_keys}
    assert keys <= covered, f"misconceptions without a buggy edit: {sorted(keys - covered)}"


def test_unbiased_std_costs_the_values_test_only(results):
    """One value bug in compare_normalizations costs one test: the batch-dependence test checks only that."""
    block = results["compare with the unbiased per-sample std"]
    assert {t["name"] for t in block["tests"] if t["outcome"] != "passed"} == {"test_compare_normalizations_values"}
    assert "use std(unbiased=False)" in messages(block), messages(block)
