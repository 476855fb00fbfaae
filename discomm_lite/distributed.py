"""torch.distributed helpers that are no-ops without a process group.

Everything in the library runs in one process on a CPU; under `torchrun` the same calls sum over
processes. Process-group set-up happens only at the edge (`setup_from_env`, used by the CLI and
the training entry point).
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """Whether a torch.distributed process group is running."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """Whether this process writes files and logs (rank 0)."""
    return rank() == 0


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum over processes, without gradient (statistics, DINO's center)."""
    if not is_distributed():
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x


def all_reduce_sum_with_grad(x: Tensor) -> Tensor:
    """Sum over processes with gradient: the backward pass sums the incoming gradients too.

    Used for the coding rate's Gram matrix. With DDP averaging parameter gradients over W
    processes, each rank's share of d(rate)/dZ arrives W times through this sum and is divided
    by W again by DDP, so the gradient equals that of the one-process global-batch loss.
    """
    if not is_distributed():
        return x
    with warnings.catch_warnings():
        # Deprecated in favour of a private module without autograd; it remains the public,
        # differentiable all-reduce.
        warnings.simplefilter("ignore", FutureWarning)
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(x)


def resolve_device(device: str = "auto") -> torch.device:
    """The device `device` names ("auto": CUDA when there is one, else the CPU), if it exists.

    Raises ValueError, saying what there is, for a name torch does not know or a GPU that this
    machine does not have.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device = {device!r} is not a device: use auto, cpu, cuda or cuda:N."
                         ) from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device = {device!r}, but this machine has no CUDA GPU that torch "
                             "can use: use device cpu (or auto).")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device = {device!r}, but this machine has {count} CUDA GPU(s): "
                             f"cuda:0 to cuda:{count - 1}.")
    elif resolved.type != "cpu":
        raise ValueError(f"device = {device!r} is not supported: use auto, cpu, cuda or cuda:N.")
    return resolved


def setup_from_env(device: str = "auto") -> torch.device:
    """Join the process group that torchrun describes in the environment, and pick the device.

    Without torchrun's variables this starts nothing and returns the requested device
    (`resolve_device`). NCCL on CUDA, gloo on CPU.
    """
    resolved = resolve_device(device)
    use_cuda = resolved.type == "cuda"
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not is_distributed():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        if use_cuda:
            return torch.device("cuda", local_rank)
    return resolved


def broadcast_object(obj):
    """The main process's `obj` on every process (`obj` itself without a process group)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every process (a no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group cleanly (every process reaches this point first)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()
