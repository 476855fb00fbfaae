"""CIFAR-10/100 held in memory, from torchvision's files, an ImageFolder tree, or its archive.

`load_cifar` looks under the data root in that order, and downloads through torchvision only
when asked. A tree is decoded once into <cache>/trees/<name>-<split>-<hash of its files>.pt.

torchvision's files are Python pickles, and unpickling a planted one would run its code; they
are read by a restricted reader that resolves only NumPy's array type (`safe_pickle`), which
also reads copies whose md5 sums differ from the published ones (re-pickled or reduced files,
like the tests'). Downloads go through torchvision, which checks those sums.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from discomm_lite.data.archives import find_archives, load_cifar_archive
from discomm_lite.data.cache import decode_images, load_tensors, save_tensors
from discomm_lite.data.folders import check_class_count, is_folder, scan_split
from discomm_lite.data.locations import cache_root, data_root_setting
from discomm_lite.data.types import DataFormatError, DatasetNotFoundError, ImageTensorDataset
from discomm_lite.safe_pickle import RefusedGlobal, UnsafePickle, load_restricted

_CIFAR = {"cifar10": (CIFAR10, "CIFAR-10", 10), "cifar100": (CIFAR100, "CIFAR-100", 100)}
# torchvision's CIFAR-10 label order, as published with the dataset (batches.meta).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """`_codecs.encode` as Python 3 pickles bytes at protocol 2, for latin1 only."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected encoding {encoding!r} in a CIFAR file")
    return text.encode("latin-1")


# What a CIFAR file may import: NumPy's array unpicklers (protocols 2-4 and 5, under their NumPy
# 1 and 2 module names), the array and dtype types, and the bytes of a protocol-2 pickle. None of
# them runs code.
_RECONSTRUCT = np.zeros(1, np.uint8).__reduce__()[0]
_FROMBUFFER = np.zeros(1, np.uint8).__reduce_ex__(5)[0]
_CIFAR_GLOBALS = {f"numpy.{core}.{module}.{function.__name__}": function
                  for core in ("core", "_core")
                  for module, function in (("multiarray", _RECONSTRUCT), ("numeric", _FROMBUFFER))}
_CIFAR_GLOBALS.update({"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype,
                       "_codecs.encode": _latin1_bytes})


def load_cifar(name: str, split: str, root: Path, download: bool) -> ImageTensorDataset:
    """CIFAR from torchvision's files, an ImageFolder tree or a tar.gz of one, in that order."""
    tv_class, title, n_classes = _CIFAR[name]
    torchvision_dir = root / tv_class.base_folder
    if is_folder(torchvision_dir):
        return _load_torchvision_cifar(tv_class, split, root)
    tree_roots = [root / name, root]
    for tree_root in tree_roots:
        if is_folder(tree_root / split):
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
    """CIFAR from torchvision's pickled batches in <root>/cifar-10-batches-py (or -100-python).

    Read with `safe_pickle.load_restricted` (NumPy arrays and plain values only); a file that
    imports anything else is refused, naming it, before any of its code runs.
    """
    folder = root / tv_class.base_folder
    files = tv_class.train_list if split == "train" else tv_class.test_list
    path = folder
    try:
        rows, labels = [], []
        for filename, _ in files:
            path = folder / filename
            entry = _read_pickle(path)
            rows.append(entry["data"])
            labels += entry["labels"] if "labels" in entry else entry["fine_labels"]
        path = folder / tv_class.meta["filename"]
        classes = list(_read_pickle(path)[tv_class.meta["key"]])
    except RefusedGlobal as err:
        raise DataFormatError(
            f"{path} is not one of torchvision's CIFAR files: it is a pickle that imports "
            f"{err.name}, which could run code, so it was refused before anything in it ran. "
            f"Replace {folder} with the official files (or delete it and download them)."
        ) from None
    except UnsafePickle as err:
        raise DataFormatError(
            f"{path} is not one of torchvision's CIFAR files: {err}, so it was refused before "
            f"any of it was built. Replace {folder} with the official files.") from None
    except (OSError, EOFError, KeyError, TypeError, ValueError, pickle.UnpicklingError) as err:
        raise DataFormatError(
            f"Cannot read torchvision's {tv_class.__name__} file {path}: {err!r}") from err
    return _as_dataset(rows, labels, classes, folder)


def _read_pickle(path: Path) -> dict:
    """One CIFAR pickle as a dict, read with only `_CIFAR_GLOBALS` allowed."""
    with path.open("rb") as f:
        entry = load_restricted(f, _CIFAR_GLOBALS, encoding="latin1")
    if not isinstance(entry, dict):
        raise TypeError(f"it holds a {type(entry).__name__}, not a dict")
    return entry


def _as_dataset(rows: list, labels: list, classes: list, folder: Path) -> ImageTensorDataset:
    """Rows (n, 3072) uint8 of red, green and blue planes, as (N, 3, 32, 32) images."""
    if not all(isinstance(r, np.ndarray) and r.dtype == np.uint8 and r.ndim == 2
               and r.shape[1] == 3 * 32 * 32 for r in rows):
        raise DataFormatError(f"The batches in {folder} do not hold (n, 3072) uint8 pixel rows.")
    if not all(isinstance(c, str) for c in classes) or not all(
            isinstance(y, int) and 0 <= y < len(classes) for y in labels):
        raise DataFormatError(f"The labels or class names in {folder} are not valid: labels "
                              f"must index the {len(classes)} class names.")
    images = torch.from_numpy(np.concatenate(rows).reshape(-1, 3, 32, 32))  # (N, 3, 32, 32)
    if len(images) != len(labels):
        raise DataFormatError(f"The batches in {folder} hold {len(images)} images but "
                              f"{len(labels)} labels.")
    return ImageTensorDataset(images, torch.tensor(labels, dtype=torch.int64), classes)


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
    """A hash of the tree's location and of each file's name, inode, size, mtime and ctime.

    The ctime is the system's own and changes with every write to the file (an mtime can be set
    back, `cp -p` does); the inode changes when a file is replaced. Reading every file's bytes
    instead would cost what decoding them costs.
    """
    digest = hashlib.sha1(str(split_dir.resolve()).encode())
    for path, _ in samples:
        stat = os.stat(path)
        digest.update(f"{path}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:"
                      f"{stat.st_ctime_ns}\n".encode())
    return digest.hexdigest()[:12]
