"""The memory estimate of a run, checked before anything is allocated (issue 15)."""

from __future__ import annotations

import pytest
import torch

from discomm_lite.config import PRESETS, make_config
from discomm_lite.models.model import make_model
from discomm_lite.training import memory
from discomm_lite.training.memory import check_training_memory, training_memory


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
    assert message.startswith("This run needs about 1.1 GiB on cpu, more than its 1.0 GiB")
    assert "coding-rate K x K matrices 1.0 GiB" in message and "Lower n_bits" in message
    check_training_memory(make_config("synthetic-toy"), torch.device("cpu"))  # 64 bits fit


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_presets_fit_their_devices(preset, monkeypatch):
    monkeypatch.setattr(memory, "device_memory", lambda device: 16 * 2**30)  # a laptop, a GPU
    check_training_memory(make_config(preset), torch.device("cpu"))
