"""The accepted values of the Config's choice fields, in a module that imports nothing.

The Config validates against these lists and the modules that use a value (the data loaders, the
backbone factory, the losses) check against the same ones, without the Config importing those
heavy modules. The method names are the registry's (`discomm_lite.method`).
"""

from __future__ import annotations

DATASETS = ("synthetic", "cifar10", "cifar100", "imagefolder")
SPLITS = ("train", "test")

BACKBONES = (
    "convnet-small",  # 4 conv blocks, ~0.4 M parameters: the CPU classroom backbone
    "convnet-small-gn",  # the same with GroupNorm: no batch statistics, so per-process
    # batches give exactly the single-process result (multi-process CPU runs, tests)
    "resnet18-cifar",  # ResNet-18 with a 3x3 stride-1 stem and no max-pool, for 32 px images
    "resnet18",
    "resnet50",
    "vit-tiny/4",  # ViT-Tiny with 4 px patches for 32 px images (64 tokens)
    "vit-tiny/16",
    "vit-small/16",
    "vit-base/16",
)

# The embedded synthetic dataset's binary factors, in the column order of its `factors`
# (discomm_lite.data.synthetic renders them; `Config.redraw_factors` names them).
SYNTHETIC_FACTORS = ("shape", "colour", "size", "position", "background", "texture")

AGREEMENTS = ("bce", "cosine")
TARGETS = ("hard", "soft")
HEAD_NORMS = ("none", "batchnorm")
TEACHER_HEAD_POLICIES = ("copy", "keep")
REINIT_OPTIMIZER_STATES = ("keep", "clear")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CLIP_GRAD_MODES = ("per_param", "global")
CODING_RATE_SCOPES = ("global", "per_process")
CODING_RATE_INPUTS = ("student", "student_teacher_mean")


def check_backbone_name(name: str) -> None:
    """Raise ValueError unless `name` is one of `BACKBONES` or 'timm:<model name>'."""
    if name in BACKBONES or (name.startswith("timm:") and len(name) > 5):
        return
    raise ValueError(
        f"Config.backbone = {name!r} is not valid: it must be one of {', '.join(BACKBONES)}, "
        "or 'timm:<model name>' for any timm model."
    )
