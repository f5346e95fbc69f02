"""Describe a matplotlib figure as plain data, so the judge can check it.

The worker calls :func:`describe` on any ``matplotlib.figure.Figure`` a learner
returns (then closes it); the description crosses to the judge as tensors and
strings, and hidden suites read it through :class:`FigureInfo`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


def _tensor(values: Any) -> torch.Tensor:
    import numpy as np

    array = np.ma.filled(np.ma.asarray(values, dtype=float), np.nan)
    return torch.from_numpy(np.array(array, dtype=np.float64))


def describe(figure: Any) -> dict:
    """Plain-data description of a matplotlib Figure.

    Returns:
        ``{"suptitle": str, "axes": [{"title", "xlabel", "ylabel", "images": [Tensor
        (rows, cols) float64], "lines": [{"label", "x", "y"}], "bars": [{"x", "height"}],
        "xticklabels": [str], "legend": [str]}]}``. Colorbar axes are skipped.
    """
    axes = []
    for ax in figure.axes:
        if ax.get_label() == "<colorbar>":
            continue
        legend = ax.get_legend()
        axes.append({
            "title": ax.get_title(),
            "xlabel": ax.get_xlabel(),
            "ylabel": ax.get_ylabel(),
            "images": [_tensor(image.get_array()) for image in ax.get_images()],
            "lines": [
                {"label": str(line.get_label()), "x": _tensor(line.get_xdata()), "y": _tensor(line.get_ydata())}
                for line in ax.get_lines()
            ],
            "bars": [
                {"x": float(patch.get_x() + patch.get_width() / 2), "height": float(patch.get_height())}
                for container in ax.containers
                for patch in getattr(container, "patches", [])
            ],
            "xticklabels": [label.get_text() for label in ax.get_xticklabels()],
            "legend": [text.get_text() for text in legend.get_texts()] if legend else [],
        })
    suptitle = figure._suptitle.get_text() if getattr(figure, "_suptitle", None) else ""
    return {"suptitle": suptitle, "axes": axes}


@dataclass
class AxesInfo:
    """One axes of a described figure (see :func:`describe` for the fields)."""

    title: str
    xlabel: str
    ylabel: str
    images: list[torch.Tensor]
    lines: list[dict]
    bars: list[dict]
    xticklabels: list[str] = field(default_factory=list)
    legend: list[str] = field(default_factory=list)


@dataclass
class FigureInfo:
    """A learner's figure as the judge sees it: ``suptitle`` and ``axes``."""

    suptitle: str
    axes: list[AxesInfo]

    @classmethod
    def from_description(cls, description: dict) -> "FigureInfo":
        return cls(description["suptitle"], [AxesInfo(**ax) for ax in description["axes"]])
