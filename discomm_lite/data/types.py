"""The two dataset types and the data errors: images held in memory, or an ImageFolder on disk.

solo-learn keeps its data sources apart from its transforms (solo/data/); here the sources
(`cifar`, `folders`, `archives`, `synthetic`) all return one of these two types, and every
consumer (the training views, the evaluation batches) takes either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from PIL import Image
from torch import Tensor


class DatasetNotFoundError(FileNotFoundError):
    """No copy of a dataset was found under the data root, and none could be downloaded."""


class DataFormatError(ValueError):
    """A dataset file or folder exists but cannot be used: corrupt, empty or misarranged."""


@dataclass
class ImageTensorDataset:
    """A dataset held in memory as one uint8 tensor (synthetic images, CIFAR).

    Attributes:
        images: (N, 3, H, W) uint8.
        labels: (N,) int64 indices into `classes`.
        classes: class names in label order.
        factors: (N, F) int64 ground-truth binary factors (synthetic data only), else None.
        factor_names: the F factor names, else None.
    """

    images: Tensor
    labels: Tensor
    classes: list[str]
    factors: Tensor | None = None
    factor_names: list[str] | None = None

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images must be an (N, 3, H, W) uint8 tensor, got {tuple(images.shape)} "
                f"{images.dtype}."
            )
        if labels.dtype != torch.int64 or labels.shape != (len(images),):
            raise ValueError(
                f"labels must be an ({len(images)},) int64 tensor, got {tuple(labels.shape)} "
                f"{labels.dtype}."
            )
        if (self.factors is None) != (self.factor_names is None):
            raise ValueError("factors and factor_names must be given together.")
        if self.factors is not None and (
                self.factors.dtype != torch.int64
                or self.factors.shape != (len(images), len(self.factor_names))):
            raise ValueError(
                f"factors must be an ({len(images)}, {len(self.factor_names)}) int64 tensor to "
                f"match images and factor_names, got {tuple(self.factors.shape)} "
                f"{self.factors.dtype}."
            )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int, seed: int = 0) -> ImageTensorDataset:
        """`n` images drawn at random, each class in proportion to its size; deterministic."""
        index = _stratified_indices(self.labels, n, seed)
        factors = None if self.factors is None else self.factors[index]
        return replace(self, images=self.images[index], labels=self.labels[index],
                       factors=factors)


@dataclass
class ImageFolderDataset:
    """An ImageFolder tree (ImageNet-1k or any user dataset), read from disk image by image.

    Attributes:
        samples: (path, label) pairs, sorted by class, then by file name.
        classes: class names (the sorted folder names) in label order.
        transform: applied to each RGB PIL image by `__getitem__` when given.
    """

    samples: list[tuple[str, int]]
    classes: list[str]
    transform: Callable[[Image.Image], Any] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """(RGB PIL image, or its `transform`; label) of sample `index`."""
        path, label = self.samples[index]
        image = _open_rgb(path)
        return (image if self.transform is None else self.transform(image)), label

    @property
    def labels(self) -> Tensor:
        """(N,) int64 labels of the samples."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def subset(self, n: int, seed: int = 0) -> ImageFolderDataset:
        """`n` samples drawn at random, each class in proportion to its size; deterministic."""
        index = _stratified_indices(self.labels, n, seed)
        return replace(self, samples=[self.samples[i] for i in index.tolist()])


def _stratified_indices(labels: Tensor, n: int, seed: int) -> Tensor:
    """Sorted indices of `n` samples drawn without replacement, classes in proportion."""
    if not 0 <= n <= len(labels):
        raise ValueError(f"Cannot take a subset of {n} samples from a dataset of {len(labels)}.")
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=generator)
    shuffled = labels[perm]  # (N,)
    counts = torch.bincount(shuffled)
    order = torch.argsort(shuffled, stable=True)
    rank = torch.empty_like(perm)  # rank of each shuffled sample within its class
    rank[order] = torch.arange(len(labels)) - (torch.cumsum(counts, 0) - counts)[shuffled[order]]
    # Class c's samples get keys (0.5, 1.5, ...) / count_c: the n smallest keys take every class
    # at the same rate, and ties between classes fall in random (shuffled) order.
    key = (rank.double() + 0.5) / counts[shuffled].double()
    return perm[torch.argsort(key, stable=True)[:n]].sort().values


def _open_rgb(path: str) -> Image.Image:
    """The image at `path` as 8-bit RGB, or a DataFormatError that names the file.

    A 16-bit greyscale PNG (PIL's modes "I;16..." and "I") keeps its range: each value's high
    byte, as PIL reduces 16-bit colour PNGs and `cache.decode_images` both kinds (PIL's own
    convert("RGB") would clip everything above 255 to white).
    """
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I"):
                return _high_byte_rgb(image, path)
            return image.convert("RGB")  # convert() reads the pixels, so truncation fails here
    except Image.DecompressionBombError as err:  # PIL's guard against a huge image in a small file
        raise DataFormatError(
            f"The image {path} is too large to decode safely: {err} If it is meant to be that "
            "large, raise PIL.Image.MAX_IMAGE_PIXELS; else remove it.") from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL reports some broken files as such
        raise DataFormatError(f"Cannot read the image {path}: {err}") from err


def _high_byte_rgb(image: Image.Image, path: str) -> Image.Image:
    """A 16-bit greyscale image as 8-bit RGB: the high byte of each value (0..65535 -> 0..255)."""
    import numpy as np

    values = np.asarray(image)  # (H, W) uint16, or int32 for mode "I"
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise DataFormatError(f"The image {path} holds values outside 0..65535 (PIL mode "
                              f"{image.mode}): only 8- and 16-bit images are read.")
    return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8), "L").convert("RGB")
