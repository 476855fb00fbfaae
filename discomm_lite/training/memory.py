"""A rough estimate of a run's memory, checked before anything is allocated.

`--n_bits 100000` would otherwise try to allocate some 40 GB per K x K matrix deep inside the
first step, and `--n_local 1000` (a typo for 10) grow past the machine's memory in its first
forward. The estimate counts what grows with the channel, the views and the batch, and leaves out
the dataset:

- weights and optimizer state: every parameter of the model (built on the meta device, so
  nothing is allocated) x 4 bytes x 5: student, teacher, gradient and AdamW's two moments;
- the backbone's activations: what the student's forward keeps for the backward pass, for the
  process's n images, on each of their G global and L local views. Measured per image and view
  size by a forward on the meta device (no computation, nothing allocated), as the outputs of
  the backbone's layers (each tensor once: an in-place ReLU's output is its input's; within 15%
  of what autograd saves for the convnet, the ResNet and the ViTs); 2 bytes a value under
  bf16/fp16 autocast, else 4;
- the backbone's gradients in the backward pass: the gradients of a layer's output and input,
  twice its largest output, for all the views of one size at once (they run as one batch);
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


def training_memory(config: Config, world_size: int = 1,
                    device: torch.device | None = None) -> dict[str, int]:
    """Bytes one training process of `config` on `device` needs, by part (see the module
    docstring).

    Returns {} when the model cannot be built on the meta device (some timm models), and leaves
    out the backbone's activations when it cannot run there.
    """
    from discomm_lite.models.model import make_model

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = make_model(config)
            out_dim = model.head(torch.zeros(2, model.backbone.num_features)).shape[1]
    except Exception:  # a model that meta tensors cannot build: no estimate
        return {}
    n_params = sum(p.numel() for p in model.parameters())
    images = config.batch_size // max(1, world_size)
    rows = images * config.views_per_image
    head_values = rows * (2 * config.head_hidden_dim + out_dim) * 2
    teacher_values = images * config.n_global * out_dim
    parts = {"weights and optimizer state": n_params * _FLOAT * 5,
             "head activations": (head_values + teacher_values) * _FLOAT}
    views = [(n, activation_values(model.backbone, size)) for n, size in
             ((config.n_global, config.global_size), (config.n_local, config.local_size)) if n]
    if all(values is not None for _, values in views):
        value = images * _value_bytes(config, device)
        parts["backbone activations"] = value * sum(n * every for n, (every, _) in views)
        parts["backbone gradients"] = value * max(n * 2 * largest for n, (_, largest) in views)
    if measures_coding_rate(config):
        parts["coding-rate K x K matrices"] = 8 * config.n_bits**2 * config.n_global * _FLOAT
    return parts


def activation_values(backbone: torch.nn.Module, size: int) -> tuple[int, int] | None:
    """(all, largest): the values `backbone`'s layers output for one (3, size, size) image, and
    those of its largest output. Each leaf module's output tensors, each tensor once (an
    in-place ReLU outputs its input), from a forward on the meta device (nothing computed or
    allocated); `backbone` must be on the meta device. None if it cannot run there."""
    outputs: dict[int, torch.Tensor] = {}  # by id, kept alive so that no id is reused

    def keep(module, inputs, output) -> None:
        for tensor in output if isinstance(output, tuple | list) else (output,):
            if isinstance(tensor, torch.Tensor):
                outputs[id(tensor)] = tensor

    leaves = [m for m in backbone.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(keep) for m in leaves]
    try:
        with torch.device("meta"), torch.no_grad():
            backbone(torch.zeros(1, 3, size, size))
    except Exception:  # a backbone that cannot run on the meta device
        return None
    finally:
        for hook in hooks:
            hook.remove()
    sizes = [t.numel() for t in outputs.values()]
    return sum(sizes), max(sizes, default=0)


def _value_bytes(config: Config, device: torch.device | None) -> int:
    """Bytes of an activation value: 2 under bf16/fp16 autocast (CUDA's default), else 4."""
    if config.precision in ("bf16", "fp16"):
        return 2
    return 2 if config.precision == "auto" and device is not None and device.type == "cuda" \
        else _FLOAT


def measures_coding_rate(config: Config) -> bool:
    """Whether the method's loss computes the coding rate (its default weight is not 0)."""
    return bool(get_method(config.method).coding_rate_weight)


def check_training_memory(config: Config, device: torch.device, world_size: int = 1) -> None:
    """Raise ValueError when `training_memory` exceeds what `device` has, naming the parts."""
    parts = training_memory(config, world_size, device)
    capacity = device_memory(device)
    total = sum(parts.values())
    if capacity is None or total <= capacity:
        return
    listed = ", ".join(f"{name} {size / 2**30:.1f} GiB" for name, size in parts.items())
    if max(parts, key=parts.get).startswith("backbone"):
        settings = (f"n_global = {config.n_global} at {config.global_size} px, n_local = "
                    f"{config.n_local} at {config.local_size} px, batch_size = "
                    f"{config.batch_size}")
        advice = ("Lower n_local or n_global (each view of each image runs the backbone), the "
                  "view sizes or batch_size, spread the batch over more processes (torchrun)")
    else:
        settings = (f"n_bits = {config.n_bits}, head_hidden_dim = {config.head_hidden_dim}, "
                    f"batch_size = {config.batch_size}")
        advice = ("Lower n_bits (the coding rate's K x K matrices grow as its square), "
                  "head_hidden_dim or batch_size")
    raise ValueError(
        f"This run needs about {total / 2**30:.1f} GiB on {device}, more than its "
        f"{capacity / 2**30:.1f} GiB ({listed}; with Config.{settings}). {advice}, or use a "
        "device with more memory."
    )
