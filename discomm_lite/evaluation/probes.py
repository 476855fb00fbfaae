"""Linear probes of frozen features: the fast proxy (logistic regression on pre-extracted
features) and DINO's protocol (SGD on augmented crops through the frozen backbone).

Like `evaluate`, every function computes on the device of its inputs and returns plain Python
floats (or tensors where stated). Shapes: ``N`` train items, ``M`` test items, ``D`` feature dim.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms import v2

from discomm_lite.data import (
    ImageFolderDataset,
    ImageTensorDataset,
    default_num_workers,
    make_eval_batches,
)
from discomm_lite.evaluation.metrics import as_float, check_pair
from discomm_lite.views.augment import sample_crop_boxes
from discomm_lite.views.pixel_ops import resized_crops


def linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 1024,
    seed: int = 0,
    n_classes: int | None = None,
) -> dict[str, float]:
    """Multinomial logistic regression on frozen, standardised features: the fast linear proxy.

    A proxy for the linear probing the paper reports: it trains on features extracted once from
    un-augmented, center-cropped images, so it takes seconds, but it is not DINO's protocol
    (eval_linear.py: SGD on random-resized, flipped crops through the frozen backbone, 100
    epochs), which ``features.dino_linear_probe`` follows. Compare its numbers with each other,
    not with the paper's.

    Features are standardised with the train set's mean and standard deviation, so the probe
    is invariant to a per-dimension affine rescaling of the features. The weights start at zero
    and are fitted by Adam on mini-batches (``batch_size >= N`` is full-batch gradient descent)
    with a cosine-decayed learning rate, minimising cross-entropy + weight_decay / 2 * ||W||^2
    (the bias is not penalised). The only randomness is the batch order, drawn from ``seed``, so
    the result is deterministic for a seed. It trains even when called under ``torch.no_grad()``
    or ``torch.inference_mode()``.

    Args:
        train_feats: (N, D) features to fit on.
        train_labels: (N,) integer labels.
        test_feats: (M, D) features to evaluate.
        test_labels: (M,) integer labels.
        epochs: passes over the train set.
        lr: peak Adam learning rate.
        weight_decay: L2 penalty coefficient on the weights.
        batch_size: mini-batch size.
        seed: seed of the batch order.
        n_classes: number of classes; default 1 + the largest label seen.

    Returns:
        {"linear_top1": test accuracy, "linear_train_top1": train accuracy}.
    """
    check_pair(train_feats, train_labels, "train_feats")
    check_pair(test_feats, test_labels, "test_feats")
    x_train = as_float(train_feats)
    device = x_train.device
    x_test = as_float(test_feats).to(device)
    y_train = train_labels.to(device, torch.long)
    y_test = test_labels.to(device, torch.long)
    if n_classes is None:
        n_classes = 1 + int(max(y_train.max(), y_test.max()))
    mean = x_train.mean(dim=0)
    std = x_train.std(dim=0, correction=0).clamp_min(1e-8)  # constant dims become 0, not inf
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    n, dim = x_train.shape
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = max(1, epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    # The features may come from an inference_mode / no_grad evaluation block; the probe trains.
    with torch.inference_mode(False), torch.enable_grad():
        weight = torch.zeros(n_classes, dim, dtype=x_train.dtype, device=device, requires_grad=True)
        bias = torch.zeros(n_classes, dtype=x_train.dtype, device=device, requires_grad=True)
        optimizer = torch.optim.Adam([weight, bias], lr=lr)
        # Gathering each batch into one reused buffer avoids a fresh allocation per step, which
        # on CPU costs more than the step itself.
        x_batch = torch.empty(min(batch_size, n), dim, dtype=x_train.dtype, device=device)
        step = 0
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator).to(device)
            for batch in order.split(batch_size):
                for group in optimizer.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
                inputs = torch.index_select(x_train, 0, batch, out=x_batch[: len(batch)])
                logits = inputs @ weight.T + bias  # (batch, n_classes)
                loss = F.cross_entropy(logits, y_train[batch])
                loss = loss + 0.5 * weight_decay * weight.square().sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
    with torch.no_grad():
        train_hits = int(((x_train @ weight.T + bias).argmax(dim=1) == y_train).sum())
        test_hits = int(((x_test @ weight.T + bias).argmax(dim=1) == y_test).sum())
    return {"linear_top1": test_hits / len(y_test), "linear_train_top1": train_hits / n}


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
