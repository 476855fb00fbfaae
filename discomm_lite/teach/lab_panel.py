"""The ablation lab's widgets (notebook 03): pick a setting and see it at once when a study ran it;
off the grid, see what training it would cost, train it on request with a progress bar and live
curves. Refused settings (a reset period that never fires in the run, ...) say why.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

from discomm_lite.teach.lab import CODE_MAP, LAB_FIELDS, LAB_KEYS, Lab
from discomm_lite.teach.study import effective_config

# Values every widget offers besides the grid's (the configured value is always added).
LAB_OPTIONS = {
    "n_bits": (16, 32, 64, 128, 256),
    "reinit_every": (0, 1, 2, 3, 4, 5),
    "coding_rate_weight": (0.0, 0.03, 0.1, 0.3, 1.0),
    "agreement": ("bce", "cosine"),
    "targets": ("hard", "soft"),
    "target_temperature": (0.05, 0.1, 0.2, 1.0),
}
# What the status line reports of a setting, in this order.
STATUS_KEYS = ("knn20_top1", CODE_MAP, "effective_dim")


def describe(lab: Lab, setting: Mapping) -> str:
    """One line (HTML) on a setting: refused and why; its precomputed (or trained) values over
    seeds; or off the grid, with the estimated cost of training it here."""
    reason = lab.refusal(setting)
    label = html.escape(lab.label(setting))
    if reason:
        return f"<b>{label}: refused</b>, {html.escape(reason)}."
    runs = lab.tried.get(lab.label(setting)) or lab.precomputed(setting)
    if runs:
        values = []
        for key in STATUS_KEYS:
            mean, std, n = lab.value(setting, key)
            if math.isfinite(mean):
                values.append(f"{LAB_KEYS[key]} {mean:.3f}" + (f" ± {std:.3f}" if n > 1 else ""))
        source = ", ".join(sorted({run.source for run in runs}))
        seeds = ", ".join(str(run.seed) for run in runs)
        return f"<b>{label}</b> ({source}, seeds {seeds}): " + "; ".join(values) + "."
    estimate = lab.estimate_seconds(setting)
    cost = ("an unknown time (no measured cost of this dataset)" if estimate is None
            else f"about {max(1, round(estimate / 60))} min on a machine like the studies' "
                 "(2 CPU cores; notebooks/costs.json)")
    return (f"<b>{label}: off the grid</b>: no study ran it. Training its {len(lab.seeds)} "
            f"seed(s) here and evaluating them takes {cost}. Press <i>Train</i> to start.")


def lab_panel(lab: Lab, *, rows: str = "n_bits", columns: str = "reinit_every",
              fields: Sequence[str] = LAB_FIELDS):
    """The lab as widgets: a dropdown per knob, a status line, a Train button and a progress bar
    for settings off the grid, the grid's heat maps (the chosen cell outlined) and the chosen
    setting's curves beside the base's. Returns the widget to display."""
    import ipywidgets as widgets
    from IPython.display import display

    base = effective_config(lab.base.to_dict())
    controls = {name: widgets.Dropdown(options=widget_options(lab, name), value=base[name],
                                       description=name,
                                       style={"description_width": "initial"})
                for name in fields}
    status = widgets.HTML()
    status.add_class("discomm-lab-status")  # what a browser test (and a stylesheet) can find
    train_button = widgets.Button(description="Train", disabled=True, icon="play")
    progress = widgets.IntProgress(min=0, max=1, description="training",
                                   layout=widgets.Layout(visibility="hidden"))
    heatmaps, curves = widgets.Output(), widgets.Output()
    heatmaps.add_class("discomm-lab-heatmaps")

    def chosen() -> dict:
        return {name: control.value for name, control in controls.items()}

    def draw(output, figure) -> None:
        with output:
            output.clear_output(wait=True)
            display(figure)

    def show(*_) -> None:
        setting = chosen()
        status.value = describe(lab, setting)
        known = not lab.refusal(setting) and (lab.label(setting) in lab.tried
                                              or lab.precomputed(setting) is not None)
        train_button.disabled = known or bool(lab.refusal(setting))
        on_grid = all(setting[f] == base[f] for f in fields if f not in (rows, columns))
        draw(heatmaps, lab.heatmaps(rows, columns, highlight=setting if on_grid else None))
        if known:
            draw(curves, lab.figure([{}, setting]))
        else:
            curves.clear_output()

    def train(_) -> None:
        from discomm_lite.viz.plots import plot_metrics

        setting = chosen()
        config = lab.training_config(setting)
        steps = config.epochs * max(1, _steps_per_epoch(lab, config))
        progress.max = len(lab.seeds) * steps
        progress.value, progress.layout.visibility = 0, "visible"
        train_button.disabled = True
        seed_records: list[dict] = []

        def advance(record: dict) -> None:
            if record.get("kind") not in ("train", "reinit"):
                return
            if seed_records and record["step"] < seed_records[-1]["step"]:  # the next seed
                progress.value = (progress.value // steps + 1) * steps
                seed_records.clear()
            seed_records.append(record)
            progress.value = min(progress.max, progress.value // steps * steps + record["step"])
            if len(seed_records) % 5 == 0:  # live curves of the seed in training
                draw(curves, plot_metrics(seed_records, ["coding_rate", "bit_agreement"],
                                          x="step"))

        lab.runs(setting, callbacks=[advance])
        progress.layout.visibility = "hidden"
        show()

    for control in controls.values():
        control.observe(show, names="value")
    train_button.on_click(train)
    show()
    return widgets.VBox([widgets.HBox(list(controls.values())[:3]),
                         widgets.HBox(list(controls.values())[3:]), status,
                         widgets.HBox([train_button, progress]), heatmaps, curves])


def _steps_per_epoch(lab: Lab, config) -> int:
    cost = lab.costs.get(config.dataset, {})
    return (config.train_subset or cost.get("train_images", 0)) // config.batch_size


def widget_options(lab: Lab, field: str) -> list:
    """What a widget of `field` offers: the usual values, the grid's and the configured one
    (so any configured value can be shown, e.g. n_bits = 48)."""
    current = effective_config(lab.base.to_dict())[field]
    grid = {effective_config(r["config"])[field] for r in lab.grid_runs}
    return sorted({*LAB_OPTIONS[field], *grid, current},
                  key=str if isinstance(current, str) else float)
