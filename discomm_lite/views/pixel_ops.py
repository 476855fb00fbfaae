"""Batched pixel ops of DINO's augmentation, each torchvision's op with per-sample parameters.

The crop-and-resize is one affine warp (`grid_sample`) for the whole batch; colour jitter,
grayscale, Gaussian blur and solarisation follow torchvision's functional ops
(torchvision/transforms/v2/functional/_color.py, _misc.py) on floats in [0, 1], applied only to
the samples that drew them. Images are (N, C, H, W) float; per-sample parameters are (N,) or
(N, 4) tensors. `augment.apply_view` chains them in DINO's order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# Identity factors of (brightness, contrast, saturation, hue), in the order of `color_jitter`.
JITTER_IDENTITY = (1.0, 1.0, 1.0, 0.0)


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
    active = factors != torch.tensor(JITTER_IDENTITY, dtype=factors.dtype)  # (N, 4)
    out = images.clone()
    for step in range(order.shape[1]):
        for op_index, op in enumerate(_JITTER_OPS):
            chosen = (order[:, step] == op_index) & active[:, op_index]
            apply_where_(out, chosen, op, factors[:, op_index])
    return out


def apply_where_(images: Tensor, mask: Tensor, fn: Callable[..., Tensor], *params: Tensor) -> None:
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
    apply_where_(out, apply, lambda x: _luma(x).expand_as(x))
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
    apply_where_(out, apply, lambda x: torch.where(x >= threshold, 1.0 - x, x))
    return out
