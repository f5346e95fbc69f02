"""The q5 hidden suite catches plausible bugs in the attention visualizer and keeps full marks for correct rewrites."""

from __future__ import annotations


from conftest import Edit, corpus_tests

FILE = "q5_visualizer.py"

BUGGY = [
    Edit("entropy in bits", FILE, (("entropy = -torch.xlogy(w, w)", "entropy = -torch.xlogy(w, w).div(math.log(2))"),),
         hint="entropy is in nats"),
    Edit("entropy with log of zero", FILE, (("entropy = -torch.xlogy(w, w)", "entropy = -(w * w.log())"),),
         hint="0·log 0 must count as 0"),
    Edit("entropy summed over queries", FILE,
         (("entropy = -torch.xlogy(w, w).sum(-1).mean(dim=(0, 2))",
           "entropy = -torch.xlogy(w, w).sum(-1).mean(dim=0).sum(-1)"),),
         hint="average H_i over queries"),
    Edit("statistics in float32", FILE, (("w = weights.double()", "w = weights.float()"),),
         hint="looks like float32 precision"),
    Edit("layers converted to float32", FILE, (("self.layers.append((layer_name, weights.detach().cpu()))",
                                              "self.layers.append((layer_name, weights.detach().float()))"),),
         hint="should be stored as a CPU tensor of the given dtype torch.float64"),
    Edit("layer index wraps around", FILE, (("    return layers[layer_idx]\n",
                                             "    return layers[layer_idx % len(layers)]\n"),
                                            ("if not -len(layers) <= layer_idx < len(layers):", "if not layers:")),
         hint="analyze_attention_patterns(2) with 2 layers did not raise; expected IndexError"),
    Edit("negative sample_idx refused", FILE, (("if not -weights.shape[0] <= sample_idx < weights.shape[0]:",
                                                "if not 0 <= sample_idx < weights.shape[0]:"),),
         hint="visualize_head_patterns(-1, sample_idx=-1) raised IndexError"),
    Edit("diag over wrong axis", FILE, (("w.diagonal(dim1=-2, dim2=-1)", "w.diagonal(dim1=1, dim2=2)"),)),
    Edit("locality without exp", FILE, (("torch.exp(-distance.double())", "(-distance.double())"),),
         hint="not by −|i − j|"),
    Edit("figure missing a head", FILE, (("for h in range(n_heads):", "for h in range(n_heads - 1):"),)),
    Edit("heatmap transposed", FILE,
         (("ax.imshow(weights[sample_idx, h].float().numpy()", "ax.imshow(weights[sample_idx, h].T.float().numpy()"),),
         hint="transposed"),
    Edit("heatmap ignores sample_idx", FILE,
         (("ax.imshow(weights[sample_idx, h]", "ax.imshow(weights[0, h]"),), hint="it shows sample 0"),
    Edit("compare_layers sums over heads", FILE,
         (("means = [sum(head[stat] for head in heads) / len(heads)", "means = [sum(head[stat] for head in heads)"),),
         hint="MEAN over heads"),
    Edit("compare_layers accepts one layer", FILE, (("if len(self.layers) < 2:", "if len(self.layers) < 1:"),)),
]

CORRECT = [
    Edit("loops and log with clamp", FILE, (
        ("entropy = -torch.xlogy(w, w).sum(-1).mean(dim=(0, 2))",
         "entropy = -(w * torch.log(w.clamp_min(1e-300))).sum(-1).mean(dim=0).mean(dim=-1)"),
        ("diag = w.diagonal(dim1=-2, dim2=-1).mean(dim=(0, 2))",
         "diag = torch.stack([w[:, :, i, i] for i in range(min(q_len, k_len))], dim=-1).mean(dim=(0, 2))"),
        ("distance = (torch.arange(q_len)[:, None] - torch.arange(k_len)[None, :]).abs()",
         "distance = torch.tensor([[abs(i - j) for j in range(k_len)] for i in range(q_len)])"),
    )),
    Edit("subplots grid with spare axes removed", FILE, (
        ("""        for h in range(n_heads):
            ax = fig.add_subplot(rows, cols, h + 1)
""", """        grid = fig.subplots(rows, cols, squeeze=False).flatten()
        for extra in grid[n_heads:]:
            extra.remove()
        for h in range(n_heads):
            ax = grid[h]
"""),
        ("ax.bar(range(len(names)), means, color=f\"C{s}\")\n            ax.set_xticks(range(len(names)))\n"
         "            ax.set_xticklabels(names)",
         "ax.bar(names, means)"),
    )),
]


globals().update(corpus_tests("q5", BUGGY, CORRECT, full_marks=10))
