"""Attention visualizer: per-head heatmaps and statistics"""
import math

import pytest
import torch

from grader.checks import assert_allclose_number, assert_refused, describe_difference, refusal
from reference import visualizer as ref

STATISTICS = ("entropy", "diag_strength", "locality")


def random_weights(batch: int, n_heads: int, q_len: int, k_len: int, seed: int) -> torch.Tensor:
    """Seeded attention weights (batch, n_heads, q_len, k_len), rows summing to 1, some rows peaked."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, n_heads, q_len, k_len, generator=g) * torch.linspace(0.5, 4.0, n_heads)[:, None, None]
    return torch.softmax(scores, dim=-1)  # (batch, n_heads, q_len, k_len)


def wrong_variants(w: torch.Tensor) -> dict[str, list[tuple[torch.Tensor, str]]]:
    """Per statistic: (per-head values of a known-wrong formula, hint naming the mistake)."""
    w = w.double()
    q_len, k_len = w.shape[-2:]
    distance = (torch.arange(q_len)[:, None] - torch.arange(k_len)[None, :]).abs().double()  # (q_len, k_len)
    return {
        "entropy": [
            (ref.entropy(w) / math.log(2), "entropy is in nats: use the natural log (torch.xlogy or torch.log), not log2"),
            (ref.entropy(w) * q_len, "average H_i over queries and batch, do not sum them"),
        ],
        "diag_strength": [
            (w.diagonal(dim1=1, dim2=2).mean(dim=(0, 2))[: w.shape[1]] if w.shape[1] <= k_len else None,
             "the diagonal is w[..., i, i] over the last two dims (query i, key i)"),
        ],
        "locality": [
            ((w * distance).sum(-1).mean(dim=(0, 2)), "weight each key by exp(−|i − j|), not by the distance itself"),
            ((w * -distance).sum(-1).mean(dim=(0, 2)), "weight each key by exp(−|i − j|), not by −|i − j|"),
        ],
    }


def check_statistics(got, weights: torch.Tensor, what: str, *, rtol: float = 1e-9, atol: float = 1e-12) -> None:
    """``got`` (learner's analyze_attention_patterns) equals the reference on ``weights`` (float64: to 1e-9)."""
    expected = ref.analyze_attention_patterns(weights)
    n_heads = weights.shape[1]
    assert isinstance(got, list), f"{what}: expected a list of per-head dicts, got {type(got).__name__}"
    assert len(got) == n_heads, f"{what}: expected one dict per head ({n_heads}), got {len(got)}"
    variants = wrong_variants(weights)
    for h, (row, want) in enumerate(zip(got, expected)):
        assert isinstance(row, dict), f"{what}[{h}]: expected a dict, got {type(row).__name__}"
        missing = [k for k in ("head", *STATISTICS) if k not in row]
        assert not missing, f"{what}[{h}]: missing keys {missing} (found {sorted(row)})"
        assert row["head"] == h, f"{what}[{h}]['head']: expected {h}, got {row['head']!r} (dicts in head order)"
        for stat in STATISTICS:
            value = row[stat]
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (
                f"{what}[{h}]['{stat}']: expected a Python float, got {type(value).__name__} (use .item())")
            hint = next((text for wrong, text in variants[stat] if wrong is not None and h < wrong.numel()
                         and abs(value - float(wrong[h])) <= 1e-6 * (1 + abs(value))), None)
            assert_allclose_number(value, want[stat], f"{what}, head {h}, '{stat}'", rtol=rtol, atol=atol, hint=hint)


def visualizer_with(learner, layers: list[tuple[str, torch.Tensor]]):
    viz = learner.q5.AttentionVisualizer()
    for name, weights in layers:
        viz.add_attention_weights(weights, name)
    return viz


@pytest.mark.points(2.5)
def test_statistics_match_reference_on_random_weights(learner):
    # non-square (q_len 5 ≠ k_len 7) and a second layer, so axes and layer_idx both matter
    layer0, layer1 = random_weights(2, 3, 5, 7, seed=1), random_weights(3, 4, 6, 6, seed=2)
    viz = visualizer_with(learner, [("layer 0", layer0), ("layer 1", layer1)])
    check_statistics(viz.analyze_attention_patterns(0),
                     layer0, "analyze_attention_patterns(layer_idx=0) on weights (2, 3, 5, 7)")
    check_statistics(viz.analyze_attention_patterns(layer_idx=1),
                     layer1, "analyze_attention_patterns(layer_idx=1) on weights (3, 4, 6, 6)")


@pytest.mark.points(2)
def test_statistics_known_answers(learner):
    seq_len = 6
    identity = torch.eye(seq_len, dtype=torch.float64).expand(2, 1, seq_len, seq_len)  # attend only to itself
    uniform = torch.full((2, 1, seq_len, seq_len), 1.0 / seq_len, dtype=torch.float64)  # evenly over k = 6 keys
    distance = (torch.arange(seq_len)[:, None] - torch.arange(seq_len)[None, :]).abs().double()
    uniform_locality = float(torch.exp(-distance).sum(-1).mean() / seq_len)
    viz = visualizer_with(learner, [("identity", identity), ("uniform", uniform)])
    cases = [
        (0, "identity weights (each query attends only to itself)",
         {"entropy": 0.0, "diag_strength": 1.0, "locality": 1.0}),
        (1, f"uniform weights over k = {seq_len} keys",
         {"entropy": math.log(seq_len), "diag_strength": 1.0 / seq_len, "locality": uniform_locality}),
    ]
    hints = {  # (statistic, a wrong value it takes) -> hint
        ("entropy", math.log2(seq_len)): f"uniform attention over k keys has entropy ln k = {math.log(seq_len):.4f} "
                                         f"nats; log2 k = {math.log2(seq_len):.4f} is bits",
        ("locality", 0.0): "locality weights each key by exp(−|i − j|), which is 1 at j = i",
    }
    for layer_idx, what, want in cases:
        stats = viz.analyze_attention_patterns(layer_idx)
        assert isinstance(stats, list) and len(stats) == 1 and isinstance(stats[0], dict), (
            f"analyze_attention_patterns on {what}: expected a list with one dict (one head), got {stats!r:.200}")
        for stat, value in want.items():
            got = stats[0].get(stat)
            hint = next((text for (name, wrong), text in hints.items()
                         if name == stat and isinstance(got, (int, float)) and abs(got - wrong) < 1e-6), None)
            if isinstance(got, float) and math.isnan(got):
                hint = "0·log 0 must count as 0 (torch.xlogy(w, w)); log(0) = −inf gives nan"
            assert_allclose_number(got, value, f"analyze_attention_patterns on {what}: '{stat}'", rtol=1e-9,
                                   atol=1e-9, hint=hint)


@pytest.mark.points(0.5)
def test_layers_stored_and_indexed_as_a_list(learner, device):
    first, second = random_weights(2, 3, 4, 4, seed=30).double(), random_weights(3, 2, 5, 6, seed=31)
    viz = visualizer_with(learner, [("first", first.to(device)), ("second", second.to(device))])
    layers = viz.layers
    what = f"after add_attention_weights of float64 weights {tuple(first.shape)} and float32 {tuple(second.shape)}"
    assert isinstance(layers, list) and [name for name, _ in layers] == ["first", "second"], (
        f"{what} (on {device.type}): layers should be [('first', weights), ('second', weights)], got {layers!r:.200}")
    for (name, stored), given in zip(layers, (first, second)):
        assert isinstance(stored, torch.Tensor) and stored.device.type == "cpu" and stored.dtype == given.dtype, (
            f"{what} (on {device.type}): layer {name!r} should be stored as a CPU tensor of the given dtype "
            f"{given.dtype}, got " + (f"{stored.dtype} on {stored.device.type}" if isinstance(stored, torch.Tensor)
                                      else type(stored).__name__))
        assert torch.equal(stored, given), f"{what}: layer {name!r} should hold the weights as given"
    check_statistics(viz.analyze_attention_patterns(-1), second,
                     "analyze_attention_patterns(layer_idx=-1) (the last layer, as for a list)")
    try:
        figure = viz.visualize_head_patterns(-1, sample_idx=-1)
    except IndexError as error:
        raise AssertionError(f"visualize_head_patterns(-1, sample_idx=-1) raised IndexError ({error}); negative "
                             "indices count from the end, as for a list") from None
    shown = [ax.images[0] if ax.images else None for ax in figure.axes]
    want = [second[-1, h].double() for h in range(second.shape[1])]  # (q_len, k_len) per head
    assert len(shown) == len(want) and all(image is not None and torch.allclose(image, expected, atol=1e-6)
                                           for image, expected in zip(shown, want)), (
        "visualize_head_patterns(-1, sample_idx=-1) should show weights[-1, h] of the last layer in axes h "
        "(negative indices count from the end, as for a list)")
    why = "indices work as for a list"
    assert_refused(
        refusal(lambda: viz.analyze_attention_patterns(2), "analyze_attention_patterns(2) with 2 layers", IndexError,
                why),
        refusal(lambda: viz.analyze_attention_patterns(-3), "analyze_attention_patterns(-3) with 2 layers", IndexError,
                why),
        refusal(lambda: viz.visualize_head_patterns(2, 0), "visualize_head_patterns(layer_idx=2) with 2 layers",
                IndexError, why),
        refusal(lambda: viz.visualize_head_patterns(0, sample_idx=2),
                f"visualize_head_patterns(0, sample_idx=2) with a batch of {first.shape[0]}", IndexError, why),
    )


@pytest.mark.points(2)
def test_head_patterns_figure(learner):
    n_heads, q_len, k_len = 6, 5, 7
    layer0, layer1 = random_weights(2, 2, 4, 4, seed=3), random_weights(3, n_heads, q_len, k_len, seed=4)
    viz = visualizer_with(learner, [("encoder layer 0", layer0), ("encoder layer 1", layer1)])
    fig = viz.visualize_head_patterns(layer_idx=1, sample_idx=2)
    what = "visualize_head_patterns(layer_idx=1, sample_idx=2) with weights (3, 6, 5, 7)"
    assert len(fig.axes) == n_heads, (
        f"{what}: expected exactly {n_heads} axes (one per head, no empty axes or colorbars), got {len(fig.axes)}")
    assert fig.suptitle == "encoder layer 1", f"{what}: suptitle should be the layer name 'encoder layer 1', got {fig.suptitle!r}"
    for h, ax in enumerate(fig.axes):
        assert ax.title == f"head {h}", f"{what}: axes {h} title should be 'head {h}', got {ax.title!r}"
        assert ax.xlabel == "key position" and ax.ylabel == "query position", (
            f"{what}: axes {h} labels should be x 'key position', y 'query position'; got x {ax.xlabel!r}, y {ax.ylabel!r}")
        assert len(ax.images) == 1, f"{what}: axes {h} should show one heatmap (imshow), found {len(ax.images)}"
        image, want = ax.images[0], layer1[2, h].double()
        if tuple(image.shape) != (q_len, k_len):
            hint = " (transposed: rows are queries, columns keys)" if tuple(image.shape) == (k_len, q_len) else ""
            raise AssertionError(f"{what}: heatmap of head {h} has shape {tuple(image.shape)}, "
                                 f"expected (q_len, k_len) = {(q_len, k_len)}{hint}")
        if not torch.allclose(image, want, atol=1e-6, rtol=0):
            hint = ""
            for s in range(layer1.shape[0]):
                if s != 2 and torch.allclose(image, layer1[s, h].double(), atol=1e-6, rtol=0):
                    hint = f"\nHint: it shows sample {s}; use weights[sample_idx, h]"
            raise AssertionError(f"{what}: heatmap of head {h} is not weights[2, {h}] "
                                 f"(max abs difference {(image - want).abs().max():.3g}){hint}")


@pytest.mark.points(2)
def test_compare_layers_figure(learner):
    layers = [(f"block {i}", random_weights(2, 3, 5, 5, seed=10 + i)) for i in range(3)]
    viz = visualizer_with(learner, layers)
    fig = viz.compare_layers()
    what = "compare_layers() with 3 layers"
    assert len(fig.axes) == 3, f"{what}: expected 3 axes (entropy, diag_strength, locality), got {len(fig.axes)}"
    expected = {stat: [float(getattr(ref, stat)(w).mean()) for _, w in layers] for stat in STATISTICS}
    for ax, stat in zip(fig.axes, STATISTICS):
        assert ax.title == stat, f"{what}: axes titles should be {list(STATISTICS)} in order, found {ax.title!r} for '{stat}'"
        heights = [bar["height"] for bar in sorted(ax.bars, key=lambda b: b["x"])]
        assert len(heights) == 3, f"{what}: axes '{stat}' should have one bar per layer (3), found {len(heights)}"
        for i, (got, want) in enumerate(zip(heights, expected[stat])):
            if abs(got - want) > 1e-6 * (1 + abs(want)):
                hint = ""
                if abs(got - want * 3) < 1e-6 * (1 + abs(got)):
                    hint = "\nHint: the bar is the MEAN over heads, not the sum"
                raise AssertionError(f"{what}: axes '{stat}', bar of layer {i} ('block {i}') should be the mean over "
                                     f"heads: {describe_difference(got, want)}{hint}")
        labels = [t for t in ax.xticklabels if t]
        assert labels == [name for name, _ in layers], (
            f"{what}: axes '{stat}' tick labels should be the layer names {[n for n, _ in layers]}, got {labels}")


def test_compare_layers_needs_two_layers(learner):
    for n in (0, 1):
        viz = visualizer_with(learner, [(f"layer {i}", random_weights(1, 2, 3, 3, seed=20 + i)) for i in range(n)])
        try:
            viz.compare_layers()
        except ValueError as error:
            assert str(error).strip(), f"compare_layers() with {n} layer(s): the ValueError should say what is wrong"
        else:
            raise AssertionError(f"compare_layers() with {n} layer(s) added should raise ValueError "
                                 "(there is nothing to compare), but it returned")
    try:
        learner.q5.AttentionVisualizer().add_attention_weights(torch.rand(4, 4), "2-D")
    except ValueError:
        pass
    else:
        raise AssertionError("add_attention_weights(weights of shape (4, 4), '2-D') should raise ValueError: "
                             "weights must be (batch, n_heads, q_len, k_len)")
