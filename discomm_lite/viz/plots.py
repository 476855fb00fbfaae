"""Curves of logged metrics and final evaluations over seeds: training curves with their
reference lines (chance, ln 2, a collapsed channel), finals as a tick per mean and a dot per seed,
and the ablation lab's figure of both. Conventions: `plot_style`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

# Imported here too: notebooks read the collapsed floor from the module that draws it.
from discomm_lite.method.coding_rate import one_direction_coding_rate
from discomm_lite.viz.style import DPI, PANEL, distinct_colours


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
    return dict(zip(distinct, distinct_colours(len(distinct)), strict=True))


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
            for reset in (r[x] for r in run if r.get("kind") == "reinit" and _is_number(r.get(x))):
                ax.axvline(reset, color=colours[label], linestyle=":", linewidth=1.2, alpha=0.7,
                           label="head reset")
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
    record still shows. A run's head resets (its "reinit" records) are dotted vertical lines of
    its colour in every panel. Runs that share a label share a colour and a legend entry (the
    seeds of one setting).

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
    fig = Figure(dpi=DPI, figsize=(PANEL * len(keys), PANEL * 0.85), layout="constrained")
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
    fig = Figure(dpi=DPI, figsize=(max(PANEL, 0.6 * len(values) + 1.5) * len(keys), PANEL),
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
    width = PANEL * max(len(curves), len(final_keys))
    fig = Figure(dpi=DPI, figsize=(width, PANEL * 1.9), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(1, 1.05))
    runs = [run for seeds in records.values() for run in seeds]
    labels = [name for name, seeds in records.items() for _ in seeds]
    agreements = [(agreement or {}).get(name, "bce") for name in labels]
    _draw_metrics(top, runs, curves, x, labels, agreements, dict(curve_references or {}))
    values = {name: {key: [(f or {}).get(key, math.nan) for f in seeds] for key in final_keys}
              for name, seeds in finals.items()}
    _draw_final(bottom, values, final_keys, dict(final_references or {}))
    return fig
