"""An embedded synthetic image dataset with known binary factors: no download, ships as code.

Each image shows one object on a background, rendered from six independent binary factors:

    shape       disc / ring (of equal area, so size does not give the shape away)
    colour      cool / warm foreground hue, jittered inside the family
    size        small / large
    position    object centre in the left / right half, jittered
    background  dark / light grey with a faint tint and pixel noise
    texture     plain / striped foreground (random stripe angle and phase)

The class is what the object is made of: its shape and texture (4 classes named like
"disc-striped"); colour, size, position and background are nuisances shared by all classes.
Because the factors are known, one can measure which of them a learned bit encodes, and
`redraw_factors` can draw some of them again for each view of an image, so that the two views
share exactly the other ones (`Config.redraw_factors`, the quickstart's views).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from discomm_lite.choices import SYNTHETIC_FACTORS
from discomm_lite.data.types import ImageTensorDataset

# Value names per factor, index 0 then 1; each factor's names sort alphabetically, so the class
# names below come out sorted in label order (the convention of ImageFolder and CIFAR).
FACTOR_VALUES = {
    "shape": ("disc", "ring"),
    "colour": ("cool", "warm"),
    "size": ("small", "large"),
    "position": ("left", "right"),
    "background": ("dark", "light"),
    "texture": ("plain", "striped"),
}
LABEL_FACTORS = ("shape", "texture")
# Label bits, most significant first: label = shape * 2 + texture.
SYNTHETIC_CLASSES = [
    "-".join(FACTOR_VALUES[f][(label >> (len(LABEL_FACTORS) - 1 - i)) & 1]
             for i, f in enumerate(LABEL_FACTORS))
    for label in range(2 ** len(LABEL_FACTORS))
]
_RENDER_CHUNK = 1024  # images rendered at once: bounds memory at large image sizes


def make_synthetic(n: int, *, image_size: int = 32, seed: int = 0) -> ImageTensorDataset:
    """Render `n` synthetic images (N, 3, S, S) uint8 with their labels and factors (N, 6).

    The factors follow a shuffled full factorial design: every one of the 64 combinations appears
    n // 64 or n // 64 + 1 times, so each factor is balanced and the factors are independent
    (exactly so when 64 divides n). Deterministic for a given (n, image_size, seed).
    """
    if n < 1:
        raise ValueError(f"make_synthetic needs n >= 1 images, got n = {n}.")
    generator = torch.Generator().manual_seed(seed)
    n_factors = len(SYNTHETIC_FACTORS)
    combos = (torch.arange(2**n_factors)[:, None] >> torch.arange(n_factors)) & 1  # (64, 6)
    factors = combos[torch.randperm(n, generator=generator) % len(combos)]  # (N, 6)
    images = render_synthetic(factors, image_size=image_size, generator=generator)
    return ImageTensorDataset(
        images=images,
        labels=synthetic_labels(factors),
        classes=list(SYNTHETIC_CLASSES),
        factors=factors,
        factor_names=list(SYNTHETIC_FACTORS),
    )


def synthetic_labels(factors: Tensor) -> Tensor:
    """Class labels (N,) int64 of factors (N, 6): shape * 2 + texture."""
    label = torch.zeros(len(factors), dtype=torch.int64)
    for name in LABEL_FACTORS:
        label = label * 2 + factors[:, SYNTHETIC_FACTORS.index(name)].long()
    return label


def redraw_factors(factors: Tensor, names: Sequence[str], generator: torch.Generator) -> Tensor:
    """A copy of factors (N, 6) whose columns `names` are drawn again, fair and independent.

    Rendering two such copies of the same images gives two views that share every factor but
    `names` (and differ in all the continuous jitter, which `render_synthetic` draws anew).
    """
    unknown = sorted(set(names) - set(SYNTHETIC_FACTORS))
    if unknown:
        raise ValueError(f"Unknown synthetic factors {unknown}: the factors are "
                         f"{', '.join(SYNTHETIC_FACTORS)}.")
    redrawn = factors.clone()
    for name in names:
        redrawn[:, SYNTHETIC_FACTORS.index(name)] = torch.randint(
            0, 2, (len(factors),), generator=generator)
    return redrawn


def render_synthetic(
    factors: Tensor,
    *,
    image_size: int = 32,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Render images (N, 3, S, S) uint8 from binary factors (N, 6), in `SYNTHETIC_FACTORS` order.

    All continuous jitter and noise come from `generator`, drawn independently of the factor
    values: rendering twice from equally seeded generators with one factor flipped changes only
    what that factor controls.
    """
    if factors.ndim != 2 or factors.shape[1] != len(SYNTHETIC_FACTORS):
        raise ValueError(
            f"factors must have shape (N, {len(SYNTHETIC_FACTORS)}), got {tuple(factors.shape)}."
        )
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}.")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    # Per-image jitter: 12 uniforms per image, drawn for all images before any noise, so an
    # image's jitter depends on its position in the batch and not on the chunking.
    jitter = torch.rand(len(factors), 12, generator=generator)  # (N, 12)
    chunks = [
        _render_chunk(factors[i:i + _RENDER_CHUNK].float(), jitter[i:i + _RENDER_CHUNK],
                      image_size, generator)
        for i in range(0, len(factors), _RENDER_CHUNK)
    ]
    return torch.cat(chunks).mul_(255).round_().clamp_(0, 255).to(torch.uint8)


def _render_chunk(factors: Tensor, jitter: Tensor, size: int,
                  generator: torch.Generator) -> Tensor:
    """Float images (N, 3, S, S) in [0, 1] from factors (N, 6) and uniforms (N, 12)."""
    shape, colour, large, right, light, striped = factors.unbind(1)  # each (N,)
    u = jitter.unbind(1)

    # ---- geometry, in pixels; pixel centres sit at 0.5, 1.5, ...
    radius = size * torch.where(large > 0, 0.26 + 0.05 * u[0], 0.17 + 0.04 * u[0])
    cx = size * torch.where(right > 0, 0.58 + 0.14 * u[1], 0.28 + 0.14 * u[1])
    cy = size * (0.3 + 0.4 * u[2])
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    dx = coords[None, None, :] - cx[:, None, None]  # (N, 1, S)
    dy = coords[None, :, None] - cy[:, None, None]  # (N, S, 1)
    # Signed distance to the outline: a ring between radii r and r * sqrt(2) has the disc's
    # area, and its hole makes the shapes differ in kind, not only at a few edge pixels.
    centre_distance = torch.sqrt(dx**2 + dy**2)  # (N, S, S)
    r = radius[:, None, None]
    disc = centre_distance - r
    ring = torch.maximum(centre_distance - r * math.sqrt(2), r - centre_distance)
    distance = torch.where(shape[:, None, None] > 0, ring, disc)  # (N, S, S)
    alpha = (0.5 - distance).clamp(0, 1)[:, None]  # (N, 1, S, S) one-pixel antialiased edge

    # ---- foreground: warm hues span red..yellow, cool ones cyan..blue
    hue = torch.where(colour > 0, -0.03 + 0.17 * u[3], 0.47 + 0.21 * u[3]) % 1.0
    fg = _hsv_to_rgb(hue, 0.65 + 0.35 * u[4], 0.75 + 0.25 * u[5])[:, :, None, None]
    # Stripes darken the foreground along a random direction, period about an eighth of the side.
    angle = math.pi * u[6]
    period = size / (7 + 2 * u[7])
    wave = (dx * torch.cos(angle)[:, None, None] + dy * torch.sin(angle)[:, None, None])
    wave = torch.sin(2 * math.pi * (wave / period[:, None, None] + u[8][:, None, None]))
    stripes = 0.5 + 0.5 * torch.tanh(3 * wave)  # (N, S, S) soft square wave
    shade = 1 - 0.6 * stripes * striped[:, None, None]
    fg = fg * shade[:, None]  # (N, 3, S, S)

    # ---- background: dark or light grey, faintly tinted
    grey = torch.where(light > 0, 0.65 + 0.3 * u[9], 0.05 + 0.25 * u[9])
    tint = 0.06 * (torch.stack([u[10], u[11], 1 - u[10]], dim=1) - 0.5)  # (N, 3)
    bg = (grey[:, None] + tint)[:, :, None, None]  # (N, 3, 1, 1)

    # Pixel noise, grainy on the background and faint on the object: no two images are equal.
    noise = torch.randn(len(factors), 3, size, size, generator=generator)
    image = bg * (1 - alpha) + fg * alpha + noise * (0.04 - 0.025 * alpha)
    return image.clamp_(0, 1)


def _hsv_to_rgb(hue: Tensor, saturation: Tensor, value: Tensor) -> Tensor:
    """RGB (N, 3) in [0, 1] of HSV triples, each (N,) in [0, 1] (the standard k-formula)."""
    n = torch.tensor([5.0, 3.0, 1.0])
    k = (n + 6 * hue[:, None]) % 6  # (N, 3)
    ramp = torch.minimum(k, 4 - k).clamp(0, 1)
    return value[:, None] * (1 - saturation[:, None] * ramp)
