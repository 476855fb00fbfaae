"""Training batches of multi-crop views, as pure functions of (seed, epoch, step).

Two paths share one `ViewSpec`:
- `InMemoryViews` for small images held as a uint8 tensor (synthetic, CIFAR): the images live on
  the training device and every view is made there in batched tensor ops (`augment.make_views`);
- `FolderViews` for ImageFolder data (ImageNet): DataLoader workers decode and augment each image
  with torchvision (`multicrop.MultiCropTransform`), seeded per sample.

Both draw the epoch's order from `epoch_order(n, seed, epoch)` and the augmentation randomness
from the seed and the global step (or sample), never from a global RNG. Resuming at any step
therefore replays exactly the same batches, whatever the number of workers; under torchrun each
process takes its contiguous slice of the same global batch, so 1 or 8 processes see the same data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from discomm_lite.config import Config
from discomm_lite.config.view_spec import ViewSpec, view_spec_from_config
from discomm_lite.data import (
    ImageFolderDataset,
    ImageTensorDataset,
    default_num_workers,
    load_dataset,
)
from discomm_lite.data.synthetic import redraw_factors, render_synthetic
from discomm_lite.views.augment import make_views
from discomm_lite.views.multicrop import MultiCropTransform

# Large odd multipliers keep the derived seeds of different (epoch, step) pairs apart.
_EPOCH_STRIDE = 1_000_003
_STEP_STRIDE = 7_919


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The permutation of n sample indices used in `epoch`."""
    generator = torch.Generator().manual_seed(seed * _EPOCH_STRIDE + epoch)
    return torch.randperm(n, generator=generator)


def step_seed(seed: int, step: int) -> int:
    """The augmentation seed of global step (or sample) `step` of a run seeded with `seed`."""
    return (seed * _EPOCH_STRIDE + step * _STEP_STRIDE) % (2**63)


def check_batch(n_images: int, batch_size: int, world_size: int) -> None:
    """Raise ValueError unless the global batch splits evenly and fits in the training set."""
    if batch_size < world_size or batch_size % world_size:
        raise ValueError(
            f"Config.batch_size = {batch_size} is not valid with {world_size} processes: the "
            f"global batch must be a multiple of the number of processes, at least {world_size}."
        )
    if batch_size > n_images:
        raise ValueError(
            f"Config.batch_size = {batch_size} is larger than the training set ({n_images} "
            "images): lower batch_size or use more images (train_subset = 0 uses all)."
        )


class InMemoryViews:
    """Multi-crop batches of an in-memory uint8 dataset, augmented on the training device.

    With `redraw` (synthetic data), each view is made from its own rendering of the batch's
    objects, with the `redraw` factors drawn again for that view: the views share every other
    factor, and only those (`data.synthetic.redraw_factors`).
    """

    def __init__(self, dataset: ImageTensorDataset, spec: ViewSpec, batch_size: int, seed: int,
                 device: torch.device, rank: int = 0, world_size: int = 1,
                 redraw: Sequence[str] = ()) -> None:
        check_batch(len(dataset), batch_size, world_size)
        spec.check_image_size(*dataset.images.shape[-2:])
        if redraw and dataset.factors is None:
            raise ValueError("Config.redraw_factors needs a dataset with known factors: use "
                             "dataset='synthetic', or leave redraw_factors empty.")
        self.images = dataset.images.to(device)  # (N, 3, H, W) uint8 on the device
        self.factors, self.redraw = dataset.factors, tuple(redraw)
        self.spec, self.batch_size, self.seed = spec, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = len(dataset) // batch_size  # drop the last incomplete batch

    def epoch(self, epoch: int, start: int = 0) -> Iterator[list[Tensor]]:
        """Yield this process's views for steps `start`, `start + 1`, ... of `epoch`."""
        order = epoch_order(len(self.images), self.seed, epoch)
        local = self.batch_size // self.world_size
        for i in range(start, self.steps_per_epoch):
            batch = order[i * self.batch_size:(i + 1) * self.batch_size]
            step = epoch * self.steps_per_epoch + i
            generator = torch.Generator().manual_seed(step_seed(self.seed, step))
            # The random parameters are drawn for the global batch, so every process draws the
            # same numbers and keeps its own slice: the data do not depend on the process count.
            views = make_views(self._sources(batch, generator), self.spec, generator)
            yield [v[self.rank * local:(self.rank + 1) * local] for v in views]

    def _sources(self, batch: Tensor, generator: torch.Generator) -> Tensor | list[Tensor]:
        """The images of `batch`, or one rendering of them per view with factors redrawn."""
        if not self.redraw:
            return self.images[batch.to(self.images.device)]
        size = self.images.shape[-1]
        return [render_synthetic(redraw_factors(self.factors[batch], self.redraw, generator),
                                 image_size=size, generator=generator).to(self.images.device)
                for _ in self.spec.crops()]


class _SeededFolder(torch.utils.data.Dataset):
    """ImageFolder samples augmented with a per-(epoch, sample) seed."""

    def __init__(self, dataset: ImageFolderDataset, transform: MultiCropTransform,
                 seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> list[Tensor]:
        index, epoch = key
        image, _ = self.dataset[index]
        return self.transform(image, seed=step_seed(self.seed, epoch * len(self) + index))


class FolderViews:
    """Multi-crop batches of an ImageFolder dataset, augmented by CPU DataLoader workers."""

    def __init__(self, dataset: ImageFolderDataset, spec: ViewSpec, batch_size: int, seed: int,
                 device: torch.device, rank: int = 0, world_size: int = 1,
                 num_workers: int = -1) -> None:
        check_batch(len(dataset), batch_size, world_size)
        self.source = _SeededFolder(dataset, MultiCropTransform(spec), seed)
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.rank, self.world_size = rank, world_size
        self.num_workers = default_num_workers() if num_workers < 0 else num_workers
        self.steps_per_epoch = len(dataset) // batch_size

    def epoch(self, epoch: int, start: int = 0) -> Iterator[list[Tensor]]:
        """Yield this process's views, V tensors (n, 3, S_v, S_v), for steps `start`, ... ."""
        order = epoch_order(len(self.source), self.seed, epoch)
        local = self.batch_size // self.world_size
        keys = [
            (int(j), epoch)
            for i in range(start, self.steps_per_epoch)
            for j in order[i * self.batch_size + self.rank * local:
                           i * self.batch_size + (self.rank + 1) * local]
        ]
        loader = torch.utils.data.DataLoader(
            self.source, batch_size=local, sampler=keys, num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            prefetch_factor=4 if self.num_workers else None,
        )
        for views in loader:
            # uint8 crosses to the device (4x less traffic than float), then becomes [0, 1].
            yield [v.to(self.device, non_blocking=True).float().div_(255) for v in views]


def load_split(config: Config, split: str) -> ImageTensorDataset | ImageFolderDataset:
    """The run's `split` ("train" or "test"), with `train_subset` / `test_subset` applied."""
    n = config.train_subset if split == "train" else config.test_subset
    data = load_dataset(config.dataset, split, config.data_root, download=config.download,
                        image_size=config.image_size, seed=config.seed)
    return data.subset(n, seed=config.seed) if n else data


def load_splits(config: Config, *, with_test: bool = True
                ) -> tuple[ImageTensorDataset | ImageFolderDataset,
                           ImageTensorDataset | ImageFolderDataset | None]:
    """The run's training set and (`with_test`) test set (`load_split`)."""
    return load_split(config, "train"), load_split(config, "test") if with_test else None


def make_train_views(config: Config, dataset: ImageTensorDataset | ImageFolderDataset,
                     device: torch.device, rank: int = 0, world_size: int = 1
                     ) -> InMemoryViews | FolderViews:
    """The training-batch source of a run (factory)."""
    spec = view_spec_from_config(config)
    if isinstance(dataset, ImageTensorDataset):
        return InMemoryViews(dataset, spec, config.batch_size, config.seed, device, rank,
                             world_size, redraw=config.redrawn_factors)
    return FolderViews(dataset, spec, config.batch_size, config.seed, device, rank, world_size,
                       config.num_workers)


def augmented_views(config: Config, train_set, n: int = 6) -> tuple:
    """The first `n` images of a run's first batch, and the views the run trains on at step 1.

    The views come from the run's own batch source (`pipeline.make_train_views` of `config` on
    `train_set`, on the CPU): with `config.redraw_factors` each view is its own rendering of the
    image's object with those factors drawn again, so the views share only the other factors;
    then each view is augmented as in training (`augment.make_views`).

    Args:
        config: the run's configuration.
        train_set: the run's training set (`pipeline.load_splits`), an in-memory dataset.
        n: how many images to show, at most `config.batch_size`.

    Returns:
        (images, views): the dataset's images (n, 3, H, W) uint8, and one float (n, 3, S, S)
        tensor in [0, 1] per view, globals then locals (for `illustrations.plot_views`).
    """
    import torch

    if not isinstance(train_set, ImageTensorDataset):
        raise ValueError(f"augmented_views shows in-memory datasets (synthetic, CIFAR); got a "
                         f"{type(train_set).__name__}.")
    if not 0 < n <= config.batch_size:
        raise ValueError(f"augmented_views shows 1 to batch_size = {config.batch_size} images "
                         f"of the first batch; got n = {n}.")
    views = next(make_train_views(config, train_set, torch.device("cpu")).epoch(0))
    # The first batch of epoch 0 is the head of the epoch's order (`InMemoryViews.epoch`).
    first = epoch_order(len(train_set), config.seed, 0)[:n]
    return train_set.images[first], [view[:n] for view in views]
