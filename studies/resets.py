"""The head-reset study (issue 20): what a reset must do besides drawing the new head.

    python studies/resets.py --list
    DISCOMM_DATA=../shared/data python studies/resets.py --groups handling --jobs 2
    python studies/resets.py --status

The CPU recipe study found resets harmful on cifar-toy (a reset every epoch cost 7 k-NN points);
the paper finds them its best variant. Each group below tests one part of the mechanism: what the
reset does to the head's AdamW moments and learning rate (handling), how the teacher head follows
the new student head (catchup), which periods help and what happens at the end of a run (period),
whether a longer run changes the verdict (scale), the tuning each method got (tuning), and the
final comparison over 3 seeds. Each run's config, records and evaluation land in
studies/results/resets/ as one JSON file (the runner, its rules and its options are every study
script's, `discomm_lite.teach.study_cli`: a run whose file exists is skipped; a run trained as one
of cpu_recipe's is reused, not trained again).
"""

from __future__ import annotations

from pathlib import Path

from cpu_recipe import QUIET, SEEDS, bits
from cpu_recipe import RESULTS as RECIPE_RESULTS

from discomm_lite.config import method_settings
from discomm_lite.teach.study import StudyRun
from discomm_lite.teach.study_cli import study_main

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "resets"
# Runs around a reset log every step: the coding rate's fall and recovery take a few steps.
EVERY_STEP = dict(log_every=1)
# What the code did before this study: a fresh AdamW for the new head at the full lr, the teacher
# head a copy of the new head that then follows at the schedule's momentum.
AS_BEFORE = dict(reinit_optimizer_state="clear", reinit_warmup_steps=0,
                 reinit_teacher_momentum=None, reinit_catchup_steps=0, reinit_partial_period=True)
HANDLINGS = {
    "as before (AdamW state cleared)": AS_BEFORE,
    "AdamW state kept": {**AS_BEFORE, "reinit_optimizer_state": "keep"},
    "state cleared, head lr warm-up 10 steps": {**AS_BEFORE, "reinit_warmup_steps": 10},
    "state kept, teacher head catch-up (momentum 0.9, 39 steps)": {
        **AS_BEFORE, "reinit_optimizer_state": "keep", "reinit_teacher_momentum": 0.9,
        "reinit_catchup_steps": 39},
    # The run's own start: a fresh head whose lr ramps up over the first epoch (39 steps).
    "state cleared, head lr warm-up 39 steps": {**AS_BEFORE, "reinit_warmup_steps": 39},
    "state kept, head lr warm-up 39 steps": {
        **AS_BEFORE, "reinit_optimizer_state": "keep", "reinit_warmup_steps": 39},
}


def handling() -> list[StudyRun]:
    """A reset every epoch, the optimizer's state and the teacher head handled four ways."""
    return [StudyRun("handling", name, "cifar-toy",
                     bits(reinit_every=1, **changes, **EVERY_STEP), seed=seed)
            for name, changes in HANDLINGS.items() for seed in SEEDS[:2]]


# What the handling group chose: the AdamW state cleared (a fresh head gets fresh moments) and the
# new head's lr ramped up over 39 steps, as long as the run's own warm-up (one cifar-toy epoch).
FIXED = {**AS_BEFORE, "reinit_warmup_steps": 39}


def period() -> list[StudyRun]:
    """The fixed handling at other periods, and the end-of-run rule (a reset whose period
    cannot end before the run does). Never resetting is the comparison's BITS-fixed."""
    variants = {
        "never": dict(reinit_every=0),
        "every epoch": dict(reinit_every=1),
        "every 2 epochs (resets at 2 and 4)": dict(reinit_every=2),
        "every 2 epochs, whole periods only (a reset at 2)": dict(
            reinit_every=2, reinit_partial_period=False),
        "every 3 epochs (a reset at 3)": dict(reinit_every=3),
    }
    return [StudyRun("period", name, "cifar-toy", bits(**{**FIXED, **changes}, **EVERY_STEP),
                     seed=seed)
            for name, changes in variants.items() for seed in SEEDS[:2]]


def catchup() -> list[StudyRun]:
    """The teacher head after a reset: a copy of the new head that follows the student at the
    schedule's momentum (0.99: 67 % of the random draw is left after 39 steps), or at 0.9 for the
    39 steps after it (2 % left)."""
    return [StudyRun("catchup", "copy, momentum 0.9 for 39 steps", "cifar-toy",
                     bits(reinit_every=1, **{**FIXED, "reinit_teacher_momentum": 0.9,
                                             "reinit_catchup_steps": 39}, **EVERY_STEP),
                     seed=seed) for seed in SEEDS[:2]]


def final() -> list[StudyRun]:
    """The final comparison's BITS-reset, 3 seeds, with the cifar-toy preset's reset handling
    (the handling group's choice); the other methods are cpu_recipe's comparison runs."""
    return [StudyRun("final", "BITS-reset (every epoch)", "cifar-toy", bits(reinit_every=1),
                     seed=seed) for seed in SEEDS]


def tuning() -> list[StudyRun]:
    """The tuning the CPU recipe study did not do: BITS-reset (fixed handling, every epoch) on
    the learning-rate grid BITS-fixed got; DINO below its grid's lowest lr (its best, 5e-4, was
    at the edge); SimDINO with the BatchNorm-ended head BITS got. One seed, validation k-NN on
    held-out training images, as cpu_recipe's tuning."""
    runs = [StudyRun("tuning", f"BITS-reset lr={lr:g}", "cifar-toy",
                     bits(reinit_every=1, lr=lr, clip_grad_mode="global", **FIXED),
                     validate=True) for lr in (2e-3, 4e-3, 8e-3)]
    runs += [StudyRun("tuning", f"DINO lr={lr:g}", "cifar-toy",
                      {**method_settings("cifar-toy", "dino"), **QUIET, "lr": lr},
                      validate=True) for lr in (2.5e-4, 1.25e-4)]
    runs += [StudyRun("tuning", f"SimDINO BatchNorm-ended head lr={lr:g}", "cifar-toy",
                      {**method_settings("cifar-toy", "simdino"), **QUIET, "lr": lr,
                       "head_norm": "batchnorm"}, validate=True) for lr in (8e-3,)]
    return runs


def scale() -> list[StudyRun]:
    """A three times longer cifar-toy (15 epochs, 585 steps): never against a reset every 5
    epochs (at 5 and 10, 195 steps apart), 2 seeds: does resetting pay once the head has time
    to learn again?"""
    longer = dict(epochs=15, **EVERY_STEP)
    return [StudyRun("scale", name, "cifar-toy", bits(**longer, **changes), seed=seed)
            for name, changes in (("never", dict(reinit_every=0)),
                                  ("every 5 epochs", dict(reinit_every=5, **FIXED)))
            for seed in SEEDS[:2]]


GROUPS = {"handling": handling, "period": period, "catchup": catchup, "final": final,
          "tuning": tuning, "scale": scale}


def main(argv: list[str] | None = None) -> int:
    return study_main(GROUPS, description=__doc__, results=RESULTS,
                      runs_root=HERE.parent / "runs" / "resets", twin_dirs=[RECIPE_RESULTS],
                      argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
