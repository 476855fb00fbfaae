"""Do the toy presets meet their CPU times? Seconds per epoch and per run, extrapolated.

For each preset (synthetic-toy: the quickstart; cifar-toy: the toy CIFAR notebook), with the
preset's own config on the CPU:

- the training step: `step.train_step` fed by the preset's in-memory pipeline (views made by
  `InMemoryViews`, as in `engine.train`), timed side by side for each method the notebook trains
  (common.py's timer: median of `--repeats` blocks of `--steps` steps, after `--warmup` steps);
- one k-NN evaluation as `engine.train` runs it (teacher features of the train and test sets,
  then `evaluate_knn`), timed once.

Extrapolated: an epoch = steps per epoch x s/step; a run = epochs x epoch + evaluations x eval;
the preset's total = the runs its notebook trains, compared with the target (ratio = estimate /
target, from wall time). The notebooks' cells after training (probes, plots) are not counted.
The same estimate from the process's CPU time is printed beside it: on a machine shared with
other jobs, with `--threads 1`, it is about what the wall time would be on an idle machine.

    python benchmarks/cpu_presets.py
    python benchmarks/cpu_presets.py --threads 2 --presets synthetic-toy
    DISCOMM_DATA=/data python benchmarks/cpu_presets.py --quick   # CI smoke run
"""

from __future__ import annotations

import argparse
import time

import torch
from common import (
    StepSetup,
    add_run_arguments,
    describe,
    endless,
    fmt,
    make_step_setup,
    print_table,
    set_threads,
    time_side_by_side,
)

from discomm_lite.config import make_config
from discomm_lite.data import DatasetNotFoundError, ImageTensorDataset, resolve_data_root
from discomm_lite.evaluation.features import extract_features
from discomm_lite.evaluation.metrics import evaluate_knn
from discomm_lite.training.step import train_step
from discomm_lite.views.pipeline import load_splits, make_train_views

# preset: (what it is for, {method: runs of it in the notebook}, target seconds for them all)
PRESETS = {
    "synthetic-toy": ("quickstart (00)", {"bits": 1}, 3 * 60),
    # notebook 02: BITS-fixed and BITS-reset (same cost per step), SimDINO, DINO
    "cifar-toy": ("toy CIFAR notebook (02)", {"bits": 2, "simdino": 1, "dino": 1}, 20 * 60),
}


def n_evaluations(epochs: int, eval_every: int) -> int:
    """How many k-NN evaluations `engine.train` runs: every eval_every epochs, and at the end."""
    if eval_every == 0:
        return 0
    return sum(1 for e in range(1, epochs + 1) if e % eval_every == 0 or e == epochs)


def time_evaluation(setup: StepSetup, train_set: ImageTensorDataset,
                    test_set: ImageTensorDataset) -> tuple[float, float]:
    """Wall and CPU seconds of one k-NN evaluation of the teacher, as in `engine.train`."""
    config, device = setup.config, torch.device("cpu")
    start, start_cpu = time.perf_counter(), time.process_time()
    bank = extract_features(setup.state.teacher.backbone, train_set,
                            image_size=config.image_size, device=device)
    query = extract_features(setup.state.teacher.backbone, test_set,
                             image_size=config.image_size, device=device)
    evaluate_knn(bank["feats"], bank["labels"], query["feats"], query["labels"])
    setup.state.teacher.train()
    return time.perf_counter() - start, time.process_time() - start_cpu


def run_preset(name: str, args: argparse.Namespace) -> list | None:
    purpose, runs, target = PRESETS[name]
    config = make_config(name, device="cpu", data_root=args.data_root)
    try:
        train_set, test_set = load_splits(config)  # the subsets engine.train uses
    except DatasetNotFoundError:
        print(f"\nskipped {name}: {config.dataset} was not found under the data root "
              f"{resolve_data_root(args.data_root)} (--data-root, else $DISCOMM_DATA, else "
              "./data). Put CIFAR-10 there, or point DISCOMM_DATA at a copy, to measure it.")
        return None
    batches = make_train_views(config, train_set, torch.device("cpu"))
    steps_per_epoch = batches.steps_per_epoch

    setups = {m: make_step_setup(config.replace(method=m), torch.device("cpu"), steps_per_epoch)
              for m in runs}
    stream = endless(batches)

    def step_of(setup):
        return lambda: train_step(setup.state, next(stream), setup.config, setup.method,
                                  setup.forward, setup.schedule)

    times = time_side_by_side({m: step_of(s) for m, s in setups.items()}, torch.device("cpu"),
                              steps=args.steps, warmup=args.warmup, repeats=args.repeats)
    eval_s, eval_cpu_s = time_evaluation(next(iter(setups.values())), train_set, test_set)
    n_evals = n_evaluations(config.epochs, config.eval_every)

    def run_seconds(step_ms: float, eval_seconds: float) -> float:
        return config.epochs * steps_per_epoch * step_ms / 1000 + n_evals * eval_seconds

    rows, total, total_cpu = [], 0.0, 0.0
    for method, count in runs.items():
        step_s = times[method].ms / 1000
        run_s = run_seconds(times[method].ms, eval_s)
        total += count * run_s
        total_cpu += count * run_seconds(times[method].cpu_ms, eval_cpu_s)
        rows.append([f"{name} {method}", fmt(step_s, ".3f"),
                     fmt(times[method].cpu_ms / 1000, ".3f"), steps_per_epoch,
                     fmt(steps_per_epoch * step_s, ".1f"), fmt(eval_s, ".1f"),
                     f"{config.epochs} + {n_evals} evals", fmt(run_s, ".0f"), count])
    print_table(["preset, method", "s/step", "CPU s/step", "steps/epoch", "s/epoch", "s/eval",
                 "run", "s/run", "runs"], rows,
                title=f"## {name} ({purpose}): batch {config.batch_size}, {len(train_set)} "
                      f"images, {config.backbone}; {describe(torch.device('cpu'), config)}")
    ratio = total / target
    print(f"{name}: estimated {total / 60:.1f} min for its runs ({total_cpu / 60:.1f} min of CPU "
          f"time), target {target / 60:.0f} min: ratio {ratio:.2f} -> "
          f"{'meets' if ratio <= 1 else 'MISSES'} its target")
    return [name, purpose, torch.get_num_threads(), fmt(total / 60, ".1f"),
            fmt(total_cpu / 60, ".1f"), fmt(target / 60, ".0f"), fmt(ratio, ".2f"),
            "yes" if ratio <= 1 else "NO"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--data-root", default=None,
                        help="where CIFAR-10 is (default: $DISCOMM_DATA, else ./data)")
    add_run_arguments(parser, steps=5, warmup=2)
    parser.add_argument("--quick", action="store_true",
                        help="1 timed step, no warmup, 1 block (CPU smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.repeats = 1, 0, 1
    set_threads(args.threads)
    rows = [row for name in args.presets if (row := run_preset(name, args)) is not None]
    if not rows:
        print("\nno preset measured")
        return
    print_table(["preset", "for", "threads", "estimated min", "CPU-time min", "target min",
                 "ratio", "meets"],
                rows, title="## summary (extrapolated training + k-NN evaluations)")


if __name__ == "__main__":
    main()
