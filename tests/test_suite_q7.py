"""The q7 hidden suite catches plausible bugs in the profiler and keeps full marks for correct rewrites."""

from __future__ import annotations


from conftest import Edit, corpus_tests

FILE = "q7_profiler.py"

BUGGY = [
    Edit("parameters counted not bytes", FILE,
         (("params = sum(p.numel() * p.element_size() for p in model.parameters())",
           "params = sum(p.numel() for p in model.parameters())"),), hint="numel · element_size"),
    Edit("activation bytes double counting", FILE,
         (("saved[storage.data_ptr()] = storage.nbytes()", "saved[id(t)] = storage.nbytes()"),),
         hint="count each storage once"),
    Edit("activation bytes include parameters", FILE,
         (("if storage.data_ptr() not in param_ptrs:", "if True:"),), hint="do not count the parameters"),
    Edit("peak of the forward pass only", FILE,
         (("""            with _LargestNewTensor() as watcher:
                _output(model(x)).float().sum().backward()""",
           """            with _LargestNewTensor() as watcher:
                out = _output(model(x))
            out.float().sum().backward()"""),), hint="forward AND the backward"),
    Edit("time rows without units in the keys", FILE,
         (('"forward_ms": sum(forward) / n_runs,', '"forward": sum(forward) / n_runs,'),)),
    Edit("n_runs not checked", FILE, (("if n_runs < 1:", "if n_runs < 0:"),)),
    Edit("exponent fitted with the axes swapped", FILE,
         (("np.polyfit(log_len, log_mem, 1)", "np.polyfit(log_mem, log_len, 1)"),), hint="near 2"),
    Edit("seq_len 0 accepted", FILE,
         (("if len(set(seq_lens)) < 2 or min(seq_lens) < 1:", "if len(set(seq_lens)) < 2:"),),
         hint="analyze_complexity(model, [0, 8])"),
    Edit("memory plotted in bytes", FILE, (("row[key] / MIB", "row[key]"),), hint="in MiB"),
]

CORRECT = [
    Edit("pointer sets and pytree", FILE, (
        ("param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}",
         "param_ptrs = set(map(lambda p: p.data_ptr(), model.parameters()))"),
        ("""        inputs = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
        for a in list(args) + list(kwargs.values()):  # ops like cat take lists of tensors
            if isinstance(a, (list, tuple)):
                inputs += [t for t in a if isinstance(t, torch.Tensor)]
""", """        from torch.utils._pytree import tree_flatten
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
"""),
    )),
    Edit("closed-form least squares", FILE, (
        ('"memory_exponent": float(np.polyfit(log_len, log_mem, 1)[0]),',
         '"memory_exponent": float(((log_len - log_len.mean()) * (log_mem - log_mem.mean())).sum()'
         ' / ((log_len - log_len.mean()) ** 2).sum()),'),
        ("params = sum(p.numel() * p.element_size() for p in model.parameters())",
         "params = sum(p.untyped_storage().nbytes() for p in model.parameters())"),
    )),
]


globals().update(corpus_tests("q7", BUGGY, CORRECT, full_marks=10))
