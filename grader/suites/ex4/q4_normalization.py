"""LayerNorm and BatchNorm by hand

``LayerNorm`` is checked against ``torch.nn.LayerNorm`` and ``BatchNorm1D``
against ``torch.nn.BatchNorm1d`` (same gamma/beta, loaded with
``learner.load_weights``): outputs on several shapes, tiny-variance input where
the place of eps matters, gradients, running statistics after several training
steps, eval mode, non-default momentum and eps, and the ValueErrors the docstrings
promise. ``compare_normalizations`` is checked against the same computation done
with ``reference.normalization`` (all values once; the batch-dependence test checks
only that property).
"""
import math

import pytest
import torch
from torch import nn

from grader.checks import (assert_allclose_number, assert_close, assert_refused, describe_difference,
                           evaluated_hints, hints_for, refusal)
from grader.judge import LearnerError
from grader.replay import snapshot
from reference.normalization import BatchNorm1D, LayerNorm

OUT = dict(rtol=1e-5, atol=1e-5)  # float32 outputs of order 1
GRAD = dict(rtol=1e-4, atol=1e-5)  # float32 gradients: sums over the normalized dims
STATS = dict(rtol=1e-5, atol=1e-6)  # running statistics
C = 6
BN_SHAPES = ((8, C), (4, C, 5))  # (N, C) and (N, C, L)
COMPARE_KEYS = {"per_sample_mean", "per_sample_std", "per_feature_mean", "per_feature_std", "batch_dependence"}


# --------------------------------------------------------------------------- helpers


def _randomize_affine(module):
    """gamma around 1 and beta around 0, not the init values, so that they are seen to be used."""
    with torch.no_grad():
        module.gamma.copy_(1 + 0.5 * torch.randn_like(module.gamma))
        module.beta.copy_(0.5 * torch.randn_like(module.beta))
    return module


def _torch_layernorm(ref):
    torch_ln = nn.LayerNorm(ref.normalized_shape, eps=ref.eps).to(ref.gamma.device)
    with torch.no_grad():
        torch_ln.weight.copy_(ref.gamma)
        torch_ln.bias.copy_(ref.beta)
    return torch_ln


def _torch_batchnorm(ref):
    torch_bn = nn.BatchNorm1d(ref.num_features, eps=ref.eps, momentum=ref.momentum).to(ref.gamma.device)
    with torch.no_grad():
        torch_bn.weight.copy_(ref.gamma)
        torch_bn.bias.copy_(ref.beta)
    return torch_bn


def _learner_module(learner, name, ref, device, *args, **kwargs):
    module = getattr(learner.q4, name)(*args, **kwargs)
    module.to(device.type)
    learner.load_weights(module, ref.state_dict())
    return module


def _variant_hints(target, ref, run):
    """Hints from the misconceptions of ``target``: ``run(variant_module)`` recomputes the checked value."""
    def build(cls):
        wrong = cls(*ref.init_args, **ref.init_kwargs).to(ref.gamma.device)
        wrong.load_state_dict(ref.state_dict())
        return run(wrong)
    return hints_for(target, build)


def _reference(cls, device, *args, **kwargs):
    ref = _randomize_affine(cls(*args, **kwargs).to(device))
    ref.init_args, ref.init_kwargs = args, kwargs
    return ref


def _bn_batches(shape, device, steps=3):
    """``steps`` training batches with per-channel means and scales different from 0 and 1."""
    view = (1, -1) if len(shape) == 2 else (1, -1, 1)
    scale = torch.linspace(0.5, 3.0, shape[1], device=device).view(view)
    shift = torch.linspace(-2.0, 2.0, shape[1], device=device).view(view)
    return [torch.randn(shape, device=device) * scale + shift + 0.5 * step for step in range(steps)]


def _bn(module, x):
    """``module(x)``; when a learner's BatchNorm1D raises on (N, C, L) input, the failure says how to pool."""
    try:
        return module(x)
    except LearnerError as error:
        if isinstance(error, NotImplementedError) or x.dim() != 3:
            raise
        trace = f"\n{error.learner_traceback.rstrip()}" if error.learner_traceback else ""
        raise AssertionError(
            f"{error}{trace}\nHint: for (N, C, L) input pool each channel over dims 0 and 2 (batch and length), "
            "so that the mean and var have shape (C,), e.g. on x.transpose(1, 2).reshape(-1, C); then reshape "
            "them to (1, C, 1) to normalize x.") from None


def _train_steps(module, batches):
    module.train()
    return [_bn(module, x) for x in batches]


def _layernorm_call(normalized_shape, eps=None):
    return f"LayerNorm({normalized_shape!r}{'' if eps is None else f', eps={eps:g}'})"


# --------------------------------------------------------------------------- LayerNorm


@pytest.mark.points(2)
def test_layernorm_matches_torch(learner, device):
    cases = (((4, 8), 8), ((2, 3, 8), (8,)), ((2, 3, 4, 5), (4, 5)))
    for shape, normalized_shape in cases:
        ref = _reference(LayerNorm, device, normalized_shape)
        module = _learner_module(learner, "LayerNorm", ref, device, normalized_shape)
        x = torch.randn(shape, device=device) * 3 + 1
        what = f"{_layernorm_call(normalized_shape)} on x of shape {shape}"
        hints = _variant_hints("LayerNorm", ref, lambda m, x=x: m(x))
        assert_close(module(x), _torch_layernorm(ref)(x).detach(), what, hints=hints, **OUT)


@pytest.mark.points(2)
def test_layernorm_tiny_variance_and_eps(learner, device):
    cases = (((4, 8), 8, None, 1e-3), ((3, 2, 6), (2, 6), None, 1e-3), ((4, 8), 8, 1e-2, 0.1))
    for shape, normalized_shape, eps, spread in cases:
        kwargs = {} if eps is None else {"eps": eps}
        ref = _reference(LayerNorm, device, normalized_shape, **kwargs)
        module = _learner_module(learner, "LayerNorm", ref, device, normalized_shape, **kwargs)
        x = spread * torch.randn(shape, device=device)  # variance spread**2, comparable to eps
        what = (f"{_layernorm_call(normalized_shape, eps)} on x of shape {shape} with variance about "
                f"{spread ** 2:g} (eps matters here)")
        hints = _variant_hints("LayerNorm", ref, lambda m, x=x: m(x))
        assert_close(module(x), _torch_layernorm(ref)(x).detach(), what, hints=hints, **OUT)


@snapshot
def _layernorm_gradient_hints(state: dict, normalized_shape: int, x: torch.Tensor,
                              grad_output: torch.Tensor) -> list:
    """Each LayerNorm misconception's gradient of the input ``x``: ``[[hint, grad or None]]``, plain data (the
    learner bundle stores it: a gradient through a variant cannot be replayed call by call)."""
    def backward(cls):
        module = cls(normalized_shape).to(x.device)
        module.load_state_dict(state)
        inp = x.detach().clone().requires_grad_(True)
        module(inp).backward(grad_output)
        return inp.grad

    with torch.random.fork_rng(devices=[]):
        return evaluated_hints(hints_for("LayerNorm", backward))


@pytest.mark.points(1)
def test_layernorm_gradients(learner, device):
    shape, normalized_shape = (3, 5, 8), 8
    ref = _reference(LayerNorm, device, normalized_shape)
    module = _learner_module(learner, "LayerNorm", ref, device, normalized_shape)
    x = torch.randn(shape, device=device) * 2 + 1
    grad_output = torch.randn(shape, device=device)
    got = learner.grad(module, x, grad_output=grad_output)

    def backward(m):
        inp = x.detach().clone().requires_grad_(True)
        m.zero_grad(set_to_none=True)
        m(inp).backward(grad_output)
        return inp.grad, {n: p.grad for n, p in m.named_parameters()}

    torch_ln = _torch_layernorm(ref)
    want_x, want_params = backward(torch_ln)
    what = f"{_layernorm_call(normalized_shape)} on x of shape {shape}, gradient (random grad_output) of"
    hints = [(text, lambda grad=grad: grad) for text, grad in
             _layernorm_gradient_hints(ref.state_dict(), normalized_shape, x, grad_output) if grad is not None]
    assert_close(got["input_grads"][0], want_x, f"{what} the input x", hints=hints, **GRAD)
    for name, torch_name in (("gamma", "weight"), ("beta", "bias")):
        found = got["param_grads"].get(name)
        assert found is not None, f"{what} {name}: no gradient reached {name} (is it used in forward?)"
        assert_close(found, want_params[torch_name], f"{what} {name}", **GRAD)


@pytest.mark.points(1)
def test_parameter_and_buffer_names(learner, device):
    ln = learner.q4.LayerNorm((4, 5))
    params = dict(list(ln.named_parameters()))
    assert set(params) == {"gamma", "beta"}, (
        f"LayerNorm((4, 5)): parameters {sorted(params)}, expected exactly ['beta', 'gamma']")
    assert_close(params["gamma"].detach(), torch.ones(4, 5), "LayerNorm((4, 5)).gamma at initialisation (ones)")
    assert_close(params["beta"].detach(), torch.zeros(4, 5), "LayerNorm((4, 5)).beta at initialisation (zeros)")
    bn = learner.q4.BatchNorm1D(C)
    params, buffers = dict(list(bn.named_parameters())), dict(list(bn.named_buffers()))
    what = f"BatchNorm1D({C})"
    assert set(params) == {"gamma", "beta"}, (
        f"{what}: parameters {sorted(params)}, expected exactly ['beta', 'gamma'] "
        "(running statistics are buffers, not parameters: use self.register_buffer)")
    assert set(buffers) == {"running_mean", "running_var"}, (
        f"{what}: buffers {sorted(buffers)}, expected exactly ['running_mean', 'running_var'] "
        "(register them with self.register_buffer; no num_batches_tracked)")
    for name, want in (("gamma", torch.ones(C)), ("beta", torch.zeros(C))):
        assert_close(params[name].detach(), want, f"{what}.{name} at initialisation")
    for name, want in (("running_mean", torch.zeros(C)), ("running_var", torch.ones(C))):
        assert_close(buffers[name], want, f"{what}.{name} at initialisation")


# --------------------------------------------------------------------------- BatchNorm1D


@pytest.mark.points(2)
def test_batchnorm_training_output(learner, device):
    for shape in BN_SHAPES:
        ref = _reference(BatchNorm1D, device, C)
        module = _learner_module(learner, "BatchNorm1D", ref, device, C)
        module.train()
        x = _bn_batches(shape, device, steps=1)[0]
        what = f"BatchNorm1D({C}) in training mode on x of shape {shape}"
        hints = _variant_hints("BatchNorm1D", ref, lambda m, x=x: m.train()(x))
        assert_close(_bn(module, x), _torch_batchnorm(ref).train()(x).detach(), what, hints=hints, **OUT)


@pytest.mark.points(2)
def test_batchnorm_running_statistics(learner, device):
    for shape in BN_SHAPES:
        ref = _reference(BatchNorm1D, device, C)
        module = _learner_module(learner, "BatchNorm1D", ref, device, C)
        batches = _bn_batches(shape, device)
        _train_steps(module, batches)
        torch_bn = _torch_batchnorm(ref)
        _train_steps(torch_bn, batches)
        what = f"BatchNorm1D({C}) after {len(batches)} training steps on batches of shape {shape}:"
        for name in ("running_mean", "running_var"):
            hints = _variant_hints("BatchNorm1D", ref, lambda m, name=name: (_train_steps(m, batches),
                                                                              getattr(m, name))[1])
            assert_close(getattr(module, name), getattr(torch_bn, name), f"{what} {name}", hints=hints, **STATS)


@pytest.mark.points(1)
def test_batchnorm_eval_uses_running_statistics(learner, device):
    for shape in BN_SHAPES:
        ref = _reference(BatchNorm1D, device, C)
        module = _learner_module(learner, "BatchNorm1D", ref, device, C)
        batches = _bn_batches(shape, device)
        torch_bn = _torch_batchnorm(ref)
        _train_steps(module, batches)
        _train_steps(torch_bn, batches)
        module.eval()
        torch_bn.eval()
        x = torch.randn(shape, device=device) * 4 - 3  # statistics unlike the training batches'
        before = module.running_mean, module.running_var
        what = f"BatchNorm1D({C}) in eval mode after {len(batches)} training steps, on x of shape {shape}"

        def run(m, x=x):
            _train_steps(m, batches)
            return m.eval()(x)

        assert_close(_bn(module, x), torch_bn(x).detach(), what, hints=_variant_hints("BatchNorm1D", ref, run),
                     **OUT)
        for name, old in zip(("running_mean", "running_var"), before):
            assert torch.equal(getattr(module, name), old), (
                f"{what}: {name} changed during an eval-mode call; in eval mode the buffers stay as they are")
    # the buffers are updated without autograd: after a training step with backward, an eval-mode backward runs
    ref = _reference(BatchNorm1D, device, C)
    module = _learner_module(learner, "BatchNorm1D", ref, device, C)
    torch_bn = _torch_batchnorm(ref)
    x = _bn_batches((8, C), device, steps=1)[0]
    module.train()
    learner.grad(module, x)
    torch_bn.train()(x)
    module.eval()
    what = f"BatchNorm1D({C}): forward and backward in training mode, then in eval mode, on x of shape (8, {C})"
    try:
        got = learner.grad(module, x)
    except LearnerError as error:
        raise AssertionError(f"{what}: the eval-mode backward raised {error.type_name}: "
                             f"{error.message.split('. ')[0]}.\nHint: update running_mean and running_var in place "
                             "under torch.no_grad() (e.g. lerp_), so that they carry no autograd graph from the "
                             "training step") from None
    inputs = x.clone().requires_grad_(True)
    torch_bn.eval()(inputs).backward(torch.ones_like(inputs))
    assert_close(got["input_grads"][0], inputs.grad, f"{what}: gradient of x in eval mode", **GRAD)


@pytest.mark.points(1)
def test_batchnorm_momentum_and_eps(learner, device):
    shape, momentum, eps = (5, C, 3), 0.3, 1e-2
    ref = _reference(BatchNorm1D, device, C, eps=eps, momentum=momentum)
    module = _learner_module(learner, "BatchNorm1D", ref, device, C, eps=eps, momentum=momentum)
    batches = _bn_batches(shape, device, steps=2)
    torch_bn = _torch_batchnorm(ref)
    got_out, want_out = _train_steps(module, batches)[-1], _train_steps(torch_bn, batches)[-1]
    what = (f"BatchNorm1D({C}, eps={eps:g}, momentum={momentum:g}) after {len(batches)} training steps "
            f"on batches of shape {shape}:")
    last_hints = _variant_hints("BatchNorm1D", ref, lambda m: _train_steps(m, batches)[-1])
    assert_close(got_out, want_out.detach(), f"{what} output of the last step", hints=last_hints, **OUT)
    for name in ("running_mean", "running_var"):
        hints = _variant_hints("BatchNorm1D", ref, lambda m, name=name: (_train_steps(m, batches),
                                                                          getattr(m, name))[1])
        assert_close(getattr(module, name), getattr(torch_bn, name), f"{what} {name}", hints=hints, **STATS)
    module.eval()
    x = torch.randn(shape, device=device)
    eval_hints = _variant_hints("BatchNorm1D", ref, lambda m: (_train_steps(m, batches), m.eval()(x))[1])
    assert_close(_bn(module, x), torch_bn.eval()(x).detach(), f"{what} output in eval mode", hints=eval_hints,
                 **OUT)


# --------------------------------------------------------------------------- compare_normalizations


def _expected_comparison(batch_sizes, num_features, seed):
    """What compare_normalizations promises, computed with the reference modules."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(max(batch_sizes), num_features, generator=g) * 2 + 1
    result, unbiased = {}, {}
    with torch.no_grad():
        for name, norm in (("layer_norm", LayerNorm(num_features)), ("batch_norm", BatchNorm1D(num_features))):
            y = norm(x)
            outs = torch.stack([norm(x[:b])[0] for b in batch_sizes])  # (len(batch_sizes), num_features)
            result[name] = {
                "per_sample_mean": y.mean(dim=1),
                "per_sample_std": y.std(dim=1, unbiased=False),
                "per_feature_mean": y.mean(dim=0),
                "per_feature_std": y.std(dim=0, unbiased=False),
                "batch_dependence": float((outs.amax(0) - outs.amin(0)).max()),
            }
            unbiased[name] = {"per_sample_std": y.std(dim=1), "per_feature_std": y.std(dim=0)}  # the n - 1 variant
    return result, unbiased


def _std_hint(key, n, unbiased_std):
    """The hint for a std ``sqrt(n / (n - 1))`` times too large: the unbiased one."""
    axis = "dim=1 (features)" if key == "per_sample_std" else "dim=0 (samples)"
    return [(f"your {key} is sqrt(n / (n - 1)) = {math.sqrt(n / (n - 1)):.5g} times the expected one (n = {n}): "
             f"that is the unbiased std, dividing by n - 1; use std(unbiased=False) over {axis}.",
             lambda: unbiased_std)]


def _check_comparison(got, expected_and_unbiased, what):
    want, unbiased = expected_and_unbiased
    assert isinstance(got, dict), f"{what}: expected a dict, got {type(got).__name__}"
    assert set(got) == {"layer_norm", "batch_norm"}, (
        f"{what}: keys {sorted(got)}, expected exactly ['batch_norm', 'layer_norm']")
    for method, table in want.items():
        row = got[method]
        assert isinstance(row, dict) and set(row) == COMPARE_KEYS, (
            f"{what}[{method!r}]: expected a dict with exactly the keys {sorted(COMPARE_KEYS)}, got "
            + (f"keys {sorted(row)}" if isinstance(row, dict) else type(row).__name__))
        for key, expected in table.items():
            if key == "batch_dependence":
                value = row[key]
                assert isinstance(value, float), (
                    f"{what}[{method!r}]['batch_dependence']: expected a Python float, got {type(value).__name__}")
                assert_allclose_number(value, expected, f"{what}[{method!r}]['batch_dependence']", rtol=1e-4,
                                       atol=1e-5, hint="the largest change of sample 0's output over the listed "
                                                       "batch sizes")
            else:
                n = want[method]["per_feature_mean" if key == "per_sample_std" else "per_sample_mean"].numel()
                hints = _std_hint(key, n, unbiased[method][key]) if key in unbiased[method] else []
                assert_close(row[key], expected, f"{what}[{method!r}][{key!r}]", hints=hints, **OUT)


@pytest.mark.points(1)
def test_compare_normalizations_values(learner):
    args = dict(batch_sizes=(3, 5, 10), num_features=7, seed=3)
    got = learner.q4.compare_normalizations(**args)
    _check_comparison(got, _expected_comparison(**args), "compare_normalizations(batch_sizes=(3, 5, 10), "
                                                         "num_features=7, seed=3)")


@pytest.mark.points(1)
def test_compare_normalizations_shows_batch_dependence(learner):
    got = learner.q4.compare_normalizations()
    what = "compare_normalizations()"
    assert isinstance(got, dict) and {"layer_norm", "batch_norm"} <= set(got), (
        f"{what}: expected a dict with keys 'layer_norm' and 'batch_norm'")
    ln, bn = got["layer_norm"].get("batch_dependence"), got["batch_norm"].get("batch_dependence")
    assert isinstance(ln, float) and ln <= 1e-5, (
        f"{what}: LayerNorm's batch_dependence is {ln!r}; LayerNorm normalizes each sample on its own, "
        "so sample 0's output must not change with the batch size (expected 0)")
    assert isinstance(bn, float) and bn > 0.05, (
        f"{what}: BatchNorm's batch_dependence is {bn!r}; in training mode BatchNorm uses the batch's "
        "statistics, so sample 0's output changes with the batch (expected clearly above 0). "
        "Is your BatchNorm1D in training mode?")
    want = _expected_comparison((2, 8, 32), 16, 0)[0]["batch_norm"]["batch_dependence"]
    assert abs(bn - want) <= 1e-5 + 1e-4 * want, (
        f"{what}: BatchNorm's batch_dependence: {describe_difference(bn, want)}; the largest change of sample 0's "
        "output over the batch sizes (2, 8, 32), (stack(outs).amax(0) - stack(outs).amin(0)).max() with "
        "out_b = norm(x[:b])[0] (BatchNorm1D in training mode)")


# --------------------------------------------------------------------------- errors


@pytest.mark.points(1)
def test_invalid_inputs_raise_value_error(learner, device):
    problems = []
    for normalized_shape, shape in ((8, (4, 7)), ((4, 5), (3, 5, 4))):
        module = learner.q4.LayerNorm(normalized_shape)
        x = torch.randn(shape, device=device)
        module.to(device.type)
        problems.append(refusal(lambda module=module, x=x: module(x),
                                f"{_layernorm_call(normalized_shape)} on x of shape {shape}", ValueError,
                                "the trailing dims of x must be normalized_shape"))
    for shape in ((4, C + 1), (4,), (2, C, 3, 2)):
        module = learner.q4.BatchNorm1D(C)
        module.to(device.type)
        x = torch.randn(shape, device=device)
        problems.append(refusal(lambda module=module, x=x: module(x), f"BatchNorm1D({C}) on x of shape {shape}",
                                ValueError, f"x must be (N, {C}) or (N, {C}, L)"))
    for shape in ((1, C), (1, C, 1)):
        module = learner.q4.BatchNorm1D(C)
        module.to(device.type)
        module.train()
        x = torch.randn(shape, device=device)
        problems.append(refusal(lambda module=module, x=x: module(x),
                                f"BatchNorm1D({C}) in training mode on x of shape {shape}", ValueError,
                                "one value per channel: its batch variance is undefined, as in torch.nn.BatchNorm1d"))
    for batch_sizes in ((), (1, 8)):
        problems.append(refusal(lambda sizes=batch_sizes: learner.q4.compare_normalizations(batch_sizes=sizes),
                                f"compare_normalizations(batch_sizes={batch_sizes!r})", ValueError,
                                "batch_sizes must be non-empty, each at least 2"))
    assert_refused(*problems)
