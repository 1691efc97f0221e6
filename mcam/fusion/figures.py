"""Matplotlib figures for TensorBoard: a labelled heatmap (cue weights, confusion matrix)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure


def heatmap(values: np.ndarray, rows: Sequence[str], columns: Sequence[str], title: str,
            fmt: str = "{:.2f}", xlabel: str = "", ylabel: str = "") -> Figure:
    """A labelled heatmap with the value written in each cell (no pyplot state involved)."""
    fig = Figure(figsize=(1.2 + 0.7 * len(columns), 1.0 + 0.45 * len(rows)), dpi=80)
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), labels=list(columns), rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), labels=list(rows))
    top = np.nanmax(values) if values.size else 0
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=7,
                color="black" if value > 0.6 * top else "white")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig
