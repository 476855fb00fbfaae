"""The GPU notebooks on any machine (05, 07): what they compare with, what they refuse, what they
print before they need a GPU or a dataset.

- `LIGHTLY_CIFAR10`, `PAPER_IMAGENET`: numbers others published, each with its protocol and a
  link; their tables say "published" on every row. They are never this suite's measurements.
- `check_hardware`: the device of a notebook's default run, or a `NeedsGPUError` instead of hours
  of training silently started on a CPU (`allow_cpu` overrides it; the smoke setting is exempt).
- `launch_commands`: the torchrun commands of a run, for one node, for several, and for this
  machine; `smoke_note`: what the notebooks' smoke setting changes and how to run it.
- `smoke_image_folder`, `find_image_folder`: the tiny ImageFolder of the smoke setting, and the
  check of a dataset that stops a notebook only when it is about to train on it.

What a run's own records answer (the BCE at ln 2, each head reset) is in `teach.run_records`.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from discomm_lite.config import Config, make_config
from discomm_lite.teach.notebook import SMOKE_OVERRIDES, is_smoke
from discomm_lite.teach.tables import MarkdownText, markdown_table


# ---- numbers others published --------------------------------------------------------------
@dataclass(frozen=True)
class Published:
    """A table someone published: its rows, what they measure, where to read them."""

    title: str  # who measured what, e.g. "lightly's CIFAR-10 benchmark"
    url: str
    protocol: str  # how the numbers were measured, in a sentence or two
    columns: Mapping[str, str]  # key -> column title
    rows: Mapping[str, Mapping[str, float]]  # method -> key -> value
    note: str = ""
    # key -> its own rounding (None: as published, no trailing zeros added)
    digits: Mapping[str, int | None] = field(default_factory=dict)


    def table(self, keys: Sequence[str] | None = None, *, digits: int = 3) -> MarkdownText:
        """The rows as a Markdown table (every row marked "published"), then the source."""
        keys = list(self.columns) if keys is None else list(keys)

        def cell(row: Mapping[str, float], key: str):
            value = row.get(key)
            if key not in self.digits or value is None:
                return value
            places = self.digits[key]
            return f"{value:g}" if places is None else f"{value:.{places}f}"

        rows = [[f"{name} (published)", *(cell(row, key) for key in keys)]
                for name, row in self.rows.items()]
        table = markdown_table(rows, ["method", *(self.columns[k] for k in keys)], digits=digits)
        note = f" {self.note}" if self.note else ""
        return MarkdownText(f"{table}\n\nPublished by [{self.title}]({self.url}): "
                            f"{self.protocol}{note}")

    def value(self, method: str, key: str) -> float:
        """One published number (KeyError naming what exists when there is none)."""
        if method not in self.rows or key not in self.rows[method]:
            raise KeyError(f"{self.title} has no {key!r} for {method!r}; it has "
                           f"{sorted(self.rows)} x {sorted(self.columns)}.")
        return self.rows[method][key]


# docs/source/getting_started/benchmarks.rst at this commit of lightly-ai/lightly: the page's
# numbers change between versions, so the link is pinned to the one quoted.
LIGHTLY_BENCHMARKS_URL = ("https://github.com/lightly-ai/lightly/blob/"
                          "0243660ba10afc408e3f79541df537d8a2e24eb5/docs/source/getting_started/"
                          "benchmarks.rst#cifar-10")
LIGHTLY_DOCS_URL = "https://docs.lightly.ai/getting_started/benchmarks.html"
_LIGHTLY_512 = {  # method: (k-NN @ 200 epochs, minutes @ 200 epochs, k-NN @ 800 epochs)
    "BarlowTwins": (0.819, 153.3, 0.859), "BYOL": (0.868, 108.3, 0.910),
    "DCL": (0.840, 88.2, 0.874), "DCLW": (0.824, 87.9, 0.871), "DINO": (0.813, 108.6, 0.848),
    "FastSiam": (0.788, 146.9, 0.902), "MoCo*": (0.847, 112.2, 0.899),
    "NNCLR*": (0.815, 88.1, 0.892), "SimCLR": (0.848, 87.1, 0.879),
    "SimSiam": (0.764, 87.8, 0.904), "SwaV": (0.842, 88.7, 0.884), "SMoG": (0.686, 110.0, 0.800),
}
LIGHTLY_CIFAR10 = Published(
    title="lightly's CIFAR-10 benchmark", url=LIGHTLY_BENCHMARKS_URL,
    protocol=("ResNet-18 with a 3x3 stem and no max-pool, trained from scratch on the 50,000 "
              "training images at batch 512, no Gaussian blur; after every epoch a k-NN "
              "(k = 200) over all training images classifies the 10,000 test images, and the "
              "number reported is the best epoch's. Runtime on lightly's GPU (not named)."),
    columns={"knn200_top1": "k-NN top-1, 200 epochs", "minutes": "minutes, 200 epochs",
             "knn200_top1_800": "k-NN top-1, 800 epochs"},
    rows={name: {"knn200_top1": a, "minutes": m, "knn200_top1_800": b}
          for name, (a, m, b) in _LIGHTLY_512.items()},
    note=("*: memory bank of 8192 instead of 4096. The rendered page: "
          f"[docs.lightly.ai, Benchmarks]({LIGHTLY_DOCS_URL})."), digits={"minutes": 1})

PAPER_URL = "https://arxiv.org/abs/2602.09764"
PAPER_IMAGENET = Published(
    title="Zaher et al. 2026, Table 1", url=PAPER_URL,
    protocol=("ViT-B/16 trained from scratch on ImageNet-1k for 100 epochs at batch 256 (the "
              "protocol of notebook 07); k-NN and linear probe top-1 on the validation set, "
              "retrieval mAP@ALL on the FFPQ split; percentages."),
    columns={"map": "retrieval mAP", "knn": "k-NN top-1", "linear": "linear top-1"},
    rows={"DINO": {"map": 35.68, "knn": 72.39, "linear": 76.3},
          "SimDINO": {"map": 38.62, "knn": 69.52, "linear": 75.3},
          "BITS-fixed": {"map": 43.44, "knn": 73.32, "linear": 76.7},
          "BITS-reset (n = 10)": {"map": 50.64, "knn": 73.5, "linear": 77.8}},
    digits={"map": None, "knn": None, "linear": None})


# ---- a long run on a CPU -------------------------------------------------------------------
class NeedsGPUError(RuntimeError):
    """A notebook's default run would train for hours on a CPU: refused unless asked for."""


TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000}  # training split sizes, for the steps


def optimiser_steps(config: Config) -> int | None:
    """How many steps `config` trains for (None when its dataset's size is not known here)."""
    images = config.train_subset or TRAIN_IMAGES.get(config.dataset)
    return None if not images else config.epochs * (images // config.batch_size)


def check_hardware(config: Config, allow_cpu: bool = False):
    """The device `config` trains on; NeedsGPUError when that is a CPU, unless `allow_cpu` or the
    smoke setting (seconds on any machine).

    The message says what the run is, that it was not started, what the notebook shows without
    a GPU, and the two ways on: a GPU, or `allow_cpu = True` (`-p allow_cpu True`).
    """
    from discomm_lite.distributed import resolve_device

    device = resolve_device(config.device)
    if device.type == "cuda" or allow_cpu or is_smoke():
        return device
    steps = optimiser_steps(config)
    size = f"{steps:,} optimiser steps at batch {config.batch_size}" if steps else (
        f"batch {config.batch_size}")
    raise NeedsGPUError(
        f"Not started: this run is {config.epochs} epochs of {config.backbone} ({size}), hours "
        f"on one GPU, and this machine has no CUDA GPU that torch can use (device = "
        f"{config.device!r} is the CPU here). The sections above need no GPU. To train, run "
        "this notebook on a machine with a GPU; to start it on this CPU anyway (many times "
        "longer), set allow_cpu = True in the parameters cell (papermill: -p allow_cpu True), "
        "or shrink the run first (epochs, train_subset, backbone: see the exercises).")


# ---- torchrun ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LaunchCommands:
    """The torchrun commands of one run (see `launch_commands`); str() shows them all."""

    train_args: tuple[str, ...]  # after the launcher: -m discomm_lite train --preset ...
    nproc_here: int  # processes on this machine: its GPUs, or 1
    nodes: int
    gpus_per_node: int

    @property
    def one_node(self) -> str:
        """One node, one process per GPU (torchrun counts them: --nproc_per_node=gpu)."""
        return shlex.join(["torchrun", "--standalone", "--nproc_per_node=gpu",
                           *self.train_args])

    @property
    def multi_node(self) -> str:
        """`nodes` nodes of `gpus_per_node` GPUs: the same line on every node."""
        return ("torchrun " + shlex.join([
            f"--nnodes={self.nodes}", f"--nproc_per_node={self.gpus_per_node}",
            "--rdzv_id=bits-run", "--rdzv_backend=c10d"])
            + " --rdzv_endpoint=$HEAD_NODE:29400 " + shlex.join(self.train_args))

    @property
    def local(self) -> list[str]:
        """This machine, through this Python (`python -m torch.distributed.run` is torchrun)."""
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={self.nproc_here}", *self.train_args]

    def __str__(self) -> str:
        return (f"# one node (one process per GPU):\n{self.one_node}\n\n"
                f"# {self.nodes} nodes of {self.gpus_per_node} GPUs (the same line on every "
                "node; $HEAD_NODE is the host name of one of them):\n"
                f"{self.multi_node}\n\n"
                f"# this machine ({self.nproc_here} process(es)), as the launch cell runs it:\n"
                f"{shlex.join(self.local)}")


def launch_commands(config: Config, preset: str, *, nodes: int = 2,
                    gpus_per_node: int = 8) -> LaunchCommands:
    """The commands that train `config`: `--preset` then only the fields that differ from it
    (the command reads "the preset, except ..."), and `--out` its run folder."""
    import torch

    base = make_config(preset)
    changed = {k: v for k, v in config.to_dict().items()
               if k != "out_dir" and v != getattr(base, k)}
    train_args = ("-m", "discomm_lite", "train", "--preset", preset,
                  *(f"--{k}={v}" for k, v in changed.items()), "--out", str(config.out_dir))
    return LaunchCommands(train_args, max(1, torch.cuda.device_count()), nodes, gpus_per_node)


def smoke_note(notebook: str, **extra) -> str:
    """What the smoke setting of `notebook` changes (`SMOKE_OVERRIDES` and `extra`), whether it
    is on, and the command that runs it."""
    changes = ", ".join(f"{k} = {v!r}" for k, v in {**SMOKE_OVERRIDES, **extra}.items())
    state = ("ON: the commands above are the smoke run's" if is_smoke() else
             "off: the commands above are the default run's")
    return (f"# The smoke setting (DISCOMM_SMOKE=1, what the tests run, seconds on a CPU) is "
            f"{state}.\n# It changes: {changes}.\n# Run it: DISCOMM_SMOKE=1 papermill "
            f"notebooks/{notebook}.ipynb /tmp/{notebook}-smoke.ipynb")


# ---- ImageFolder data ----------------------------------------------------------------------
def smoke_image_folder(config: Config) -> Config:
    """In the smoke setting, `config` reading a tiny ImageFolder written under its out_dir
    (synthetic images as small PNGs, `train/` and `val/`), so that a run takes exactly the path
    ImageNet takes; outside it, `config` unchanged."""
    if not is_smoke():
        return config
    from discomm_lite.data import load_dataset
    from discomm_lite.data.folders import write_image_folder

    root = Path(config.out_dir) / "imagefolder"
    for split, folder, n in (("train", "train", config.train_subset),
                             ("test", "val", config.test_subset)):
        write_image_folder(load_dataset("synthetic", split, n_samples=n, seed=config.seed),
                           root / folder, image_size=config.image_size)
    return config.replace(data_root=str(root))


def find_image_folder(config: Config, *, required: bool):
    """The ImageFolder training split `config` reads, or None, printing why, when it is absent
    and not `required` (a notebook that only prints commands goes on); absent and `required`
    raises the library's DatasetNotFoundError (where it looked, how to provide the data)."""
    from discomm_lite.data import DatasetNotFoundError, load_dataset

    try:
        train_set = load_dataset("imagefolder", "train", config.data_root)
    except DatasetNotFoundError as missing:
        if required:
            raise
        print(f"No dataset here, and nothing will be launched here (launch_here = False): run "
              "one of the commands above on a machine that has it. The cells below follow and "
              "evaluate a run whose folder is here, and say so when there is none.\n\n"
              f"{missing}")
        return None
    print(f"{len(train_set)} training images in {len(train_set.classes)} classes")
    return train_set
