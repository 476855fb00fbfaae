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

from cpu_recipe import RESULTS as RECIPE_RESULTS
from cpu_recipe import SEEDS, bits

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


GROUPS = {"handling": handling}


def main(argv: list[str] | None = None) -> int:
    return study_main(GROUPS, description=__doc__, results=RESULTS,
                      runs_root=HERE.parent / "runs" / "resets", twin_dirs=[RECIPE_RESULTS],
                      argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
