"""The memory estimate of a run, checked before anything is allocated (issue 15)."""

from __future__ import annotations

import pytest
import torch

from discomm_lite.config import PRESETS, make_config
from discomm_lite.models.model import make_model
from discomm_lite.training import memory
from discomm_lite.training.memory import (
    activation_values,
    check_training_memory,
    training_memory,
)


@pytest.mark.parametrize("method", ["bits", "simdino", "dino"])
def test_the_estimate_counts_the_real_models_parameters_and_the_k_by_k_matrices(method):
    dino = dict(n_prototypes=96, head_bottleneck_dim=24) if method == "dino" else {}
    config = make_config("synthetic-toy", method=method, n_bits=48, head_hidden_dim=40,
                         batch_size=32, **dino)
    parts = training_memory(config)
    n_params = sum(p.numel() for p in make_model(config).parameters())  # built for real
    assert parts["weights and optimizer state"] == n_params * 4 * 5
    out_dim = 96 if method == "dino" else 48
    views = config.n_global + config.n_local
    assert parts["head activations"] == 4 * (32 * views * (2 * 40 + out_dim) * 2
                                             + 32 * config.n_global * out_dim)
    if method == "dino":  # no coding rate
        assert "coding-rate K x K matrices" not in parts
    else:
        assert parts["coding-rate K x K matrices"] == 8 * 48 * 48 * config.n_global * 4


def test_the_estimate_allocates_nothing_and_leaves_the_rng_alone():
    rng = torch.get_rng_state()
    parts = training_memory(make_config("synthetic-toy", n_bits=100_000))
    assert torch.equal(torch.get_rng_state(), rng)
    assert parts["coding-rate K x K matrices"] == 8 * 100_000**2 * 2 * 4  # 596 GiB


def test_a_run_beyond_the_devices_memory_is_refused_naming_the_parts(monkeypatch):
    config = make_config("synthetic-toy", n_bits=4096)
    monkeypatch.setattr(memory, "device_memory", lambda device: 2**30)
    with pytest.raises(ValueError) as info:
        check_training_memory(config, torch.device("cpu"))
    message = str(info.value)
    assert message.startswith("This run needs about 1.3 GiB on cpu, more than its 1.0 GiB")
    assert "coding-rate K x K matrices 1.0 GiB" in message and "Lower n_bits" in message
    check_training_memory(make_config("synthetic-toy"), torch.device("cpu"))  # 64 bits fit


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_presets_fit_their_devices(preset, monkeypatch):
    monkeypatch.setattr(memory, "device_memory", lambda device: 16 * 2**30)  # a laptop, a GPU
    # The paper's ImageNet protocol runs on 8 GPUs under bf16 (notebook 07's torchrun command).
    world_size, device = (8, "cuda") if preset.startswith("imagenet") else (1, "cpu")
    check_training_memory(make_config(preset), torch.device(device), world_size)
    if preset.startswith("imagenet"):
        with pytest.raises(ValueError, match="backbone activations 67.7 GiB"):  # one GPU
            check_training_memory(make_config(preset), torch.device("cuda"), 1)


@pytest.mark.parametrize("backbone,size", [("convnet-small", 32), ("convnet-small", 16),
                                           ("resnet18-cifar", 32),
                                           pytest.param("vit-tiny/16", 32, marks=pytest.mark.slow)])
def test_the_activation_estimate_is_what_autograd_saves_within_20_percent(backbone, size):
    config = make_config("synthetic-toy", backbone=backbone)
    with torch.device("meta"):
        estimate, largest = activation_values(make_model(config).backbone, size)
    # The reference: the tensors autograd keeps for the backward pass of a real forward, by
    # storage (a view and its base are one), the parameters left out.
    model = make_model(config)
    kept: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        kept[storage.data_ptr()] = storage.nbytes() // tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.backbone(torch.rand(2, 3, size, size))
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = sum(n for pointer, n in kept.items() if pointer not in parameters) / 2
    assert 0.8 < saved / estimate < 1.2
    assert 0 < largest < estimate


def test_a_typo_of_a_thousand_local_views_is_refused_before_the_first_step(monkeypatch, capsys):
    from discomm_lite.cli import main

    monkeypatch.setattr(memory, "device_memory", lambda device: 16 * 2**30)
    parts = training_memory(make_config("synthetic-toy", n_local=1000))
    assert parts["backbone activations"] > 15 * 2**30  # 128 images x 1002 views
    status = main(["train", "--preset", "synthetic-toy", "--n_local", "1000", "--out",
                   "never-written"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("error: This run needs about 25.4 GiB on cpu, more than its 16.0 GiB")
    assert "backbone activations 16.5 GiB, backbone gradients 7.8 GiB" in err
    assert "n_local = 1000 at 16 px" in err and "Lower n_local or n_global" in err
