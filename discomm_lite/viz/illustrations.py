"""Figures that show what BITS does: the channel as a diagram, and images beside the augmented
views a run trains on. Conventions: `plot_style`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from discomm_lite.viz.style import DPI, as_numpy


def _box(ax, xy: tuple[float, float], text: str, colour: str):
    """A rounded, filled text box centred at `xy` (data coordinates); returns the Text."""
    return ax.text(*xy, text, ha="center", va="center", fontsize=9,
                   bbox=dict(boxstyle="round,pad=0.45", facecolor=colour, edgecolor="0.3"))


def _arrow(ax, source, target, text: str = "", **style) -> None:
    """An arrow from one box (Text) to another, clipped at their edges, with an optional label."""
    props = dict(arrowstyle="-|>", color="0.25", linewidth=1.2, shrinkA=2, shrinkB=2,
                 patchA=source.get_bbox_patch(), patchB=target.get_bbox_patch(), **style)
    ax.annotate("", xy=(0.5, 0.5), xycoords=target, xytext=(0.5, 0.5), textcoords=source,
                arrowprops=props)
    if text:
        (x0, y0), (x1, y1) = source.get_position(), target.get_position()
        horizontal = y0 == y1
        ax.text((x0 + x1) / 2 + (0 if horizontal else 0.15), (y0 + y1) / 2 + (0.35 if horizontal
                else 0), text, ha="center" if horizontal else "left", va="center", fontsize=8,
                color="0.25")


def plot_channel_diagram() -> Figure:
    """BITS's channel as a diagram: teacher views -> logits -> bits -> the student's BCE.

    The teacher (an EMA of the student) turns a global view into K logits and thresholds them
    into the message; the student predicts every bit of it from another view (BCE, Eq. 8); the
    coding rate of the student's normalised logits (Eq. 9) keeps the channel in use; the loss is
    Eq. 10; the student's head is re-drawn every n epochs (the head reset).

    Returns:
        A figure with one axes (no ticks) holding the boxes, arrows and captions.
    """
    teacher, student, middle = 4.6, 1.4, 3.0
    fig = Figure(dpi=DPI, figsize=(11, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.set(xlim=(0, 14.2), ylim=(-0.6, 5.5))
    ax.axis("off")
    grey, blue, orange, green = "0.92", "#dbe9f6", "#fde3c8", "#dff2d8"
    image = _box(ax, (0.7, middle), "image x", grey)
    view_t = _box(ax, (2.5, teacher), "view 1\n(a global view)", grey)
    view_s = _box(ax, (2.5, student), "view 2\n(another view)", grey)
    net_t = _box(ax, (5.1, teacher), "teacher\nbackbone + head\n(no gradient)", blue)
    net_s = _box(ax, (5.1, student), "student\nbackbone + head", orange)
    logits_t = _box(ax, (7.7, teacher), "logits $a_t \\in \\mathbb{R}^K$", blue)
    logits_s = _box(ax, (7.7, student), "logits $a_s \\in \\mathbb{R}^K$", orange)
    bits = _box(ax, (10.6, teacher), "message $z = [a_t > 0]$\n(K bits, no gradient)", blue)
    probs = _box(ax, (10.6, student), "$p = \\sigma(a_s)$\n(a probability per bit)", orange)
    bce = _box(ax, (13.3, middle), "BCE$(p, z)$\nEq. 8", green)
    rate = _box(ax, (7.7, middle), "coding rate\n$R_\\epsilon(a_s / \\|a_s\\|)$, Eq. 9", green)
    for source, target in ((image, view_t), (image, view_s), (view_t, net_t), (view_s, net_s),
                           (net_t, logits_t), (net_s, logits_s), (probs, bce), (bits, bce),
                           (logits_s, rate)):
        _arrow(ax, source, target)
    _arrow(ax, logits_t, bits, "threshold at 0")
    _arrow(ax, logits_s, probs, "sigmoid")
    _arrow(ax, net_s, net_t, "EMA of the\nstudent's weights", linestyle="--")
    ax.text(5.1, 0.35, "head reset: every n epochs the student's head is re-drawn\n"
            "from its initial distribution (the backbone is kept)",
            ha="center", va="center", fontsize=8, color="tab:red")
    ax.text(7.1, -0.45, "loss $L = \\mathrm{BCE} - \\beta\\,\\gamma\\,R$ (Eq. 10), "
            "descended by the student; the views swap roles and the BCE is averaged",
            ha="center", va="center", fontsize=9)
    return fig


def plot_views(images, views: Sequence, *, names: Sequence[str] | None = None) -> Figure:
    """Images beside their augmented views: a row per image, a column per view.

    Args:
        images: (M, 3, H, W) uint8 images.
        views: one (M, 3, S, S) float tensor in [0, 1] per view, made from these images (or,
            with `Config.redraw_factors`, from their own renderings of the same objects), as
            `notebook.augmented_views` returns them.
        names: a title per view; default "view 1", "view 2", ...

    Returns:
        A figure with M x (1 + len(views)) axes, the originals in the first column.
    """
    images = as_numpy(images)
    views = [as_numpy(v) for v in views]
    names = list(names) if names is not None else [f"view {i + 1}" for i in range(len(views))]
    if len(names) != len(views):
        raise ValueError(f"Got {len(names)} names for {len(views)} views.")
    for view in views:
        if view.shape[0] != len(images):
            raise ValueError(f"A view holds {view.shape[0]} images, not {len(images)}.")
    rows, cols = len(images), 1 + len(views)
    fig = Figure(dpi=DPI, figsize=(1.15 * cols, 1.15 * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        pictures = [images[r].transpose(1, 2, 0)] + [
            (np.clip(v[r], 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8)
            for v in views]
        for c, picture in enumerate(pictures):
            axes[r, c].imshow(picture, interpolation="nearest")
            axes[r, c].set(xticks=[], yticks=[])
            if r == 0:
                axes[r, c].set_title(["image", *names][c], fontsize="small")
    return fig
