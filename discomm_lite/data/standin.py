"""A small CIFAR-10 stand-in archive for offline smoke runs and tests.

It has CIFAR-10's classes and archive layout, so it is read through the real archive path, but
its pictures are synthetic shapes (`data.synthetic`), not photographs.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
from pathlib import Path

import torch
from PIL import Image

from discomm_lite.data.cifar import CIFAR10_CLASSES
from discomm_lite.data.locations import cache_root, make_cache_dir
from discomm_lite.data.synthetic import SYNTHETIC_FACTORS, render_synthetic

CIFAR10_STANDIN = "cifar10-standin.tar.gz"


def write_cifar10_standin(
    root: str | os.PathLike,
    *,
    train_per_class: int = 40,
    test_per_class: int = 20,
    seed: int = 0,
) -> Path:
    """Write <root>/cifar10-standin.tar.gz: a small archive in the layout of CIFAR-10's.

    Members are train/<class>/<k>.jpg and test/<class>/<k>.jpg, 32 x 32 JPEGs, in CIFAR-10's ten
    classes, exactly as in cifar10-jpeg.tar.gz, so `load_dataset("cifar10", split, root)` reads
    it through the real archive path (archive -> decode -> cache). The pictures are rendered by
    `discomm_lite.data.synthetic`: class c fixes the shape, colour, texture and size factors to the
    bits of c, the rest vary, so the classes are learnable but mean nothing about photographs.
    The bytes depend only on the arguments (fixed tar and gzip timestamps), and the archive
    appears in one rename, so concurrent writers never expose a partial file.

    Args:
        root: folder to write into (created when missing); it is then a data root for CIFAR-10.
        train_per_class, test_per_class: images per class in each split.
        seed: the train split is rendered from seed 2 * seed, the test split from 2 * seed + 1.

    Returns:
        The archive's path.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    class_bits = {"shape": 0, "colour": 1, "texture": 2, "size": 3}  # factor -> bit of the label
    handle, temporary = tempfile.mkstemp(prefix=f".{CIFAR10_STANDIN}.", suffix=".partial",
                                         dir=root)
    try:
        with os.fdopen(handle, "wb") as file, \
                gzip.GzipFile(filename="", mode="wb", fileobj=file, mtime=0) as zipped, \
                tarfile.open(fileobj=zipped, mode="w") as tar:
            for offset, (split, per_class) in enumerate((("train", train_per_class),
                                                         ("test", test_per_class))):
                generator = torch.Generator().manual_seed(2 * seed + offset)
                labels = torch.arange(len(CIFAR10_CLASSES)).repeat_interleave(per_class)  # (N,)
                factors = torch.randint(0, 2, (len(labels), len(SYNTHETIC_FACTORS)),
                                        generator=generator)  # (N, 6)
                for name, bit in class_bits.items():
                    factors[:, SYNTHETIC_FACTORS.index(name)] = (labels >> bit) & 1
                images = render_synthetic(factors, image_size=32, generator=generator)
                for k, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
                    encoded = io.BytesIO()
                    Image.fromarray(image.permute(1, 2, 0).numpy()).save(
                        encoded, format="JPEG", quality=95)
                    member = tarfile.TarInfo(
                        f"{split}/{CIFAR10_CLASSES[label]}/{k % per_class:04d}.jpg")
                    member.size, member.mode = encoded.tell(), 0o644
                    encoded.seek(0)
                    tar.addfile(member, encoded)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a cache folder may be shared
        archive = root / CIFAR10_STANDIN
        os.replace(temporary, archive)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return archive


def cifar10_standin_root() -> Path:
    """The data root of the default CIFAR-10 stand-in, <cache>/standin, written on first use."""
    root = cache_root() / "standin"
    if not (root / CIFAR10_STANDIN).is_file():
        make_cache_dir(root)
        write_cifar10_standin(root)
    return root
