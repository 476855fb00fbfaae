"""What the notebooks share: the smoke setting and its data, cached runs and live plots.

The notebooks call these so that no cell holds logic of its own (their parameters: `papermill`;
their tables: `tables`; the study's results: `study_report`; the ablation lab of notebook 03:
`lab`). `DISCOMM_SMOKE=1` (set by the test suite for nbval and papermill) shrinks any run to
seconds through `smoke`, keeps smoke runs out of the folders real runs use, and lets
`find_data_root` stand in for a missing CIFAR-10, so the smoke setting needs no download.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from discomm_lite.config import Config

# The fast setting of every notebook in CI: one short epoch on a few hundred images.
SMOKE_OVERRIDES = dict(
    epochs=1, warmup_epochs=0, train_subset=256, test_subset=128, batch_size=64,
    eval_every=1, log_every=1, head_hidden_dim=128,
)


# Appended to a notebook's own out_dir in the smoke setting, so that a smoke run (nbval starts its
# kernels in notebooks/, as Jupyter does) never lands in, or is refused by, a real run's folder.
SMOKE_SUFFIX = "-smoke"


def is_smoke() -> bool:
    """Whether the notebooks run in their smoke setting (environment variable DISCOMM_SMOKE)."""
    return os.environ.get("DISCOMM_SMOKE", "") not in ("", "0")


def smoke(config: Config, **extra) -> Config:
    """`config` shrunk to the smoke setting when `is_smoke()`, else `config` unchanged.

    `extra` adds notebook-specific overrides (a smaller backbone, smaller crops). The run folder
    is chosen by `config_from_parameters`: in the smoke setting a notebook's own out_dir gets
    the suffix `SMOKE_SUFFIX`.
    """
    changes = smoke_changes(**extra)
    return config.replace(**changes) if changes else config


def smoke_changes(**extra) -> dict:
    """What the smoke setting changes on a run (`SMOKE_OVERRIDES` and `extra`); {} outside it."""
    return {**SMOKE_OVERRIDES, **extra} if is_smoke() else {}


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
    from discomm_lite.api import train

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
        from discomm_lite.viz.plots import plot_metrics

        figure = plot_metrics([r for r in records if any(k in r for k in keys)], list(keys))
        if handle is None:
            handle = display(figure, display_id=True)
        else:
            handle.update(figure)

    return callback


def measured_costs() -> dict:
    """The measured cost of the studies' runs by dataset (the "runs" of notebooks/costs.json,
    found in the working folder or the nearest folder above it), for the lab's estimates; {}
    without that file."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        for path in (folder / "costs.json", folder / "notebooks" / "costs.json"):
            if path.is_file():
                return json.loads(path.read_text()).get("runs", {})
    return {}
