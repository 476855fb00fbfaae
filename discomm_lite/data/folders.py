"""ImageFolder trees, <root>/<split>/<class>/<image>: scanning them, and the `imagefolder` dataset.

Labels index the sorted class-folder names (torchvision's ImageFolder convention), so every split
of a tree must hold the same class folders.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from discomm_lite.data.locations import data_root_setting
from discomm_lite.data.types import DataFormatError, DatasetNotFoundError, ImageFolderDataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")  # decoded by both PIL and torchvision.io


def load_imagefolder(root: Path, split: str) -> ImageFolderDataset:
    """An ImageFolder split: train/ for "train", val/ (else test/) for "test"."""
    candidates = [root / "train"] if split == "train" else [root / "val", root / "test"]
    for split_dir in candidates:
        if is_folder(split_dir):
            classes, samples = scan_split(root, split_dir)
            return ImageFolderDataset(samples, classes)
    looked_at = "".join(f"\n  {path}/<class>/<image>" for path in candidates)
    raise DatasetNotFoundError(
        f"No ImageFolder {split!r} split under the data root {root}. Looked at:{looked_at}\n"
        f"Put the images in {root}/train/<class>/<image> and {root}/val/<class>/<image> (for "
        "ImageNet-1k: its train/ folder and val/ sorted into class folders), or pass data_root "
        f"or set the DISCOMM_DATA environment variable (now {data_root_setting()}) to the folder "
        "that holds train/ and val/."
    )


def scan_split(root: Path, split_dir: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes and (path, label) samples of <split_dir>/<class>/<image>.

    A split other than <root>/train must have the same class folders as train/, since labels
    index the sorted folder names and would otherwise mean different classes in each split.
    """
    classes = class_folders(split_dir)
    if not classes:
        raise DataFormatError(f"{split_dir} holds no class folders: expected <class>/<image>.")
    train_dir = root / "train"
    if split_dir != train_dir and is_folder(train_dir):
        train_classes = class_folders(train_dir)
        if classes != train_classes:
            raise DataFormatError(
                f"The class folders of {split_dir} differ from those of {train_dir}: only in "
                f"{split_dir.name}/: {sorted(set(classes) - set(train_classes))}, only in "
                f"train/: {sorted(set(train_classes) - set(classes))}."
            )
    samples = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        files = sorted(entry.name for entry in os.scandir(class_dir)
                       if is_image_name(entry.name) and _follow(entry, entry.is_file))
        if not files:
            raise DataFormatError(
                f"The class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})."
            )
        samples.extend((str(class_dir / filename), label) for filename in files)
    return classes, samples


def class_folders(split_dir: Path) -> list[str]:
    """The sorted names of the (non-hidden) folders in `split_dir`: the classes in label order."""
    return sorted(entry.name for entry in os.scandir(split_dir)
                  if not entry.name.startswith(".") and _follow(entry, entry.is_dir))


def is_folder(path: Path) -> bool:
    """Whether `path` is a folder (following links), like Path.is_dir(); but a path through a
    symbolic link loop, which is_dir() calls no folder, raises DataFormatError naming it."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _loop_error(path) from None
        return False


def _follow(entry: os.DirEntry, test) -> bool:
    """`test()`, a DirEntry's is_dir or is_file, with a link loop raised as DataFormatError."""
    try:
        return test()
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _loop_error(Path(entry.path)) from None
        raise


def _loop_error(path: Path) -> DataFormatError:
    return DataFormatError(f"{path} leads through a symbolic link that loops (to itself, or "
                           "through other links): fix or remove that link.")


def is_image_name(filename: str) -> bool:
    """Whether `filename` is a visible file with one of `IMAGE_EXTENSIONS` (any case)."""
    return not filename.startswith(".") and filename.lower().endswith(IMAGE_EXTENSIONS)


def check_class_count(classes: list[str], n_classes: int, where: str) -> None:
    """Raise DataFormatError, naming `where`, unless there are `n_classes` classes."""
    if len(classes) != n_classes:
        raise DataFormatError(
            f"{where} has {len(classes)} class folders, but the dataset has {n_classes} classes."
        )


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
