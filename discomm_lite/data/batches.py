"""Evaluation batches of either dataset type, in order, as float images in [0, 1] on a device."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import transforms

from discomm_lite.data.types import ImageFolderDataset, ImageTensorDataset


def default_num_workers() -> int:
    """DataLoader workers for this machine: the usable cores but one (0 on one core).

    No fixed cap: 12 DINO crops of a 224 px image cost ~30 ms of CPU, so a ViT-B/16 step on one
    GPU needs every core a node gives it (benchmarks/data_pipeline.py measures this).
    """
    try:
        cpus = len(os.sched_getaffinity(0))  # the cores this process may run on (taskset, cgroups)
    except AttributeError:  # macOS and Windows lack sched_getaffinity
        cpus = os.cpu_count() or 1
    return max(0, cpus - 1)


def make_eval_batches(
    dataset: ImageTensorDataset | ImageFolderDataset,
    *,
    image_size: int,
    batch_size: int = 256,
    num_workers: int | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (images (N, 3, S, S) float32 in [0, 1] on `device`, labels (N,) int64), in order.

    In-memory images are resized (bicubic, antialiased) only when their side is not `image_size`.
    ImageFolder images are read by `num_workers` DataLoader workers (None: the machine default),
    resized so that their short side is image_size * 8 / 7, then center-cropped to image_size:
    the 256 -> 224 protocol of ImageNet evaluation.
    """
    device = torch.device(device)
    if isinstance(dataset, ImageTensorDataset):
        for start in range(0, len(dataset), batch_size):
            # uint8 crosses to the device (4x less traffic than float), then becomes [0, 1].
            images = dataset.images[start:start + batch_size].to(device).float().div_(255)
            if images.shape[-2:] != (image_size, image_size):
                images = F.interpolate(images, size=(image_size, image_size), mode="bicubic",
                                       antialias=True, align_corners=False).clamp_(0, 1)
            yield images, dataset.labels[start:start + batch_size]
        return
    transform = transforms.Compose([
        transforms.Resize(round(image_size * 8 / 7),
                          interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(image_size),
        transforms.PILToTensor(),
    ])
    loader = torch.utils.data.DataLoader(
        replace(dataset, transform=transform), batch_size=batch_size,
        num_workers=default_num_workers() if num_workers is None else num_workers,
        pin_memory=device.type == "cuda",
    )
    for images, labels in loader:
        yield images.to(device, non_blocking=True).float().div_(255), labels
