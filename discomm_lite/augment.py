"""DINO's multi-crop augmentation, from one frozen spec, in two implementations.

BITS (arXiv 2602.09764) trains with DINO's augmentations: two global crops and optional local crops,
colour jitter, grayscale, Gaussian blur and solarisation, with DINO's asymmetry between the two
global views (view 1 always blurred, view 2 rarely blurred and sometimes solarised).

* :func:`make_views` works on a uint8 batch already in memory (CIFAR-sized images), on any device,
  with batched tensor ops only. Every random number is drawn on the CPU from an explicit
  ``torch.Generator``, so the CPU and CUDA paths see the same parameters and a run can be replayed.
* :class:`MultiCropTransform` works on one PIL image in a DataLoader worker (ImageFolder/ImageNet)
  with ``torchvision.transforms.v2``, seeded per sample.

Both read the same :class:`ViewSpec`, expanded into one :class:`CropSpec` per view, so no view can
silently lose an argument (the drift that long per-view keyword lists suffer from).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import PIL.Image
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

# DINO's per-view blur and solarisation probabilities (main_dino.py, DataAugmentationDINO).
_GLOBAL_1 = (1.0, 0.0)  # (blur_p, solarize_p) of the first global view
_GLOBAL_2 = (0.1, 0.2)  # second and further global views
_LOCAL = (0.5, 0.0)

# Identity factors of (brightness, contrast, saturation, hue), in the order of `color_jitter`.
_JITTER_IDENTITY = (1.0, 1.0, 1.0, 0.0)


@dataclass(frozen=True)
class CropSpec:
    """What differs between views: output size, crop scale and blur/solarize probabilities."""

    size: int
    scale: tuple[float, float]
    blur_p: float
    solarize_p: float


@dataclass(frozen=True)
class ViewSpec:
    """DINO multi-crop augmentation; defaults are DINO's, with sizes for 32 px images.

    ``blur=False`` and ``solarize=False`` zero the blur and solarize probabilities of every view
    (what lightly and solo-learn do for 32 px CIFAR images, where a blur erases the object).
    """

    # ---- views
    n_global: int = 2
    n_local: int = 0
    global_size: int = 32
    local_size: int = 16
    # ---- random resized crop
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    # ---- colour
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    # ---- blur and solarize
    blur: bool = True
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize: bool = True

    def __post_init__(self) -> None:
        _check_int("n_global", self.n_global, 1)
        _check_int("n_local", self.n_local, 0)
        _check_int("global_size", self.global_size, 1)
        _check_int("local_size", self.local_size, 1)
        _check_range_pair("global_scale", self.global_scale, upper=1.0)
        _check_range_pair("local_scale", self.local_scale, upper=1.0)
        _check_range_pair("ratio", self.ratio, upper=math.inf)
        _check_range_pair("blur_sigma", self.blur_sigma, upper=math.inf)
        for name in ("flip_p", "jitter_p", "grayscale_p"):
            _check_interval(name, getattr(self, name), 0.0, 1.0)
        for name in ("brightness", "contrast", "saturation"):
            _check_interval(name, getattr(self, name), 0.0, math.inf)
        _check_interval("hue", self.hue, 0.0, 0.5)
        for name in ("blur", "solarize"):
            if not isinstance(getattr(self, name), bool):
                value = getattr(self, name)
                raise ValueError(f"ViewSpec.{name} must be True or False; got {value!r}.")

    def crops(self) -> list[CropSpec]:
        """One CropSpec per view, globals then locals, with DINO's blur/solarize asymmetry."""
        blur = 1.0 if self.blur else 0.0
        solarize = 1.0 if self.solarize else 0.0

        def crop(size: int, scale: tuple[float, float], probs: tuple[float, float]) -> CropSpec:
            return CropSpec(size, scale, blur_p=probs[0] * blur, solarize_p=probs[1] * solarize)

        global_probs = [_GLOBAL_1] + [_GLOBAL_2] * (self.n_global - 1)
        return [crop(self.global_size, self.global_scale, p) for p in global_probs] + [
            crop(self.local_size, self.local_scale, _LOCAL) for _ in range(self.n_local)
        ]

    def check_image_size(self, height: int, width: int) -> None:
        """Raise ValueError if a view is larger than the (height, width) images it is cut from."""
        sizes = [("global_size", self.global_size)]
        if self.n_local > 0:
            sizes.append(("local_size", self.local_size))
        for name, size in sizes:
            if size > min(height, width):
                raise ValueError(
                    f"ViewSpec.{name} is {size} but the images are {height}x{width} pixels; "
                    f"set {name} to at most {min(height, width)} (crops are cut from the images, "
                    f"so a larger view would only upsample)."
                )


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"ViewSpec.{name} must be an integer >= {minimum}; got {value!r}.")


def _check_interval(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        accepted = f">= {low}" if math.isinf(high) else f"in [{low}, {high}]"
        raise ValueError(f"ViewSpec.{name} must be a number {accepted}; got {value!r}.")


def _check_range_pair(name: str, value: object, upper: float) -> None:
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and 0 < value[0] <= value[1] <= upper
    )
    if not ok:
        bound = "" if math.isinf(upper) else f" <= {upper}"
        raise ValueError(
            f"ViewSpec.{name} must be a tuple (low, high) with 0 < low <= high{bound}; "
            f"got {value!r}."
        )


def blur_kernel_size(size: int, sigma_max: float) -> int:
    """Odd Gaussian kernel size covering +-3 sigma_max, capped to the largest odd number <= size."""
    return min(2 * math.ceil(3 * sigma_max) + 1, size if size % 2 else size - 1)


# ---------------------------------------------------------------------------------------------
# Batched tensor implementation
# ---------------------------------------------------------------------------------------------


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


def resized_crops(images: Tensor, boxes: Tensor, flip: Tensor, size: int) -> Tensor:
    """Crop each image to its box, resize to size x size (bilinear), and mirror where flip is set.

    One affine warp + ``grid_sample`` for the batch. Output pixel o samples the input at
    ``left + (o + 0.5) * width / size - 0.5`` (torchvision's resize convention, align_corners=False,
    without antialiasing); positions outside the image are clamped to its border.

    Args:
        images: (N, C, H, W) float.
        boxes: (N, 4) integer boxes (top, left, height, width).
        flip: (N,) bool.
        size: output side length S.

    Returns:
        (N, C, S, S) float.
    """
    grid = crop_grid(boxes, flip, images.shape[-2], images.shape[-1], size)
    grid = grid.to(device=images.device, dtype=images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def crop_theta(boxes: Tensor, flip: Tensor, height: int, width: int) -> Tensor:
    """(N, 2, 3) float64 affine matrices of the crops, in ``F.affine_grid``'s convention.

    A normalised output coordinate x_o in [-1, 1] maps to the input's x_i = sx * x_o + tx;
    a horizontal flip negates x_o, i.e. sx.
    """
    top, left, box_h, box_w = boxes.cpu().to(torch.float64).unbind(dim=1)
    sx = box_w / width * (1.0 - 2.0 * flip.cpu().to(torch.float64))
    tx = (2 * left + box_w) / width - 1
    sy = box_h / height
    ty = (2 * top + box_h) / height - 1
    zeros = torch.zeros_like(sx)
    return torch.stack([sx, zeros, tx, zeros, sy, ty], dim=1).view(-1, 2, 3)  # (N, 2, 3)


def crop_grid(boxes: Tensor, flip: Tensor, height: int, width: int, size: int) -> Tensor:
    """(N, S, S, 2) float32 sampling grid: ``F.affine_grid(crop_theta(...), align_corners=False)``.

    The crop matrices have no rotation or shear, so the grid is built by broadcasting on the CPU
    instead of affine_grid's batched matmul: several times faster on CPU, and the same numbers on
    every device (a CUDA matmul may run in TF32).
    """
    theta = crop_theta(boxes, flip, height, width)
    base = (torch.arange(size, dtype=torch.float64) * 2 + 1) / size - 1  # (S,) pixel centres
    grid_x = theta[:, 0, 0, None] * base + theta[:, 0, 2, None]  # (N, S) over output columns
    grid_y = theta[:, 1, 1, None] * base + theta[:, 1, 2, None]  # (N, S) over output rows
    n = theta.shape[0]
    grid = torch.stack(
        [grid_x[:, None, :].expand(n, size, size), grid_y[:, :, None].expand(n, size, size)], dim=-1
    )  # (N, S, S, 2): (x, y) at row i, column j
    return grid.to(torch.float32)


def _per_sample(values: Tensor, images: Tensor) -> Tensor:
    """(N,) parameters as (N, 1, 1, 1) on the images' device and dtype, to broadcast per sample."""
    return values.to(device=images.device, dtype=images.dtype).view(-1, 1, 1, 1)


def _blend(image1: Tensor, image2: Tensor, ratio: Tensor) -> Tensor:
    """torchvision's ``_blend`` on floats: ratio * image1 + (1 - ratio) * image2, clamped."""
    return (image1 * ratio + image2 * (1.0 - ratio)).clamp(0.0, 1.0)


def _luma(images: Tensor) -> Tensor:
    """ITU-R 601-2 luma with torchvision's coefficients. (N, 3, H, W) -> (N, 1, H, W)."""
    r, g, b = images.unbind(dim=1)
    return (r * 0.2989 + g * 0.587 + b * 0.114).unsqueeze(1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """torchvision's ``adjust_brightness`` with a per-sample (N,) factor; images in [0, 1]."""
    return (images * _per_sample(factor, images)).clamp(0.0, 1.0)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """torchvision's ``adjust_contrast``: blend with the mean luma of each image."""
    mean = _luma(images).mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    return _blend(images, mean, _per_sample(factor, images))


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """torchvision's ``adjust_saturation``: blend with the luma image."""
    return _blend(images, _luma(images), _per_sample(factor, images))


def adjust_hue(images: Tensor, factor: Tensor) -> Tensor:
    """torchvision's ``adjust_hue``: rotate the HSV hue by a per-sample factor in [-0.5, 0.5].

    Same function as torchvision's RGB -> HSV -> RGB round trip (Pillow's hue definition; grey
    pixels keep hue 0), written with fewer full-size temporaries: a hue rotation keeps each pixel's
    max (V) and min, so only the hue is computed, and RGB is rebuilt as min + chroma * weight(hue),
    the piecewise-linear form of torchvision's sector table. Agrees with it to float rounding.
    """
    r, g, b = images.unbind(dim=1)  # (N, H, W) each
    maxc = images.amax(dim=1)
    minc = images.amin(dim=1)
    chroma = maxc - minc
    # Hue in sextants, in (-1, 5]: torchvision's tie order (red, then green, then blue is max).
    sextant = torch.where(
        maxc == r, g - b, torch.where(maxc == g, b - r + 2.0 * chroma, r - g + 4.0 * chroma)
    )
    # Grey pixels have a zero numerator, so dividing by `tiny` keeps their hue at 0 without NaN.
    sextant = sextant / chroma.clamp_min(torch.finfo(images.dtype).tiny)
    h6 = (sextant + 6.0 * _per_sample(factor, images)[:, 0]).remainder_(6.0)  # (N, H, W) in [0, 6)
    # Channel weights in [0, 1]: red is the max on sextants [5, 6) and [0, 1], green on [1, 3],
    # blue on [3, 5], with linear ramps in between.
    weights = torch.stack(
        [(h6 - 3.0).abs_() - 1.0, 2.0 - (h6 - 2.0).abs_(), 2.0 - (h6 - 4.0).abs_()], dim=1
    ).clamp_(0.0, 1.0)  # (N, 3, H, W)
    return torch.addcmul(minc.unsqueeze(1), chroma.unsqueeze(1), weights)


# The ops of ColorJitter, indexed as in torchvision's fn_idx: brightness, contrast, saturation, hue.
_JITTER_OPS: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    adjust_hue,
)


def color_jitter(images: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """torchvision's ColorJitter with per-sample factors and a per-sample order of the four ops.

    Sample n applies op ``order[n, k]`` at step k, with factor ``factors[n, op]``. An op whose
    factor is the identity (1, 1, 1, 0) is skipped for that sample, which is exact and is how
    samples that are not jittered pass through. Each (step, op) pair runs once, on the samples
    that chose it; the index lists are built on the CPU so a CUDA batch never waits on the device.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        factors: (N, 4) brightness, contrast, saturation, hue factors.
        order: (N, 4) int64, a permutation of 0..3 per sample.

    Returns:
        (N, 3, H, W) float in [0, 1].
    """
    factors, order = factors.cpu(), order.cpu()
    active = factors != torch.tensor(_JITTER_IDENTITY, dtype=factors.dtype)  # (N, 4)
    out = images.clone()
    for step in range(order.shape[1]):
        for op_index, op in enumerate(_JITTER_OPS):
            chosen = (order[:, step] == op_index) & active[:, op_index]
            _apply_to_(out, chosen, op, factors[:, op_index])
    return out


def _apply_to_(images: Tensor, mask: Tensor, fn: Callable[..., Tensor], *params: Tensor) -> None:
    """In place, ``images[i] = fn(images[i], *(p[i] for p in params))`` where the mask is set.

    The (N,) bool mask is read on the CPU. Samples the op skips are never computed (blur touches
    10 % of view 2, for instance).
    """
    idx = mask.cpu().nonzero().squeeze(1)  # (M,) CPU indices
    if idx.numel() == images.shape[0]:
        images.copy_(fn(images, *params))
    elif idx.numel() > 0:
        idx_device = idx.to(images.device)
        subset = fn(images.index_select(0, idx_device), *(p[idx.to(p.device)] for p in params))
        images.index_copy_(0, idx_device, subset)


def grayscale(images: Tensor, apply: Tensor) -> Tensor:
    """Replace the samples where the (N,) bool apply is set by their luma on all 3 channels.

    torchvision's ``rgb_to_grayscale(num_output_channels=3)``, as in RandomGrayscale.
    """
    out = images.clone()
    _apply_to_(out, apply, lambda x: _luma(x).expand_as(x))
    return out


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """torchvision's ``gaussian_blur`` with a per-sample sigma and reflect padding, separably.

    Each sample's 1-D kernel is applied along width then height with one depthwise conv each.

    Args:
        images: (N, C, H, W) float.
        sigma: (N,) positive standard deviations in pixels.
        kernel_size: odd kernel side, at most min(H, W) (see :func:`blur_kernel_size`).

    Returns:
        (N, C, H, W) float in [0, 1] for images in [0, 1].
    """
    n, c, height, width = images.shape
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    sigma = sigma.to(device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma[:, None]) ** 2)  # (N, K)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, K)
    # Every (sample, channel) pair is its own conv group, so each gets its sample's kernel.
    x = images.reshape(1, n * c, height, width)
    x = F.pad(x, [radius] * 4, mode="reflect")  # (1, N*C, H+2r, W+2r)
    x = F.conv2d(x, kernel.view(n * c, 1, 1, kernel_size), groups=n * c)  # (1, N*C, H+2r, W)
    x = F.conv2d(x, kernel.view(n * c, 1, kernel_size, 1), groups=n * c)  # (1, N*C, H, W)
    # A convex combination of pixels: the clamp only removes float rounding above 1.
    return x.view(n, c, height, width).clamp_(0.0, 1.0)


def solarize(images: Tensor, apply: Tensor, threshold: float = 0.5) -> Tensor:
    """Invert the pixels >= threshold of the samples where the (N,) bool apply is set.

    torchvision's ``solarize`` on floats, as in RandomSolarize. On the uint8 grid x >= 0.5 is
    exactly u >= 128, DINO's PIL threshold.
    """
    out = images.clone()
    _apply_to_(out, apply, lambda x: torch.where(x >= threshold, 1.0 - x, x))
    return out


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
    identity = torch.tensor(_JITTER_IDENTITY).expand(n, 4)
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
    _apply_to_(x, params.blur, blur, params.sigma)
    return solarize(x, params.solarize)


def make_views(images: Tensor, spec: ViewSpec, generator: torch.Generator) -> list[Tensor]:
    """All views of a uint8 batch, with batched tensor ops on the images' device.

    The random parameters are drawn on the CPU from ``generator`` (the same parameters on CPU and
    CUDA; the same views again from the same generator state), then moved to the device.

    Args:
        images: (N, 3, H, W) uint8 on any device.
        spec: the augmentation.
        generator: a CPU ``torch.Generator``; it is advanced.

    Returns:
        One float32 (N, 3, S, S) tensor in [0, 1] per view (globals then locals), on the images'
        device, S the view's size.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"make_views expects uint8 images of shape (N, 3, H, W); "
            f"got {images.dtype} of shape {tuple(images.shape)}."
        )
    if generator.device.type != "cpu":
        raise ValueError(f"make_views needs a CPU generator; got one on {generator.device}.")
    n, _, height, width = images.shape
    spec.check_image_size(height, width)
    pixels = images.float() / 255.0  # (N, 3, H, W)
    views = []
    for crop in spec.crops():
        params = sample_view_params(n, height, width, crop, spec, generator)
        views.append(apply_view(pixels, params, crop.size, spec.blur_sigma[1]))
    return views


# ---------------------------------------------------------------------------------------------
# Per-sample implementation (DataLoader workers)
# ---------------------------------------------------------------------------------------------


class MultiCropTransform:
    """DINO multi-crop for one PIL image, with ``torchvision.transforms.v2``, seeded per sample.

    Returns uint8 (3, S, S) tensors; float conversion and normalisation happen later on the device.
    Unlike :func:`make_views`, there is no size check: folder images vary in size, and one smaller
    than a view is upsampled by RandomResizedCrop.

    Why a seed per call: the global RNG of a DataLoader worker depends on which worker gets which
    sample and on everything that worker did before. Seeding each sample from, e.g.,
    (run seed, epoch, dataset index) makes its views a function of that seed alone, so an
    interrupted run resumes with exactly the augmentations it would have seen.
    """

    def __init__(self, spec: ViewSpec) -> None:
        self.spec = spec
        self.pipelines = [self._pipeline(crop) for crop in spec.crops()]

    def _pipeline(self, crop: CropSpec) -> v2.Compose:
        """DINO's per-view transform, in DINO's order, on a uint8 tensor."""
        spec = self.spec
        jitter = v2.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)
        blur = v2.GaussianBlur(blur_kernel_size(crop.size, spec.blur_sigma[1]), spec.blur_sigma)
        return v2.Compose(
            [
                v2.ToImage(),
                v2.RandomResizedCrop(
                    crop.size,
                    scale=crop.scale,
                    ratio=spec.ratio,
                    interpolation=v2.InterpolationMode.BICUBIC,
                    antialias=True,
                ),
                v2.RandomHorizontalFlip(spec.flip_p),
                v2.RandomApply([jitter], p=spec.jitter_p),
                v2.RandomGrayscale(spec.grayscale_p),
                v2.RandomApply([blur], p=crop.blur_p),
                # 128 on uint8 is DINO's PIL threshold, and make_views' 0.5 on floats.
                v2.RandomSolarize(threshold=128, p=crop.solarize_p),
            ]
        )

    def __call__(self, image: PIL.Image.Image, seed: int) -> list[Tensor]:
        """All views of one image: uint8 (3, S, S) tensors, globals then locals."""
        if image.mode != "RGB":  # grayscale, palette and CMYK files
            image = image.convert("RGB")
        # fork_rng restores the caller's CPU RNG afterwards; only the CPU generator is seeded.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return [pipeline(image).as_subclass(Tensor) for pipeline in self.pipelines]
