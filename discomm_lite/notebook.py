"""What the notebooks share: parameters, the smoke setting and its data, tables, live plots and a
run cache (the study's results: `study_report`; the ablation lab of notebook 03: `lab`).

The notebooks call these so that no cell holds logic of its own. `DISCOMM_SMOKE=1` (set by the
test suite for nbval and papermill) shrinks any run to seconds through `smoke`, keeps smoke runs
out of the folders real runs use, and lets `find_data_root` stand in for a missing CIFAR-10, so
the smoke setting needs no download.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from discomm_lite.config import Config, field_names, make_config

# The fast setting of every notebook in CI: one short epoch on a few hundred images.
SMOKE_OVERRIDES = dict(
    epochs=1, warmup_epochs=0, train_subset=256, test_subset=128, batch_size=64,
    eval_every=1, log_every=1, head_hidden_dim=128,
)

# Appended to a notebook's own out_dir in the smoke setting, so that a smoke run (nbval starts its
# kernels in notebooks/, as Jupyter does) never lands in, or is refused by, a real run's folder.
SMOKE_SUFFIX = "-smoke"

# Notebook parameters that are not Config fields: name -> what it sets. A parameters cell may
# assign these besides Config fields; `config_from_parameters` leaves them out of the Config.
NOTEBOOK_PARAMETERS = {
    "grid": "08: the swept values, {Config field: [values, ...]}",
    "jobs": "08: how many runs of the sweep execute at a time",
    "launch_here": "07: train on this machine (True) or only print the torchrun command (False)",
    "seeds": "03: the seeds every setting of the lab runs with",
}

# The first line of the cell papermill injects after the parameters cell
# (papermill.translators.PythonTranslator.codify with comment="Parameters").
_INJECTED_MARKER = "# Parameters"

# Names IPython defines in every namespace; never parameters.
_IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython"})


def is_smoke() -> bool:
    """Whether the notebooks run in their smoke setting (environment variable DISCOMM_SMOKE)."""
    return os.environ.get("DISCOMM_SMOKE", "") not in ("", "0")


def smoke(config: Config, **extra) -> Config:
    """`config` shrunk to the smoke setting when `is_smoke()`, else `config` unchanged.

    `extra` adds notebook-specific overrides (a smaller backbone, smaller crops). The run folder
    is chosen by `config_from_parameters`: in the smoke setting a notebook's own out_dir gets
    the suffix `SMOKE_SUFFIX`.
    """
    if not is_smoke():
        return config
    return config.replace(**{**SMOKE_OVERRIDES, **extra})


def smoke_out_dir(out_dir: str | os.PathLike) -> str:
    """Where the smoke setting puts the run of a notebook whose own out_dir is `out_dir`."""
    return str(Path(out_dir)) + SMOKE_SUFFIX


def find_data_root(dataset: str, data_root: str | None = None) -> str | None:
    """The data root a notebook reads `dataset` from, checked before anything trains.

    `data_root` (None: $DISCOMM_DATA, else ./data) is returned as given when the dataset's train
    split loads from it. When CIFAR-10 is not there, the smoke setting falls back to a small
    CIFAR-10-shaped stand-in (`data.cifar10_standin_root`, read through the real archive path)
    and prints a note that says so and how to provide the real data; so the smoke setting needs
    nothing beside the checkout. Otherwise the library's DatasetNotFoundError is raised: it lists
    where it looked and every way to provide the data.
    """
    from discomm_lite.data import DatasetNotFoundError, cifar10_standin_root, load_dataset

    if dataset == "synthetic":
        return data_root  # rendered in code: there is nothing to find
    try:
        load_dataset(dataset, "train", data_root)
    except DatasetNotFoundError as missing:
        if not (is_smoke() and dataset == "cifar10"):
            raise
        standin = cifar10_standin_root()
        print(f"Smoke setting: this run uses a small stand-in for CIFAR-10 ({standin}: synthetic "
              "shapes in CIFAR-10's ten classes and archive layout, not photographs, so its "
              f"accuracies mean nothing), because\n{missing}")
        return str(standin)
    return data_root


# ---- parameters ----------------------------------------------------------------------------------
def injected_parameters(history: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(injected, declared): the names papermill injected and those of the parameters cell.

    `history` is IPython's `In`, the sources of the cells executed so far. Papermill executes its
    injected cell (first line "# Parameters") right after the notebook's parameters cell, so
    that cell is the one before it. Without an injected cell (Jupyter, nbval) both are empty.
    """
    from discomm_lite.sweep import assigned_names

    history = list(history or [])
    for i in range(len(history) - 1, 0, -1):
        if history[i].lstrip().startswith(_INJECTED_MARKER):
            return assigned_names(history[i]), assigned_names(history[i - 1])
    return [], []


def config_from_parameters(preset: str | None, namespace: Mapping) -> Config:
    """The Config of a notebook: `preset` plus every parameter assigned in `namespace`.

    Call it with `globals()` right after the `parameters` cell (and papermill's injected one).
    Every plain value (number, string, bool, None) assigned there is a Config field, except the
    notebook parameters of `NOTEBOOK_PARAMETERS` (and UPPER_CASE constants). Refused, with an
    error naming them, where papermill itself would only warn and run on:
    - a name papermill injected that the notebook's parameters cell does not assign (`-p lr 0.1`
      on a notebook that never reads `lr` would change nothing);
    - a plain value that is neither a Config field nor a notebook parameter (`-p n_bit 64`).
    In the smoke setting, an out_dir the notebook itself assigns becomes `smoke_out_dir(out_dir)`;
    one given from outside (tests, sweeps) is kept as it is.
    """
    injected, declared = injected_parameters(namespace.get("In"))
    undeclared = sorted(set(injected) - set(declared))
    if undeclared:
        raise ValueError(
            f"Parameter(s) {undeclared} were given to this notebook, but its parameters cell does "
            f"not assign them, so they would be ignored. Its parameters are: "
            f"{', '.join(declared)}. Check the spelling, or change them in a notebook that reads "
            "them.")
    plain = (int, float, str, bool, type(None))
    values = {k: v for k, v in namespace.items()
              if isinstance(v, plain) and not k.startswith("_") and not k.isupper()
              and k not in _IPYTHON_NAMES and k not in NOTEBOOK_PARAMETERS}
    unknown = sorted(set(values) - set(field_names()))
    if unknown:
        raise ValueError(
            f"Unknown parameter(s) {unknown}: they are neither fields of discomm_lite.Config nor "
            f"notebook parameters ({', '.join(NOTEBOOK_PARAMETERS)}). Check the spelling.")
    if is_smoke() and values.get("out_dir") and "out_dir" not in injected:
        values["out_dir"] = smoke_out_dir(values["out_dir"])
    return make_config(preset, **values)


# ---- tables --------------------------------------------------------------------------------------
class MarkdownText(str):
    """Markdown: a plain string that Jupyter displays rendered."""

    def _repr_markdown_(self) -> str:
        return str(self)


class MarkdownTable(MarkdownText):
    """A Markdown table (see `markdown_table`)."""


def show_source(*functions: Callable) -> MarkdownText:
    """The source code of library functions, as a Markdown code block (notebook 01 shows the
    maths next to its equations)."""
    import inspect

    return MarkdownText("\n".join(f"```python\n{inspect.getsource(f).rstrip()}\n```"
                                  for f in functions))


def _cell(value, digits: int) -> str:
    """One table cell: floats rounded, (mean, std) pairs as "m ± s" ("–" without a finite
    mean), None as "–"."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, tuple) and len(value) == 2 and all(
            isinstance(v, (int, float)) for v in value):
        mean, std = value
        return "–" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Mapping | Sequence[Sequence], header: Sequence[str], *,
                   digits: int = 3) -> MarkdownTable:
    """A Markdown table of `rows` under `header`, the one way the notebooks print tables.

    Args:
        rows: a list of rows (sequences of cells); or a mapping name -> value (two columns); or
            a mapping name -> record (dict), whose columns are `header[1:]`, read as keys.
            Floats are rounded to `digits`, a (mean, std) pair is written "mean ± std" ("–" when
            the mean is NaN: no value), None as "–", and "|" in text is escaped.
        header: the column titles.

    Returns:
        The table as a `MarkdownTable` (a string that Jupyter renders).
    """
    if isinstance(rows, Mapping):
        rows = [[name, *((record.get(k) for k in header[1:]) if isinstance(record, Mapping)
                         else [record])]
                for name, record in rows.items()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"A row has {len(row)} cells but the header has {len(header)}: {row}")
        lines.append("| " + " | ".join(_cell(v, digits) for v in row) + " |")
    return MarkdownTable("\n".join(lines))


# ---- runs ----------------------------------------------------------------------------------------
def run_dir(config: Config, root: str | Path = "runs") -> str:
    """A folder name that identifies a configuration (same parameters -> same cached run)."""
    values = {k: v for k, v in config.to_dict().items() if k != "out_dir"}
    digest = hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]
    return str(Path(root) / f"{config.method}-{digest}")


def cached_train(config: Config, root: str | Path = "runs", **train_kwargs):
    """Train `config` in its own folder under `root`, or return the finished run from there.

    A finished run is one whose checkpoint reached the last step; an unfinished one resumes.
    This is what makes moving an ablation slider back instant. No progress bar unless asked
    (`progress=True`): a notebook saved with its outputs keeps only a bar's first frame ("0%"),
    and the notebooks draw the run's records instead.
    """
    from discomm_lite.engine import train

    train_kwargs.setdefault("progress", False)
    return train(config.replace(out_dir=run_dir(config, root)), **train_kwargs)


def live_plot(keys: tuple[str, ...] = ("loss",), every: int = 1) -> Callable[[dict], None]:
    """A `train` callback that redraws the curves of `keys` in the notebook as records arrive.

    Outside a live notebook (papermill, nbval) nothing is drawn while training; the notebook
    draws its figures from the run's records afterwards.
    """
    records: list[dict] = []
    handle = None

    def callback(record: dict) -> None:
        nonlocal handle
        if record.get("kind") not in ("train", "eval"):
            return
        records.append(record)
        if is_smoke() or len(records) % every:
            return
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is None:
            return
        from discomm_lite.plots import plot_metrics

        figure = plot_metrics([r for r in records if any(k in r for k in keys)], list(keys))
        if handle is None:
            handle = display(figure, display_id=True)
        else:
            handle.update(figure)

    return callback


def augmented_views(config: Config, train_set, n: int = 6) -> tuple:
    """The first `n` images of a run's first batch, and the views the run trains on at step 1.

    The views come from the run's own batch source (`pipeline.make_train_views` of `config` on
    `train_set`, on the CPU): with `config.redraw_factors` each view is its own rendering of the
    image's object with those factors drawn again, so the views share only the other factors;
    then each view is augmented as in training (`augment.make_views`).

    Args:
        config: the run's configuration.
        train_set: the run's training set (`pipeline.load_splits`), an in-memory dataset.
        n: how many images to show, at most `config.batch_size`.

    Returns:
        (images, views): the dataset's images (n, 3, H, W) uint8, and one float (n, 3, S, S)
        tensor in [0, 1] per view, globals then locals (for `illustrations.plot_views`).
    """
    import torch

    from discomm_lite.data import ImageTensorDataset
    from discomm_lite.pipeline import epoch_order, make_train_views

    if not isinstance(train_set, ImageTensorDataset):
        raise ValueError(f"augmented_views shows in-memory datasets (synthetic, CIFAR); got a "
                         f"{type(train_set).__name__}.")
    if not 0 < n <= config.batch_size:
        raise ValueError(f"augmented_views shows 1 to batch_size = {config.batch_size} images "
                         f"of the first batch; got n = {n}.")
    views = next(make_train_views(config, train_set, torch.device("cpu")).epoch(0))
    # The first batch of epoch 0 is the head of the epoch's order (`InMemoryViews.epoch`).
    first = epoch_order(len(train_set), config.seed, 0)[:n]
    return train_set.images[first], [view[:n] for view in views]


def write_image_folder(dataset, root: str | Path, image_size: int | None = None) -> Path:
    """Write an in-memory dataset as an ImageFolder tree of PNGs (`root/<class>/<i>.png`).

    Used to give the ImageNet and domain-shift stages a tiny ImageFolder to run on in smoke
    settings, through exactly the code path real folders take.
    """
    import torch.nn.functional as F
    from PIL import Image

    root = Path(root)
    images = dataset.images
    if image_size is not None and images.shape[-1] != image_size:
        images = F.interpolate(images.float(), size=image_size, mode="bilinear",
                               antialias=True).round().clamp(0, 255).byte()
    for i, (image, label) in enumerate(zip(images, dataset.labels.tolist(), strict=True)):
        folder = root / dataset.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")
    return root
