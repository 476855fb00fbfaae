"""What the notebooks share: the smoke setting and its data, live plots, a run cache.

The notebooks call these so that no cell holds logic of its own. `DISCOMM_SMOKE=1` (set by the
test suite for nbval and papermill) shrinks any run to seconds through `smoke`, and lets
`find_data_root` stand in for a missing CIFAR-10, so the smoke setting needs no download.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from discomm_lite.config import Config, make_config

# The fast setting of every notebook in CI: one short epoch on a few hundred images.
SMOKE_OVERRIDES = dict(
    epochs=1, warmup_epochs=0, train_subset=256, test_subset=128, batch_size=64,
    eval_every=1, log_every=1, head_hidden_dim=128,
)


def is_smoke() -> bool:
    """Whether the notebooks run in their smoke setting (environment variable DISCOMM_SMOKE)."""
    return os.environ.get("DISCOMM_SMOKE", "") not in ("", "0")


def smoke(config: Config, **extra) -> Config:
    """`config` shrunk to the smoke setting when `is_smoke()`, else `config` unchanged.

    `extra` adds notebook-specific overrides (a smaller backbone, smaller crops).
    """
    if not is_smoke():
        return config
    return config.replace(**{**SMOKE_OVERRIDES, **extra})


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


def config_from_parameters(preset: str | None, namespace: dict) -> Config:
    """The Config of a notebook: `preset` plus every parameter assigned in `namespace`.

    Call it with `globals()` right after the `parameters` cell (and papermill's injected one):
    every plain value (number, string, bool, None) assigned there is taken as a Config field
    (UPPER_CASE constants excepted), so
    a misspelt `papermill -p n_bit 64` raises an error naming the field, where papermill itself
    would only warn and run with the default.
    """
    plain = (int, float, str, bool, type(None))
    values = {k: v for k, v in namespace.items()
              if isinstance(v, plain) and not k.startswith("_") and not k.isupper()
              and k not in _IPYTHON_NAMES}
    return make_config(preset, **values)


# Names IPython defines in every namespace; never parameters.
_IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython"})


def run_dir(config: Config, root: str | Path = "runs") -> str:
    """A folder name that identifies a configuration (same parameters -> same cached run)."""
    values = {k: v for k, v in config.to_dict().items() if k != "out_dir"}
    digest = hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]
    return str(Path(root) / f"{config.method}-{digest}")


def cached_train(config: Config, root: str | Path = "runs", **train_kwargs):
    """Train `config` in its own folder under `root`, or return the finished run from there.

    A finished run is one whose checkpoint reached the last step; an unfinished one resumes.
    This is what makes moving an ablation slider back instant.
    """
    from discomm_lite.engine import train

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
        import matplotlib.pyplot as plt

        plt.close(figure)

    return callback


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
