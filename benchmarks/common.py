"""What the benchmark scripts share: cases, a side-by-side timer, FLOPs, the chip's peak, tables.

Timing rule: every function under comparison is timed in the same process, on the same inputs,
round-robin (A, B, C, A, B, C, ...), so a load spike on a shared machine hits all of them alike;
each block of `steps` calls is fenced by `torch.cuda.synchronize()` on CUDA, comes after `warmup`
untimed calls, and the median over `repeats` blocks is reported.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils import flop_counter

from discomm_lite.choices import BACKBONES
from discomm_lite.config import Config, make_config
from discomm_lite.config.view_spec import view_spec_from_config
from discomm_lite.method import Method, get_method
from discomm_lite.training.setup import (
    Forwards,
    TrainState,
    build_state,
    make_forwards,
    resolve_precision,
)
from discomm_lite.training.step import StepSchedule
from discomm_lite.views.augment import make_views
from discomm_lite.views.pipeline import FolderViews, InMemoryViews

# ---- the cases -------------------------------------------------------------------------------
# Each case is a preset with overrides and its default batch; the views are the preset's.
CASES: dict[str, tuple[str, dict, int]] = {
    "resnet18-cifar": ("cifar-full", {}, 512),  # 2 x 32 px global crops
    "vit-small/16": ("imagenet-paper", {"backbone": "vit-small/16"}, 64),  # 2x224 + 10x96
    "vit-base/16": ("imagenet-paper", {}, 64),  # 2x224 + 10x96: the paper's ImageNet run
}
# --quick: a tiny batch and small crops (ResNet 2x16, ViT 2x32 + 2x16), so that a loaded CPU
# runs every code path in seconds; the numbers then measure overheads, not the method.
QUICK_BATCH = 2
QUICK_HELP = "tiny batch (2) and crops (2x16 px; ViTs 2x32 + 2x16) for CPU smoke runs"

# Dense bf16 peak FLOP/s (no sparsity), keyed by torch.cuda.get_device_name().
PEAK_BF16_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989e12,  # H100 SXM
    "NVIDIA H200": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12,
}


def case_config(case: str, *, device: torch.device, batch_size: int | None = None,
                quick: bool = False, compile: bool = False, precision: str = "auto") -> Config:
    """The Config of a case: a name of CASES, or any backbone of the library (`vit-tiny/16`).

    Other backbones take the crops of their resolution: 224 px ones (`*/16`, resnet18, resnet50)
    the ImageNet crops, the others the CIFAR crops. `quick` shrinks the batch and the crops.
    """
    if case in CASES:
        preset, overrides, default_batch = CASES[case]
    elif case in BACKBONES:
        large = case.endswith("/16") or case in ("resnet18", "resnet50")
        preset, default_batch = ("imagenet-paper", 64) if large else ("cifar-full", 512)
        overrides = {"backbone": case}
    else:
        raise SystemExit(f"Unknown case {case!r}: the cases are {', '.join(CASES)}, or any "
                         f"backbone of the library ({', '.join(BACKBONES)}).")
    config = make_config(preset, **overrides, device=str(device), compile=compile,
                         precision=precision, batch_size=batch_size or default_batch)
    if quick:
        config = config.replace(batch_size=batch_size or QUICK_BATCH, local_size=16,
                                global_size=32 if config.n_local else 16,
                                n_local=min(config.n_local, 2))
    return config


def crops_label(config: Config) -> str:
    label = f"{config.n_global}x{config.global_size}"
    return label + (f" + {config.n_local}x{config.local_size}" if config.n_local else "")


def add_run_arguments(parser: argparse.ArgumentParser, *, steps: int, warmup: int) -> None:
    """--steps, --warmup, --repeats (the timer's) and --threads, shared by every script."""
    parser.add_argument("--steps", type=int, default=steps, help="calls per timed block")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed calls first")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks (median)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is steadier on a "
                             "CPU shared with other jobs)")


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def describe(device: torch.device, config: Config) -> str:
    """One line: the chip, precision, compile mode, threads, host load and torch version."""
    chip = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    dtype = resolve_precision(config.precision, device)
    precision = "fp32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"
    return (f"{device.type} ({chip}), {precision}, "
            f"{'torch.compile' if config.compile else 'eager'}, "
            f"{torch.get_num_threads()} CPU threads, host load {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} cores, torch {torch.__version__}")


# ---- the training step -----------------------------------------------------------------------
@dataclass
class StepSetup:
    """What `train_step` needs, built as `engine.train` builds it (`discomm_lite.training.step`)."""

    config: Config
    method: Method
    state: TrainState
    forward: Forwards
    schedule: StepSchedule


def make_step_setup(config: Config, device: torch.device, steps_per_epoch: int = 100
                    ) -> StepSetup:
    method = get_method(config.method)
    state = build_state(config, method, device)
    return StepSetup(config, method, state, make_forwards(state, config, device),
                     StepSchedule.from_config(config, steps_per_epoch))


def endless(batches: InMemoryViews | FolderViews, start_epoch: int = 0) -> Iterator[list[Tensor]]:
    """The batches of epoch `start_epoch`, then of the next epochs, without end."""
    for epoch in itertools.count(start_epoch):
        yield from batches.epoch(epoch)


def random_views(config: Config, device: torch.device, seed: int = 0) -> list[Tensor]:
    """One batch of the config's views, made by `make_views` from random uint8 images."""
    generator = torch.Generator().manual_seed(seed)
    side = config.global_size
    images = torch.randint(0, 256, (config.batch_size, 3, side, side), dtype=torch.uint8,
                           generator=generator)
    return make_views(images.to(device), view_spec_from_config(config), generator)


# ---- timing ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    ms: float  # median wall-clock milliseconds per call
    cpu_ms: float  # median CPU time of this process per call, all its threads together
    peak_bytes: int | None  # CUDA peak memory allocated during the calls, None elsewhere


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_side_by_side(fns: dict[str, Callable[[], object]], device: torch.device, *,
                      steps: int, warmup: int, repeats: int) -> dict[str, Timing]:
    """Median ms per call of each function, timed round-robin in blocks of `steps` calls.

    The CPU time is there for shared machines: with one thread, it is about what the wall time
    would be on an idle core (other jobs stretch the wall time, not the CPU time).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    peaks: dict[str, int] = dict.fromkeys(fns, 0)
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                fn()
            sync(device)
            wall[name].append((time.perf_counter() - start) * 1000 / steps)
            cpu[name].append((time.process_time() - start_cpu) * 1000 / steps)
            if device.type == "cuda":
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated(device))
    return {name: Timing(statistics.median(wall[name]), statistics.median(cpu[name]),
                         peaks[name] if device.type == "cuda" else None) for name in fns}


def count_syncs(fn: Callable[[], object], device: torch.device) -> int | None:
    """Host-device synchronisations in one call, from CUDA's sync debug mode (None off CUDA).

    Each one makes the CPU wait until the GPU has run everything queued so far, so the GPU then
    idles while the CPU launches the next kernels. The debug mode misses a few kinds of sync.
    """
    if device.type != "cuda":
        return None
    sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("called a synchronizing CUDA operation" in str(w.message) for w in caught)


# ---- FLOPs and MFU ---------------------------------------------------------------------------
def _count_cpu_attention() -> None:
    """FlopCounterMode knows the CUDA attention kernels, not the CPU one: give it the same rule."""
    aten = torch.ops.aten
    for op, formula in ((aten._scaled_dot_product_flash_attention_for_cpu,
                         flop_counter.sdpa_flop),
                        (aten._scaled_dot_product_flash_attention_for_cpu_backward,
                         flop_counter.sdpa_backward_flop)):
        if op not in flop_counter.flop_registry:
            flop_counter.register_flop_formula(op, get_raw=True)(formula)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call (matmuls, convolutions, attention), counted by FlopCounterMode."""
    _count_cpu_attention()
    with flop_counter.FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def peak_flops(device: torch.device) -> float | None:
    """The chip's dense bf16 peak FLOP/s, or None when the chip is not in the table."""
    if device.type != "cuda":
        return None
    return PEAK_BF16_FLOPS.get(torch.cuda.get_device_name(device))


# ---- printing --------------------------------------------------------------------------------
def fmt(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def fmt_rate(value: float) -> str:
    """A throughput: whole numbers from 10 up, two significant digits below."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def fmt_bytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                title: str | None = None) -> None:
    """A Markdown table, columns padded to their widest cell."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    if title:
        print(f"\n{title}")
    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))
