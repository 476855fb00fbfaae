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


def param_groups(model: MultiCropModel) -> list[dict]:
    """AdamW groups: weight decay on weights; none on biases, norms and other 1-d parameters.

    DINO's utils.get_params_groups, each split into the backbone's and the head's parameters so
    that a head reset can warm the new head's learning rate up on its own. Each group carries
    "apply_weight_decay" for the schedule and "is_head".
    """
    groups = []
    for is_head, part in ((False, model.backbone), (True, model.head)):
        decay, no_decay = [], []
        for name, p in part.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        groups += [{"params": decay, "apply_weight_decay": True, "is_head": is_head},
                   {"params": no_decay, "apply_weight_decay": False, "weight_decay": 0.0,
                    "is_head": is_head}]
    return groups


def upgrade_optimizer_state(saved: dict, model: MultiCropModel) -> dict:
    """An AdamW state_dict saved with the two groups of older versions (decay, no decay over the
    whole model), rearranged into `param_groups(model)`'s four; a four-group one as it is."""
    if len(saved["param_groups"]) != 2:
        return saved
    params = [p for p in model.parameters() if p.requires_grad]
    is_decay = [not (p.ndim <= 1 or name.endswith(".bias"))
                for name, p in model.named_parameters() if p.requires_grad]
    old_order = ([p for p, d in zip(params, is_decay, strict=True) if d]
                 + [p for p, d in zip(params, is_decay, strict=True) if not d])
    old_index = {id(p): i for i, p in enumerate(old_order)}
    groups, state, new_index = [], {}, 0
    for group in param_groups(model):
        old_group = saved["param_groups"][0 if group["apply_weight_decay"] else 1]
        indices = []
        for p in group["params"]:
            if old_index[id(p)] in saved["state"]:
                state[new_index] = saved["state"][old_index[id(p)]]
            indices.append(new_index)
            new_index += 1
        groups.append({**old_group, "is_head": group["is_head"], "params": indices})
    return {"state": state, "param_groups": groups}


def reinit_head(student: MultiCropModel, teacher: MultiCropModel,
                optimizer: torch.optim.Optimizer, *, policy: str, seed: int,
                clear_optimizer_state: bool) -> None:
    """Re-sample the student head, apply the teacher policy and, if asked, clear its AdamW state.

    The paper's periodically randomized heads (Sec. 4.5): the head is drawn again from its
    initial distribution every `reinit_every` epochs.

    policy "copy": the teacher head becomes the new student head, so teacher and student speak
    the same (new) code from the first step, as at the start of training; "keep": the teacher
    keeps its EMA head and drifts to the new code at the EMA's pace.
    `clear_optimizer_state`: drop the head's AdamW moments and step count. A fresh,
    bias-corrected Adam then moves every weight by about lr at each of its first steps, whatever
    its gradient, which at a toy run's full lr blows the new head's outputs up within a few steps
    (studies/README.md, resets); kept moments (an in-place re-initialisation, as the paper's
    code does) carry the scale of the old head's gradients over to the new one.
    `seed` fixes the new head, so a resumed run and every process draw the same one.
    """
    if policy not in ("copy", "keep"):
        raise ValueError(f"policy must be 'copy' or 'keep', got {policy!r}.")
    devices = [p.device for p in student.head.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        student.head.reset_parameters()
    if clear_optimizer_state:
        for p in student.head.parameters():
            optimizer.state.pop(p, None)
    if policy == "copy":
        teacher.head.load_state_dict(student.head.state_dict())
