"""`load_dataset`: the one entry point from a dataset's name and split to its images."""

from __future__ import annotations

import os

from discomm_lite.choices import DATASETS, SPLITS
from discomm_lite.data.cifar import load_cifar
from discomm_lite.data.folders import load_imagefolder
from discomm_lite.data.locations import resolve_data_root
from discomm_lite.data.synthetic import make_synthetic
from discomm_lite.data.types import ImageFolderDataset, ImageTensorDataset

_SYNTHETIC_SIZES = {"train": 4096, "test": 1024}


def load_dataset(
    name: str,
    split: str,
    data_root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    image_size: int | None = None,
    n_samples: int | None = None,
    seed: int = 0,
) -> ImageTensorDataset | ImageFolderDataset:
    """Load split "train" or "test" of dataset `name` (one of `DATASETS`).

    Args:
        name: "synthetic" (rendered in code), "cifar10"/"cifar100" (held in memory) or
            "imagefolder" (<root>/train/<class>/<image>, test split from val/ or test/).
        split: "train" or "test".
        data_root: where to look; None means $DISCOMM_DATA, else ./data.
        download: let torchvision download CIFAR into the data root when no copy is found.
        image_size: side of the synthetic images (default 32); other datasets keep their own
            size and ignore it (`make_eval_batches` resizes).
        n_samples: number of synthetic images (default 4096 train, 1024 test).
        seed: synthetic only; the splits use the distinct seeds 2 * seed and 2 * seed + 1.

    Raises:
        DatasetNotFoundError: nothing found; the message lists every path looked at.
        DataFormatError: a file is corrupt, a folder is empty, or the layout is wrong.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}: expected one of {', '.join(DATASETS)}.")
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: expected one of {', '.join(SPLITS)}.")
    if name == "synthetic":
        n = _SYNTHETIC_SIZES[split] if n_samples is None else n_samples
        return make_synthetic(n, image_size=32 if image_size is None else image_size,
                              seed=2 * seed + (split == "test"))
    if n_samples is not None:
        raise ValueError(
            f"n_samples applies to the synthetic dataset only; for {name!r} take a random "
            "subset with dataset.subset(n, seed) instead."
        )
    root = resolve_data_root(data_root)
    if name == "imagefolder":
        return load_imagefolder(root, split)
    return load_cifar(name, split, root, download)
