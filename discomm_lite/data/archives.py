"""tar.gz archives of ImageFolder trees (e.g. cifar10-jpeg.tar.gz), decoded once into the cache.

The cache entry of an archive is <cache>/<archive stem>-<hash of its bytes>/<split>.pt: two
archives share one only when their contents are the same (issue 25: a name, size and mtime do
not tell two archives apart). Reading is bounded from the members' headers, before any data:
each member (`MAX_MEMBER_BYTES`), everything the archive inflates to (`MAX_INFLATION` times its
size), and the images kept in memory (`cache.in_memory_budget`).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

import torch

from discomm_lite.choices import SPLITS
from discomm_lite.data.cache import (
    check_in_memory_size,
    decode_images,
    load_tensors,
    save_tensors,
)
from discomm_lite.data.folders import IMAGE_EXTENSIONS, check_class_count, is_image_name
from discomm_lite.data.locations import cache_root, make_cache_dir
from discomm_lite.data.types import DataFormatError, ImageTensorDataset

# A CIFAR image is a few KB, and a tar.gz of images inflates to about twice its size (JPEGs and
# PNGs are compressed already; the tar headers and padding are not).
MAX_MEMBER_BYTES = 64 * 2**20
MAX_INFLATION = 100


def find_archives(root: Path, name: str) -> list[Path]:
    """Archives <root>/<name>*.tar.gz (or .tgz), sorted; "cifar10" does not match cifar100."""
    pattern = re.compile(rf"{name}(?!\d).*\.(tar\.gz|tgz)")
    return sorted(p for p in root.glob(f"{name}*") if pattern.fullmatch(p.name) and p.is_file())


def load_cifar_archive(archive: Path, split: str, n_classes: int) -> ImageTensorDataset:
    """CIFAR from a tar.gz of [<prefix>/]<split>/<class>/<image>, decoded once into the cache."""
    stem = re.sub(r"\.(tar\.gz|tgz)$", "", archive.name)
    cache_dir = cache_root() / f"{stem}-{archive_key(archive)}"
    if not cache_dir.is_dir():
        build_archive_cache(archive, cache_dir, n_classes)
    tensors = cache_dir / f"{split}.pt"
    if not tensors.is_file():
        raise DataFormatError(f"The archive {archive} holds no {split}/<class>/<image> files.")
    return load_tensors(tensors)


def archive_key(archive: Path) -> str:
    """A hash of the archive's bytes (BLAKE2b; about 0.05 s for CIFAR-10's 19 MB archive)."""
    with archive.open("rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=8)).hexdigest()


def build_archive_cache(archive: Path, cache_dir: Path, n_classes: int) -> None:
    """Decode every image of `archive` into <cache_dir>/<split>.pt, atomically.

    Why decode straight from the compressed stream rather than extract first: writing 60,000
    small files cost 4 to 80 s on a loaded 2-core VM, reading the stream about 2 s. The tensors
    go to a temporary folder renamed into place in one step, so a concurrent or interrupted
    build never leaves a partial cache; a killed build leaves only a hidden ".partial" folder.
    """
    by_split = _read_archive(archive)
    classes = {split: sorted(by_class) for split, by_class in by_split.items()}
    for split, names in classes.items():
        check_class_count(names, n_classes, f"{split}/ in {archive}")
    if len({tuple(names) for names in classes.values()}) > 1:
        raise DataFormatError(f"The splits in {archive} have different class folders.")
    make_cache_dir(cache_dir.parent)
    partial = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.partial-", dir=cache_dir.parent))
    partial.chmod(0o755)  # mkdtemp makes it private; a cache folder may be shared by users
    try:
        for split, by_class in by_split.items():
            blobs, labels = [], []
            for label, name in enumerate(classes[split]):
                blobs += sorted(by_class[name])
                labels += [label] * len(by_class[name])
            images = decode_images([(f"{archive}:{member}", data) for member, data in blobs])
            save_tensors(ImageTensorDataset(images, torch.tensor(labels), classes[split]),
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
    disk, so member names cannot escape a destination folder. The members' sizes (from their
    headers) are checked before each is read or skipped (a few MB of gzip can hold GBs): each
    member, all of them against the archive's size, and the images against the memory.
    """
    found: dict[str, dict[str, list[tuple[str, bytes]]]] = {}
    total = inflated = 0
    size = archive.stat().st_size
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                inflated += member.size
                _check_member(archive, member, inflated, size)
                parts = PurePosixPath(member.name).parts
                if not (member.isfile() and len(parts) >= 3 and parts[-3] in SPLITS
                        and not parts[-2].startswith(".") and is_image_name(parts[-1])):
                    continue
                total += member.size
                check_in_memory_size(total, f"The image files of the archive {archive} (up to "
                                            f"{member.name}, {size} bytes compressed)")
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


def _check_member(archive: Path, member: tarfile.TarInfo, inflated: int, size: int) -> None:
    """Refuse (DataFormatError) a member larger than `MAX_MEMBER_BYTES`, or an archive that
    inflates, up to this member, beyond `MAX_INFLATION` times its `size`: before the member's
    data is read or skipped (skipping inflates it too)."""
    if member.size > MAX_MEMBER_BYTES:
        raise DataFormatError(
            f"The archive {archive} holds {member.name} of {member.size / 2**20:,.1f} MiB, more "
            f"than an archive member may be ({MAX_MEMBER_BYTES / 2**20:.0f} MiB; a CIFAR image "
            "is a few KB). It was refused before that member was read: check that this is the "
            "archive you meant.")
    if inflated > max(MAX_MEMBER_BYTES, MAX_INFLATION * size):
        raise DataFormatError(
            f"The archive {archive} inflates to more than {MAX_INFLATION} times its "
            f"{size / 2**20:,.1f} MiB ({inflated / 2**20:,.1f} MiB up to {member.name}), where "
            "an archive of images inflates to about twice its size. It was refused before "
            "those members were read: check that this is the archive you meant.")
