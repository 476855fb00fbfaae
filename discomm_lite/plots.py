"""Figures for the notebooks: training curves, final evaluations over seeds, the channel's
diagram, augmented views, code statistics, retrieval, galleries.

Every helper takes data (dicts, lists, tensors or arrays) and returns a new
``matplotlib.figure.Figure``. Figures are built with the object API and never registered with
pyplot: nothing is shown or kept alive behind the caller's back, they work under any backend
(Agg included), a notebook displays one returned as a cell's last expression, and
``fig.savefig(path)`` writes it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

# Imported here too: notebooks read the collapsed floor from the module that draws it.
from discomm_lite.methods import one_direction_coding_rate

_PANEL = 4.0  # inches per panel side
_DPI = 80  # a modest resolution keeps the executed notebooks (and the repository) light


def _numpy(x) -> np.ndarray:
    """A tensor (any device) or array-like as a NumPy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _is_number(value) -> bool:
    """Whether a metrics value can be plotted (bools and strings cannot)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# What a logged metric is: key -> (panel title, y-axis label). Keys not listed are titled by
# their name. "agreement" depends on the agreement of the run (see AGREEMENT_LABELS).
METRIC_LABELS: dict[str, tuple[str, str]] = {
    "loss": ("total loss", "loss"),
    "coding_rate": ("coding rate R (Eq. 9)", "R (nats)"),
    "bit_agreement": ("bit agreement, student vs teacher", "fraction of bits equal"),
    "bit_entropy": ("entropy of the teacher's bits", "bits per bit"),
    "constant_bits": ("constant teacher bits", "fraction of bits"),
    "logit_std": ("scale of the student's logits", "standard deviation"),
    "grad_norm": ("gradient norm", "norm"),
    "prototypes_used": ("DINO prototypes in use", "exp(entropy)"),
    "lr": ("learning rate", "lr"),
    "knn20_top1": ("k-NN top-1 (k = 20)", "accuracy"),
    "knn200_top1": ("k-NN top-1 (k = 200)", "accuracy"),
    "linear_top1": ("linear probe top-1", "accuracy"),
    "map_cosine": ("retrieval mAP, features (cosine)", "mAP"),
    "map_hamming": ("retrieval mAP, codes (Hamming)", "mAP"),
    "effective_rank": ("effective rank of the features", "rank"),
    "code_mean_bit_entropy": ("entropy of the code bits", "bits per bit"),
    "code_mean_abs_correlation": ("redundancy: mean |correlation| between bits", "mean |r|"),
}
# The "agreement" metric of each agreement: BCE in nats, or 1 - cosine (unit-free). The two are
# different quantities and never share an axis.
AGREEMENT_LABELS: dict[str, tuple[str, str]] = {
    "bce": ("BCE agreement (Eq. 8)", "BCE (nats)"),
    "cosine": ("cosine agreement", "1 - cos"),
}

# Reference lines: grey, one line style each, in the order they are given.
_REFERENCE_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))


def metric_label(key: str, agreement: str = "bce") -> tuple[str, str]:
    """(title, y label) of a logged metric; `agreement` says what "agreement" measures."""
    if key == "agreement":
        return AGREEMENT_LABELS[agreement]
    return METRIC_LABELS.get(key, (key, ""))


def channel_references(*, n_bits: int | Sequence[int] | None = None, eps: float = 0.05,
                       agreement: str = "bce") -> dict[str, dict[str, float]]:
    """The reference lines of the channel's curves, for `plot_metrics(references=...)`.

    ln 2 on the BCE agreement (a student that predicts 1/2 for every bit; not for cosine), 0.5 on
    the bit agreement (chance), 1 bit on the bit entropy (fair bits), and the one-direction
    coding rate of each K in `n_bits` (a collapsed channel). Add floors with
    `references.setdefault(key, {})[name] = value`.
    """
    references: dict[str, dict[str, float]] = {
        "bit_agreement": {"chance (0.5)": 0.5},
        "bit_entropy": {"fair bits (1)": 1.0},
    }
    if agreement == "bce":
        references["agreement"] = {"ln 2 (a student that knows nothing)": math.log(2)}
    if n_bits is not None:
        ks = [n_bits] if isinstance(n_bits, int) else list(n_bits)
        references["coding_rate"] = {
            f"all logits one direction (K = {k})": one_direction_coding_rate(k, eps) for k in ks}
    return references


def _markevery(n_points: int) -> int:
    """Every marker on short series (a one-point series must show), about 15 on long ones."""
    return max(1, n_points // 15)


def _reference_styles(references: Mapping[str, Mapping[str, float]]) -> dict[str, object]:
    """A line style per reference name, the same in every panel of a figure."""
    names = dict.fromkeys(name for lines in references.values() for name in lines)
    return dict(zip(names, itertools.cycle(_REFERENCE_STYLES)))


def _draw_references(ax, lines: Mapping[str, float], styles: Mapping[str, object]) -> None:
    for name, value in lines.items():
        ax.axhline(value, color="0.45", linestyle=styles[name], linewidth=1.0, label=name)


def _shared_legend(fig) -> None:
    """One legend for every panel of `fig` (a Figure or SubFigure), below them, no duplicates."""
    entries: dict[str, object] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if not label.startswith("_"):
                entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center",
                   ncols=min(len(entries), 3), fontsize="small", frameon=False)


def _colours_by_label(labels: Sequence[str | None]) -> dict:
    distinct = list(dict.fromkeys(labels))
    return dict(zip(distinct, _colours(len(distinct)), strict=True))


def _draw_metrics(fig, runs: list, keys: Sequence[str], x: str, labels: list,
                  agreements: list[str], references: Mapping[str, Mapping[str, float]]) -> None:
    """The panels of `plot_metrics` on a Figure or SubFigure."""
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    colours = _colours_by_label(labels)
    styles = _reference_styles(references)
    mixed = len(set(agreements)) > 1
    for ax, key in zip(axes, keys, strict=True):
        # BCE and 1 - cos are different quantities: cosine runs get their own (right) axis.
        cosine_ax = ax.twinx() if key == "agreement" and mixed else None
        for run, label, kind in zip(runs, labels, agreements, strict=True):
            points = [(r[x], r[key]) for r in run
                      if _is_number(r.get(x)) and _is_number(r.get(key))]
            if points:
                xs, ys = zip(*points, strict=True)
                target = cosine_ax if cosine_ax is not None and kind == "cosine" else ax
                target.plot(xs, ys, color=colours[label], label=label, marker="o",
                            markersize=3.5, markevery=_markevery(len(xs)),
                            linestyle="--" if target is cosine_ax else "-")
        _draw_references(ax, references.get(key, {}), styles)
        title, ylabel = metric_label(key, "bce" if mixed else agreements[0])
        if cosine_ax is not None:
            title = "agreement: BCE (left, solid) and 1 - cos (right, dashed)"
            cosine_ax.set_ylabel(AGREEMENT_LABELS["cosine"][1])
        ax.set(xlabel=x, ylabel=ylabel)
        ax.set_title(title, fontsize="medium")
    _shared_legend(fig)


def plot_metrics(
    records: Sequence[Mapping] | Sequence[Sequence[Mapping]],
    keys: Sequence[str],
    *,
    x: str = "epoch",
    labels: Sequence[str] | None = None,
    agreement: str | Sequence[str] = "bce",
    references: Mapping[str, Mapping[str, float]] | None = None,
) -> Figure:
    """Curves of logged metrics, one panel per key, one line per run, one legend for all.

    Panels are titled and their y axes labelled from `METRIC_LABELS` ("agreement" from
    `AGREEMENT_LABELS`: BCE in nats, or 1 - cos). Lines carry markers, so a run with a single
    record still shows. Runs that share a label share a colour and a legend entry (the seeds of
    one setting).

    Args:
        records: one run's metrics.jsonl records (a list of dicts), or a list of such runs.
            Records missing ``x`` or the key (e.g. evaluation records among training records)
            are skipped for that key.
        keys: the metrics to plot, one panel each, side by side.
        x: the record field on the horizontal axis, e.g. "epoch" or "step".
        labels: a legend name per run; by default "run 0", "run 1", ... when there are several.
        agreement: the agreement of the runs ("bce" or "cosine", as `Config.agreement`), or one
            per run. When BCE and cosine runs are mixed, the cosine runs' agreement is drawn
            dashed on a second y axis (1 - cos) beside the BCE axis.
        references: key -> {name: value}: horizontal reference lines (see `channel_references`;
            a random-init floor), drawn in grey and named in the legend.

    Returns:
        A figure with len(keys) axes (plus a twin axis for mixed agreements); a run that never
        logs a key draws no line in its panel.
    """
    runs = [records] if records and isinstance(records[0], Mapping) else list(records)
    if labels is None:
        labels = [f"run {i}" for i in range(len(runs))] if len(runs) > 1 else [None] * len(runs)
    if len(labels) != len(runs):
        raise ValueError(f"Got {len(labels)} labels for {len(runs)} runs.")
    agreements = [agreement] * len(runs) if isinstance(agreement, str) else list(agreement)
    if len(agreements) != len(runs):
        raise ValueError(f"Got {len(agreements)} agreements for {len(runs)} runs.")
    unknown = sorted(set(agreements) - set(AGREEMENT_LABELS))
    if unknown:
        raise ValueError(f"agreement must be one of {', '.join(AGREEMENT_LABELS)}; got {unknown}.")
    fig = Figure(dpi=_DPI, figsize=(_PANEL * len(keys), _PANEL * 0.85), layout="constrained")
    _draw_metrics(fig, runs, keys, x, list(labels), agreements, dict(references or {}))
    return fig


def _draw_final(fig, values: Mapping[str, Mapping[str, Sequence[float]]], keys: Sequence[str],
                references: Mapping[str, Mapping[str, float]]) -> None:
    """The panels of `plot_final` on a Figure or SubFigure."""
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    names = list(values)
    colours = _colours_by_label(names)
    styles = _reference_styles(references)
    for ax, key in zip(axes, keys, strict=True):
        for i, name in enumerate(names):
            seeds = np.array([v for v in values[name].get(key, []) if _is_number(v)], float)
            seeds = seeds[np.isfinite(seeds)]
            if seeds.size:
                # The mean as a wide bar-like tick, each seed as a dot: the axis is not forced
                # to start at 0, so differences of a point stay visible.
                ax.plot([i], [seeds.mean()], marker="_", markersize=28, markeredgewidth=3,
                        linestyle="none", color=colours[name], label="mean over seeds")
                ax.plot(np.full(seeds.size, i), seeds, "o", color=colours[name],
                        markeredgecolor="black", markersize=5, label="one seed")
        _draw_references(ax, references.get(key, {}), styles)
        title, ylabel = metric_label(key)
        ax.set_title(title, fontsize="medium")
        ax.set(ylabel=ylabel, xticks=range(len(names)), xlim=(-0.6, len(names) - 0.4))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize="small")
    _shared_legend(fig)


def plot_final(
    values: Mapping[str, Mapping[str, Sequence[float]]],
    keys: Sequence[str],
    *,
    references: Mapping[str, Mapping[str, float]] | None = None,
) -> Figure:
    """Final evaluations of several settings over seeds: a tick at the mean, a dot per seed.

    Args:
        values: setting name -> key -> one value per seed (NaN and missing values skipped).
        keys: the evaluations to show, one panel each (titled from `METRIC_LABELS`).
        references: key -> {name: value}: horizontal lines, e.g. the random-init floor.

    Returns:
        A figure with len(keys) axes, one column of points per setting in each.
    """
    fig = Figure(dpi=_DPI, figsize=(max(_PANEL, 0.6 * len(values) + 1.5) * len(keys), _PANEL),
                 layout="constrained")
    _draw_final(fig, values, keys, dict(references or {}))
    return fig


def plot_lab(
    records: Mapping[str, Sequence[Sequence[Mapping]]],
    finals: Mapping[str, Sequence[Mapping | None]],
    *,
    curves: Sequence[str],
    final_keys: Sequence[str],
    agreement: Mapping[str, str] | None = None,
    curve_references: Mapping[str, Mapping[str, float]] | None = None,
    final_references: Mapping[str, Mapping[str, float]] | None = None,
    x: str = "epoch",
) -> Figure:
    """The ablation lab's figure: training curves above, final evaluations below.

    Args:
        records: setting name -> one run's records per seed (one colour per setting).
        finals: setting name -> one final evaluation per seed (None: not evaluated).
        curves: the logged metrics drawn as curves (as `plot_metrics`).
        final_keys: the final evaluations drawn as bars with a dot per seed (as `plot_final`).
        agreement: setting name -> its agreement ("bce" when absent), for the "agreement" curve.
        curve_references, final_references: key -> {name: value}, lines of each row (the
            in-training k-NN and the final evaluation are different protocols: a floor measured
            with one belongs to its own row only).
        x: the record field on the curves' horizontal axis.

    Returns:
        A figure of two sub-figures: len(curves) axes above, len(final_keys) below.
    """
    width = _PANEL * max(len(curves), len(final_keys))
    fig = Figure(dpi=_DPI, figsize=(width, _PANEL * 1.9), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(1, 1.05))
    runs = [run for seeds in records.values() for run in seeds]
    labels = [name for name, seeds in records.items() for _ in seeds]
    agreements = [(agreement or {}).get(name, "bce") for name in labels]
    _draw_metrics(top, runs, curves, x, labels, agreements, dict(curve_references or {}))
    values = {name: {key: [(f or {}).get(key, math.nan) for f in seeds] for key in final_keys}
              for name, seeds in finals.items()}
    _draw_final(bottom, values, final_keys, dict(final_references or {}))
    return fig


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
    fig = Figure(dpi=_DPI, figsize=(11, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.set(xlim=(0, 14.2), ylim=(-0.6, 5.5))
    ax.axis("off")
    grey, blue, orange, green = "0.92", "#dbe9f6", "#fde3c8", "#dff2d8"
    image = _box(ax, (0.7, middle), "image x", grey)
    view_t = _box(ax, (2.5, teacher), "view 1\n(a global crop)", grey)
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
        views: one (M, 3, S, S) float tensor in [0, 1] per view, as `augment.make_views` returns
            for these images.
        names: a title per view; default "view 1", "view 2", ...

    Returns:
        A figure with M x (1 + len(views)) axes, the originals in the first column.
    """
    images = _numpy(images)
    views = [_numpy(v) for v in views]
    names = list(names) if names is not None else [f"view {i + 1}" for i in range(len(views))]
    if len(names) != len(views):
        raise ValueError(f"Got {len(names)} names for {len(views)} views.")
    for view in views:
        if view.shape[0] != len(images):
            raise ValueError(f"A view holds {view.shape[0]} images, not {len(images)}.")
    rows, cols = len(images), 1 + len(views)
    fig = Figure(dpi=_DPI, figsize=(1.15 * cols, 1.15 * rows + 0.3), layout="constrained")
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


def plot_bit_entropy(entropy) -> Figure:
    """Bar chart of the marginal entropy of each bit (from ``language.bit_entropy``).

    Args:
        entropy: (K,) entropies in bits.

    Returns:
        A figure with one axes: K bars, a dashed line at the 1-bit maximum and one at the mean.
    """
    entropy = _numpy(entropy)
    fig = Figure(dpi=_DPI, figsize=(_PANEL * 2, _PANEL * 0.6), layout="constrained")
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
    corr = _numpy(corr)
    fig = Figure(dpi=_DPI, figsize=(_PANEL * 1.3, _PANEL), layout="constrained")
    ax = fig.subplots()
    _heatmap(fig, ax, corr, "Pearson correlation", cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set(xlabel="bit", ylabel="bit", title="bit correlation")
    return fig


def plot_map_vs_bits(results: Mapping[str, Mapping[int, float]]) -> Figure:
    """Retrieval mAP against the number of bits kept (``evaluate.map_vs_bits``; paper, Sec. 5).

    Args:
        results: name -> {bits kept: mAP}, one line each.

    Returns:
        A figure with one axes and one line per name, the bit axis in powers of two.
    """
    fig = Figure(dpi=_DPI, figsize=(_PANEL * 1.25, _PANEL), layout="constrained")
    ax = fig.subplots()
    all_bits: set[int] = set()
    for name, by_bits in results.items():
        bits = sorted(by_bits)
        all_bits.update(bits)
        ax.plot(bits, [by_bits[b] for b in bits], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(all_bits), [str(b) for b in sorted(all_bits)])
    ax.set(xlabel="bits kept", ylabel="mAP")
    ax.legend()
    return fig


def plot_tsne(embedding, labels=None, classes: Sequence[str] | None = None) -> Figure:
    """Scatter plot of a 2-D embedding (``language.hamming_tsne``), coloured by label.

    Args:
        embedding: (M, 2) coordinates.
        labels: (M,) integer labels, or ``None`` for one colour.
        classes: class names indexed by label, for the legend.

    Returns:
        A figure with one axes holding one scatter collection per label present.
    """
    embedding = _numpy(embedding)
    labels = np.zeros(len(embedding), dtype=int) if labels is None else _numpy(labels)
    present = np.unique(labels)
    colours = _colours(len(present))
    fig = Figure(dpi=_DPI, figsize=(_PANEL * 1.5, _PANEL * 1.25), layout="constrained")
    ax = fig.subplots()
    for label, colour in zip(present, colours, strict=True):
        points = embedding[labels == label]
        name = classes[label] if classes is not None else str(label)
        ax.scatter(points[:, 0], points[:, 1], s=6, color=colour, label=name)
    ax.set(xticks=[], yticks=[], title="t-SNE")
    if len(present) > 1:
        ax.legend(markerscale=2, fontsize="small", loc="center left", bbox_to_anchor=(1, 0.5))
    return fig


def _colours(n: int) -> list:
    """n distinguishable colours: tab10 or tab20 when they suffice, else a continuous map."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](i / (n - 1)) for i in range(n)]


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
    images = _numpy(images)
    _, _, height, width = images.shape
    per_cell = max((len(ix) for cells in index_dict.values() for ix in cells.values()), default=0)
    per_cell = max(per_cell, 1)
    rows = len(index_dict)
    fig = Figure(dpi=_DPI, figsize=(2 * per_cell * 0.9, rows * 0.9 + 0.6), layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False)
    name = "bit" if bit is None else f"bit {bit}"
    for r, (cls, cells) in enumerate(index_dict.items()):
        for ax, value in zip(axes[r], (0, 1), strict=True):
            strip = np.full((height, per_cell * width, 3), 255, dtype=np.uint8)  # blank = white
            for slot, index in enumerate(cells.get(value, [])):
                strip[:, slot * width : (slot + 1) * width] = images[index].transpose(1, 2, 0)
            ax.imshow(strip)
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
    mi = _numpy(mi)
    if mi.shape[1] != len(factor_names):
        raise ValueError(f"mi has {mi.shape[1]} factor columns but {len(factor_names)} names.")
    # A stable sort keeps ties in bit order, so the figure is reproducible.
    best = np.argsort(-mi.max(axis=1), kind="stable")[:top]
    fig = Figure(dpi=_DPI, figsize=(1.0 * len(factor_names) + 2.5, 0.3 * len(best) + 1.5),
                 layout="constrained")
    ax = fig.subplots()
    _heatmap(fig, ax, mi[best], "mutual information (bits)", cmap="viridis", vmin=0)
    ax.set_xticks(range(len(factor_names)), factor_names, rotation=45, ha="right")
    ax.set_yticks(range(len(best)), [f"bit {b}" for b in best])
    ax.set_title("bit-factor mutual information")
    return fig


def plot_heatmap(
    table,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str = "",
    *,
    fmt: str = ".2f",
    cmap: str = "viridis",
) -> Figure:
    """Annotated heat map of a 2-D table, e.g. a hyper-parameter sweep's final metric.

    Args:
        table: (R, C) values; NaN cells (runs that did not finish) are left blank.
        row_labels: R names, for the rows.
        col_labels: C names, for the columns.
        title: figure title.
        fmt: format spec of the cell annotations.
        cmap: colour map.

    Returns:
        A figure with two axes: the heat map, with each value written in its cell, and its
        colour bar.
    """
    table = _numpy(table).astype(float)
    if table.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"table is {table.shape} but there are {len(row_labels)} row and "
                         f"{len(col_labels)} column labels.")
    fig = Figure(dpi=_DPI, figsize=(0.9 * len(col_labels) + 2.5, 0.5 * len(row_labels) + 1.5),
                 layout="constrained")
    ax = fig.subplots()
    _heatmap(fig, ax, table, title, cmap=cmap)
    ax.set_xticks(range(len(col_labels)), col_labels)
    ax.set_yticks(range(len(row_labels)), row_labels)
    finite = table[np.isfinite(table)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (i, j), value in np.ndenumerate(table):
        if math.isfinite(value):
            # Dark text on the bright end of viridis-like maps, light text on the dark end.
            colour = "black" if value > middle else "white"
            ax.text(j, i, format(value, fmt), ha="center", va="center", color=colour)
    ax.set_title(title)
    return fig
