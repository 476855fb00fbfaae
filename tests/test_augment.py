"""Tests of the augmentation (view_spec, pixel_ops, augment, multicrop) against references.

Each batched pixel op is compared with torchvision's functional op applied sample by sample with
the same parameters; the crop against a float64 bilinear loop and torchvision's ``resized_crop``;
the crop-box sampler against torchvision's ``RandomResizedCrop.get_params``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import PIL.Image
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import v2

from discomm_lite.config.view_spec import CropSpec, ViewSpec, blur_kernel_size
from discomm_lite.views.augment import apply_view, make_views, sample_crop_boxes, sample_view_params
from discomm_lite.views.multicrop import MultiCropTransform
from discomm_lite.views.pixel_ops import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    crop_grid,
    crop_theta,
    gaussian_blur,
    grayscale,
    resized_crops,
    solarize,
)

ATOL = 1e-5


def _images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(N, 3, H, W) float images in [0, 1] with the awkward cases of colour maths.

    Random floats, plus samples on the uint8 grid with grey pixels, channel ties, pure colours,
    exact 0 and 1.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, height, width, generator=g)
    grid = torch.randint(0, 256, (n // 2, 3, height, width), generator=g).float() / 255
    grid[:, :, 0] = grid[:, :1, 0]  # first row grey (r == g == b)
    grid[:, 1, 1] = grid[:, 0, 1]  # second row: r == g ties
    grid[:, 2, 2] = grid[:, 1, 2]  # third row: g == b ties
    grid[:, :, 3, :3] = torch.eye(3)[None, :, :]  # pure red, green, blue pixels
    grid[:, :, -1, 0] = 0.0
    grid[:, :, -1, 1] = 1.0
    x[: n // 2] = grid
    return x


# ---------------------------------------------------------------------------------------------
# ViewSpec
# ---------------------------------------------------------------------------------------------


def test_crops_follow_dino_asymmetry() -> None:
    spec = ViewSpec(n_global=3, n_local=2, global_size=24, local_size=12)
    g_scale, l_scale = (0.4, 1.0), (0.05, 0.4)
    # DINO (main_dino.py): global 1 blur 1.0; global 2 blur 0.1 + solarize 0.2; locals blur 0.5.
    assert spec.crops() == [
        CropSpec(24, g_scale, blur_p=1.0, solarize_p=0.0),
        CropSpec(24, g_scale, blur_p=0.1, solarize_p=0.2),
        CropSpec(24, g_scale, blur_p=0.1, solarize_p=0.2),
        CropSpec(12, l_scale, blur_p=0.5, solarize_p=0.0),
        CropSpec(12, l_scale, blur_p=0.5, solarize_p=0.0),
    ]


def test_blur_false_and_solarize_false_zero_every_crop() -> None:
    spec = ViewSpec(n_global=3, n_local=4)
    no_blur = dataclasses.replace(spec, blur=False).crops()
    no_solarize = dataclasses.replace(spec, solarize=False).crops()
    assert len(no_blur) == len(no_solarize) == 7
    assert all(c.blur_p == 0.0 for c in no_blur)
    assert [c.solarize_p for c in no_blur] == [c.solarize_p for c in spec.crops()]
    assert all(c.solarize_p == 0.0 for c in no_solarize)
    assert [c.blur_p for c in no_solarize] == [c.blur_p for c in spec.crops()]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_global", 0),
        ("n_global", 1.5),
        ("n_local", -1),
        ("global_size", 0),
        ("local_size", -3),
        ("global_scale", (0.0, 1.0)),
        ("global_scale", (0.5, 1.2)),
        ("global_scale", (0.8, 0.4)),
        ("local_scale", (0.05,)),
        ("local_scale", [0.05, 0.4]),
        ("ratio", (0.0, 1.0)),
        ("ratio", (4 / 3, 3 / 4)),
        ("flip_p", 1.5),
        ("jitter_p", -0.1),
        ("grayscale_p", 2),
        ("brightness", -0.4),
        ("contrast", -1.0),
        ("saturation", -0.2),
        ("hue", 0.6),
        ("hue", -0.1),
        ("blur_sigma", (0.0, 2.0)),
        ("blur_sigma", (2.0, 0.1)),
        ("blur", 1),
        ("solarize", "yes"),
    ],
)
def test_viewspec_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"ViewSpec.{field} ") as info:
        ViewSpec(**{field: value})
    assert repr(value) in str(info.value)


def test_check_image_size_names_the_field_and_the_image() -> None:
    with pytest.raises(ValueError, match=r"global_size.*16x20.*at most 16"):
        ViewSpec(global_size=32).check_image_size(16, 20)
    with pytest.raises(ValueError, match=r"local_size.*20x20"):
        ViewSpec(global_size=16, local_size=24, n_local=2).check_image_size(20, 20)
    # Without local views the local size is never used.
    ViewSpec(global_size=16, local_size=24, n_local=0).check_image_size(20, 20)
    ViewSpec(global_size=32, local_size=16, n_local=4).check_image_size(32, 32)


@pytest.mark.parametrize(
    ("size", "sigma_max", "expected"),
    [(32, 2.0, 13), (224, 2.0, 13), (16, 0.5, 5), (8, 2.0, 7), (7, 2.0, 7), (1, 2.0, 1)],
)
def test_blur_kernel_size(size: int, sigma_max: float, expected: int) -> None:
    # 2 * ceil(3 sigma) + 1, capped to the largest odd number <= size.
    assert blur_kernel_size(size, sigma_max) == expected


# ---------------------------------------------------------------------------------------------
# Crop boxes and resized crops
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "scale"),
    [(224, 224, (0.4, 1.0)), (224, 160, (0.05, 0.4)), (32, 32, (0.05, 0.4))],
)
def test_crop_boxes_respect_scale_ratio_and_image(height: int, width: int, scale: tuple) -> None:
    ratio = (3 / 4, 4 / 3)
    boxes = sample_crop_boxes(20_000, height, width, scale, ratio, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.double().unbind(dim=1)
    assert boxes.dtype == torch.int64
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    # w = round(sqrt(A r)) and h = round(sqrt(A / r)) with A, r in range, so up to rounding:
    area = height * width
    assert ((w - 0.5) * (h - 0.5) <= scale[1] * area + 1e-9).all()
    assert ((w + 0.5) * (h + 0.5) >= scale[0] * area - 1e-9).all()
    assert ((w - 0.5) / (h + 0.5) <= ratio[1] + 1e-9).all()
    assert ((w + 0.5) / (h - 0.5) >= ratio[0] - 1e-9).all()
    # Offsets are uniform: both extremes of the free range are reached.
    assert (top == 0).any() and (top == height - h).any()
    assert (left == 0).any() and (left == width - w).any()


@pytest.mark.parametrize(
    ("height", "width", "scale"),
    [(32, 32, (0.05, 0.4)), (24, 48, (0.3, 1.0)), (40, 30, (0.4, 1.0))],
)
def test_crop_boxes_match_torchvision_distribution(height: int, width: int, scale: tuple) -> None:
    # (24, 48): many attempts do not fit, so the "first attempt that fits" rule matters.
    n, ratio = 4000, (3 / 4, 4 / 3)
    ours = sample_crop_boxes(n, height, width, scale, ratio, torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    image = torch.zeros(3, height, width)
    theirs = torch.tensor(
        [v2.RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)]
    )

    def stats(boxes: torch.Tensor) -> torch.Tensor:
        top, left, h, w = boxes.double().unbind(dim=1)
        return torch.stack(
            [
                (h * w / (height * width)).mean(),
                (w / h).log().mean(),
                ((top + h / 2) / height).mean(),
                ((left + w / 2) / width).mean(),
                (h * w / (height * width)).std(),
            ]
        )

    assert torch.allclose(stats(ours), stats(theirs), atol=0.02)


@pytest.mark.parametrize(("height", "width"), [(4, 100), (100, 4)])
def test_crop_boxes_fall_back_to_torchvision_central_crop(height: int, width: int) -> None:
    # On such thin images no attempt fits, so every box is torchvision's deterministic fallback.
    image = torch.zeros(3, height, width)
    expected = v2.RandomResizedCrop.get_params(image, [0.4, 1.0], [3 / 4, 4 / 3])
    boxes = sample_crop_boxes(50, height, width, (0.4, 1.0), (3 / 4, 4 / 3), torch.Generator())
    assert (boxes == torch.tensor(expected)).all()


def _naive_resized_crop(image: np.ndarray, box: list[int], flip: bool, size: int) -> np.ndarray:
    """Float64 bilinear resampling of a box, pixel by pixel: out[o] = in[left + (o+.5) w/S - .5]."""
    _, height, width = image.shape
    top, left, h, w = box
    out = np.zeros((image.shape[0], size, size))
    for oy in range(size):
        for ox in range(size):
            col = size - 1 - ox if flip else ox
            x = min(max(left + (col + 0.5) * w / size - 0.5, 0.0), width - 1)
            y = min(max(top + (oy + 0.5) * h / size - 0.5, 0.0), height - 1)
            x0, y0 = math.floor(x), math.floor(y)
            x1, y1 = min(x0 + 1, width - 1), min(y0 + 1, height - 1)
            fx, fy = x - x0, y - y0
            top_row = (1 - fx) * image[:, y0, x0] + fx * image[:, y0, x1]
            bottom_row = (1 - fx) * image[:, y1, x0] + fx * image[:, y1, x1]
            out[:, oy, ox] = (1 - fy) * top_row + fy * bottom_row
    return out


def _crop_cases() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images = _images(8, 20, 24)
    g = torch.Generator().manual_seed(3)
    boxes = sample_crop_boxes(8, 20, 24, (0.05, 1.0), (3 / 4, 4 / 3), g)
    # Edge cases: the whole image, a 1-pixel column at the right edge, a corner box.
    boxes[:3] = torch.tensor([[0, 0, 20, 24], [0, 23, 20, 1], [15, 0, 5, 5]])
    flip = torch.tensor([False, True, False, True, True, False, True, False])
    return images, boxes, flip


@pytest.mark.parametrize("size", [9, 32])
def test_resized_crops_match_naive_bilinear(size: int) -> None:
    images, boxes, flip = _crop_cases()
    out = resized_crops(images, boxes, flip, size)
    for i in range(len(images)):
        image = images[i].double().numpy()
        expected = _naive_resized_crop(image, boxes[i].tolist(), bool(flip[i]), size)
        np.testing.assert_allclose(out[i].numpy(), expected, atol=ATOL)


@pytest.mark.parametrize("size", [9, 32])
def test_resized_crops_match_torchvision_inside_the_box(size: int) -> None:
    # torchvision resizes the cut-out box, so it clamps at the box edge where we read the
    # neighbouring pixels; the two agree wherever the sampling point lies inside the box.
    images, boxes, flip = _crop_cases()
    out = resized_crops(images, boxes, flip, size)
    compared = 0
    for i in range(len(images)):
        top, left, h, w = boxes[i].tolist()
        ref = TF.resized_crop(
            images[i], top, left, h, w, [size, size], TF.InterpolationMode.BILINEAR, antialias=False
        )
        ours = TF.hflip(out[i]) if flip[i] else out[i]  # back to torchvision's unflipped crop
        pos = torch.arange(size, dtype=torch.float64) + 0.5
        inside_y = (pos * h / size - 0.5 >= 0) & (pos * h / size - 0.5 <= h - 1)
        inside_x = (pos * w / size - 0.5 >= 0) & (pos * w / size - 0.5 <= w - 1)
        mask = inside_y[:, None] & inside_x[None, :]
        torch.testing.assert_close(ours[:, mask], ref[:, mask], atol=ATOL, rtol=0)
        compared += int(mask.sum())
    assert compared > len(images) * size * size // 2


def test_crop_grid_is_affine_grid_of_crop_theta() -> None:
    g = torch.Generator().manual_seed(5)
    boxes = sample_crop_boxes(64, 30, 40, (0.05, 1.0), (3 / 4, 4 / 3), g)
    flip = torch.rand(64, generator=g) < 0.5
    theta = crop_theta(boxes, flip, 30, 40)
    expected = torch.nn.functional.affine_grid(theta, [64, 3, 16, 16], align_corners=False)
    grid = crop_grid(boxes, flip, 30, 40, 16).double()
    torch.testing.assert_close(grid, expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# Pixel ops vs torchvision, sample by sample
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs", "low", "high"),
    [
        (adjust_brightness, TF.adjust_brightness, 0.0, 2.0),
        (adjust_contrast, TF.adjust_contrast, 0.0, 2.0),
        (adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
        (adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_color_ops_match_torchvision(ours, theirs, low: float, high: float) -> None:
    images = _images(24, 12, 10)
    factors = low + (high - low) * torch.rand(24, generator=torch.Generator().manual_seed(2))
    factors[:3] = torch.tensor([low, high, (low + high) / 2])
    out = ours(images, factors)
    for i in range(len(images)):
        expected = theirs(images[i], float(factors[i]))
        torch.testing.assert_close(out[i], expected, atol=ATOL, rtol=0)


def _jitter_reference(
    image: torch.Tensor, factors: torch.Tensor, order: torch.Tensor
) -> torch.Tensor:
    """torchvision's ColorJitter on one image with given factors and op order."""
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for op_index in order.tolist():
        image = ops[op_index](image, float(factors[op_index]))
    return image


def test_color_jitter_applies_the_ops_in_each_samples_order() -> None:
    images = _images(48, 10, 10)
    g = torch.Generator().manual_seed(4)
    factors = torch.stack(
        [
            0.6 + 0.8 * torch.rand(48, generator=g),
            0.6 + 0.8 * torch.rand(48, generator=g),
            0.8 + 0.4 * torch.rand(48, generator=g),
            -0.1 + 0.2 * torch.rand(48, generator=g),
        ],
        dim=1,
    )
    order = torch.stack([torch.randperm(4, generator=g) for _ in range(48)])
    out = color_jitter(images, factors, order)
    fixed_order_differs = 0
    for i in range(len(images)):
        expected = _jitter_reference(images[i], factors[i], order[i])
        torch.testing.assert_close(out[i], expected, atol=ATOL, rtol=0)
        fixed = _jitter_reference(images[i], factors[i], torch.arange(4))
        fixed_order_differs += not torch.allclose(fixed, expected, atol=1e-3)
    # The ops do not commute here, so one fixed order for all samples would have been caught.
    assert fixed_order_differs > len(images) // 2


def test_color_jitter_leaves_identity_samples_untouched() -> None:
    images = _images(6, 8, 8)
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.0]] * 6)
    factors[0] = torch.tensor([1.3, 0.7, 1.1, 0.05])
    order = torch.arange(4).repeat(6, 1)
    out = color_jitter(images, factors, order)
    assert torch.equal(out[1:], images[1:])
    assert not torch.allclose(out[0], images[0], atol=1e-3)


def test_grayscale_matches_torchvision() -> None:
    images = _images(10, 8, 9)
    apply = torch.tensor([True, False] * 5)
    out = grayscale(images, apply)
    for i in range(len(images)):
        expected = TF.rgb_to_grayscale(images[i], num_output_channels=3) if apply[i] else images[i]
        torch.testing.assert_close(out[i], expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("size", "kernel_size"), [(16, 13), (8, 7), (12, 3)])
def test_gaussian_blur_matches_torchvision(size: int, kernel_size: int) -> None:
    # torchvision pads with reflection; (8, 7) makes the kernel reach across the whole image.
    images = _images(10, size, size)
    sigma = 0.1 + 1.9 * torch.rand(10, generator=torch.Generator().manual_seed(6))
    sigma[:2] = torch.tensor([0.1, 2.0])
    out = gaussian_blur(images, sigma, kernel_size)
    for i in range(len(images)):
        s = float(sigma[i])
        expected = TF.gaussian_blur(images[i], [kernel_size, kernel_size], [s, s])
        torch.testing.assert_close(out[i], expected, atol=ATOL, rtol=0)


def test_solarize_matches_torchvision_and_dinos_uint8_threshold() -> None:
    images = _images(10, 8, 8)
    apply = torch.tensor([True, True, False] * 3 + [True])
    out = solarize(images, apply)
    for i in range(len(images)):
        expected = TF.solarize(images[i], 0.5) if apply[i] else images[i]
        torch.testing.assert_close(out[i], expected, atol=0, rtol=0)
    # On uint8 values, 0.5 on floats is PIL's / DINO's threshold 128.
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    as_float = solarize(values.float() / 255, torch.tensor([True]))
    torch.testing.assert_close(as_float, TF.solarize(values, 128).float() / 255, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------


def _uint8_images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, height, width), generator=g, dtype=torch.uint8)


def test_view_params_follow_each_views_probabilities() -> None:
    spec = ViewSpec(n_global=2, n_local=1, flip_p=0.3, jitter_p=0.6, grayscale_p=0.45)
    n = 4000
    tolerance = 5 * math.sqrt(0.25 / n)  # five binomial standard deviations at worst
    generator = torch.Generator().manual_seed(7)
    expected_blur = [1.0, 0.1, 0.5]  # DINO's global 1, global 2, local
    expected_solarize = [0.0, 0.2, 0.0]
    identity = torch.tensor([1.0, 1.0, 1.0, 0.0])
    for k, crop in enumerate(spec.crops()):
        params = sample_view_params(n, 32, 32, crop, spec, generator)
        jittered = (params.jitter != identity).any(dim=1)
        rates = [params.flip, jittered, params.grayscale, params.blur, params.solarize]
        expected = [0.3, 0.6, 0.45, expected_blur[k], expected_solarize[k]]
        for rate, p in zip(rates, expected, strict=True):
            assert abs(rate.float().mean().item() - p) < tolerance
        low = torch.tensor([0.6, 0.6, 0.8, -0.1])
        high = torch.tensor([1.4, 1.4, 1.2, 0.1])
        drawn = params.jitter[jittered]
        assert ((drawn >= low) & (drawn <= high)).all()
        assert torch.allclose(drawn.amin(dim=0), low, atol=0.01)
        assert torch.allclose(drawn.amax(dim=0), high, atol=0.01)
        assert (params.jitter_order.sort(dim=1).values == torch.arange(4)).all()
        assert len({tuple(row) for row in params.jitter_order.tolist()}) == 24
        assert ((params.sigma >= 0.1) & (params.sigma <= 2.0)).all()
        assert params.sigma.min() < 0.11 and params.sigma.max() > 1.99


def test_apply_view_matches_torchvision_ops_in_dinos_order() -> None:
    spec = ViewSpec(grayscale_p=0.3)
    crop = CropSpec(size=12, scale=(0.3, 1.0), blur_p=0.5, solarize_p=0.5)
    images = _uint8_images(48, 16, 16)
    pixels = images.float() / 255
    params = sample_view_params(48, 16, 16, crop, spec, torch.Generator().manual_seed(8))
    identity = torch.tensor([1.0, 1.0, 1.0, 0.0])
    jittered = (params.jitter != identity).any(dim=1)
    flags = [jittered, params.grayscale, params.blur, params.solarize]
    assert all(f.any() and not f.all() for f in flags)  # every branch is exercised both ways

    out = apply_view(pixels, params, crop.size, spec.blur_sigma[1])
    cropped = resized_crops(pixels, params.boxes, params.flip, crop.size)
    kernel_size = blur_kernel_size(crop.size, spec.blur_sigma[1])
    for i in range(len(images)):
        x = cropped[i]
        if jittered[i]:
            x = _jitter_reference(x, params.jitter[i], params.jitter_order[i])
        if params.grayscale[i]:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if params.blur[i]:
            s = float(params.sigma[i])
            x = TF.gaussian_blur(x, [kernel_size, kernel_size], [s, s])
        if params.solarize[i]:
            x = TF.solarize(x, 0.5)
        torch.testing.assert_close(out[i], x, atol=ATOL, rtol=0)


def test_make_views_draws_each_views_params_in_turn() -> None:
    spec = ViewSpec(n_global=2, n_local=2, global_size=16, local_size=8)
    images = _uint8_images(10, 20, 20)
    views = make_views(images, spec, torch.Generator().manual_seed(9))
    generator = torch.Generator().manual_seed(9)
    pixels = images.float() / 255
    for view, crop in zip(views, spec.crops(), strict=True):
        params = sample_view_params(10, 20, 20, crop, spec, generator)
        assert torch.equal(view, apply_view(pixels, params, crop.size, spec.blur_sigma[1]))


def test_make_views_shapes_dtype_range() -> None:
    spec = ViewSpec(n_global=2, n_local=3, global_size=24, local_size=12)
    views = make_views(_uint8_images(5, 28, 30), spec, torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(5, 3, 24, 24)] * 2 + [(5, 3, 12, 12)] * 3
    for v in views:
        assert v.dtype == torch.float32 and v.device.type == "cpu"
        assert v.min() >= 0.0 and v.max() <= 1.0


def test_make_views_is_replayable_from_the_seed() -> None:
    spec = ViewSpec(n_global=2, n_local=2, global_size=16, local_size=8)
    images = _uint8_images(6, 16, 16)
    first = make_views(images, spec, torch.Generator().manual_seed(11))
    again = make_views(images, spec, torch.Generator().manual_seed(11))
    other = make_views(images, spec, torch.Generator().manual_seed(12))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(not torch.allclose(a, b) for a, b in zip(first, other, strict=True))


def test_make_views_rejects_wrong_inputs() -> None:
    spec = ViewSpec(global_size=8)
    with pytest.raises(ValueError, match="uint8"):
        make_views(torch.rand(2, 3, 8, 8), spec, torch.Generator())
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        make_views(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), spec, torch.Generator())
    with pytest.raises(ValueError, match="global_size"):
        make_views(torch.zeros(2, 3, 6, 6, dtype=torch.uint8), spec, torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_make_views_cpu_and_cuda_agree() -> None:
    spec = ViewSpec(n_global=2, n_local=4)
    images = _uint8_images(64, 32, 32)
    on_cpu = make_views(images, spec, torch.Generator().manual_seed(13))
    on_cuda = make_views(images.cuda(), spec, torch.Generator().manual_seed(13))
    for a, b in zip(on_cpu, on_cuda, strict=True):
        assert b.device.type == "cuda"
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------
# MultiCropTransform
# ---------------------------------------------------------------------------------------------


def _pil_image(height: int = 40, width: int = 56) -> PIL.Image.Image:
    array = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return PIL.Image.fromarray(array)


def test_multicrop_transform_views_and_sizes() -> None:
    spec = ViewSpec(n_global=2, n_local=3, global_size=32, local_size=16)
    views = MultiCropTransform(spec)(_pil_image(), seed=0)
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(type(v) is torch.Tensor and v.dtype == torch.uint8 for v in views)
    gray_input = MultiCropTransform(spec)(_pil_image().convert("L"), seed=0)
    assert [tuple(v.shape) for v in gray_input] == [tuple(v.shape) for v in views]


def test_multicrop_transform_is_reproducible_per_seed() -> None:
    transform = MultiCropTransform(ViewSpec(n_global=2, n_local=2))
    image = _pil_image()
    torch.manual_seed(0)
    first = transform(image, seed=5)
    torch.manual_seed(1)  # a different worker history must not matter
    torch.rand(10)
    state = torch.get_rng_state()
    again = transform(image, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    other = transform(image, seed=6)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_multicrop_transform_builds_each_view_from_its_crop() -> None:
    spec = ViewSpec(n_global=3, n_local=2, jitter_p=0.7, grayscale_p=0.15, flip_p=0.4)
    transform = MultiCropTransform(spec)
    assert len(transform.pipelines) == 5
    for pipeline, crop in zip(transform.pipelines, spec.crops(), strict=True):
        steps = {type(t).__name__: t for t in pipeline.transforms}
        resize = steps["RandomResizedCrop"]
        assert resize.size == (crop.size, crop.size) and tuple(resize.scale) == crop.scale
        assert resize.interpolation == v2.InterpolationMode.BICUBIC
        assert steps["RandomHorizontalFlip"].p == 0.4
        assert steps["RandomGrayscale"].p == 0.15
        assert steps["RandomSolarize"].p == crop.solarize_p
        applies = [t for t in pipeline.transforms if isinstance(t, v2.RandomApply)]
        wrapped = {type(t.transforms[0]).__name__: t.p for t in applies}
        assert wrapped == {"ColorJitter": 0.7, "GaussianBlur": crop.blur_p}
    # grayscale_p reaches every view: all views come out grey.
    grey = MultiCropTransform(dataclasses.replace(spec, grayscale_p=1.0))(_pil_image(), seed=3)
    for v in grey:
        assert torch.equal(v[0], v[1]) and torch.equal(v[1], v[2])


def test_both_implementations_honour_grayscale_in_every_view() -> None:
    spec = ViewSpec(n_global=2, n_local=2, global_size=16, local_size=8, grayscale_p=1.0)
    views = make_views(_uint8_images(4, 16, 16), spec, torch.Generator().manual_seed(0))
    for v in views:
        torch.testing.assert_close(v[:, 0], v[:, 1], atol=1e-6, rtol=0)
        torch.testing.assert_close(v[:, 1], v[:, 2], atol=1e-6, rtol=0)


def test_make_views_from_one_batch_per_view_equals_the_shared_batch_path():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    spec = ViewSpec(n_global=2, n_local=1)
    shared = make_views(images, spec, torch.Generator().manual_seed(3))
    per_view = make_views([images] * 3, spec, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(shared, per_view, strict=True))
    other = images.flip(0)
    mixed = make_views([images, other, images], spec, torch.Generator().manual_seed(3))
    assert torch.equal(mixed[0], shared[0]) and torch.equal(mixed[2], shared[2])
    assert not torch.equal(mixed[1], shared[1])
    with pytest.raises(ValueError, match="2 image batches for 3 views"):
        make_views([images, images], spec, torch.Generator())
