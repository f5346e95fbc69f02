"""The hidden q1 suite (positional encoding) catches plausible bugs and accepts correct rewrites.

Each buggy ``Edit`` of the model answer must lose points and, where a misconception of
``reference.misconceptions`` fits, show its hint; each correct rewrite keeps full marks;
every hidden test fails on at least one buggy edit; the untouched stub scores 0.
"""

from __future__ import annotations


from conftest import Edit, corpus_tests
from reference.misconceptions import by_key

FILE = "q1_positional_encoding.py"


def hint(key: str) -> str:
    return by_key(key).hint


BUGGY = [
    # the misconceptions of sinusoidal_table and PositionalEncoding
    Edit("sin cos swapped", FILE, (
        ("table[:, 0::2] = torch.sin(", "table[:, 0::2] = torch.cos("),
        ("table[:, 1::2] = torch.cos(", "table[:, 1::2] = torch.sin("),
    ), hint=hint("pe_sin_cos_swapped")),
    Edit("halves not interleaved", FILE, (
        ("table[:, 0::2] = torch.sin(", "table[:, : d_model // 2] = torch.sin("),
        ("table[:, 1::2] = torch.cos(", "table[:, d_model // 2 :] = torch.cos("),
    ), hint=hint("pe_halves_not_interleaved")),
    Edit("base 1000", FILE, (("-math.log(base) / d_model", "-math.log(1000.0) / d_model"),),
         hint=hint("pe_base_1000")),
    Edit("odd column frequency", FILE, ((
        "table[:, 1::2] = torch.cos(position * div_term)",
        "table[:, 1::2] = torch.cos(position * torch.exp(torch.arange(1, d_model, 2, dtype=torch.float64)"
        " * (-math.log(base) / d_model)))",
    ),), hint=hint("pe_odd_column_frequency")),
    Edit("seq-first slicing", FILE, ((
        "x = x + self.pe[:, :seq_len].to(x.dtype)", "x = x + self.pe[0, : x.size(0)].unsqueeze(1).to(x.dtype)",
    ),), hint=hint("pe_seq_first_slicing")),
    # other plausible bugs
    Edit("base argument ignored", FILE, (("-math.log(base) / d_model", "-math.log(10000.0) / d_model"),),
         hint="ignores its base argument"),
    Edit("float64 table", FILE, (("return table.float()", "return table"),), hint="expected torch.float32"),
    Edit("float16 angles", FILE, (
        ("position * div_term)", "(position * div_term).half().float())"),
    ), hint="values are off by more than"),
    Edit("no size validation", FILE, (
        ('        raise ValueError(f"d_model must be even, got {d_model}")\n', "        pass\n"),
        ('        raise ValueError(f"max_len and d_model must be positive, got {max_len} and {d_model}")\n',
         "        pass\n"),
    ), hint="expected ValueError"),
    Edit("no max_len check", FILE, ((
        '            raise ValueError(f"sequence length {seq_len} is longer than max_len={self.max_len}")\n',
        "            pass\n",
    ),), hint="expected ValueError"),
    Edit("dropout always on", FILE, (
        ("return self.dropout(x)", "return nn.functional.dropout(x, self.dropout.p)"),
    ), hint="PositionalEncoding(16, 60, dropout=0.1).eval()"),
    Edit("dropout missing", FILE, (("return self.dropout(x)", "return x"),),
         hint="dropout in train mode is missing"),
    Edit("dropout before the addition", FILE, (
        ("x = x + self.pe[:, :seq_len].to(x.dtype)", "x = self.dropout(x) + self.pe[:, :seq_len].to(x.dtype)"),
        ("return self.dropout(x)", "return x"),
    ), hint="of the values are zeroed, expected about p = 50%"),
    Edit("output in pe's dtype", FILE, (("x = x + self.pe[:, :seq_len].to(x.dtype)", "x = x + self.pe[:, :seq_len]"),),
         hint="dtype torch.float32, expected torch.float16"),
    Edit("module builds its own table", FILE, ((
        'self.register_buffer("pe", sinusoidal_table(max_len, d_model).unsqueeze(0))',
        "angle = torch.arange(max_len).unsqueeze(1) * torch.exp(torch.arange(0, d_model, 2) * "
        "(-math.log(10000.0) / d_model))\n"
        "        pe = torch.zeros(max_len, d_model)\n"
        "        pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)\n"
        '        self.register_buffer("pe", pe.unsqueeze(0))',
    ),), hint="PositionalEncoding(7, max_len=10) raised RuntimeError"),
    Edit("plot dims not checked", FILE,
         (("    bad = [dim for dim in dims if not 0 <= dim < d_model]\n", "    bad = []\n"),),
         hint="plot_periodicity(d_model=8, max_len=10, dims=(0, 8)) raised IndexError"),
    Edit("pe without batch axis", FILE, (
        ("sinusoidal_table(max_len, d_model).unsqueeze(0))", "sinusoidal_table(max_len, d_model))"),
        ("self.pe[:, :seq_len]", "self.pe[:seq_len]"),
    ), hint="shape (30, 12), expected (1, 30, 12)"),
    Edit("pe plain attribute", FILE, ((
        'self.register_buffer("pe", sinusoidal_table(max_len, d_model).unsqueeze(0))',
        "self.pe = sinusoidal_table(max_len, d_model).unsqueeze(0)",
    ),), hint="register_buffer"),
    Edit("pe not persistent", FILE, ((
        'self.register_buffer("pe", sinusoidal_table(max_len, d_model).unsqueeze(0))',
        'self.register_buffer("pe", sinusoidal_table(max_len, d_model).unsqueeze(0), persistent=False)',
    ),), hint="expected 'pe'"),
    Edit("heatmap transposed", FILE, (("heat.imshow(table,", "heat.imshow(table.T,"),),
         hint="do not transpose the table"),
    Edit("heatmap unlabelled", FILE, ((
        'heat.set(title="Sinusoidal positional encoding", xlabel="dimension", ylabel="position")',
        'heat.set(title="Sinusoidal positional encoding")',
    ),), hint="has no xlabel, ylabel"),
    Edit("plot ignores dims", FILE, (("for dim in dims:", "for dim in (0, 1, 4, 5):"),),
         hint="should be column dim=3"),
    Edit("curves without legend", FILE, (("    curves.legend()\n", ""),), hint="no legend"),
]

CORRECT = [
    # float32 angles, pow instead of exp/log: within the documented 1e-6 + 2e-7 * pos
    Edit("float32 angles", FILE, (
        ("position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)",
         "position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)"),
        ("div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(base) / d_model))",
         "div_term = 1.0 / base ** (torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)"),
        ("table = torch.zeros(max_len, d_model, dtype=torch.float64)",
         "table = torch.zeros(max_len, d_model, dtype=torch.float32)"),
    )),
    # interleave by stacking (sin, cos) pairs; numpy for the angles; pe sliced with narrow
    Edit("stacked pairs via numpy", FILE, (
        ("    table = torch.zeros(max_len, d_model, dtype=torch.float64)\n"
         "    table[:, 0::2] = torch.sin(position * div_term)  # (max_len, d_model / 2)\n"
         "    table[:, 1::2] = torch.cos(position * div_term)\n",
         "    import numpy as np\n"
         "    angle = np.outer(np.arange(max_len), np.power(float(base), -np.arange(0, d_model, 2) / d_model))\n"
         "    table = torch.from_numpy(np.stack([np.sin(angle), np.cos(angle)], axis=-1).reshape(max_len, d_model))\n"),
        ("x = x + self.pe[:, :seq_len].to(x.dtype)", "x = x + self.pe.narrow(1, 0, seq_len).to(x.dtype)"),
    )),
    # the figure through pyplot, the table drawn from the module's buffer
    Edit("pyplot figure", FILE, (
        ("    table = sinusoidal_table(max_len, d_model).numpy()\n"
         "    fig = matplotlib.figure.Figure(figsize=(12, 5))\n",
         "    import matplotlib.pyplot as plt\n"
         "    table = PositionalEncoding(d_model, max_len).pe[0].numpy()\n"
         "    fig = plt.figure(figsize=(12, 5))\n"),
        ("    return fig\n", "    plt.close(fig)\n    return fig\n"),
    )),
]


globals().update(corpus_tests("q1", BUGGY, CORRECT, full_marks=10))
