"""The optimizer: AdamW over DINO's parameter groups (backbone and head apart); gradient clipping.

DINO's main_dino.py builds AdamW over two groups (weight decay on weights, none on biases and
norms); here each is split between the backbone and the head, so that a head reset can warm the
new head's learning rate up on its own (`reset`). The schedules set every group's lr and weight
decay at each step (`step.train_step`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from discomm_lite.choices import CLIP_GRAD_MODES
from discomm_lite.config import Config
from discomm_lite.models.model import MultiCropModel


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


def make_optimizer(model: nn.Module, config: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW over `param_groups(model)`, as DINO's main_dino.py (factory).

    lr and weight decay are overwritten every step by the schedules (`train_step`).
    """
    # fused AdamW: one kernel for all parameters on CUDA; not available on CPU.
    return torch.optim.AdamW(param_groups(model), lr=config.lr,
                             weight_decay=config.weight_decay, fused=device.type == "cuda")


def clip_gradients(parameters: Sequence[nn.Parameter], max_norm: float, mode: str) -> Tensor:
    """Clip gradients in place; return the norm of all gradients before clipping (a device scalar).

    mode "per_param": each parameter's gradient g with |g| > max_norm is scaled by
    max_norm / (|g| + 1e-6), each tensor on its own (DINO's and SimDINO's `utils.clip_gradients`,
    the convention of the paper's "gradient clipping 1"). mode "global": all gradients are scaled
    together so that their joint norm is at most max_norm (`torch.nn.utils.clip_grad_norm_`).
    max_norm 0 leaves the gradients as they are. No host-device sync in either mode.
    """
    if mode not in CLIP_GRAD_MODES:
        raise ValueError(f"mode must be one of {CLIP_GRAD_MODES}, got {mode!r}.")
    with_grad = [p for p in parameters if p.grad is not None]
    if mode == "global" and max_norm > 0:
        return nn.utils.clip_grad_norm_(with_grad, max_norm)
    grads = [p.grad for p in with_grad]
    norms = torch.stack(torch._foreach_norm(grads))  # (P,) one norm per parameter tensor
    if max_norm > 0:
        scales = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # 1: the tensor is left untouched
        torch._foreach_mul_(grads, list(scales.unbind()))
    return torch.linalg.vector_norm(norms)
