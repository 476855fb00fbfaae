"""Backbone + head on multi-crop views (the student), and its teacher: the same network without
stochastic depth."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from discomm_lite.config import Config
from discomm_lite.method import get_method
from discomm_lite.models.backbones import Backbone, make_backbone


class MultiCropModel(nn.Module):
    """Backbone then head, one backbone forward per crop resolution (DINO's MultiCropWrapper)."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, views: Sequence[Tensor]) -> list[Tensor]:
        """views: V tensors (N, 3, H_v, W_v) -> V tensors (N, K) of head outputs."""
        feats = []
        start = 0
        while start < len(views):
            end = start
            while end < len(views) and views[end].shape[-2:] == views[start].shape[-2:]:
                end += 1
            feats.append(self.backbone(torch.cat(views[start:end])))  # (n_same * N, D)
            start = end
        # One head call on all views: its BatchNorm (if any) sees the whole multi-crop batch.
        return list(self.head(torch.cat(feats)).chunk(len(views)))


def make_head(config: Config, in_dim: int) -> nn.Module:
    """The head of the config's method on (N, in_dim) features (factory; `Method.make_head`)."""
    return get_method(config.method).make_head(config, in_dim)


def make_model(config: Config) -> MultiCropModel:
    """A randomly initialised student of the config's method (factory)."""
    backbone = make_backbone(config.backbone, drop_path=config.drop_path)
    return MultiCropModel(backbone, make_head(config, backbone.num_features))


def make_teacher(student: MultiCropModel) -> MultiCropModel:
    """The teacher: the student's weights, no stochastic depth, never trained by gradient.

    DINO and SimDINO (main_dino.py) build the teacher without `drop_path_rate`: it runs in train
    mode (its BatchNorms use batch statistics) but its targets must not depend on which residual
    branches a random draw dropped. The copy's DropPath / StochasticDepth modules become
    identities, which is what the backbone factories build for drop_path = 0, so the teacher's
    parameters and state_dict keys are the student's.
    """
    teacher = copy.deepcopy(student)
    _remove_stochastic_depth(teacher)
    teacher.requires_grad_(False)
    return teacher


def _remove_stochastic_depth(model: nn.Module) -> None:
    from timm.layers import DropPath
    from torchvision.ops import StochasticDepth

    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, DropPath | StochasticDepth):
                setattr(parent, name, nn.Identity())
