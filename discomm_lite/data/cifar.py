"""CIFAR-10/100 held in memory, from torchvision's files, an ImageFolder tree, or its archive.

`load_cifar` looks under the data root in that order, and downloads through torchvision only
when asked. A tree is decoded once into <cache>/trees/<name>-<split>-<hash of its files>.pt.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import torch
from torchvision.datasets import CIFAR10, CIFAR100

from discomm_lite.data.archives import find_archives, load_cifar_archive
from discomm_lite.data.cache import decode_images, load_tensors, save_tensors
from discomm_lite.data.folders import check_class_count, scan_split
from discomm_lite.data.locations import cache_root, data_root_setting
from discomm_lite.data.types import DataFormatError, DatasetNotFoundError, ImageTensorDataset

_CIFAR = {"cifar10": (CIFAR10, "CIFAR-10", 10), "cifar100": (CIFAR100, "CIFAR-100", 100)}
# torchvision's CIFAR-10 label order, as published with the dataset (batches.meta).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def load_cifar(name: str, split: str, root: Path, download: bool) -> ImageTensorDataset:
    """CIFAR from torchvision's files, an ImageFolder tree or a tar.gz of one, in that order."""
    tv_class, title, n_classes = _CIFAR[name]
    torchvision_dir = root / tv_class.base_folder
    if torchvision_dir.is_dir():
        return _load_torchvision_cifar(tv_class, split, root)
    tree_roots = [root / name, root]
    for tree_root in tree_roots:
        if (tree_root / split).is_dir():
            return _load_cifar_tree(name, tree_root, split, n_classes)
    archives = find_archives(root, name)
    if archives:
        return load_cifar_archive(archives[0], split, n_classes)

    looked_at = [f"{torchvision_dir}/  (torchvision's files)",
                 *(f"{tree_root / split}/<class>/<image>  (ImageFolder tree)"
                   for tree_root in tree_roots),
                 f"{root / name}*.tar.gz  (archive of such a tree)"]
    message = _cifar_not_found(name, title, split, root, looked_at)
    if not download:
        raise DatasetNotFoundError(message)
    try:
        cifar = tv_class(root, train=split == "train", download=True)  # checks the md5 sums
    except (OSError, RuntimeError) as err:  # no network raises URLError, an OSError
        raise DatasetNotFoundError(f"{message}\nThe download failed: {err}") from err
    return _from_torchvision(cifar)


def _cifar_not_found(name: str, title: str, split: str, root: Path, looked_at: list[str]) -> str:
    """What was looked for, where, and the ways to provide it."""
    return (
        f"{title} ({split!r} split) was not found under the data root {root}. Looked at:"
        + "".join(f"\n  {path}" for path in looked_at)
        + "\nThe data root is the data_root argument, else the DISCOMM_DATA environment variable "
        f"(now {data_root_setting()}), else ./data. Do one of:\n"
        "  - download it (needs internet): python -c \"from discomm_lite.data import "
        f"load_dataset; load_dataset('{name}', '{split}', '{root}', download=True)\"\n"
        f"  - put {name}-jpeg.tar.gz (an archive of train/<class>/*.jpg and test/<class>/*.jpg) "
        f"or that ImageFolder tree in {root}\n"
        "  - set DISCOMM_DATA to the folder that already holds one of these"
    )


def _load_torchvision_cifar(tv_class: type[CIFAR10], split: str, root: Path
                            ) -> ImageTensorDataset:
    """CIFAR from torchvision's pickled batches in <root>/cifar-10-batches-py (or -100-python)."""
    try:
        cifar = _without_checksums(tv_class)(root, train=split == "train")
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as err:
        raise DataFormatError(
            f"Cannot read torchvision's {tv_class.__name__} files in "
            f"{root / tv_class.base_folder}: {err!r}"
        ) from err
    return _from_torchvision(cifar)


def _without_checksums(tv_class: type[CIFAR10]) -> type[CIFAR10]:
    """`tv_class`, checking that its files exist but not their md5 sums.

    The sums pin the official files and would reject a re-pickled or reduced copy (like the
    tests' fake batches); a damaged file still fails when it is unpickled. Downloads keep them.
    """
    def unchecked(files: list[list[str]]) -> list[list[str | None]]:
        return [[filename, None] for filename, _ in files]

    return type(tv_class.__name__, (tv_class,), {
        "train_list": unchecked(tv_class.train_list),
        "test_list": unchecked(tv_class.test_list),
        "meta": {**tv_class.meta, "md5": None},
    })


def _from_torchvision(cifar: CIFAR10) -> ImageTensorDataset:
    images = torch.from_numpy(cifar.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    labels = torch.tensor(cifar.targets, dtype=torch.int64)
    return ImageTensorDataset(images, labels, list(cifar.classes))


def _load_cifar_tree(name: str, tree_root: Path, split: str, n_classes: int
                     ) -> ImageTensorDataset:
    """CIFAR from <tree_root>/<split>/<class>/<image>, through a tensor cache of the decoding."""
    split_dir = tree_root / split
    classes, samples = scan_split(tree_root, split_dir)
    check_class_count(classes, n_classes, str(split_dir))
    cache_file = cache_root() / "trees" / f"{name}-{split}-{_tree_key(split_dir, samples)}.pt"
    if cache_file.is_file():
        return load_tensors(cache_file)
    images = decode_images([(path, Path(path).read_bytes()) for path, _ in samples])
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    dataset = ImageTensorDataset(images, labels, classes)
    save_tensors(dataset, cache_file)
    return dataset


def _tree_key(split_dir: Path, samples: list[tuple[str, int]]) -> str:
    """A hash of the tree's location and of each file's name, size and mtime."""
    digest = hashlib.sha1(str(split_dir.resolve()).encode())
    for path, _ in samples:
        stat = os.stat(path)
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]
