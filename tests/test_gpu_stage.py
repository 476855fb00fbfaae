"""The GPU notebooks on any machine (teach.gpu_stage): published tables with their sources, the
refusal of a long run on a CPU, the torchrun commands (read back by the CLI's own parser), the
ImageFolder check that stops only a launch.
(tests/test_gpu_notebooks.py runs notebooks 05 and 07 as a student without a GPU would.)"""

from __future__ import annotations

import json
import shlex

import pytest
import torch

from discomm_lite.config import make_config
from discomm_lite.teach import gpu_stage
from discomm_lite.teach.gpu_stage import (
    LIGHTLY_CIFAR10,
    PAPER_IMAGENET,
    NeedsGPUError,
    check_hardware,
    find_image_folder,
    launch_commands,
    optimiser_steps,
    smoke_image_folder,
    smoke_note,
)


@pytest.fixture
def no_smoke(monkeypatch):
    monkeypatch.delenv("DISCOMM_SMOKE", raising=False)


@pytest.fixture
def smoke_on(monkeypatch):
    monkeypatch.setenv("DISCOMM_SMOKE", "1")


# ---- published numbers ---------------------------------------------------------------------
@pytest.mark.parametrize("published", [LIGHTLY_CIFAR10, PAPER_IMAGENET])
def test_every_published_row_says_so_and_the_table_links_its_source(published):
    text = str(published.table())
    rows = [line for line in text.splitlines() if line.startswith("| ") and "method" not in line]
    assert len(rows) == len(published.rows)
    assert all("(published)" in row for row in rows)
    assert f"]({published.url})" in text and published.url.startswith("https://")
    assert published.protocol in text


def test_lightly_numbers_are_the_pinned_pages():
    # docs/source/getting_started/benchmarks.rst at the pinned commit, batch 512.
    assert "0243660ba10afc408e3f79541df537d8a2e24eb5" in LIGHTLY_CIFAR10.url
    assert LIGHTLY_CIFAR10.value("DINO", "knn200_top1") == 0.813
    assert LIGHTLY_CIFAR10.value("SimSiam", "knn200_top1_800") == 0.904
    assert all(0 < row["knn200_top1"] < row["knn200_top1_800"] < 1
               for row in LIGHTLY_CIFAR10.rows.values())  # longer training helped every method
    assert PAPER_IMAGENET.value("BITS-reset (n = 10)", "map") == 50.64
    # Each column rounded as it was published: no digits added, none lost.
    assert "| BITS-reset (n = 10) (published) | 50.64 | 73.5 | 77.8 |" in PAPER_IMAGENET.table()
    assert "| BarlowTwins (published) | 0.819 | 153.3 | 0.859 |" in LIGHTLY_CIFAR10.table()
    with pytest.raises(KeyError, match="no 'map' for 'MAE'"):
        PAPER_IMAGENET.value("MAE", "map")


# ---- a long run on a CPU -------------------------------------------------------------------
def test_optimiser_steps_drop_the_last_incomplete_batch():
    assert optimiser_steps(make_config("cifar-full")) == 200 * (50_000 // 512) == 19_400
    assert optimiser_steps(make_config("cifar-full", train_subset=10_000, epochs=20)) == 20 * 19
    assert optimiser_steps(make_config("imagenet-paper")) is None  # a folder of unknown size


def test_a_default_run_on_a_cpu_is_refused_unless_asked_for(no_smoke, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = make_config("cifar-full")
    with pytest.raises(NeedsGPUError) as refused:
        check_hardware(config)
    message = str(refused.value)
    for needle in ("Not started", "200 epochs of resnet18-cifar", "19,400 optimiser steps",
                   "allow_cpu = True", "-p allow_cpu True"):
        assert needle in message
    assert check_hardware(config, allow_cpu=True).type == "cpu"
    with pytest.raises(NeedsGPUError):
        check_hardware(config.replace(device="cpu"))  # naming the CPU is not asking for it


def test_the_smoke_setting_is_never_refused(smoke_on, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_hardware(make_config("cifar-full")).type == "cpu"


# ---- torchrun ------------------------------------------------------------------------------
def test_the_commands_name_only_what_differs_from_the_preset_and_the_cli_reads_them_back():
    from discomm_lite.cli import _overrides, build_parser

    config = make_config("imagenet-paper", epochs=30, compile=True, data_root="/data/in1k",
                         out_dir="runs/x")
    commands = launch_commands(config, "imagenet-paper", nodes=2, gpus_per_node=8)
    assert [a for a in commands.train_args if a.startswith("--") and "=" in a] == [
        "--data_root=/data/in1k", "--epochs=30", "--compile=True"]
    for line in (commands.one_node, commands.multi_node):
        args = shlex.split(line)
        train_args = args[args.index("-m") + 2:]  # after "-m discomm_lite"
        parsed = build_parser().parse_args(train_args)
        assert make_config(parsed.preset, **_overrides(parsed),
                           out_dir=parsed.out) == config
    assert "--standalone --nproc_per_node=gpu" in commands.one_node
    assert "--nnodes=2 --nproc_per_node=8" in commands.multi_node
    assert "--rdzv_endpoint=$HEAD_NODE:29400" in commands.multi_node
    assert commands.local[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    text = str(commands)
    assert text.index("# one node") < text.index("# 2 nodes of 8 GPUs") < text.index(
        "# this machine")


def test_the_smoke_note_says_whether_it_is_on(monkeypatch):
    monkeypatch.delenv("DISCOMM_SMOKE", raising=False)
    off = smoke_note("07_imagenet", backbone="vit-tiny/16")
    assert "is off" in off and "backbone = 'vit-tiny/16'" in off and "epochs = 1" in off
    assert "DISCOMM_SMOKE=1 papermill notebooks/07_imagenet.ipynb" in off
    monkeypatch.setenv("DISCOMM_SMOKE", "1")
    assert "is ON" in smoke_note("07_imagenet")


# ---- ImageFolder data ----------------------------------------------------------------------
def test_a_missing_folder_stops_only_a_launch(tmp_path, no_smoke, capsys):
    from discomm_lite.data import DatasetNotFoundError

    config = make_config("imagenet-paper", data_root=str(tmp_path / "absent"))
    assert find_image_folder(config, required=False) is None
    printed = capsys.readouterr().out
    assert "launch_here = False" in printed and str(tmp_path / "absent") in printed
    with pytest.raises(DatasetNotFoundError):
        find_image_folder(config, required=True)
    assert smoke_image_folder(config) is config  # outside the smoke setting: unchanged


def test_the_smoke_setting_writes_its_own_tiny_folder(tmp_path, smoke_on, capsys):
    config = make_config("imagenet-paper", out_dir=str(tmp_path / "run"), train_subset=16,
                         test_subset=8, image_size=32)
    config = smoke_image_folder(config)
    assert config.data_root == str(tmp_path / "run" / "imagefolder")
    train_set = find_image_folder(config, required=True)
    assert len(train_set) == 16 and "16 training images" in capsys.readouterr().out
    assert len(list((tmp_path / "run" / "imagefolder" / "val").glob("*/*.png"))) == 8


def test_the_module_records_where_each_number_comes_from():
    # Every published table says what it measured and links a page a student can open.
    for published in (gpu_stage.LIGHTLY_CIFAR10, gpu_stage.PAPER_IMAGENET):
        assert published.protocol.endswith(".") and published.title
        assert json.dumps(published.rows)  # plain numbers
