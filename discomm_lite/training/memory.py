"""A rough estimate of a run's memory, checked before anything is allocated.

`--n_bits 100000` would otherwise try to allocate some 40 GB per K x K matrix deep inside the
first step. The estimate counts what grows with the channel and the batch, and leaves out the
backbone's activations (they depend on its architecture and image size) and the dataset:

- weights and optimizer state: every parameter of the model (built on the meta device, so
  nothing is allocated) x 4 bytes x 5: student, teacher, gradient and AdamW's two moments;
- the head's activations: for each of the process's n images and V views, its two hidden layers
  and its K outputs, kept for the backward pass and as many gradients (x 2), plus the teacher's
  outputs on the G global views;
- the coding rate's K x K matrices (methods whose loss measures it: BITS, SimDINO): the Gram
  matrix, I + c Gram, its Cholesky factor and the gradient of each, for every global view, all
  alive until the backward pass (8 K^2 floats per global view).

A run is refused when the total exceeds the device's memory (the GPU's, or the machine's RAM).
"""

from __future__ import annotations

import torch

from discomm_lite.config import Config
from discomm_lite.devices import device_memory
from discomm_lite.method import get_method

_FLOAT = 4  # bytes of a float32


def training_memory(config: Config, world_size: int = 1) -> dict[str, int]:
    """Bytes one training process of `config` needs, by part (see the module docstring).

    Returns {} when the model cannot be built on the meta device (some timm models).
    """
    from discomm_lite.models.model import make_model

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = make_model(config)
            out_dim = model.head(torch.zeros(2, model.backbone.num_features)).shape[1]
    except Exception:  # a model that meta tensors cannot build: no estimate
        return {}
    n_params = sum(p.numel() for p in model.parameters())
    rows = config.batch_size // max(1, world_size) * config.views_per_image
    head_values = rows * (2 * config.head_hidden_dim + out_dim) * 2
    teacher_values = config.batch_size // max(1, world_size) * config.n_global * out_dim
    parts = {"weights and optimizer state": n_params * _FLOAT * 5,
             "head activations": (head_values + teacher_values) * _FLOAT}
    if measures_coding_rate(config):
        parts["coding-rate K x K matrices"] = 8 * config.n_bits**2 * config.n_global * _FLOAT
    return parts


def measures_coding_rate(config: Config) -> bool:
    """Whether the method's loss computes the coding rate (its default weight is not 0)."""
    return bool(get_method(config.method).coding_rate_weight)


def check_training_memory(config: Config, device: torch.device, world_size: int = 1) -> None:
    """Raise ValueError when `training_memory` exceeds what `device` has, naming the parts."""
    parts = training_memory(config, world_size)
    capacity = device_memory(device)
    total = sum(parts.values())
    if capacity is None or total <= capacity:
        return
    listed = ", ".join(f"{name} {size / 2**30:.1f} GiB" for name, size in parts.items())
    raise ValueError(
        f"This run needs about {total / 2**30:.1f} GiB on {device}, more than its "
        f"{capacity / 2**30:.1f} GiB ({listed}; with Config.n_bits = {config.n_bits}, "
        f"head_hidden_dim = {config.head_hidden_dim}, batch_size = {config.batch_size}). Lower "
        "n_bits (the coding rate's K x K matrices grow as its square), head_hidden_dim or "
        "batch_size, or use a device with more memory."
    )
