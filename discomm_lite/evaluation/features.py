"""Frozen features of a backbone and binary codes of a head, over a whole dataset; DINO's probe."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from discomm_lite.data import (
    ImageFolderDataset,
    ImageTensorDataset,
    make_eval_batches,
)


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
