"""Datasets: embedded synthetic images and CIFAR held in memory, ImageFolder trees read from disk.

`load_dataset(name, split, data_root)` looks for the data under the data root: the `data_root`
argument, else the DISCOMM_DATA environment variable, else ./data. CIFAR-10/100 may be there as
torchvision's own files, as an ImageFolder tree of image files, or as a tar.gz archive of that tree.

Decoded images are cached as uint8 tensors, so the second load takes well under a second.
The cache lives in $DISCOMM_CACHE, else ~/.cache/discomm_lite, never under the (maybe read-only)
data root:

    <cache>/<archive stem>-<hash of the archive's size and mtime>/{train,test}.pt
    <cache>/trees/<name>-<split>-<hash of the tree's paths, sizes and mtimes>.pt

Each .pt file holds {"images": (N, 3, H, W) uint8, "labels": (N,) int64, "classes": [str]}.
Every cache entry is written under a temporary name and renamed into place in one step.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision import transforms
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.io import ImageReadMode, decode_image

DATASETS = ("synthetic", "cifar10", "cifar100", "imagefolder")
SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")  # decoded by both PIL and torchvision.io

_CIFAR = {"cifar10": (CIFAR10, "CIFAR-10", 10), "cifar100": (CIFAR100, "CIFAR-100", 100)}
# torchvision's CIFAR-10 label order, as published with the dataset (batches.meta).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
CIFAR10_STANDIN = "cifar10-standin.tar.gz"
_SYNTHETIC_SIZES = {"train": 4096, "test": 1024}


class DatasetNotFoundError(FileNotFoundError):
    """No copy of a dataset was found under the data root, and none could be downloaded."""


class DataFormatError(ValueError):
    """A dataset file or folder exists but cannot be used: corrupt, empty or misarranged."""


# ---- the two dataset types -------------------------------------------------------------------


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
    """The image at `path` as RGB, or a DataFormatError that names the file."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert() reads the pixels, so truncation fails here
    except (OSError, SyntaxError, ValueError) as err:  # PIL reports some broken files as such
        raise DataFormatError(f"Cannot read the image {path}: {err}") from err


# ---- finding and loading datasets --------------------------------------------------------------


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """The data root: `data_root` if given, else $DISCOMM_DATA, else ./data."""
    if data_root is not None:
        return Path(data_root).expanduser()
    return Path(os.environ.get("DISCOMM_DATA") or "data").expanduser()


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
        # Late import: synthetic builds its datasets from this module's ImageTensorDataset.
        from discomm_lite.synthetic import make_synthetic

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
        return _load_imagefolder(root, split)
    return _load_cifar(name, split, root, download)


def _load_imagefolder(root: Path, split: str) -> ImageFolderDataset:
    """An ImageFolder split: train/ for "train", val/ (else test/) for "test"."""
    candidates = [root / "train"] if split == "train" else [root / "val", root / "test"]
    for split_dir in candidates:
        if split_dir.is_dir():
            classes, samples = _scan_split(root, split_dir)
            return ImageFolderDataset(samples, classes)
    looked_at = "".join(f"\n  {path}/<class>/<image>" for path in candidates)
    raise DatasetNotFoundError(
        f"No ImageFolder {split!r} split under the data root {root}. Looked at:{looked_at}\n"
        f"Put the images in {root}/train/<class>/<image> and {root}/val/<class>/<image> (for "
        "ImageNet-1k: its train/ folder and val/ sorted into class folders), or pass data_root "
        f"or set the DISCOMM_DATA environment variable (now {_discomm_data()}) to the folder "
        "that holds train/ and val/."
    )


def _load_cifar(name: str, split: str, root: Path, download: bool) -> ImageTensorDataset:
    """CIFAR from torchvision's files, an ImageFolder tree or a tar.gz of one, in that order."""
    tv_class, title, n_classes = _CIFAR[name]
    torchvision_dir = root / tv_class.base_folder
    if torchvision_dir.is_dir():
        return _load_torchvision_cifar(tv_class, split, root)
    tree_roots = [root / name, root]
    for tree_root in tree_roots:
        if (tree_root / split).is_dir():
            return _load_cifar_tree(name, tree_root, split, n_classes)
    archives = _find_archives(root, name)
    if archives:
        return _load_cifar_archive(archives[0], split, n_classes)

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
        f"(now {_discomm_data()}), else ./data. Do one of:\n"
        "  - download it (needs internet): python -c \"from discomm_lite.data import "
        f"load_dataset; load_dataset('{name}', '{split}', '{root}', download=True)\"\n"
        f"  - put {name}-jpeg.tar.gz (an archive of train/<class>/*.jpg and test/<class>/*.jpg) "
        f"or that ImageFolder tree in {root}\n"
        "  - set DISCOMM_DATA to the folder that already holds one of these"
    )


def _discomm_data() -> str:
    value = os.environ.get("DISCOMM_DATA")
    return repr(value) if value else "unset"


def _find_archives(root: Path, name: str) -> list[Path]:
    """Archives <root>/<name>*.tar.gz (or .tgz), sorted; "cifar10" does not match cifar100."""
    pattern = re.compile(rf"{name}(?!\d).*\.(tar\.gz|tgz)")
    return sorted(p for p in root.glob(f"{name}*") if pattern.fullmatch(p.name) and p.is_file())


def _check_class_count(classes: list[str], n_classes: int, where: str) -> None:
    if len(classes) != n_classes:
        raise DataFormatError(
            f"{where} has {len(classes)} class folders, but the dataset has {n_classes} classes."
        )


# ---- torchvision's CIFAR files -----------------------------------------------------------------


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


# ---- ImageFolder trees -------------------------------------------------------------------------


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split_dir)
                  if entry.is_dir() and not entry.name.startswith("."))


def _is_image_name(filename: str) -> bool:
    return not filename.startswith(".") and filename.lower().endswith(IMAGE_EXTENSIONS)


def _scan_split(root: Path, split_dir: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes and (path, label) samples of <split_dir>/<class>/<image>.

    A split other than <root>/train must have the same class folders as train/, since labels
    index the sorted folder names and would otherwise mean different classes in each split.
    """
    classes = _class_folders(split_dir)
    if not classes:
        raise DataFormatError(f"{split_dir} holds no class folders: expected <class>/<image>.")
    train_dir = root / "train"
    if split_dir != train_dir and train_dir.is_dir():
        train_classes = _class_folders(train_dir)
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
                       if entry.is_file() and _is_image_name(entry.name))
        if not files:
            raise DataFormatError(
                f"The class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})."
            )
        samples.extend((str(class_dir / filename), label) for filename in files)
    return classes, samples


def _load_cifar_tree(name: str, tree_root: Path, split: str, n_classes: int
                     ) -> ImageTensorDataset:
    """CIFAR from <tree_root>/<split>/<class>/<image>, through a tensor cache of the decoding."""
    split_dir = tree_root / split
    classes, samples = _scan_split(tree_root, split_dir)
    _check_class_count(classes, n_classes, str(split_dir))
    cache_file = _cache_root() / "trees" / f"{name}-{split}-{_tree_key(split_dir, samples)}.pt"
    if cache_file.is_file():
        return _load_tensors(cache_file)
    images = _decode_images([(path, Path(path).read_bytes()) for path, _ in samples])
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    dataset = ImageTensorDataset(images, labels, classes)
    _save_tensors(dataset, cache_file)
    return dataset


def _tree_key(split_dir: Path, samples: list[tuple[str, int]]) -> str:
    """A hash of the tree's location and of each file's name, size and mtime."""
    digest = hashlib.sha1(str(split_dir.resolve()).encode())
    for path, _ in samples:
        stat = os.stat(path)
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


# ---- tar.gz archives of ImageFolder trees ------------------------------------------------------


def _load_cifar_archive(archive: Path, split: str, n_classes: int) -> ImageTensorDataset:
    """CIFAR from a tar.gz of [<prefix>/]<split>/<class>/<image>, decoded once into the cache."""
    stat = archive.stat()
    stem = re.sub(r"\.(tar\.gz|tgz)$", "", archive.name)
    version = hashlib.sha1(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:8]
    cache_dir = _cache_root() / f"{stem}-{version}"
    if not cache_dir.is_dir():
        _build_archive_cache(archive, cache_dir, n_classes)
    tensors = cache_dir / f"{split}.pt"
    if not tensors.is_file():
        raise DataFormatError(f"The archive {archive} holds no {split}/<class>/<image> files.")
    return _load_tensors(tensors)


def _build_archive_cache(archive: Path, cache_dir: Path, n_classes: int) -> None:
    """Decode every image of `archive` into <cache_dir>/<split>.pt, atomically.

    Why decode straight from the compressed stream rather than extract first: writing 60,000
    small files cost 4 to 80 s on a loaded 2-core VM, reading the stream about 2 s. The tensors
    go to a temporary folder renamed into place in one step, so a concurrent or interrupted
    build never leaves a partial cache; a killed build leaves only a hidden ".partial" folder.
    """
    by_split = _read_archive(archive)
    classes = {split: sorted(by_class) for split, by_class in by_split.items()}
    for split, names in classes.items():
        _check_class_count(names, n_classes, f"{split}/ in {archive}")
    if len({tuple(names) for names in classes.values()}) > 1:
        raise DataFormatError(f"The splits in {archive} have different class folders.")
    _make_cache_dir(cache_dir.parent)
    partial = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.partial-", dir=cache_dir.parent))
    partial.chmod(0o755)  # mkdtemp makes it private; a cache folder may be shared by users
    try:
        for split, by_class in by_split.items():
            blobs, labels = [], []
            for label, name in enumerate(classes[split]):
                blobs += sorted(by_class[name])
                labels += [label] * len(by_class[name])
            images = _decode_images([(f"{archive}:{member}", data) for member, data in blobs])
            _save_tensors(ImageTensorDataset(images, torch.tensor(labels), classes[split]),
                          partial / f"{split}.pt")
        try:
            partial.rename(cache_dir)
        except OSError:
            if not cache_dir.is_dir():
                raise
            # Another process built the same cache first; both are decoded from the same bytes.
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _read_archive(archive: Path) -> dict[str, dict[str, list[tuple[str, bytes]]]]:
    """Encoded images of a tar archive as {split: {class: [(member name, bytes)]}}.

    Members other than [<prefix>/]<split>/<class>/<image> are skipped; nothing is written to
    disk, so member names cannot escape a destination folder.
    """
    found: dict[str, dict[str, list[tuple[str, bytes]]]] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not (member.isfile() and len(parts) >= 3 and parts[-3] in SPLITS
                        and not parts[-2].startswith(".") and _is_image_name(parts[-1])):
                    continue
                data = tar.extractfile(member).read()
                found.setdefault(parts[-3], {}).setdefault(parts[-2], []).append(
                    (member.name, data))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataFormatError(f"Cannot read the archive {archive}: {err!r}") from err
    if not found:
        raise DataFormatError(
            f"The archive {archive} holds no <split>/<class>/<image> files (split: train or "
            f"test; image: {', '.join(IMAGE_EXTENSIONS)})."
        )
    return found


# ---- decoding and the tensor cache -------------------------------------------------------------


def _decode_images(blobs: list[tuple[str, bytes]]) -> Tensor:
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


def _cache_root() -> Path:
    """$DISCOMM_CACHE, else ~/.cache/discomm_lite."""
    cache = os.environ.get("DISCOMM_CACHE")
    return Path(cache).expanduser() if cache else Path.home() / ".cache" / "discomm_lite"


def _make_cache_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(
            f"Cannot create the cache folder {path} ({err}); set the DISCOMM_CACHE environment "
            "variable to a writable folder."
        ) from err


def _save_tensors(dataset: ImageTensorDataset, path: Path) -> None:
    """Write images, labels and classes to `path` under a temporary name, then rename it."""
    _make_cache_dir(path.parent)
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


def _load_tensors(path: Path) -> ImageTensorDataset:
    payload = torch.load(path, weights_only=True)
    return ImageTensorDataset(payload["images"], payload["labels"], payload["classes"])


# ---- a CIFAR-10 stand-in for offline smoke runs and tests -------------------------------------


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
    `discomm_lite.synthetic`: class c fixes the shape, colour, texture and size factors to the
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
    # Late import: synthetic builds its datasets from this module's ImageTensorDataset.
    from discomm_lite.synthetic import SYNTHETIC_FACTORS, render_synthetic

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
    root = _cache_root() / "standin"
    if not (root / CIFAR10_STANDIN).is_file():
        _make_cache_dir(root)
        write_cifar10_standin(root)
    return root


# ---- evaluation batches ------------------------------------------------------------------------


def default_num_workers() -> int:
    """DataLoader workers for this machine: the usable cores but one (0 on one core).

    No fixed cap: 12 DINO crops of a 224 px image cost ~30 ms of CPU, so a ViT-B/16 step on one
    GPU needs every core a node gives it (benchmarks/data_pipeline.py measures this).
    """
    try:
        cpus = len(os.sched_getaffinity(0))  # the cores this process may run on (taskset, cgroups)
    except AttributeError:  # macOS and Windows lack sched_getaffinity
        cpus = os.cpu_count() or 1
    return max(0, cpus - 1)


def make_eval_batches(
    dataset: ImageTensorDataset | ImageFolderDataset,
    *,
    image_size: int,
    batch_size: int = 256,
    num_workers: int | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (images (N, 3, S, S) float32 in [0, 1] on `device`, labels (N,) int64), in order.

    In-memory images are resized (bicubic, antialiased) only when their side is not `image_size`.
    ImageFolder images are read by `num_workers` DataLoader workers (None: the machine default),
    resized so that their short side is image_size * 8 / 7, then center-cropped to image_size:
    the 256 -> 224 protocol of ImageNet evaluation.
    """
    device = torch.device(device)
    if isinstance(dataset, ImageTensorDataset):
        for start in range(0, len(dataset), batch_size):
            # uint8 crosses to the device (4x less traffic than float), then becomes [0, 1].
            images = dataset.images[start:start + batch_size].to(device).float().div_(255)
            if images.shape[-2:] != (image_size, image_size):
                images = F.interpolate(images, size=(image_size, image_size), mode="bicubic",
                                       antialias=True, align_corners=False).clamp_(0, 1)
            yield images, dataset.labels[start:start + batch_size]
        return
    transform = transforms.Compose([
        transforms.Resize(round(image_size * 8 / 7),
                          interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(image_size),
        transforms.PILToTensor(),
    ])
    loader = torch.utils.data.DataLoader(
        replace(dataset, transform=transform), batch_size=batch_size,
        num_workers=default_num_workers() if num_workers is None else num_workers,
        pin_memory=device.type == "cuda",
    )
    for images, labels in loader:
        yield images.to(device, non_blocking=True).float().div_(255), labels
