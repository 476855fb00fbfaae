"""Backbone + head on multi-crop views, the teacher/student pair, and the head re-initialisation."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from discomm_lite.backbones import Backbone, make_backbone
from discomm_lite.config import Config
from discomm_lite.methods import get_method


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


def param_groups(model: nn.Module) -> list[dict]:
    """AdamW groups: weight decay on weights; none on biases, norms and other 1-d parameters.

    DINO's utils.get_params_groups; each group carries "apply_weight_decay" for the schedule.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "apply_weight_decay": True},
            {"params": no_decay, "apply_weight_decay": False, "weight_decay": 0.0}]


def reinit_head(student: MultiCropModel, teacher: MultiCropModel,
                optimizer: torch.optim.Optimizer, *, policy: str, seed: int) -> None:
    """Re-sample the student head, clear its optimizer state, and apply the teacher policy.

    The paper's periodically randomized heads (Sec. 4.5): the head is drawn again from its
    initial distribution every `reinit_every` epochs.

    policy "copy": the teacher head becomes the new student head, so teacher and student speak
    the same (new) code from the first step, as at the start of training; "keep": the teacher
    keeps its EMA head and drifts to the new code at the EMA's pace.
    `seed` fixes the new head, so a resumed run and every process draw the same one.
    """
    if policy not in ("copy", "keep"):
        raise ValueError(f"policy must be 'copy' or 'keep', got {policy!r}.")
    devices = [p.device for p in student.head.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        student.head.reset_parameters()
    for p in student.head.parameters():
        # Adam's moments belong to the old head's coordinates; stale ones would steer the new.
        optimizer.state.pop(p, None)
    if policy == "copy":
        teacher.head.load_state_dict(student.head.state_dict())
