"""The ablation lab's precomputed grid (issue 21): what notebook 03 answers in under a second.

    python studies/lab.py --list
    DISCOMM_DATA=../shared/data python studies/lab.py --groups capacity_period axes --jobs 2

Two grids, each run a JSON in studies/results/lab/ (the runner's rules are cpu_recipe's):
- capacity_period, on cifar-toy: the channel's capacity K in {16, 32, 64, 128, 256} x the head
  reset period in {never, 1, 2} epochs (every period whose resets fire in the 5-epoch run with a
  whole period after them), 2 seeds, each with the preset's reset handling (the reset study's);
- axes, on the quickstart's synthetic images (12 epochs in about 3 minutes, so a denser grid fits):
  the coding-rate weight beta, BCE against cosine agreement, and soft targets at four
  temperatures against hard ones, 2 seeds, with the bits' mutual information with each factor.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cpu_recipe import bits, verify

from discomm_lite.teach.study import StudyRun, run_study

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "lab"
SEEDS = (0, 1)
CAPACITIES = (16, 32, 64, 128, 256)
PERIODS = (0, 1, 2)


def capacity_period() -> list[StudyRun]:
    """K x reset period on cifar-toy, logged every step (the rate around each reset)."""
    return [StudyRun("capacity_period", f"n_bits={k} reinit_every={n}", "cifar-toy",
                     bits(n_bits=k, reinit_every=n, log_every=1), seed=seed)
            for k in CAPACITIES for n in PERIODS for seed in SEEDS]


def axes() -> list[StudyRun]:
    """One knob at a time around the quickstart's preset (beta 0.1, BCE, hard targets)."""
    variants = {"base": {}}
    variants.update({f"coding_rate_weight={b:g}": dict(coding_rate_weight=b)
                     for b in (0.0, 0.03, 0.3, 1.0)})
    variants["agreement=cosine"] = dict(agreement="cosine")
    variants.update({f"targets=soft target_temperature={t:g}": dict(targets="soft",
                                                                    target_temperature=t)
                     for t in (0.05, 0.1, 0.2, 1.0)})
    return [StudyRun("axes", name, "synthetic-toy", changes, seed=seed)
            for name, changes in variants.items() for seed in SEEDS]


GROUPS = {"capacity_period": capacity_period, "axes": axes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", nargs="+", default=["all"])
    parser.add_argument("--runs-root", default=str(HERE.parent / "runs" / "lab"))
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--match", nargs="+", default=[], help="keep specs whose name has one")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--verify", action="store_true",
                        help="check that every result's config is what its spec builds today")
    args = parser.parse_args()
    groups = list(GROUPS) if args.groups == ["all"] else args.groups
    specs = [spec for group in groups for spec in GROUPS[group]()]
    if args.match:
        specs = [s for s in specs if any(m in s.name for m in args.match)]
    if args.list:
        for spec in specs:
            print(spec.name, spec.overrides)
        return
    if args.verify:
        verify(specs, args.runs_root, args.results)
        return
    run_study(specs, args.runs_root, args.results, jobs=args.jobs, threads=args.threads)


if __name__ == "__main__":
    main()
