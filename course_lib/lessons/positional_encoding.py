"""Helpers that keep notebook 05's cells short: pictures of a positional-encoding table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from ..plots import DIVERGING_CMAP, as_matrix, heatmap


def plot_positional_encoding(
    pe: Any, title: str = "Positional encoding", ax: Axes | None = None
) -> Axes:
    """Heatmap of a (L, D) positional table: positions on rows, dimensions on columns."""
    table = as_matrix(pe, "pe")
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 4.0))
    bound = max(float(np.nanmax(np.abs(table))), 1e-12)  # centre the colour map on zero
    im = heatmap(ax, table, None, None, DIVERGING_CMAP, -bound, bound)
    ax.set_xlabel("dimension")
    ax.set_ylabel("position")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="value")
    return ax


def plot_encoding_curves(
    pe: Any,
    dims: Sequence[int] = (0, 1, 4, 5),
    title: str = "Positional encoding by dimension",
    ax: Axes | None = None,
) -> Axes:
    """One curve per chosen dimension of a (L, D) positional table, against position."""
    table = as_matrix(pe, "pe")
    L, D = table.shape
    bad = [d for d in dims if not 0 <= d < D]
    if bad:
        raise ValueError(f"dims {bad} are out of range for a table with D={D} dimensions")
    if ax is None:
        _, ax = plt.subplots()
    for d in dims:
        ax.plot(np.arange(L), table[:, d], label=f"dim {d}")
    ax.set_xlabel("position")
    ax.set_ylabel("value")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: the curves fill the box
    return ax

