"""The multi-crop views of a run as one frozen spec: DINO's augmentation parameters.

BITS (arXiv 2602.09764, Sec. 4) trains with DINO's augmentations (facebookresearch/dino
main_dino.py, DataAugmentationDINO): two global crops and optional local crops, colour jitter,
grayscale, Gaussian blur and solarisation, with DINO's asymmetry between the two global views
(view 1 always blurred, view 2 rarely blurred and sometimes solarised). A `ViewSpec` holds them
and expands into one `CropSpec` per view, so no view can silently lose an argument (the drift
that long per-view keyword lists suffer from). Both implementations read it: the batched
`augment.make_views` and the per-image `multicrop.MultiCropTransform`.

The spec validates every field, and the Config validates its view fields by building the spec
(`view_spec_from_config`): the rules live here only. This module imports nothing heavy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: config imports this module
    from discomm_lite.config import Config

# DINO's per-view blur and solarisation probabilities (main_dino.py, DataAugmentationDINO).
_GLOBAL_1 = (1.0, 0.0)  # (blur_p, solarize_p) of the first global view
_GLOBAL_2 = (0.1, 0.2)  # second and further global views
_LOCAL = (0.5, 0.0)


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
                raise InvalidField("ViewSpec", name, getattr(self, name), "True or False")

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


class InvalidField(ValueError):
    """A value a spec refuses: the field's name, the value, and what the field accepts."""

    def __init__(self, owner: str, name: str, value: object, accepted: str) -> None:
        self.name, self.value, self.accepted = name, value, accepted
        super().__init__(f"{owner}.{name} = {value!r} is not valid: it must be {accepted}.")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidField("ViewSpec", name, value, f"an integer >= {minimum}")


def _check_interval(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        accepted = f">= {low}" if math.isinf(high) else f"in [{low}, {high}]"
        raise InvalidField("ViewSpec", name, value, f"a number {accepted}")


def _check_range_pair(name: str, value: object, upper: float) -> None:
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and 0 < value[0] <= value[1] <= upper
    )
    if not ok:
        each = "> 0" if math.isinf(upper) else f"in (0, {upper:g}]"
        raise InvalidField("ViewSpec", name, value,
                           f"a tuple (low, high), each {each}, with low <= high")


def blur_kernel_size(size: int, sigma_max: float) -> int:
    """Odd Gaussian kernel size covering +-3 sigma_max, capped to the largest odd number <= size."""
    return min(2 * math.ceil(3 * sigma_max) + 1, size if size % 2 else size - 1)


# The Config fields each ViewSpec field is built from, in `view_spec_from_config`.
CONFIG_FIELDS = {
    "n_global": ("n_global",), "n_local": ("n_local",), "global_size": ("global_size",),
    "local_size": ("local_size",), "global_scale": ("global_scale_min",),
    "local_scale": ("local_scale_min", "local_scale_max"), "blur": ("blur",),
    "solarize": ("solarize",),
}


def view_spec_from_config(config: Config) -> ViewSpec:
    """The one ViewSpec of a run (factory: the only place that reads the config's view fields)."""
    return ViewSpec(
        n_global=config.n_global, n_local=config.n_local, global_size=config.global_size,
        local_size=config.local_size, global_scale=(config.global_scale_min, 1.0),
        local_scale=(config.local_scale_min, config.local_scale_max), blur=config.blur,
        solarize=config.solarize,
    )
