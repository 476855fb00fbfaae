"""Decoding image files into one uint8 tensor, and the tensor cache that keeps the result.

Each cache entry is a .pt file holding {"images": (N, 3, H, W) uint8, "labels": (N,) int64,
"classes": [str]}, written under a temporary name and renamed into place in one step, so the
second load of a dataset takes well under a second.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

from discomm_lite.data.locations import make_cache_dir
from discomm_lite.data.types import DataFormatError, ImageTensorDataset


def decode_images(blobs: list[tuple[str, bytes]]) -> Tensor:
    """Decode (name, encoded bytes) pairs into one (N, 3, H, W) uint8 tensor.

    Raises DataFormatError naming the file that does not decode or has another size.
    """
    images = []
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders for torchcodec; they stay the fastest CPU
        # decoder at hand (3x PIL on CIFAR's 32-px JPEGs, with the same pixels).
        warnings.simplefilter("ignore", DeprecationWarning)
        for name, data in blobs:
            try:
                encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                images.append(decode_image(encoded, mode=ImageReadMode.RGB))
            except (RuntimeError, ValueError) as err:
                raise DataFormatError(f"Cannot decode the image {name}: {err}") from err
    for (name, _), image in zip(blobs, images, strict=True):
        if image.shape != images[0].shape or image.dtype != torch.uint8:
            raise DataFormatError(
                f"The image {name} is {tuple(image.shape)} {image.dtype}, but {blobs[0][0]} is "
                f"{tuple(images[0].shape)} uint8: an in-memory dataset needs images of one size "
                "with 8 bits per channel."
            )
    return torch.stack(images)


def save_tensors(dataset: ImageTensorDataset, path: Path) -> None:
    """Write images, labels and classes to `path` under a temporary name, then rename it."""
    make_cache_dir(path.parent)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial",
                                         dir=path.parent)
    os.close(handle)
    os.chmod(temporary, 0o644)  # mkstemp makes it private; a cache folder may be shared by users
    try:
        torch.save({"images": dataset.images, "labels": dataset.labels,
                    "classes": list(dataset.classes)}, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def load_tensors(path: Path) -> ImageTensorDataset:
    """The dataset `save_tensors` wrote at `path` (tensors only: weights_only loading)."""
    payload = torch.load(path, weights_only=True)
    return ImageTensorDataset(payload["images"], payload["labels"], payload["classes"])
