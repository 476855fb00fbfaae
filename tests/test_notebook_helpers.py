"""The helpers the notebooks call: smoke setting and its data, parameters, run cache, ImageFolder
writing."""

import pytest
import torch

from discomm_lite.config import make_config
from discomm_lite.data import DatasetNotFoundError, load_dataset, write_cifar10_standin
from discomm_lite.notebook import (
    SMOKE_OVERRIDES,
    cached_train,
    config_from_parameters,
    find_data_root,
    run_dir,
    smoke,
    write_image_folder,
)
from discomm_lite.synthetic import make_synthetic


def test_smoke_shrinks_only_when_asked(monkeypatch):
    config = make_config("cifar-toy")
    monkeypatch.delenv("DISCOMM_SMOKE", raising=False)
    assert smoke(config) is config
    monkeypatch.setenv("DISCOMM_SMOKE", "1")
    small = smoke(config, backbone="convnet-small-gn")
    assert small.epochs == SMOKE_OVERRIDES["epochs"] and small.backbone == "convnet-small-gn"
    assert small.dataset == "cifar10"


def test_find_data_root_stands_in_for_missing_cifar10_only_in_smoke(monkeypatch, tmp_path,
                                                                     capsys):
    monkeypatch.setenv("DISCOMM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DISCOMM_DATA", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.delenv("DISCOMM_SMOKE", raising=False)
    with pytest.raises(DatasetNotFoundError, match="download=True") as missing:
        find_data_root("cifar10", str(empty))
    assert str(empty) in str(missing.value) and "DISCOMM_DATA" in str(missing.value)
    assert not (tmp_path / "cache" / "standin").exists()

    monkeypatch.setenv("DISCOMM_SMOKE", "1")
    with pytest.raises(DatasetNotFoundError):
        find_data_root("cifar100", str(empty))  # the stand-in is CIFAR-10 only
    root = find_data_root("cifar10", str(empty))
    assert root == str(tmp_path / "cache" / "standin")
    note = capsys.readouterr().out
    for needle in ("stand-in for CIFAR-10", root, str(empty), "DISCOMM_DATA", "download=True",
                   "cifar10-jpeg.tar.gz"):
        assert needle in note
    train = load_dataset("cifar10", "train", root)
    assert train.images.shape[1:] == (3, 32, 32) and len(train.classes) == 10

    # Where CIFAR-10 is found, the root is kept as given, in the smoke setting too, silently.
    real = tmp_path / "real"
    write_cifar10_standin(real, train_per_class=1, test_per_class=1)
    assert find_data_root("cifar10", str(real)) == str(real)
    monkeypatch.setenv("DISCOMM_DATA", str(real))
    assert find_data_root("cifar10") is None
    assert find_data_root("synthetic") is None
    assert capsys.readouterr().out == ""


def test_parameters_become_the_config_and_typos_are_refused():
    namespace = {"n_bits": 32, "reinit_every": 2, "out_dir": None, "torch": torch,
                 "PRESET": "synthetic-toy", "_hidden": 3, "In": [""], "make_config": make_config}
    config = config_from_parameters("synthetic-toy", namespace)
    assert (config.n_bits, config.reinit_every, config.dataset) == (32, 2, "synthetic")
    with pytest.raises(ValueError, match="n_bit"):
        config_from_parameters("synthetic-toy", {"n_bit": 32})


def test_run_dir_identifies_the_configuration():
    a, b = make_config("synthetic-toy"), make_config("synthetic-toy", n_bits=8)
    assert run_dir(a) == run_dir(a.replace(out_dir="x")) != run_dir(b)


def test_cached_train_returns_the_finished_run(tmp_path):
    config = make_config("synthetic-toy", train_subset=128, batch_size=64, epochs=1,
                         eval_every=0, n_bits=8, head_hidden_dim=32)
    first = cached_train(config, tmp_path, progress=False)
    second = cached_train(config, tmp_path, progress=False)
    assert second.records == first.records
    assert len(list(tmp_path.iterdir())) == 1


def test_write_image_folder_round_trips_through_the_imagefolder_loader(tmp_path):
    data = make_synthetic(16, seed=3)
    write_image_folder(data, tmp_path / "train")
    write_image_folder(data, tmp_path / "val")
    loaded = load_dataset("imagefolder", "train", tmp_path)
    assert len(loaded) == 16
    classes = sorted({data.classes[i] for i in data.labels.tolist()})
    assert loaded.classes == classes
    image, label = loaded[0]
    assert image.size == (32, 32) and loaded.classes[label] in classes
