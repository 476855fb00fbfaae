"""Dataset loading: CIFAR in its three forms, ImageFolder trees, errors, caching, batches.

References are built by hand: pickles in torchvision's format, PNG/JPEG files written with PIL,
archives written with tarfile. The real CIFAR-10 archive is read only from $DISCOMM_DATA, by the
tests marked `real_data`: they are skipped, saying how to provide it, when it is not there.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import re
import shutil
import tarfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from discomm_lite import data
from discomm_lite.data import (
    DataFormatError,
    DatasetNotFoundError,
    ImageFolderDataset,
    ImageTensorDataset,
    archives,
    cifar10_standin_root,
    default_num_workers,
    load_dataset,
    make_eval_batches,
    resolve_data_root,
    write_cifar10_standin,
)

# torchvision's CIFAR-10 index order, as published with the dataset (batches.meta).
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty cache folder."""
    monkeypatch.setenv("DISCOMM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def real_cifar10_archive() -> Path:
    """$DISCOMM_DATA/cifar10-jpeg.tar.gz, the real CIFAR-10; the test is skipped without it."""
    root = os.environ.get("DISCOMM_DATA")
    archive = Path(root) / "cifar10-jpeg.tar.gz" if root else None
    if archive is None or not archive.is_file():
        pytest.skip(
            f"needs the real CIFAR-10 archive ({archive or 'DISCOMM_DATA is unset'}): set "
            "DISCOMM_DATA to a folder holding cifar10-jpeg.tar.gz, an archive of "
            "train/<class>/*.jpg (50,000 images) and test/<class>/*.jpg (10,000), e.g. the "
            "shared/data folder beside this project's checkouts. (Online, load_dataset('cifar10', "
            "split, root, download=True) fetches torchvision's copy for the notebooks; this test "
            "checks the archive.)"
        )
    return archive


def write_tree(split_dir: Path, classes: list[str], per_class: int, suffix: str,
               seed: int, size: int = 32) -> list[tuple[np.ndarray, int]]:
    """Random RGB images in <split_dir>/<class>/img<k>.<suffix>; returns (pixels, label) in
    sorted class order, as decoded back by PIL (for JPEG, the lossy pixels)."""
    rng = np.random.default_rng(seed)
    expected = []
    for label, name in enumerate(sorted(classes)):
        (split_dir / name).mkdir(parents=True)
        for k in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            path = split_dir / name / f"img{k:03d}.{suffix}"
            Image.fromarray(pixels).save(path, **({"quality": 95} if suffix == "jpg" else {}))
            expected.append((np.asarray(Image.open(path).convert("RGB")), label))
    return expected


def as_nchw(expected: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.stack([pixels for pixels, _ in expected])).permute(0, 3, 1, 2)
    return images, torch.tensor([label for _, label in expected])


def make_tar(archive: Path, tree: Path, prefix: str = "") -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            if (tree / split).is_dir():
                tar.add(tree / split, arcname=prefix + split)


# ---- the real CIFAR-10 archive -----------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.slow
def test_cifar10_from_the_real_archive(cache: Path, real_cifar10_archive: Path) -> None:
    archive = real_cifar10_archive
    root = archive.parent
    train = load_dataset("cifar10", "train", root)
    test = load_dataset("cifar10", "test", root)
    for dataset, n in ((train, 50_000), (test, 10_000)):
        assert isinstance(dataset, ImageTensorDataset)
        assert dataset.images.shape == (n, 3, 32, 32) and dataset.images.dtype == torch.uint8
        assert dataset.classes == CIFAR10_CLASSES
        assert dataset.labels.bincount().tolist() == [n // 10] * 10

    # Pixels and labels of a few members, decoded independently with PIL from the archive.
    with tarfile.open(archive) as tar:
        for name, index in (("test/airplane/0000.jpg", 0), ("test/cat/0417.jpg", 3417),
                            ("test/truck/0999.jpg", 9999)):
            pixels = np.array(Image.open(io.BytesIO(tar.extractfile(name).read())))
            expected = torch.from_numpy(pixels).permute(2, 0, 1).int()
            assert (test.images[index].int() - expected).abs().max() <= 1
            assert test.classes[test.labels[index]] == name.split("/")[1]

    start = time.perf_counter()
    again = load_dataset("cifar10", "train", root)
    assert time.perf_counter() - start < 2.0  # served from the tensor cache
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    shutil.rmtree(cache)  # 185 MB that pytest would otherwise keep for three sessions


# ---- the CIFAR-10 stand-in ----------------------------------------------------------------------


def test_cifar10_standin_is_read_through_the_archive_path(tmp_path: Path, cache: Path) -> None:
    archive = write_cifar10_standin(tmp_path / "root", train_per_class=3, test_per_class=2,
                                    seed=4)
    assert archive == tmp_path / "root" / "cifar10-standin.tar.gz"
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    # The real archive's layout: <split>/<class>/<4-digit index>.jpg, no other members.
    layout = re.compile(rf"(train|test)/({'|'.join(CIFAR10_CLASSES)})/\d{{4}}\.jpg")
    assert all(layout.fullmatch(name) for name in members) and len(members) == 50
    for split, per_class in (("train", 3), ("test", 2)):
        dataset = load_dataset("cifar10", split, archive.parent)
        assert dataset.images.shape == (10 * per_class, 3, 32, 32)
        assert dataset.classes == CIFAR10_CLASSES
        assert dataset.labels.bincount().tolist() == [per_class] * 10
        for name in (f"{split}/airplane/0000.jpg", f"{split}/truck/{per_class - 1:04d}.jpg"):
            # Decoded independently with PIL; the loader sorts members within a class.
            pixels = np.array(Image.open(io.BytesIO(members[name])).convert("RGB"))
            index = CIFAR10_CLASSES.index(name.split("/")[1]) * per_class + int(name[-8:-4])
            expected = torch.from_numpy(pixels).permute(2, 0, 1).int()
            assert (dataset.images[index].int() - expected).abs().max() <= 1
    assert [p.name[:16] for p in cache.iterdir()] == ["cifar10-standin-"]  # the archive's cache

    again = write_cifar10_standin(tmp_path / "again", train_per_class=3, test_per_class=2, seed=4)
    other = write_cifar10_standin(tmp_path / "other", train_per_class=3, test_per_class=2, seed=5)
    assert again.read_bytes() == archive.read_bytes() != other.read_bytes()


def test_default_cifar10_standin_is_written_once_into_the_cache(cache: Path) -> None:
    root = cifar10_standin_root()
    assert root == cache / "standin"
    archive = root / "cifar10-standin.tar.gz"
    written = archive.stat().st_mtime_ns
    assert cifar10_standin_root() == root and archive.stat().st_mtime_ns == written
    train, test = (load_dataset("cifar10", split, root) for split in ("train", "test"))
    # Large enough for every notebook's smoke subsets (at most 256 train, 128 test images).
    assert len(train) >= 256 and len(test) >= 128
    assert not any(torch.equal(image, train.images[0]) for image in test.images)


# ---- torchvision's layout ----------------------------------------------------------------------


def write_fake_torchvision_cifar(root: Path, name: str, rng: np.random.Generator
                                 ) -> dict[str, tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """Tiny CIFAR files in torchvision's pickle format; returns split -> (images, labels, names).

    A row of "data" is 1024 red, then 1024 green, then 1024 blue values, each image row-major.
    """
    if name == "cifar10":
        folder, label_key = root / "cifar-10-batches-py", "labels"
        files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        meta_file, meta = "batches.meta", {"label_names": CIFAR10_CLASSES, "num_vis": 3072}
        class_names, n_classes = CIFAR10_CLASSES, 10
    else:
        folder, label_key = root / "cifar-100-python", "fine_labels"
        files = {"train": ["train"], "test": ["test"]}
        class_names, n_classes = [f"class{i:03d}" for i in range(100)], 100
        meta_file, meta = "meta", {"fine_label_names": class_names,
                                   "coarse_label_names": [f"super{i}" for i in range(20)]}
    folder.mkdir(parents=True)
    expected = {}
    for split, names in files.items():
        rows, labels = [], []
        for file in names:
            n = int(rng.integers(2, 6))
            batch_rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            batch_labels = rng.integers(0, n_classes, n).tolist()
            entry = {"batch_label": file, label_key: batch_labels, "data": batch_rows,
                     "filenames": [f"{file}_{k}.png" for k in range(n)]}
            if name == "cifar100":
                entry["coarse_labels"] = [label // 5 for label in batch_labels]
            with open(folder / file, "wb") as f:
                pickle.dump(entry, f, protocol=2)
            rows.append(batch_rows)
            labels += batch_labels
        images = torch.from_numpy(np.concatenate(rows).reshape(-1, 3, 32, 32))
        expected[split] = (images, torch.tensor(labels), class_names)
    with open(folder / meta_file, "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return expected


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_torchvision_layout_round_trips_pixels_and_labels(tmp_path: Path, name: str) -> None:
    expected = write_fake_torchvision_cifar(tmp_path, name, np.random.default_rng(0))
    (tmp_path / "train").mkdir()  # an (empty) ImageFolder tree: torchvision's files come first
    for split, (images, labels, classes) in expected.items():
        dataset = load_dataset(name, split, tmp_path)
        assert torch.equal(dataset.images, images)
        assert torch.equal(dataset.labels, labels)
        assert dataset.classes == classes


def test_damaged_torchvision_file_names_the_folder(tmp_path: Path) -> None:
    write_fake_torchvision_cifar(tmp_path, "cifar10", np.random.default_rng(0))
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataFormatError, match="cifar-10-batches-py"):
        load_dataset("cifar10", "train", tmp_path)


class WritesMarker:
    """Unpickling this object calls open(marker, "w"): the marker file appears if code runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_cifar_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    write_fake_torchvision_cifar(tmp_path, "cifar10", np.random.default_rng(0))
    planted = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    marker = tmp_path / "MARKER"
    with open(planted, "wb") as f:
        pickle.dump({"data": WritesMarker(marker), "labels": [0]}, f, protocol=2)
    with pytest.raises(DataFormatError) as caught:
        load_dataset("cifar10", "train", tmp_path)
    assert str(caught.value).startswith(f"{planted} is not one of torchvision's CIFAR files: it "
                                        "is a pickle that imports io.open")
    assert "refused before anything in it ran" in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_any_pickle_protocol_read_the_same(tmp_path: Path,
                                                             protocol: int) -> None:
    expected = write_fake_torchvision_cifar(tmp_path, "cifar100", np.random.default_rng(3))
    folder = tmp_path / "cifar-100-python"
    for name in ("train", "test", "meta"):  # re-pickled, as a user's own copy may be
        with open(folder / name, "rb") as f:
            entry = pickle.load(f)
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=protocol)
    dataset = load_dataset("cifar100", "test", tmp_path)
    assert torch.equal(dataset.images, expected["test"][0])
    assert torch.equal(dataset.labels, expected["test"][1])


def test_cifar_batches_of_another_layout_are_named(tmp_path: Path) -> None:
    write_fake_torchvision_cifar(tmp_path, "cifar10", np.random.default_rng(0))
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    with open(batch, "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, f, protocol=2)
    with pytest.raises(DataFormatError, match="do not hold .n, 3072. uint8 pixel rows"):
        load_dataset("cifar10", "test", tmp_path)
    with open(batch, "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, f, protocol=2)
    with pytest.raises(DataFormatError, match="labels must index the 10 class names"):
        load_dataset("cifar10", "test", tmp_path)


# ---- ImageFolder trees and their archives ------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "cifar10"])
def test_png_tree_loads_exactly_and_is_cached(tmp_path: Path, cache: Path, prefix: str) -> None:
    tree = tmp_path / prefix
    # Folders created in reverse order: the labels must follow the sorted names regardless.
    classes = CIFAR10_CLASSES[::-1]
    expected = {"train": write_tree(tree / "train", classes, 3, "png", seed=1),
                "test": write_tree(tree / "test", classes, 1, "png", seed=2)}
    for split, reference in expected.items():
        images, labels = as_nchw(reference)
        dataset = load_dataset("cifar10", split, tmp_path)
        assert torch.equal(dataset.images, images) and torch.equal(dataset.labels, labels)
        assert dataset.classes == CIFAR10_CLASSES
    assert len(list((cache / "trees").glob("*.pt"))) == 2

    # Rewriting an image changes the tree's key: the next load decodes afresh.
    new_pixels = np.full((32, 32, 3), 7, dtype=np.uint8)
    Image.fromarray(new_pixels).save(tree / "test" / "bird" / "img000.png")
    dataset = load_dataset("cifar10", "test", tmp_path)
    assert torch.equal(dataset.images[2], torch.full((3, 32, 32), 7, dtype=torch.uint8))


def test_jpeg_archive_is_decoded_once_into_the_cache(tmp_path: Path, cache: Path) -> None:
    expected = {"train": write_tree(tmp_path / "tree" / "train", CIFAR10_CLASSES, 2, "jpg", 3),
                "test": write_tree(tmp_path / "tree" / "test", CIFAR10_CLASSES, 1, "jpg", 4)}
    root = tmp_path / "root"
    root.mkdir()
    make_tar(root / "cifar10-mini.tar.gz", tmp_path / "tree", prefix="cifar10-mini/")
    (root / "cifar100-decoy.tar.gz").write_bytes(b"garbage")  # must not match "cifar10"
    for split, reference in expected.items():
        images, labels = as_nchw(reference)
        dataset = load_dataset("cifar10", split, root)
        assert (dataset.images.int() - images.int()).abs().max() <= 1  # libjpeg rounding
        assert torch.equal(dataset.labels, labels)

    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 1 and entries[0].startswith("cifar10-mini-")
    assert sorted(p.name for p in (cache / entries[0]).iterdir()) == ["test.pt", "train.pt"]
    assert sorted(p.name for p in root.iterdir()) == ["cifar10-mini.tar.gz",
                                                      "cifar100-decoy.tar.gz"]


def test_stale_partial_build_is_ignored(tmp_path: Path, cache: Path) -> None:
    write_tree(tmp_path / "tree" / "train", CIFAR10_CLASSES, 1, "png", seed=5)
    make_tar(tmp_path / "cifar10-x.tar.gz", tmp_path / "tree")
    stale = cache / ".cifar10-x-00000000.partial-abc"  # what a killed build leaves behind
    stale.mkdir(parents=True)
    (stale / "train.pt").write_bytes(b"half a file")
    assert len(load_dataset("cifar10", "train", tmp_path)) == 10


def build_in_child(root: str, barrier: Any, out: Path) -> None:
    barrier.wait(timeout=60)
    dataset = load_dataset("cifar10", "train", root)
    out.write_bytes(dataset.images.numpy().tobytes() + dataset.labels.numpy().tobytes())


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="needs the fork start method")
def test_concurrent_builds_leave_one_valid_cache(tmp_path: Path, cache: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tmp_path / "tree" / "train", CIFAR10_CLASSES, 30, "jpg", seed=6)
    write_tree(tmp_path / "tree" / "test", CIFAR10_CLASSES, 10, "jpg", seed=7)
    make_tar(tmp_path / "cifar10-race.tar.gz", tmp_path / "tree")
    context = multiprocessing.get_context("fork")  # children inherit the patch below
    start, both_building = context.Barrier(2), context.Barrier(2)
    real_build = archives.build_archive_cache

    def build_together(*args: Any) -> None:
        # Neither process can finish its build before both have begun one: a certain race.
        both_building.wait(timeout=60)
        real_build(*args)

    monkeypatch.setattr(archives, "build_archive_cache", build_together)
    outs = [tmp_path / "out-a", tmp_path / "out-b"]
    children = [context.Process(target=build_in_child, args=(str(tmp_path), start, out))
                for out in outs]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0]

    entries = [p.name for p in cache.iterdir()]
    assert len(entries) == 1 and entries[0].startswith("cifar10-race-"), entries
    assert sorted(p.name for p in (cache / entries[0]).iterdir()) == ["test.pt", "train.pt"]
    images, labels = as_nchw(write_tree(tmp_path / "ref", CIFAR10_CLASSES, 30, "jpg", seed=6))
    dataset = load_dataset("cifar10", "train", tmp_path)  # from the cache the race left
    assert (dataset.images.int() - images.int()).abs().max() <= 1
    assert torch.equal(dataset.labels, labels)
    expected = dataset.images.numpy().tobytes() + dataset.labels.numpy().tobytes()
    assert [out.read_bytes() == expected for out in outs] == [True, True]


# ---- errors --------------------------------------------------------------------------------------


def test_missing_data_root_says_where_it_looked(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = tmp_path / "nowhere"
    monkeypatch.setenv("DISCOMM_DATA", str(nowhere))
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("cifar10", "train")
    message = str(caught.value)
    for needle in (str(nowhere / "cifar-10-batches-py"), str(nowhere / "cifar10" / "train"),
                   "DISCOMM_DATA", "download=True", "cifar10-jpeg.tar.gz"):
        assert needle in message
    assert isinstance(caught.value, FileNotFoundError)

    with pytest.raises(DatasetNotFoundError, match="DISCOMM_DATA") as caught:
        load_dataset("imagefolder", "test")
    assert str(nowhere / "val") in str(caught.value)


def test_corrupt_jpeg_is_named(tmp_path: Path) -> None:
    write_tree(tmp_path / "train", CIFAR10_CLASSES, 2, "jpg", seed=8)
    bad = tmp_path / "train" / "frog" / "img001.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    with pytest.raises(DataFormatError, match=re.escape(str(bad))):
        load_dataset("cifar10", "train", tmp_path)
    # The same file inside an archive is named by archive and member.
    (tmp_path / "archive").mkdir()
    make_tar(tmp_path / "archive" / "cifar10-bad.tar.gz", tmp_path)
    member = "cifar10-bad.tar.gz:train/frog/img001.jpg"
    with pytest.raises(DataFormatError, match=re.escape(member)):
        load_dataset("cifar10", "train", tmp_path / "archive")
    # And an ImageFolderDataset names it when the image is read.
    dataset = load_dataset("imagefolder", "train", tmp_path)
    with pytest.raises(DataFormatError, match=re.escape(str(bad))):
        dataset[[path for path, _ in dataset.samples].index(str(bad))]


def test_corrupt_archive_is_named(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree" / "train", CIFAR10_CLASSES, 2, "png", seed=9)
    make_tar(tmp_path / "whole.tar.gz", tmp_path / "tree")
    archive = tmp_path / "root" / "cifar10-jpeg.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes((tmp_path / "whole.tar.gz").read_bytes()[:300])
    with pytest.raises(DataFormatError, match=re.escape(str(archive))):
        load_dataset("cifar10", "train", archive.parent)


def test_an_archive_too_large_for_memory_is_refused_before_it_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 48 MB of zeros compress to ~50 kB: the size is in the tar headers, read before the data.
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for k in range(3):
            member = tarfile.TarInfo(f"train/cat/img{k}.jpg")
            member.size = 16 * 2**20
            tar.addfile(member, io.BytesIO(bytes(member.size)))
    assert archive.stat().st_size < 2**20
    monkeypatch.setattr(data.cache, "in_memory_budget", lambda: 8 * 2**20)
    tracemalloc.start()
    try:
        with pytest.raises(DataFormatError) as caught:
            load_dataset("cifar10", "train", tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(caught.value).startswith(
        f"The image files of the archive {archive} (up to train/cat/img0.jpg, "
        f"{archive.stat().st_size} bytes compressed) would take 0.02 GiB of memory, more than "
        "an in-memory dataset may take here (0.01 GiB")
    assert peak < 4 * 2**20  # no member was read: each holds 16 MB


def test_images_too_large_to_decode_are_named(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tmp_path / "train", CIFAR10_CLASSES, 1, "png", seed=15)
    huge = tmp_path / "train" / "dog" / "img000.png"
    Image.new("RGB", (200, 100)).save(huge)  # a tiny file of 20,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)  # PIL refuses > 2x this
    with pytest.raises(DataFormatError, match=rf"The image {re.escape(str(huge))} is too large "
                                              "to decode safely: Image size \\(20000 pixels"):
        load_dataset("cifar10", "train", tmp_path)  # decoded into memory: read the header first
    dataset = load_dataset("imagefolder", "train", tmp_path)  # read from disk by PIL
    with pytest.raises(DataFormatError, match=rf"The image {re.escape(str(huge))} is too large "
                                              "to decode safely.*MAX_IMAGE_PIXELS"):
        dataset[[path for path, _ in dataset.samples].index(str(huge))]


def test_a_tree_that_would_not_fit_in_memory_is_refused_before_decoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tmp_path / "train", CIFAR10_CLASSES, 2, "png", seed=16)
    monkeypatch.setattr(data.cache, "in_memory_budget", lambda: 20 * 3 * 32 * 32 - 1)
    with pytest.raises(DataFormatError, match=r"Decoding 20 images .* would take 0.00 GiB"):
        load_dataset("cifar10", "train", tmp_path)


@pytest.mark.parametrize("loop", ["split", "class", "image", "root"])
def test_symbolic_link_loops_are_named(tmp_path: Path, loop: str) -> None:
    root = tmp_path / "root"
    write_tree(root / "train", ["a", "b"], 1, "png", seed=17)
    if loop == "root":
        shutil.rmtree(root)
        root.symlink_to(root)
        looping = root / "train"
    else:
        looping = {"split": root / "val", "class": root / "train" / "c",
                   "image": root / "train" / "a" / "img9.png"}[loop]
        if loop == "split":
            shutil.copytree(root / "train", root / "test")  # val/ is looked at first
        looping.symlink_to(looping.name)
    split = "test" if loop == "split" else "train"
    with pytest.raises(DataFormatError, match=rf"^{re.escape(str(looping))} leads through a "
                                              "symbolic link that loops"):
        load_dataset("imagefolder", split, root)


def test_empty_folders_and_archives_are_errors(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DataFormatError, match="no class folders"):
        load_dataset("cifar10", "train", tmp_path)
    write_tree(tmp_path / "t" / "train", CIFAR10_CLASSES, 1, "png", seed=10)
    (tmp_path / "t" / "train" / "cat" / "img000.png").unlink()
    with pytest.raises(DataFormatError, match=re.escape(str(tmp_path / "t" / "train" / "cat"))):
        load_dataset("imagefolder", "train", tmp_path / "t")
    empty = tmp_path / "e" / "cifar10.tar.gz"
    empty.parent.mkdir()
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(DataFormatError, match=re.escape(str(empty))):
        load_dataset("cifar10", "train", empty.parent)


def test_wrong_class_count_and_mismatched_splits(tmp_path: Path) -> None:
    write_tree(tmp_path / "train", ["a", "b"], 1, "png", seed=11)
    with pytest.raises(DataFormatError, match="10 classes"):
        load_dataset("cifar10", "train", tmp_path)
    write_tree(tmp_path / "val", ["a", "c"], 1, "png", seed=12)
    with pytest.raises(DataFormatError, match=r"only in val/: \['c'\]"):
        load_dataset("imagefolder", "test", tmp_path)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mnist"):
        load_dataset("mnist", "train")
    with pytest.raises(ValueError, match="val"):
        load_dataset("synthetic", "val")
    with pytest.raises(ValueError, match="subset"):
        load_dataset("cifar10", "train", n_samples=10)
    with pytest.raises(ValueError, match="uint8"):
        ImageTensorDataset(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64), ["a"])


# ---- ImageFolder datasets, subsets, batches ----------------------------------------------------


def test_imagefolder_reads_rgb_images_and_maps_test_to_val(tmp_path: Path) -> None:
    write_tree(tmp_path / "train", ["dog", "cat"], 2, "png", seed=13, size=20)
    write_tree(tmp_path / "val", ["dog", "cat"], 1, "jpg", seed=14, size=24)
    Image.new("L", (10, 12), 200).save(tmp_path / "train" / "dog" / "grey.png")
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    train = load_dataset("imagefolder", "train", tmp_path)
    assert isinstance(train, ImageFolderDataset)
    assert train.classes == ["cat", "dog"]
    assert [(Path(p).parent.name, Path(p).name, label) for p, label in train.samples] == [
        ("cat", "img000.png", 0), ("cat", "img001.png", 0),
        ("dog", "grey.png", 1), ("dog", "img000.png", 1), ("dog", "img001.png", 1)]
    image, label = train[2]
    assert image.mode == "RGB" and image.size == (10, 12) and label == 1
    test = load_dataset("imagefolder", "test", tmp_path)
    assert [Path(p).parts[-3] for p, _ in test.samples] == ["val", "val"]


def test_subset_is_deterministic_stratified_and_keeps_factors() -> None:
    n = 100
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone()
    factors = torch.stack([torch.arange(n), labels], dim=1)
    dataset = ImageTensorDataset(images, labels, ["a", "b", "c"], factors, ["index", "label"])
    part = dataset.subset(20, seed=1)
    assert torch.equal(part.labels.bincount(), torch.tensor([12, 6, 2]))
    index = part.images[:, 0, 0, 0].long()  # each image holds its original index
    assert len(set(index.tolist())) == 20
    assert torch.equal(part.factors[:, 0], index) and torch.equal(part.labels, labels[index])
    assert torch.equal(dataset.subset(20, seed=1).images, part.images)
    assert not torch.equal(dataset.subset(20, seed=2).images, part.images)
    with pytest.raises(ValueError, match="101"):
        dataset.subset(101)

    folder = ImageFolderDataset([(f"f{i}.png", int(label)) for i, label in enumerate(labels)],
                                ["a", "b", "c"])
    chosen = folder.subset(20, seed=1)
    assert [path for path, _ in chosen.samples] == [f"f{i}.png" for i in index.tolist()]


def test_eval_batches_of_tensors_keep_order_and_resize() -> None:
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    images[9] = 200  # a flat image must stay flat after resizing
    dataset = ImageTensorDataset(images, torch.arange(10) % 3, ["a", "b", "c"])
    batches = list(make_eval_batches(dataset, image_size=8, batch_size=4))
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([x for x, _ in batches]), images.float() / 255)
    assert torch.equal(torch.cat([y for _, y in batches]), dataset.labels)
    (resized, _), = make_eval_batches(dataset, image_size=12)
    assert resized.shape == (10, 3, 12, 12) and resized.dtype == torch.float32
    assert 0 <= resized.min() and resized.max() <= 1
    assert torch.allclose(resized[9], torch.full((3, 12, 12), 200 / 255), atol=1e-5)


def test_eval_batches_of_folders_resize_and_center_crop(tmp_path: Path) -> None:
    for k, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        (tmp_path / "train" / f"c{k}").mkdir(parents=True)
        # 60 x 40, with a black border column that the 8/7 resize and center crop remove.
        pixels = np.zeros((40, 60, 3), dtype=np.uint8)
        pixels[:, 2:-2] = colour
        Image.fromarray(pixels).save(tmp_path / "train" / f"c{k}" / "x.png")
    dataset = load_dataset("imagefolder", "train", tmp_path)
    batches = list(make_eval_batches(dataset, image_size=14, batch_size=2, num_workers=0))
    images = torch.cat([x for x, _ in batches])
    assert images.shape == (3, 3, 14, 14)
    assert torch.equal(torch.cat([y for _, y in batches]), torch.tensor([0, 1, 2]))
    expected = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]])[:, :, None, None]
    assert torch.allclose(images, expected.expand_as(images), atol=2 / 255)


def test_default_num_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    for cpus, workers in ((1, 0), (2, 1), (4, 3), (64, 63)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _, n=cpus: set(range(n)),
                            raising=False)
        assert default_num_workers() == workers


def test_resolve_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DISCOMM_DATA", str(tmp_path))
    assert resolve_data_root("/somewhere") == Path("/somewhere")
    assert resolve_data_root(None) == tmp_path
    monkeypatch.delenv("DISCOMM_DATA")
    assert resolve_data_root(None) == Path("data")


def test_cache_folder_follows_discomm_cache(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("DISCOMM_CACHE", str(tmp_path / "elsewhere"))
    write_tree(tmp_path / "tree" / "train", CIFAR10_CLASSES, 1, "png", seed=15)
    make_tar(tmp_path / "cifar10-c.tar.gz", tmp_path / "tree")
    load_dataset("cifar10", "train", tmp_path)
    assert [p.name[:10] for p in (tmp_path / "elsewhere").iterdir()] == ["cifar10-c-"]
    assert data.DATASETS == ("synthetic", "cifar10", "cifar100", "imagefolder")
