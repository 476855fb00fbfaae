"""Data read from disk is keyed by content, converted with its range and bounded per archive
member; a resume notices other data (issue 25). Every file is written here."""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import tarfile
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tinyrun import tiny_config

from discomm_lite import data
from discomm_lite.api import train
from discomm_lite.data import DataFormatError, load_dataset, write_cifar10_standin
from discomm_lite.data.cifar import CIFAR10_CLASSES
from discomm_lite.data.fingerprint import data_fingerprint
from discomm_lite.method import get_method
from discomm_lite.training.checkpoint import CheckpointError, rng_state, save_checkpoint
from discomm_lite.training.setup import build_state
from discomm_lite.training.start import DataChangedWarning
from discomm_lite.views.pipeline import load_split, make_train_views


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty cache folder."""
    monkeypatch.setenv("DISCOMM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def png16(values: np.ndarray) -> bytes:
    """A 16-bit PNG (greyscale for (H, W), RGB for (H, W, 3)) of `values`, written chunk by
    chunk: PIL writes 16-bit greyscale but no 16-bit colour."""
    height, width = values.shape[:2]
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    header = struct.pack(">IIBBBBB", width, height, 16, 2 if values.ndim == 3 else 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def add_member(tar: tarfile.TarFile, name: str, body: bytes, mtime: int = 0) -> None:
    member = tarfile.TarInfo(name)
    member.size, member.mtime = len(body), mtime
    tar.addfile(member, io.BytesIO(body))


# ---- case 13: a cache keyed by the archive's content -------------------------------------------


def flat_archive(path: Path, value: int) -> Path:
    """A CIFAR-10-layout archive (one image per class) of flat 32 x 32 images of `value`, as
    uncompressed PNGs in an uncompressed tar: its size is the same for every `value`."""
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w") as tar:  # "r:*" reads it whatever its name says
        for name in CIFAR10_CLASSES:
            encoded = io.BytesIO()
            Image.new("RGB", (32, 32), (value,) * 3).save(encoded, "PNG", compress_level=0)
            add_member(tar, f"train/{name}/0.png", encoded.getvalue())
    os.utime(path, ns=(1_700_000_000 * 10**9,) * 2)
    return path


def test_two_archives_of_one_name_size_and_mtime_do_not_share_a_cache(tmp_path):
    white = flat_archive(tmp_path / "a" / "cifar10-jpeg.tar.gz", 255)
    black = flat_archive(tmp_path / "b" / "cifar10-jpeg.tar.gz", 0)
    same = [(p.stat().st_size, p.stat().st_mtime_ns) for p in (white, black)]
    assert same[0] == same[1]  # what the old key (name, size, mtime) told apart: nothing
    assert load_dataset("cifar10", "train", white.parent).images.min() == 255
    started = time.perf_counter()
    assert load_dataset("cifar10", "train", black.parent).images.max() == 0
    assert time.perf_counter() - started < 5
    digests = {hashlib.blake2b(p.read_bytes(), digest_size=8).hexdigest() for p in (white, black)}
    assert {p.name.rsplit("-", 1)[1] for p in (tmp_path / "cache").iterdir()} == digests


def test_a_tree_rewritten_with_its_size_and_mtime_is_decoded_again(tmp_path):
    for name in CIFAR10_CLASSES:
        (tmp_path / "train" / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), (255,) * 3).save(tmp_path / "train" / name / "0.png",
                                                     compress_level=0)
    assert load_dataset("cifar10", "train", tmp_path).images.min() == 255
    image = tmp_path / "train" / "cat" / "0.png"
    stat = image.stat()
    Image.new("RGB", (32, 32), (0,) * 3).save(image, compress_level=0)  # same size
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the mtime set back (cp -p)
    assert image.stat().st_size == stat.st_size
    assert load_dataset("cifar10", "train", tmp_path).images.min() == 0


# ---- case 14: 16-bit images keep their range ---------------------------------------------------


def test_16_bit_pngs_keep_their_range_in_the_imagefolder_and_the_archive(tmp_path):
    gradient = np.tile(np.linspace(0, 65535, 32).round().astype(np.uint16), (32, 1))  # (H, W)
    colour = np.stack([gradient, gradient[:, ::-1], gradient // 3], axis=-1)  # (H, W, 3)
    expected = {"grey": np.repeat((gradient >> 8)[..., None], 3, axis=-1).astype(np.uint8),
                "colour": (colour >> 8).astype(np.uint8)}  # the high byte, as PIL reduces RGB
    files = {"grey": png16(gradient), "colour": png16(colour)}
    assert Image.open(io.BytesIO(files["grey"])).mode == "I;16"  # what saturated before
    for kind, body in files.items():
        (tmp_path / "tree" / "train" / kind).mkdir(parents=True)
        (tmp_path / "tree" / "train" / kind / "0.png").write_bytes(body)
    folder = load_dataset("imagefolder", "train", tmp_path / "tree")
    for (path, label), (image, _) in zip(folder.samples, [folder[0], folder[1]], strict=True):
        kind = folder.classes[label]
        np.testing.assert_array_equal(np.asarray(image), expected[kind], err_msg=path)
    assert (np.asarray(folder[folder.classes.index("grey")][0]) == 255).mean() < 0.05
    with tarfile.open(tmp_path / "cifar10-jpeg.tar.gz", "w:gz") as tar:
        for k, name in enumerate(CIFAR10_CLASSES):
            add_member(tar, f"train/{name}/0.png", files["grey" if k % 2 else "colour"])
    archive = load_dataset("cifar10", "train", tmp_path)
    for k in range(10):
        reference = expected["grey" if k % 2 else "colour"]
        np.testing.assert_array_equal(archive.images[k].permute(1, 2, 0).numpy(), reference)


# ---- case 15: archive members bounded one by one -----------------------------------------------


@pytest.mark.parametrize("name", ["train/cat/huge.png", "train/README"])
def test_a_huge_member_is_refused_from_its_header_before_it_is_read(tmp_path, name):
    # The header of a 3 GiB member of zeros, then a little of it: refused before reading further.
    member = tarfile.TarInfo(name)
    member.size = 3 * 2**30
    with open(tmp_path / "plain.tar", "wb") as f:
        f.write(member.tobuf(format=tarfile.GNU_FORMAT) + bytes(2**20))
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    archive.write_bytes(zlib.compress((tmp_path / "plain.tar").read_bytes(), wbits=31))
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(DataFormatError) as info:
            load_dataset("cifar10", "train", tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2 and peak < 8 * 2**20
    assert str(info.value).startswith(f"The archive {archive} holds {name} of 3,072.0 MiB, more "
                                      "than an archive member may be (64 MiB")


def test_an_archive_inflating_a_hundredfold_is_refused_member_by_member(tmp_path):
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for k in range(3):  # each under the member bound, 120 MiB together from ~0.1 MiB
            add_member(tar, f"extra/{k}.bin", bytes(40 * 2**20))
    size = archive.stat().st_size
    with pytest.raises(DataFormatError, match=rf"inflates to more than 100 times its "
                                              rf"{size / 2**20:.1f} MiB \(80.0 MiB up to "
                                              r"extra/1.bin\)"):
        load_dataset("cifar10", "train", tmp_path)


# ---- case 16: a resume on other data -----------------------------------------------------------


def cifar_run(tmp_path: Path, root: Path):
    """A tiny CIFAR-10 run on `root` whose checkpoint (from its own data) has reached its end,
    so that resuming it trains nothing."""
    config = tiny_config(tmp_path / "run", dataset="cifar10", redraw_factors="", train_subset=0,
                         data_root=str(root))
    train_set = load_split(config, "train")
    steps = make_train_views(config, train_set, torch.device("cpu")).steps_per_epoch
    state = build_state(config, get_method(config.method), torch.device("cpu"))
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", {
        "config": config.to_dict(), **state.state_dict(), "step": steps * config.epochs,
        "rng": rng_state(), "data": data_fingerprint(train_set)})
    return config


def test_a_resume_on_other_data_is_refused_and_on_another_copy_warned(tmp_path):
    first = write_cifar10_standin(tmp_path / "first", seed=0).parent
    config = cifar_run(tmp_path, first)
    moved = tmp_path / "moved"
    first.rename(moved)  # the data folder moved: the same data
    train(config.replace(data_root=str(moved)), progress=False)
    redrawn = write_cifar10_standin(tmp_path / "redrawn", seed=1).parent  # same classes, labels
    with pytest.warns(DataChangedWarning, match=r"differ from those .* \(the same number, "
                                                r"classes and labels; another copy"):
        train(config.replace(data_root=str(redrawn)), progress=False)
    smaller = write_cifar10_standin(tmp_path / "smaller", train_per_class=20).parent
    with pytest.raises(CheckpointError, match=re.escape("was trained on other data than the run "
                                                        "finds now (its images, labels differ: "
                                                        "200 images found)")):
        train(config.replace(data_root=str(smaller)), progress=False)


def test_the_fingerprint_ignores_where_the_data_is_and_sees_every_pixel(tmp_path):
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    dataset = data.ImageTensorDataset(images, torch.tensor([0, 1, 0, 1]), ["a", "b"])
    reference = data_fingerprint(dataset)
    changed = images.clone()
    changed[3, 2, 7, 7] = 1  # one value of the last image
    other = data_fingerprint(data.ImageTensorDataset(changed, dataset.labels, ["a", "b"]))
    assert {k for k in reference if reference[k] != other[k]} == {"content"}
    folder = data.ImageFolderDataset([(f"/x/{c}/{i}.png", i % 2) for i, c in enumerate("abab")],
                                     ["a", "b"])
    moved = data.ImageFolderDataset([(p.replace("/x/", "/y/z/"), y) for p, y in folder.samples],
                                    ["a", "b"])
    assert data_fingerprint(folder) == data_fingerprint(moved)


@pytest.mark.slow
def test_a_checkpoint_records_its_training_sets_fingerprint(trained_checkpoint):
    payload = torch.load(trained_checkpoint, weights_only=True)
    assert payload["data"] == data_fingerprint(load_split(tiny_config(), "train"))
