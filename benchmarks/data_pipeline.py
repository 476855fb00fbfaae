"""Is the GPU ever waiting? The data pipeline alone against the training step it feeds.

(a) In memory: CIFAR-sized (32 px) synthetic images held on the device, views made there by
    `InMemoryViews` (batched tensor ops), against `train_step` of resnet18-cifar (cifar-full
    preset). Timed side by side (common.py): the pipeline alone, the step alone on one fixed
    batch, and both together (what training runs: the augmentation shares the device).
(b) ImageFolder: images decoded and augmented by `FolderViews`' DataLoader workers on the CPU
    (2x224 + 10x96 crops), against `train_step` of a ViT. Without `--folder`, a temporary
    ImageFolder of PNGs is written from synthetic images upscaled to 224 px. The loader is timed
    alone over one epoch once every worker has delivered its first batch (start-up excluded), then
    the step on one fixed batch, then both over a second epoch.

The ratio is pipeline images/s over step images/s: at 3 or more the step never waits for data.

    python benchmarks/data_pipeline.py                          # on the GPU
    python benchmarks/data_pipeline.py --folder /data/imagenet --workers 8
    python benchmarks/data_pipeline.py --device cpu --quick --steps 1 --warmup 0   # CI smoke run
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Callable, Iterator

import torch
from common import (
    QUICK_HELP,
    add_run_arguments,
    case_config,
    count_syncs,
    crops_label,
    describe,
    endless,
    fmt,
    fmt_rate,
    make_step_setup,
    print_table,
    resolve_device,
    set_threads,
    sync,
    time_side_by_side,
)
from torch import Tensor

from discomm_lite.config import Config
from discomm_lite.data import default_num_workers, load_dataset
from discomm_lite.data.folders import write_image_folder
from discomm_lite.data.synthetic import make_synthetic
from discomm_lite.training.step import train_step
from discomm_lite.views.pipeline import make_train_views

TARGET_RATIO = 3.0


def verdict(ratio: float) -> str:
    if ratio >= TARGET_RATIO:
        return f"the step never waits for data (ratio >= {TARGET_RATIO:.0f})"
    if ratio >= 1:
        return (f"the pipeline keeps up with little headroom (1 <= ratio < {TARGET_RATIO:.0f}): "
                "other load on the host, slower storage or bigger images would make it wait")
    return "the step waits for data: the pipeline bounds training"


def report(title: str, config: Config, rows: dict[str, float], ratio: float,
           syncs: dict[str, int | None]) -> None:
    """rows: ms per batch of each measurement; syncs: host-device syncs per call (CUDA)."""
    print_table(["measurement", "ms/batch", "images/s", "syncs"],
                [[name, fmt(ms), fmt_rate(config.batch_size / ms * 1000),
                  fmt(syncs.get(name), "d")] for name, ms in rows.items()], title=title)
    print(f"pipeline / step: {ratio:.2f}x -> {verdict(ratio)}")


def in_memory(args: argparse.Namespace, device: torch.device) -> None:
    config = case_config(args.backbone_a, device=device, batch_size=args.batch_size,
                         quick=args.quick)
    images = make_synthetic(4 * config.batch_size, image_size=32, seed=config.seed)
    batches = make_train_views(config, images, device)
    setup = make_step_setup(config, device, batches.steps_per_epoch)
    stream = endless(batches)
    fixed = next(stream)
    fns = {
        "pipeline: InMemoryViews": lambda: next(stream),
        f"step: train_step, {args.backbone_a}": lambda: train_step(
            setup.state, fixed, config, setup.method, setup.forward, setup.schedule),
        "pipeline + step": lambda: train_step(
            setup.state, next(stream), config, setup.method, setup.forward,
            setup.schedule),
    }
    times = time_side_by_side(fns, device, steps=args.steps, warmup=args.warmup,
                              repeats=args.repeats)
    pipeline, step, both = (t.ms for t in times.values())
    report(f"## (a) in-memory 32 px images, batch {config.batch_size}, crops "
           f"{crops_label(config)}; {describe(device, config)}", config,
           {name: t.ms for name, t in times.items()}, step / pipeline,
           {name: count_syncs(fn, device) for name, fn in fns.items()})
    print(f"the augmentation adds {both - step:+.1f} ms to the step "
          f"({100 * (both - step) / step:+.0f}%)")


def time_epoch(batches: Iterator[list[Tensor]], skip: int, device: torch.device,
               consume: Callable[[list[Tensor]], object] = lambda views: None
               ) -> tuple[float, list[Tensor]]:
    """ms per batch once `skip` batches have arrived (the workers' start-up is left out).

    Returns it with the first batch. Each batch is passed to `consume` (a training step).
    """
    first = next(batches)
    consume(first)
    for views in itertools.islice(batches, skip - 1):
        consume(views)
    sync(device)
    start, count = time.perf_counter(), 0
    for views in batches:
        consume(views)
        count += 1
    sync(device)
    return (time.perf_counter() - start) * 1000 / count, first


def from_folder(args: argparse.Namespace, device: torch.device) -> None:
    config = case_config(args.backbone_b, device=device, batch_size=args.batch_size,
                         quick=args.quick)
    workers = default_num_workers() if args.workers < 0 else args.workers
    config = config.replace(num_workers=workers)
    # Every worker's first batch arrives at about the same time: skip that many, then time.
    skip = max(1, workers)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.folder
        if root is None:
            images = make_synthetic(config.batch_size * (skip + args.steps), image_size=32)
            write_image_folder(images, f"{tmp}/train", image_size=config.global_size)
            root = tmp
        dataset = load_dataset("imagefolder", "train", root)
        if len(dataset) < config.batch_size * (skip + 1):
            raise SystemExit(f"{root} holds {len(dataset)} training images; (b) needs at least "
                             f"batch x (workers + 1) = {config.batch_size * (skip + 1)}.")
        if len(dataset) > config.batch_size * (skip + args.steps):
            dataset = dataset.subset(config.batch_size * (skip + args.steps))
        batches = make_train_views(config, dataset, device)
        pipeline, fixed = time_epoch(batches.epoch(0), skip, device)
        setup = make_step_setup(config, device, batches.steps_per_epoch)

        def step(views):
            train_step(setup.state, views, config, setup.method, setup.forward, setup.schedule)

        step_ms = time_side_by_side({"step": lambda: step(fixed)}, device, steps=args.steps,
                                    warmup=args.warmup, repeats=args.repeats)["step"].ms
        syncs = count_syncs(lambda: step(fixed), device)
        both, _ = time_epoch(batches.epoch(1), skip, device, consume=step)
    source = args.folder or f"{len(dataset)} synthetic PNGs of {config.global_size} px"
    report(f"## (b) ImageFolder ({source}), {workers} worker(s), batch {config.batch_size}, "
           f"crops {crops_label(config)}; {describe(device, config)}", config,
           {"pipeline: FolderViews": pipeline, f"step: train_step, {args.backbone_b}": step_ms,
            "pipeline + step": both}, step_ms / pipeline,
           {f"step: train_step, {args.backbone_b}": syncs})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--parts", nargs="+", default=["a", "b"], choices=["a", "b"])
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per step (default: 512 in (a), 64 in (b); 2 with --quick)")
    parser.add_argument("--backbone-a", default="resnet18-cifar",
                        help="the step of (a): a 32 px backbone (default resnet18-cifar)")
    parser.add_argument("--backbone-b", default="vit-base/16",
                        help="the step of (b): a 224 px backbone (default vit-base/16)")
    parser.add_argument("--folder", default=None,
                        help="an ImageFolder root holding train/<class>/<image> (default: a "
                             "temporary one of synthetic PNGs)")
    parser.add_argument("--workers", type=int, default=-1,
                        help="DataLoader workers for (b) (-1: the library's machine default)")
    add_run_arguments(parser, steps=10, warmup=3)
    parser.add_argument("--quick", action="store_true", help=QUICK_HELP)
    args = parser.parse_args()
    set_threads(args.threads)
    device = resolve_device(args.device)
    if "a" in args.parts:
        in_memory(args, device)
    if "b" in args.parts:
        from_folder(args, device)


if __name__ == "__main__":
    main()
