"""Backbones through torchvision and timm, behind one contract.

`make_backbone(name)` returns a `Backbone`: it takes RGB float images in [0, 1], (N, 3, H, W),
applies its own normalisation and returns (N, D) features, with `num_features = D`. Any module
exposing `num_features` (timm's contract) can be wrapped, via the `timm:<model name>` prefix or
by passing the module to `Backbone` directly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from discomm_lite.choices import check_backbone_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Normalise [0, 1] RGB images, then extract (N, D) features with `net`."""

    def __init__(self, net: nn.Module, num_features: int,
                 mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.net = net
        self.num_features = num_features
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> (N, D) features."""
        return self.net((images - self.mean) / self.std)


class ConvNetSmall(nn.Module):
    """A small VGG-style convnet (32 -> 256 channels): fast enough to train on a laptop CPU."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256),
                 group_norm: bool = False) -> None:
        super().__init__()
        layers, in_ch = [], 3
        for i, width in enumerate(widths):
            norm = nn.GroupNorm(8, width) if group_norm else nn.BatchNorm2d(width)
            layers += [nn.Conv2d(in_ch, width, 3, padding=1, bias=False), norm,
                       nn.ReLU(inplace=True)]
            if i < len(widths) - 1:  # keep the last map's resolution for the global pooling
                layers.append(nn.MaxPool2d(2))
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.num_features = in_ch

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) normalised images -> (N, 256) globally average-pooled features."""
        return self.features(x).mean(dim=(2, 3))  # (N, C) global average pool


def _torchvision_resnet(name: str, cifar_stem: bool) -> tuple[nn.Module, int]:
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    if cifar_stem:
        # 32 px images: a 7x7 stride-2 stem and max-pool would leave 8x8 maps before layer1.
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    num_features = net.fc.in_features
    net.fc = nn.Identity()
    return net, num_features


def _timm_vit(size: str, patch: int, drop_path: float) -> tuple[nn.Module, int]:
    import timm

    if patch == 16:
        net = timm.create_model(f"vit_{size}_patch16_224", pretrained=False, num_classes=0,
                                drop_path_rate=drop_path, dynamic_img_size=True)
    else:
        from timm.models.vision_transformer import VisionTransformer

        dims = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}[size]
        net = VisionTransformer(img_size=32, patch_size=patch, embed_dim=dims[0], depth=12,
                                num_heads=dims[1], num_classes=0, drop_path_rate=drop_path,
                                dynamic_img_size=True)
    return net, net.num_features


def make_backbone(name: str, *, drop_path: float = 0.0) -> Backbone:
    """Build a randomly initialised backbone by name (see `choices.BACKBONES`)."""
    check_backbone_name(name)
    if name.startswith("convnet-small"):
        net = ConvNetSmall(group_norm=name.endswith("-gn"))
        num_features = net.num_features
    elif name.startswith("resnet"):
        net, num_features = _torchvision_resnet(name.removesuffix("-cifar"),
                                                cifar_stem=name.endswith("-cifar"))
    elif name.startswith("vit-"):
        size, patch = name.removeprefix("vit-").split("/")
        net, num_features = _timm_vit(size, int(patch), drop_path)
    else:
        import timm

        net = timm.create_model(name.removeprefix("timm:"), pretrained=False, num_classes=0,
                                drop_path_rate=drop_path)
        num_features = net.num_features
    return Backbone(net, num_features)


def is_convnet(backbone: Backbone) -> bool:
    """Whether channels-last memory layout helps (convolutional networks on CUDA)."""
    return any(isinstance(m, nn.Conv2d) for m in backbone.net.modules()) and not hasattr(
        backbone.net, "patch_embed")
