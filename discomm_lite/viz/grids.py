"""Heat maps of a grid of settings (a sweep's, notebook 08; the ablation lab's K x reset period,
notebook 03): the mean over seeds in colour, written with its spread in each cell."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from discomm_lite.viz.style import DPI, as_numpy

Table = Sequence[Sequence[float]]


def _format(value: float, fmt: str) -> str:
    if fmt == "auto":
        fmt = ".3f" if abs(value) < 10 else ".1f"
    return format(value, fmt)


def _draw(fig: Figure, ax, mean: np.ndarray, spread: np.ndarray | None, title: str, fmt: str,
          cmap: str, highlight: tuple[int, int] | None, vmin: float | None) -> None:
    finite = mean[np.isfinite(mean)]
    image = ax.imshow(np.ma.masked_invalid(mean), aspect="auto", interpolation="nearest",
                      cmap=cmap, vmin=vmin)
    fig.colorbar(image, ax=ax, shrink=0.85)
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (i, j), value in np.ndenumerate(mean):
        if not math.isfinite(value):
            ax.text(j, i, "not run", ha="center", va="center", color="grey", fontsize="small")
            continue
        text = _format(value, fmt)
        if spread is not None and math.isfinite(spread[i, j]):
            text += f"\n± {_format(spread[i, j], fmt)}"
        # Dark text on the bright end of viridis-like maps, light text on the dark end.
        ax.text(j, i, text, ha="center", va="center", fontsize="small",
                color="black" if value > middle else "white")
    if highlight is not None:
        i, j = highlight
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red",
                               linewidth=2.5))
    ax.set_title(title, fontsize="medium")


def plot_heatmaps(
    panels: Mapping[str, tuple[Table, Table | None]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    row_name: str = "",
    col_name: str = "",
    fmt: str = "auto",
    cmap: str = "viridis",
    highlight: tuple[int, int] | None = None,
    vmin: float | None = None,
) -> Figure:
    """Annotated heat maps of one grid, side by side: one panel per measured quantity.

    Args:
        panels: title -> (mean, spread): (R, C) tables of the mean over seeds and its spread
            (the seeds' standard deviation; None or NaN cells: one seed, nothing written).
            NaN means: a cell not run, greyed and labelled so.
        row_labels, col_labels: R and C names; `row_name` and `col_name` label the axes.
        fmt: the format of the written values; "auto": 3 decimals below 10 and 1 above, so a
            k-NN of 0.553 and an effective dimension of 26.2 both read well.
        cmap: the colour map (each panel its own scale).
        highlight: (row, column) of a cell to outline (the lab's chosen setting).
        vmin: where the colour scale starts (e.g. the random-init floor, so that a difference of
            a point does not span the whole scale); default: the smallest value.

    Returns:
        A figure with one heat map and colour bar per panel.
    """
    fig = Figure(dpi=DPI, figsize=((1.0 * len(col_labels) + 1.6) * len(panels),
                                   0.55 * len(row_labels) + 1.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, (mean, spread)) in zip(axes, panels.items(), strict=True):
        mean = as_numpy(mean).astype(float)
        if mean.shape != (len(row_labels), len(col_labels)):
            raise ValueError(f"{title}: the table is {mean.shape} but there are "
                             f"{len(row_labels)} row and {len(col_labels)} column labels.")
        spread = None if spread is None else as_numpy(spread).astype(float)
        _draw(fig, ax, mean, spread, title, fmt, cmap, highlight, vmin)
        ax.set_xticks(range(len(col_labels)), col_labels)
        ax.set_yticks(range(len(row_labels)), row_labels)
        ax.set(xlabel=col_name, ylabel=row_name)
    return fig


def plot_heatmap(table, row_labels: Sequence[str], col_labels: Sequence[str], title: str = "",
                 *, spread=None, fmt: str = ".3f", cmap: str = "viridis",
                 vmin: float | None = None) -> Figure:
    """One annotated heat map (`plot_heatmaps` with a single panel), e.g. a sweep's final metric;
    `spread` (R, C) writes each cell's spread over seeds under its value; `vmin` starts the
    scale."""
    return plot_heatmaps({title: (table, spread)}, row_labels, col_labels, fmt=fmt, cmap=cmap,
                         vmin=vmin)
