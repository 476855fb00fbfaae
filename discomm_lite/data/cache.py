"""Decoding image files into one uint8 tensor, and the tensor cache that keeps the result.

Each cache entry is a .pt file holding {"images": (N, 3, H, W) uint8, "labels": (N,) int64,
"classes": [str]}, written under a temporary name and renamed into place in one step, so the
second load of a dataset takes well under a second.

An in-memory dataset may take at most `in_memory_budget()`: half the machine's memory. Sizes
are checked before anything is read or decoded (a small file can hold a huge image).
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

from discomm_lite.data.locations import make_cache_dir
from discomm_lite.data.types import DataFormatError, ImageTensorDataset
from discomm_lite.devices import device_memory

_UNKNOWN_MEMORY = 8 * 2**30  # the budget's base where the machine's memory is unknown (Windows)


def in_memory_budget() -> int:
    """Bytes an in-memory dataset may take, encoded or decoded: half the machine's memory."""
    return (device_memory(torch.device("cpu")) or _UNKNOWN_MEMORY) // 2


def check_in_memory_size(n_bytes: int, what: str) -> None:
    """Raise DataFormatError when `n_bytes` of `what` exceed `in_memory_budget()`."""
    budget = in_memory_budget()
    if n_bytes > budget:
        raise DataFormatError(
            f"{what} would take {n_bytes / 2**30:.2f} GiB of memory, more than an in-memory "
            f"dataset may take here ({budget / 2**30:.2f} GiB, half this machine's memory). "
            "Check that these are the images you meant; for large images use "
            "dataset='imagefolder', which reads them from disk one batch at a time."
        )


def decode_images(blobs: list[tuple[str, bytes]]) -> Tensor:
    """Decode (name, encoded bytes) pairs into one (N, 3, H, W) uint8 tensor.

    The images' sizes are read from their headers first, so that an image too large to decode
    safely (PIL's DecompressionBombError) or a set too large for memory is refused by name
    before anything is decoded. A 16-bit PNG keeps its range: each value's high byte (as PIL
    reduces 16-bit colour PNGs, and `types.ImageFolderDataset` greyscale ones). Raises
    DataFormatError naming the file that does not decode or has another size.
    """
    sizes = [_header_size(name, data) for name, data in blobs]  # (width, height) or None
    check_in_memory_size(sum(3 * w * h for w, h in filter(None, sizes)),
                         f"Decoding {len(blobs)} images ({blobs[0][0] if blobs else ''}, ...)")
    images = []
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders for torchcodec; they stay the fastest CPU
        # decoder at hand (3x PIL on CIFAR's 32-px JPEGs, with the same pixels).
        warnings.simplefilter("ignore", DeprecationWarning)
        for name, data in blobs:
            try:
                encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                image = decode_image(encoded, mode=ImageReadMode.RGB)
                if image.dtype == torch.uint16:  # 0..65535 -> 0..255 (int32: uint16 has no >>)
                    image = (image.to(torch.int32) >> 8).to(torch.uint8)
                images.append(image)
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


def _header_size(name: str, data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image's header (None when PIL cannot read it: the decoder then
    reports it), or a DataFormatError naming an image too large to decode safely."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Image.DecompressionBombError as err:
        raise DataFormatError(f"The image {name} is too large to decode safely: {err}") from None
    except (OSError, SyntaxError, ValueError):
        return None


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
