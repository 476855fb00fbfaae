"""DINO's multi-crop views of a batch held in memory, with batched tensor ops on any device.

`make_views` works on a uint8 batch already in memory (CIFAR-sized images): for each view of
the `ViewSpec` it draws every random choice on the CPU from an explicit `torch.Generator`
(`sample_view_params`, torchvision's RandomResizedCrop and RandomApply draws, vectorised), then
applies them with the batched ops of `pixel_ops` (`apply_view`). The CPU and CUDA paths see the
same parameters and a run can be replayed. Folder images take the per-image path instead,
`multicrop.MultiCropTransform`, from the same spec.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from discomm_lite.config.view_spec import CropSpec, ViewSpec, blur_kernel_size
from discomm_lite.views.pixel_ops import (
    JITTER_IDENTITY,
    apply_where_,
    color_jitter,
    gaussian_blur,
    grayscale,
    resized_crops,
    solarize,
)


@dataclass(frozen=True)
class ViewParams:
    """Every random choice for one view of a batch of N images (CPU tensors)."""

    boxes: Tensor  # (N, 4) int64: top, left, height, width, torchvision's (i, j, h, w)
    flip: Tensor  # (N,) bool
    jitter: Tensor  # (N, 4) float32: brightness, contrast, saturation, hue; identity if not applied
    jitter_order: Tensor  # (N, 4) int64: a permutation of the 4 jitter ops per sample
    grayscale: Tensor  # (N,) bool
    blur: Tensor  # (N,) bool
    sigma: Tensor  # (N,) float32, used where blur is True
    solarize: Tensor  # (N,) bool


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    attempts: int = 10,
) -> Tensor:
    """Sample N crop boxes as torchvision's ``RandomResizedCrop.get_params``, vectorised.

    Each sample draws ``attempts`` (area fraction, log aspect ratio) pairs at once and keeps the
    first whose rounded box fits in the image; samples with none fall back to torchvision's
    central crop.

    Returns:
        (N, 4) int64 boxes (top, left, height, width).
    """
    area = height * width
    log_ratio = torch.tensor(ratio, dtype=torch.float64).log()
    u = torch.rand(n, attempts, 2, generator=generator, dtype=torch.float64)  # (N, A, 2)
    target_area = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    aspect = torch.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[..., 1])
    # torch.round rounds half to even, like Python's round() in torchvision.
    w = torch.sqrt(target_area * aspect).round().long()  # (N, A)
    h = torch.sqrt(target_area / aspect).round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first fitting attempt
    w = w.gather(1, first).squeeze(1)  # (N,)
    h = h.gather(1, first).squeeze(1)
    found = fits.any(dim=1)

    fallback_h, fallback_w = _central_crop_size(height, width, ratio)
    h = torch.where(found, h, fallback_h)
    w = torch.where(found, w, fallback_w)
    offsets = torch.rand(n, 2, generator=generator, dtype=torch.float64)  # (N, 2)
    top = (offsets[:, 0] * (height - h + 1)).floor().long()
    left = (offsets[:, 1] * (width - w + 1)).floor().long()
    top = torch.where(found, top, (height - fallback_h) // 2)
    left = torch.where(found, left, (width - fallback_w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def _central_crop_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's fallback crop: the whole image, trimmed to the nearest allowed aspect ratio."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if in_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def sample_view_params(
    n: int, height: int, width: int, crop: CropSpec, spec: ViewSpec, generator: torch.Generator
) -> ViewParams:
    """Draw every random choice of one view for N images of size (height, width), on the CPU.

    Every draw is made whatever its probability, so changing one probability in the spec does not
    shift the random stream of the others.
    """

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    def coin(p: float) -> Tensor:
        return torch.rand(n, generator=generator) < p

    boxes = sample_crop_boxes(n, height, width, crop.scale, spec.ratio, generator)
    flip = coin(spec.flip_p)
    jittered = coin(spec.jitter_p)
    factors = torch.stack(
        [
            uniform(max(0.0, 1 - spec.brightness), 1 + spec.brightness),
            uniform(max(0.0, 1 - spec.contrast), 1 + spec.contrast),
            uniform(max(0.0, 1 - spec.saturation), 1 + spec.saturation),
            uniform(-spec.hue, spec.hue),
        ],
        dim=1,
    )  # (N, 4)
    identity = torch.tensor(JITTER_IDENTITY).expand(n, 4)
    order = torch.rand(n, 4, generator=generator).argsort(dim=1)  # a random permutation per row
    return ViewParams(
        boxes=boxes,
        flip=flip,
        jitter=torch.where(jittered[:, None], factors, identity),
        jitter_order=order,
        grayscale=coin(spec.grayscale_p),
        blur=coin(crop.blur_p),
        sigma=uniform(*spec.blur_sigma),
        solarize=coin(crop.solarize_p),
    )


def apply_view(pixels: Tensor, params: ViewParams, size: int, blur_sigma_max: float) -> Tensor:
    """Apply one view's parameters to (N, 3, H, W) float pixels in [0, 1] -> (N, 3, S, S).

    DINO's order: crop and flip, colour jitter, grayscale, blur, solarize.
    """
    x = resized_crops(pixels, params.boxes, params.flip, size)
    x = color_jitter(x, params.jitter, params.jitter_order)
    x = grayscale(x, params.grayscale)
    kernel_size = blur_kernel_size(size, blur_sigma_max)
    blur = functools.partial(gaussian_blur, kernel_size=kernel_size)
    apply_where_(x, params.blur, blur, params.sigma)
    return solarize(x, params.solarize)


def make_views(images: Tensor | Sequence[Tensor], spec: ViewSpec,
               generator: torch.Generator) -> list[Tensor]:
    """All views of a uint8 batch, with batched tensor ops on the images' device.

    The random parameters are drawn on the CPU from ``generator`` (the same parameters on CPU and
    CUDA; the same views again from the same generator state), then moved to the device.

    Args:
        images: (N, 3, H, W) uint8 on any device, the batch every view is made from; or one such
            batch per view (globals then locals), e.g. renderings of the same objects with some
            factors drawn again for each view (`data.synthetic.redraw_factors`).
        spec: the augmentation.
        generator: a CPU ``torch.Generator``; it is advanced.

    Returns:
        One float32 (N, 3, S, S) tensor in [0, 1] per view (globals then locals), on the images'
        device, S the view's size.
    """
    crops = spec.crops()
    sources = [images] * len(crops) if isinstance(images, Tensor) else list(images)
    if len(sources) != len(crops):
        raise ValueError(f"make_views got {len(sources)} image batches for {len(crops)} views: "
                         "give one batch, or one per view.")
    if generator.device.type != "cpu":
        raise ValueError(f"make_views needs a CPU generator; got one on {generator.device}.")
    views = []
    for source, crop in zip(sources, crops, strict=True):
        if source.dtype != torch.uint8 or source.ndim != 4 or source.shape[1] != 3:
            raise ValueError(
                f"make_views expects uint8 images of shape (N, 3, H, W); "
                f"got {source.dtype} of shape {tuple(source.shape)}."
            )
        if source.shape != sources[0].shape:
            raise ValueError(f"Every view's images must have one shape: got "
                             f"{tuple(source.shape)} and {tuple(sources[0].shape)}.")
        n, _, height, width = source.shape
        spec.check_image_size(height, width)
        params = sample_view_params(n, height, width, crop, spec, generator)
        pixels = source.float() / 255.0  # (N, 3, H, W)
        views.append(apply_view(pixels, params, crop.size, spec.blur_sigma[1]))
    return views
