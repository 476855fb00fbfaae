"""Frozen features of a backbone and binary codes of a head, over a whole dataset; DINO's probe."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

import torch
from torch import Tensor, nn
from torchvision.transforms import v2

from discomm_lite.augment import sample_crop_boxes
from discomm_lite.data import (
    ImageFolderDataset,
    ImageTensorDataset,
    default_num_workers,
    make_eval_batches,
)
from discomm_lite.pixel_ops import resized_crops


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset: ImageTensorDataset | ImageFolderDataset,
    *,
    image_size: int,
    head: nn.Module | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int | None = None,
) -> dict[str, Tensor]:
    """Backbone features (N, D) float32, labels (N,), and with `head` its logits and bits (N, K).

    Runs in eval mode (BatchNorm running statistics) and restores the modules' previous mode.
    On CUDA the forward runs in bf16 and the features are returned in float32.
    """
    device = torch.device(device)
    modules = [m for m in (backbone, head) if m is not None]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    feats, logits, labels = [], [], []
    try:
        for images, batch_labels in make_eval_batches(dataset, image_size=image_size,
                                                      batch_size=batch_size,
                                                      num_workers=num_workers, device=device):
            with autocast:
                f = backbone(images)
                if head is not None:
                    logits.append(head(f).float().cpu())
            feats.append(f.float().cpu())
            labels.append(batch_labels.cpu())
    finally:
        for m, mode in zip(modules, was_training, strict=True):
            m.train(mode)
    out = {"feats": torch.cat(feats), "labels": torch.cat(labels)}
    if head is not None:
        out["logits"] = torch.cat(logits)
        out["codes"] = (out["logits"] > 0).to(torch.uint8)  # the teacher's message: logit > 0
    return out


def dino_linear_probe(
    backbone: nn.Module,
    train_set: ImageTensorDataset | ImageFolderDataset,
    test_set: ImageTensorDataset | ImageFolderDataset,
    *,
    image_size: int,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 1024,
    seed: int = 0,
    device: str | torch.device = "cpu",
    num_workers: int | None = None,
) -> dict[str, float]:
    """Linear probing by DINO's protocol: SGD on augmented crops through the frozen backbone.

    Follows facebookresearch/dino eval_linear.py: every epoch, each training image is a fresh
    RandomResizedCrop(image_size, scale 0.08-1) with a random horizontal flip; the frozen backbone
    (eval mode, no gradient) maps it to features, and a linear layer (weights N(0, 0.01), bias 0)
    learns by SGD on cross-entropy (momentum 0.9, no weight decay, lr x batch_size / 256
    cosine-annealed to 0, one step of the schedule per epoch). Test images are resized and
    center-cropped as in `make_eval_batches`. It costs `epochs` backbone passes over the train
    set: meant for GPUs (`evaluate.linear_probe` is the fast proxy on pre-extracted features).
    Two differences from eval_linear.py: the features are the backbone's (N, D) output (DINO
    concatenates the class tokens of the last blocks, with the mean patch token for ViT-B), and
    the accuracy is the last epoch's (DINO reports its best epoch's, a choice made on the test
    set). Deterministic for a seed on CPU; the caller's RNG state is left as it was.

    Args:
        backbone: a frozen `Backbone` (RGB [0, 1] images in, (N, D) features out,
            `num_features` = D); its mode is restored afterwards and its weights are untouched.
        train_set, test_set: in-memory or ImageFolder datasets.
        image_size: side of the training crops and of the test images.
        epochs, lr, batch_size: DINO's defaults (lr is for a batch of 256, scaled linearly).
        seed: seeds the crops, flips and batch order.
        device: where the backbone runs; on CUDA its forward runs in bf16.
        num_workers: DataLoader workers for ImageFolder data (None: the machine default).

    Returns:
        {"linear_dino_top1": test accuracy in [0, 1]}.
    """
    device = torch.device(device)
    n_classes = len(train_set.classes)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode(False), \
                torch.enable_grad():
            torch.manual_seed(seed)
            linear = nn.Linear(backbone.num_features, n_classes, device=device)
            nn.init.normal_(linear.weight, std=0.01)
            nn.init.zeros_(linear.bias)
            optimizer = torch.optim.SGD(linear.parameters(), lr=lr * batch_size / 256,
                                        momentum=0.9, weight_decay=0.0)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=0)
            for _ in range(epochs):
                for images, labels in _augmented_batches(train_set, image_size, batch_size,
                                                         device, num_workers):
                    with torch.no_grad(), autocast:
                        feats = backbone(images).float()  # (n, D)
                    loss = nn.functional.cross_entropy(linear(feats), labels)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                schedule.step()
        hits = 0
        with torch.no_grad():
            for images, labels in make_eval_batches(test_set, image_size=image_size,
                                                    batch_size=batch_size,
                                                    num_workers=num_workers, device=device):
                with autocast:
                    feats = backbone(images).float()
                hits += int((linear(feats).argmax(dim=1) == labels.to(device)).sum())
    finally:
        backbone.train(was_training)
    return {"linear_dino_top1": hits / len(test_set)}


def _augmented_batches(dataset: ImageTensorDataset | ImageFolderDataset, image_size: int,
                       batch_size: int, device: torch.device, num_workers: int | None
                       ) -> Iterator[tuple[Tensor, Tensor]]:
    """One shuffled epoch of (random-resized, randomly flipped crops in [0, 1], labels).

    Draws from the global RNG (which `dino_linear_probe` seeds): crops of in-memory images by
    `augment`'s batched RandomResizedCrop on `device`, ImageFolder images by torchvision's in
    DataLoader workers.
    """
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop defaults
    if isinstance(dataset, ImageTensorDataset):
        height, width = dataset.images.shape[-2:]
        for index in torch.randperm(len(dataset)).split(batch_size):
            images = dataset.images[index].to(device).float().div_(255)  # (n, 3, H, W)
            boxes = sample_crop_boxes(len(index), height, width, scale, ratio,
                                      torch.default_generator)
            flip = torch.rand(len(index)) < 0.5
            yield resized_crops(images, boxes, flip, image_size), dataset.labels[index].to(device)
        return
    transform = v2.Compose([v2.RandomResizedCrop(image_size, scale=scale, ratio=ratio,
                                                 antialias=True),
                            v2.RandomHorizontalFlip(), v2.PILToTensor()])
    loader = torch.utils.data.DataLoader(
        replace(dataset, transform=transform), batch_size=batch_size, shuffle=True,
        num_workers=default_num_workers() if num_workers is None else num_workers,
        pin_memory=device.type == "cuda",
    )
    for images, labels in loader:
        yield images.to(device, non_blocking=True).float().div_(255), labels.to(device)
