"""DINO's multi-crop views of one PIL image, in a DataLoader worker (ImageFolder, ImageNet).

The per-image counterpart of `augment.make_views`, built from the same `ViewSpec` with
`torchvision.transforms.v2` in the order of DINO's DataAugmentationDINO (main_dino.py).
"""

from __future__ import annotations

import PIL.Image
import torch
from torch import Tensor
from torchvision.transforms import v2

from discomm_lite.config.view_spec import CropSpec, ViewSpec, blur_kernel_size


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
