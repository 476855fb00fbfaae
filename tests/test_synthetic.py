"""The embedded synthetic dataset: determinism, factor statistics, labels, what each factor does."""

from __future__ import annotations

import itertools
import math
import time

import pytest
import torch

from discomm_lite.config.view_spec import ViewSpec
from discomm_lite.data import load_dataset
from discomm_lite.data.synthetic import (
    FACTOR_VALUES,
    LABEL_FACTORS,
    SYNTHETIC_FACTORS,
    make_synthetic,
    redraw_factors,
    render_synthetic,
)
from discomm_lite.views.pipeline import InMemoryViews

NUISANCE_FACTORS = ("colour", "size", "position", "background")


@pytest.fixture(scope="module")
def train():
    return load_dataset("synthetic", "train")


def column(factors: torch.Tensor, name: str) -> torch.Tensor:
    return factors[:, SYNTHETIC_FACTORS.index(name)]


def mutual_information_bits(a: torch.Tensor, b: torch.Tensor) -> float:
    """Empirical mutual information of two binary variables, from their 2 x 2 joint counts."""
    joint = torch.zeros(2, 2, dtype=torch.float64)
    joint.index_put_((a, b), torch.ones(len(a), dtype=torch.float64), accumulate=True)
    joint /= len(a)
    pa, pb = joint.sum(1), joint.sum(0)
    return sum(joint[i, j].item() * math.log2(joint[i, j].item() / (pa[i] * pb[j]).item())
               for i in range(2) for j in range(2) if joint[i, j] > 0)


def test_splits_have_the_documented_sizes_and_differ(train) -> None:
    test = load_dataset("synthetic", "test")
    assert train.images.shape == (4096, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (1024, 3, 32, 32)
    assert train.factor_names == list(SYNTHETIC_FACTORS) and train.factors.shape == (4096, 6)
    both = torch.cat([train.images, test.images]).flatten(1)
    assert len(torch.unique(both, dim=0)) == len(both)  # no image repeats, within or across
    other_seed = load_dataset("synthetic", "train", seed=1, n_samples=64)
    assert not torch.equal(other_seed.images, train.images[:64])


def test_deterministic_for_a_seed() -> None:
    a, b = make_synthetic(256, seed=3), make_synthetic(256, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.factors, b.factors)
    assert torch.equal(a.labels, b.labels)
    assert not torch.equal(make_synthetic(256, seed=4).images, a.images)


def test_rendering_is_vectorised() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # other processes on a small machine make threaded timings erratic
    try:
        start = time.perf_counter()
        make_synthetic(4096)
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    assert elapsed < 2.0  # about 0.3 s on one core


def test_image_size_and_count_are_honoured() -> None:
    dataset = load_dataset("synthetic", "test", image_size=48, n_samples=100)
    assert dataset.images.shape == (100, 3, 48, 48)
    assert make_synthetic(3, image_size=96).images.shape == (3, 3, 96, 96)


@pytest.mark.parametrize("n", [4096, 1000])
def test_factors_are_balanced_and_independent(train, n: int) -> None:
    factors = train.factors if n == len(train) else make_synthetic(n, seed=5).factors
    assert factors.dtype == torch.int64 and set(factors.unique().tolist()) == {0, 1}
    assert ((factors.double().mean(0) - 0.5).abs() <= 0.05).all()
    for i, j in itertools.combinations(range(len(SYNTHETIC_FACTORS)), 2):
        assert mutual_information_bits(factors[:, i], factors[:, j]) < 0.005


def test_labels_are_a_function_of_exactly_the_label_factors(train) -> None:
    key = torch.stack([column(train.factors, name) for name in LABEL_FACTORS], dim=1)
    # One label per combination of the label factors (shape, texture), a different one for each.
    label_of = {}
    for combo, label in zip(map(tuple, key.tolist()), train.labels.tolist(), strict=True):
        assert label_of.setdefault(combo, label) == label
    assert sorted(label_of.values()) == list(range(4))
    # The class name spells out the label factors' values.
    for combo, label in label_of.items():
        names = [FACTOR_VALUES[name][value] for name, value in zip(LABEL_FACTORS, combo,
                                                                     strict=True)]
        assert train.classes[label] == "-".join(names)
    assert train.classes == sorted(train.classes)
    # Nuisance factors are shared: every class shows both values of each.
    for label in range(4):
        in_class = train.factors[train.labels == label]
        for name in NUISANCE_FACTORS:
            assert set(column(in_class, name).tolist()) == {0, 1}


def foreground(images: torch.Tensor) -> torch.Tensor:
    """(N, S, S) mask of pixels far from the background colour, estimated on the image border."""
    x = images.float()
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
    background = border.median(dim=2).values  # (N, 3)
    return (x - background[:, :, None, None]).abs().amax(1) > 50


def border_brightness(images: torch.Tensor) -> torch.Tensor:
    """(N,) median brightness of the image border: the background, even where the object
    reaches an edge."""
    x = images.float().mean(1)  # (N, S, S)
    border = torch.cat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], dim=1)
    return border.median(dim=1).values


def paired_renders(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-textured images rendered twice with the same randomness, factor `name` = 0 then 1."""
    factors = make_synthetic(256, seed=6).factors
    factors = factors[column(factors, "texture") == 0]
    renders = []
    for value in (0, 1):
        factors[:, SYNTHETIC_FACTORS.index(name)] = value
        renders.append(render_synthetic(factors, generator=torch.Generator().manual_seed(7)))
    return renders[0], renders[1]


def area(images: torch.Tensor) -> torch.Tensor:
    return foreground(images).sum((1, 2)).float()


@pytest.mark.parametrize("name", SYNTHETIC_FACTORS)
def test_flipping_one_factor_changes_every_image(name: str) -> None:
    factors = make_synthetic(128, seed=8).factors
    flipped = factors.clone()
    flipped[:, SYNTHETIC_FACTORS.index(name)] ^= 1
    a, b = (render_synthetic(f, generator=torch.Generator().manual_seed(9))
            for f in (factors, flipped))
    assert ((a.int() - b.int()).abs().flatten(1).amax(1) >= 20).all()


def test_each_nuisance_factor_does_what_it_says() -> None:
    dark, light = paired_renders("background")
    assert (border_brightness(dark) < 90).all()
    assert (border_brightness(light) > 150).all()

    small, large = paired_renders("size")
    # Radii 0.26-0.31 vs 0.17-0.21 of the side with the same jitter: areas about 2.1-2.3 times,
    # less where a large object crosses the frame.
    assert (area(large) > 1.4 * area(small)).all() and (area(large) / area(small)).median() > 2

    left, right = paired_renders("position")
    for images, on_the_right in ((left, False), (right, True)):
        centre_x = (foreground(images) * torch.arange(32.0)).sum((1, 2)) / area(images)
        assert ((centre_x > 16) == on_the_right).all()


def test_colour_family_and_shape_are_visible() -> None:
    cool, warm = paired_renders("colour")

    def mean_in_mask(images: torch.Tensor, channel: int) -> torch.Tensor:
        return (images[:, channel].float() * foreground(images)).sum((1, 2)) / area(images)

    assert (mean_in_mask(warm, 0) > mean_in_mask(warm, 2)).all()  # red over blue
    assert (mean_in_mask(cool, 2) > mean_in_mask(cool, 0)).all()  # blue over red

    def fill(images: torch.Tensor) -> torch.Tensor:
        """Fraction of the bounding box covered: pi / 4 for a disc, pi / 8 for the ring (radii
        r and r sqrt(2)) when the object lies inside the frame."""
        mask = foreground(images)
        return area(images) / (mask.any(2).sum(1) * mask.any(1).sum(1))

    disc, ring = paired_renders("shape")
    assert (fill(disc) > fill(ring)).all() and (fill(disc) - fill(ring)).mean() > 0.25
    assert ((area(ring) / area(disc) - 1).abs() < 0.35).all()  # of equal area


def test_redrawn_factors_are_fair_new_draws_and_the_others_stay() -> None:
    factors = make_synthetic(4096, seed=10).factors
    redrawn = redraw_factors(factors, ["background", "colour"], torch.Generator().manual_seed(1))
    for name in SYNTHETIC_FACTORS:
        before, after = column(factors, name), column(redrawn, name)
        if name in ("background", "colour"):
            assert abs(after.double().mean().item() - 0.5) < 0.03
            assert mutual_information_bits(before, after) < 0.005  # independent of the old value
        else:
            assert torch.equal(before, after)
    assert torch.equal(factors, make_synthetic(4096, seed=10).factors)  # a copy: input untouched
    with pytest.raises(ValueError, match="Unknown synthetic factors"):
        redraw_factors(factors, ["hue"], torch.Generator())


def test_views_of_redrawn_images_differ_in_exactly_the_redrawn_factor() -> None:
    """Without crops and colour changes, a view's top row shows its background: with
    redraw=("background",) the two views disagree on about half of the images, without it never;
    the views of a step are the same on every pass (a resumed run replays them)."""
    data = make_synthetic(256, seed=11)
    spec = ViewSpec(global_scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                    grayscale_p=0.0, blur=False, solarize=False)

    def light_background(views) -> list[torch.Tensor]:
        return [v[:, :, 0].mean((1, 2)) > 0.5 for v in views]  # (N,) per view

    same = next(InMemoryViews(data, spec, 256, seed=0, device=torch.device("cpu")).epoch(0))
    a, b = light_background(same)
    assert torch.equal(a, b)
    source = InMemoryViews(data, spec, 256, seed=0, device=torch.device("cpu"),
                           redraw=("background",))
    views = next(source.epoch(0))
    a, b = light_background(views)
    assert 0.35 < (a != b).double().mean().item() < 0.65
    replay = next(source.epoch(0))
    assert all(torch.equal(v, w) for v, w in zip(views, replay, strict=True))


def test_redrawing_needs_known_factors() -> None:
    data = make_synthetic(64, seed=12)
    no_factors = type(data)(data.images, data.labels, data.classes)
    with pytest.raises(ValueError, match="redraw_factors needs a dataset with known factors"):
        InMemoryViews(no_factors, ViewSpec(), 32, seed=0, device=torch.device("cpu"),
                      redraw=("colour",))
