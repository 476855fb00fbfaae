"""The full BITS training step against the bare backbone forward+backward on the same crops.

For each case, four functions are timed side by side on one batch of views (common.py's
round-robin timer, median of `--repeats` blocks of `--steps` calls after `--warmup` calls):

- step:     `step.train_step` (teacher forward on the global crops, student forward on all
            crops, BITS loss, backward, clip, AdamW, EMA), exactly as `engine.train` calls it;
- bare:     the student backbone alone, forward+backward on all crops (same views, same
            autocast, one forward per crop resolution), loss = mean of the features;
- student:  the student (backbone + head) forward+backward on all crops;
- teacher:  the teacher forward on the global crops, without gradient.

Reported: ms/step, images/s (an image = all its crops), step / bare, the method's own cost
= step - (student + teacher) as a share of the step (loss, clipping, AdamW, EMA, schedules), FLOPs
per call counted by `torch.utils.flop_counter.FlopCounterMode` on one eager call, the FLOP rate and
the MFU against the chip's dense bf16 peak, the CUDA peak memory, and the host-device syncs per
call (CUDA's sync debug mode, one extra call; n/a on CPU).

    python benchmarks/step.py                                  # every case, on the GPU
    python benchmarks/step.py --cases vit-base/16 --compile
    python benchmarks/step.py --device cpu --quick --steps 1 --warmup 0   # CI smoke run
"""

from __future__ import annotations

import argparse

import torch
from common import (
    CASES,
    QUICK_HELP,
    StepSetup,
    add_run_arguments,
    case_config,
    count_flops,
    count_syncs,
    crops_label,
    describe,
    fmt,
    fmt_bytes,
    fmt_rate,
    make_step_setup,
    peak_flops,
    print_table,
    random_views,
    resolve_device,
    set_threads,
    time_side_by_side,
)
from torch import Tensor, nn

from discomm_lite.models.model import MultiCropModel
from discomm_lite.training.setup import Forwards
from discomm_lite.training.step import train_step

OWN_COST_TARGET = 5.0  # % of the step


def measured_functions(setup: StepSetup, views: list[Tensor], forward: Forwards,
                       bare: nn.Module) -> dict:
    """The four functions under comparison, calling the models through `forward` and `bare`."""
    state, config = setup.state, setup.config
    # The models see channels-last views where train_step makes them so; train_step itself gets
    # the views as the pipeline yields them, and pays for the conversion.
    model_views = ([v.contiguous(memory_format=torch.channels_last) for v in views]
                   if forward.channels_last else views)

    def autocast():
        return torch.autocast(views[0].device.type, dtype=state.autocast_dtype or torch.float32,
                              enabled=state.autocast_dtype is not None)

    def step():
        train_step(state, views, config, setup.method, forward, setup.schedule)

    def backward_of(model) -> None:
        state.optimizer.zero_grad(set_to_none=True)
        with autocast():
            out = model(model_views)
        torch.cat(out).float().mean().backward()

    def teacher():
        with autocast(), torch.no_grad():
            forward.teacher(model_views[:config.n_global])

    return {"BITS step (train_step)": step,
            "bare backbone fwd+bwd, all crops": lambda: backward_of(bare),
            "student fwd+bwd, all crops": lambda: backward_of(forward.student),
            "teacher fwd, global crops": teacher}


def run_case(case: str, args: argparse.Namespace, device: torch.device) -> dict:
    config = case_config(case, device=device, batch_size=args.batch_size, quick=args.quick,
                         compile=args.compile, precision=args.precision)
    setup = make_step_setup(config, device)
    views = random_views(config, device)
    # The bare backbone through the library's own multi-crop grouping, with no head.
    bare_eager = MultiCropModel(setup.state.student.backbone, nn.Identity())
    eager = Forwards(setup.state.student, setup.state.teacher, setup.forward.channels_last)
    flops = {name: count_flops(fn)
             for name, fn in measured_functions(setup, views, eager, bare_eager).items()}
    bare = torch.compile(bare_eager) if config.compile else bare_eager
    warmup = max(args.warmup, 2) if config.compile else args.warmup  # compile outside the timing
    fns = measured_functions(setup, views, setup.forward, bare)
    times = time_side_by_side(fns, device, steps=args.steps, warmup=warmup, repeats=args.repeats)

    syncs = {name: count_syncs(fn, device) for name, fn in fns.items()}

    peak = peak_flops(device)
    rows = []
    for name, timing in times.items():
        rate = flops[name] / (timing.ms / 1000)
        rows.append([name, fmt(timing.ms), fmt_rate(config.batch_size / timing.ms * 1000),
                     fmt(flops[name] / 1e9, ".1f"), fmt(rate / 1e12, ".2f"),
                     fmt(None if peak is None else 100 * rate / peak, ".1f", "%"),
                     fmt_bytes(timing.peak_bytes), fmt(syncs[name], "d")])
    print_table(["measurement", "ms/step", "images/s", "GFLOP", "TFLOP/s", "MFU", "peak mem",
                 "syncs"],
                rows, title=f"## {case}: batch {config.batch_size}, crops {crops_label(config)}; "
                            f"{describe(device, config)}")
    step, bare_ms, student, teacher = (t.ms for t in times.values())
    own = step - (student + teacher)
    result = {"case": case, "step": step, "bare": bare_ms, "ratio": step / bare_ms,
              "own_ms": own, "own_pct": 100 * own / step,
              "mfu": None if peak is None else 100 * flops["BITS step (train_step)"]
              / (step / 1000) / peak}
    print(f"step / bare backbone: {result['ratio']:.2f}x; method's own cost = step - (student "
          f"fwd+bwd + teacher fwd) = {own:.1f} ms = {result['own_pct']:.1f}% of the step "
          f"(target < {OWN_COST_TARGET:.0f}%)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--cases", nargs="+", default=list(CASES),
                        help=f"{', '.join(CASES)} (default: all), or other backbones of the "
                             "library, e.g. vit-tiny/16")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per step (default: 512 for resnet18-cifar, 64 for the ViTs; "
                             "2 with --quick)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="autocast dtype (auto: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models "
                        "(at least 2 warmup calls then, so compilation is not timed)")
    add_run_arguments(parser, steps=10, warmup=3)
    parser.add_argument("--quick", action="store_true", help=QUICK_HELP)
    args = parser.parse_args()
    set_threads(args.threads)
    device = resolve_device(args.device)
    results = [run_case(case, args, device) for case in args.cases]
    print_table(
        ["case", "step ms", "bare ms", "step / bare", "own cost", "MFU (step)"],
        [[r["case"], fmt(r["step"]), fmt(r["bare"]), fmt(r["ratio"], ".2f", "x"),
          fmt(r["own_pct"], ".1f", "%"), fmt(r["mfu"], ".1f", "%")] for r in results],
        title="## summary (targets: own cost < 5% of the step; ViT-B/16 step >= 40% MFU in bf16)")


if __name__ == "__main__":
    main()
