"""Figures of the codes a run emits (notebook 04): bit entropies and correlations, retrieval mAP
against the bits kept, a t-SNE of the codes, galleries of one bit, bit-factor mutual information.
Conventions: `style`; heat maps of tables (a sweep's, the lab's grid): `grids`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from discomm_lite.viz.style import DPI, PANEL, as_numpy, distinct_colours


def plot_bit_entropy(entropy) -> Figure:
    """Bar chart of the marginal entropy of each bit (from ``language.bit_entropy``).

    Args:
        entropy: (K,) entropies in bits.

    Returns:
        A figure with one axes: K bars, a dashed line at the 1-bit maximum and one at the mean.
    """
    entropy = as_numpy(entropy)
    fig = Figure(dpi=DPI, figsize=(PANEL * 2, PANEL * 0.6), layout="constrained")
    ax = fig.subplots()
    ax.bar(np.arange(len(entropy)), entropy, width=1.0)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8, label="maximum (1 bit)")
    ax.axhline(entropy.mean(), color="tab:red", linestyle="--", linewidth=0.8,
               label=f"mean {entropy.mean():.3f}")
    ax.set(xlabel="bit", ylabel="entropy (bits)", ylim=(0, 1.05), xlim=(-0.5, len(entropy) - 0.5))
    ax.legend(loc="lower right")
    return fig


def _heatmap(fig: Figure, ax, table: np.ndarray, label: str, **imshow_kwargs) -> None:
    """Draw ``table`` as an image on ``ax`` with a labelled colour bar beside it."""
    image = ax.imshow(table, aspect="auto", interpolation="nearest", **imshow_kwargs)
    fig.colorbar(image, ax=ax, label=label)


def plot_bit_correlation(corr) -> Figure:
    """Heat map of the correlation between bits (from ``language.bit_correlation``).

    Args:
        corr: (K, K) correlations in [-1, 1].

    Returns:
        A figure with two axes: the heat map and its colour bar.
    """
    corr = as_numpy(corr)
    fig = Figure(dpi=DPI, figsize=(PANEL * 1.3, PANEL), layout="constrained")
    ax = fig.subplots()
    _heatmap(fig, ax, corr, "Pearson correlation", cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set(xlabel="bit", ylabel="bit", title="bit correlation")
    return fig


def plot_map_vs_bits(results: Mapping[str, Mapping[int, float]], *,
                     chance: float | None = None) -> Figure:
    """Retrieval mAP against the number of bits kept (``evaluate.map_vs_bits``; paper, Sec. 5).

    Args:
        results: name -> {bits kept: mAP}, one line each.
        chance: the mAP of a random ranking (the share of relevant items for each query, e.g.
            1 / classes for balanced classes), drawn as a dashed line.

    Returns:
        A figure with one axes and one line per name, the bit axis in powers of two.
    """
    fig = Figure(dpi=DPI, figsize=(PANEL * 1.25, PANEL), layout="constrained")
    ax = fig.subplots()
    all_bits: set[int] = set()
    for name, by_bits in results.items():
        bits = sorted(by_bits)
        all_bits.update(bits)
        ax.plot(bits, [by_bits[b] for b in bits], marker="o", label=name)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1,
                   label=f"chance (a random ranking, {chance:.2f})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(all_bits), [str(b) for b in sorted(all_bits)])
    ax.set(xlabel="bits kept", ylabel="mAP")
    ax.legend()
    return fig


def plot_tsne(embedding, labels=None, classes: Sequence[str] | None = None, *,
              title: str = "t-SNE") -> Figure:
    """Scatter plot of a 2-D embedding (``language.hamming_tsne``), coloured by label.

    Args:
        embedding: (M, 2) coordinates.
        labels: (M,) integer labels (the class, or any factor's value), or ``None`` for one
            colour.
        classes: names indexed by label, for the legend.
        title: what the colours are.

    Returns:
        A figure with one axes holding one scatter collection per label present.
    """
    embedding = as_numpy(embedding)
    labels = np.zeros(len(embedding), dtype=int) if labels is None else as_numpy(labels)
    present = np.unique(labels)
    colours = distinct_colours(len(present))
    fig = Figure(dpi=DPI, figsize=(PANEL * 1.5, PANEL * 1.25), layout="constrained")
    ax = fig.subplots()
    for label, colour in zip(present, colours, strict=True):
        points = embedding[labels == label]
        name = classes[label] if classes is not None else str(label)
        ax.scatter(points[:, 0], points[:, 1], s=6, color=colour, label=name)
    ax.set(xticks=[], yticks=[], title=title)
    if len(present) > 1:
        ax.legend(markerscale=2, fontsize="small", loc="center left", bbox_to_anchor=(1, 0.5))
    return fig


def plot_gallery(
    images,
    index_dict: Mapping[int, Mapping[int, Sequence[int]]],
    classes: Sequence[str] | None = None,
    *,
    bit: int | None = None,
) -> Figure:
    """Image gallery of one bit: a row per class, its items with the bit off (left) and on (right).

    Args:
        images: (N, 3, H, W) uint8 images, indexed like the codes.
        index_dict: {class: {0: indices, 1: indices}} from ``language.bit_gallery_indices``.
        classes: class names indexed by label; default the label numbers.
        bit: the bit's number, for the column titles.

    Returns:
        A figure with two axes per class, each a strip of its images (blank where fewer than
        the longest cell).
    """
    images = as_numpy(images)
    _, _, height, width = images.shape
    per_cell = max((len(ix) for cells in index_dict.values() for ix in cells.values()), default=0)
    per_cell = max(per_cell, 1)
    rows = len(index_dict)
    # Each image drawn at twice its pixel size, unsmoothed: sharp, and a small PNG (smoothing
    # an upscaled photograph makes every pixel distinct, which PNG cannot compress).
    inches = 2 * width / DPI
    fig = Figure(dpi=DPI, figsize=(2 * per_cell * inches + 1.2, rows * inches + 0.6),
                 layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False)
    name = "bit" if bit is None else f"bit {bit}"
    for r, (cls, cells) in enumerate(index_dict.items()):
        for ax, value in zip(axes[r], (0, 1), strict=True):
            strip = np.full((height, per_cell * width, 3), 255, dtype=np.uint8)  # blank = white
            for slot, index in enumerate(cells.get(value, [])):
                strip[:, slot * width : (slot + 1) * width] = images[index].transpose(1, 2, 0)
            ax.imshow(strip, interpolation="nearest")
            ax.set(xticks=[], yticks=[])
            if r == 0:
                ax.set_title(f"{name} = {value}")
        axes[r, 0].set_ylabel(classes[cls] if classes is not None else str(cls), rotation=0,
                          ha="right", va="center")
    return fig


def plot_factor_mi(mi, factor_names: Sequence[str], top: int = 16) -> Figure:
    """Heat map of the bits most informative about labelled factors.

    Args:
        mi: (K, F) mutual information in bits (``language.bit_factor_mutual_information``).
        factor_names: F names, for the columns.
        top: number of bits shown, those with the largest mutual information with any factor,
            most informative first.

    Returns:
        A figure with two axes: the (min(top, K), F) heat map and its colour bar.
    """
    mi = as_numpy(mi)
    if mi.shape[1] != len(factor_names):
        raise ValueError(f"mi has {mi.shape[1]} factor columns but {len(factor_names)} names.")
    # A stable sort keeps ties in bit order, so the figure is reproducible.
    best = np.argsort(-mi.max(axis=1), kind="stable")[:top]
    fig = Figure(dpi=DPI, figsize=(1.0 * len(factor_names) + 2.5, 0.3 * len(best) + 1.5),
                 layout="constrained")
    ax = fig.subplots()
    _heatmap(fig, ax, mi[best], "mutual information (bits)", cmap="viridis", vmin=0)
    ax.set_xticks(range(len(factor_names)), factor_names, rotation=45, ha="right")
    ax.set_yticks(range(len(best)), [f"bit {b}" for b in best])
    ax.set_title("bit-factor mutual information")
    return fig
