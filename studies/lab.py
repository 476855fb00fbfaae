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

from pathlib import Path

from cpu_recipe import bits

from discomm_lite.teach.study import StudyRun
from discomm_lite.teach.study_cli import study_main

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


def main(argv: list[str] | None = None) -> int:
    return study_main(GROUPS, description=__doc__, results=RESULTS,
                      runs_root=HERE.parent / "runs" / "lab", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
