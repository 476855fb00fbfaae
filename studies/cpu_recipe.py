"""The CPU recipe study (issue 13): every run of it, by group, on the cifar-toy budget.

    python studies/cpu_recipe.py --list
    python studies/cpu_recipe.py --groups tuning comparison --jobs 2
    DISCOMM_DATA=../shared/data python studies/cpu_recipe.py --groups all --jobs 2
    python studies/cpu_recipe.py --groups grid --executor slurm --slurm-partition cpu --wait
    python studies/cpu_recipe.py --status

Each run's config, metrics records and full evaluation land in studies/results/cpu_recipe/ as
one JSON file (a run whose file exists is skipped, so the study can be stopped, resumed and
extended); run folders (checkpoints) go to --runs-root, and each run's record and job logs to
--runs-root/jobs/. The options are every study script's (`discomm_lite.teach.study_cli`).
studies/README.md is the report: what failed, what fixed it, the tables (rebuilt from the JSON by
`python studies/tables.py`).
"""

from __future__ import annotations

from pathlib import Path

from discomm_lite.config import method_settings
from discomm_lite.teach.study import StudyRun
from discomm_lite.teach.study_cli import study_main

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "cpu_recipe"
SEEDS = (0, 1, 2)
# Study runs skip the engine's k-NN after every epoch (the full evaluation follows training) and
# log every 5 steps; neither changes a run's trajectory.
QUIET = dict(eval_every=0, log_every=5)
# 1e-3, 2e-3, 4e-3, then one step further past the edge that held the best of those three.
LRS = {"BITS-fixed": (1e-3, 2e-3, 4e-3, 8e-3), "SimDINO": (1e-3, 2e-3, 4e-3, 8e-3),
       "DINO": (5e-4, 1e-3, 2e-3, 4e-3)}

# The methods as the comparison runs them. SimDINO takes its own defaults from the method
# (coding-rate weight 1, the coding rate on the student/teacher mean: SimDINO's --expa_type 1).
# The methods as the tuning ran them. BITS ends its head in an affine-free BatchNorm (the slow
# start, section 1); SimDINO and DINO keep their own heads and SimDINO its coding-rate input (the
# mean of student and teacher: SimDINO's --expa_type 1).
METHODS = {
    "BITS-fixed": dict(method="bits", head_norm="batchnorm"),
    "SimDINO": dict(method="simdino", head_norm="none", coding_rate_input=None),
    "DINO": dict(method="dino", head_norm="none"),
}


def tuning() -> list[StudyRun]:
    """The same budget for each method: 4 learning rates with global clipping, one more past the
    edge where the best of the first three lay (up for BITS and SimDINO, down for DINO), and
    DINO's per-parameter clipping at 2e-3; chosen by k-NN on a held-out part of train."""
    runs = []
    for variant, method in METHODS.items():
        for lr in LRS[variant]:
            runs.append(StudyRun("tuning", f"{variant} lr={lr:g} clip=global", "cifar-toy",
                                 {**method, **QUIET, "lr": lr, "clip_grad_mode": "global"},
                                 validate=True))
        runs.append(StudyRun("tuning", f"{variant} lr=0.002 clip=per_param", "cifar-toy",
                             {**method, **QUIET, "lr": 2e-3, "clip_grad_mode": "per_param"},
                             validate=True))
    return runs


def bits(**changes) -> dict:
    """BITS-fixed at the cifar-toy preset, which holds its tuned settings, with `changes`."""
    return {"method": "bits", **QUIET, **changes}


# BITS-reset re-initialises the head every epoch: 4 resets in 5 epochs (the paper: 10 in 100).
RESET_EVERY = 1


def comparison() -> list[StudyRun]:
    """The four methods at their tuned settings (presets.METHOD_SETTINGS), 3 seeds each."""
    variants = {
        "BITS-fixed": bits(),
        "BITS-reset": bits(reinit_every=RESET_EVERY),
        "SimDINO": {**method_settings("cifar-toy", "simdino"), **QUIET},
        "DINO": {**method_settings("cifar-toy", "dino"), **QUIET},
    }
    return [StudyRun("comparison", name, "cifar-toy", overrides, seed=seed)
            for name, overrides in variants.items() for seed in SEEDS]


def grid() -> list[StudyRun]:
    """Capacity x reset period (notebook 03's precomputed grid; the capacity claim)."""
    return [StudyRun("grid", f"n_bits={k} reinit_every={n}", "cifar-toy",
                     bits(n_bits=k, reinit_every=n), seed=seed)
            for k in (32, 128, 256) for n in (0, RESET_EVERY) for seed in (0, 1)]


def period() -> list[StudyRun]:
    """A longer reset period (the grid has 1 epoch, and never)."""
    return [StudyRun("period", "reinit_every=2", "cifar-toy", bits(reinit_every=2), seed=s)
            for s in (0, 1)]


def beta() -> list[StudyRun]:
    """The coding-rate weight, from none to ten times the paper's."""
    return [StudyRun("beta", f"beta={b:g}", "cifar-toy", bits(coding_rate_weight=b), seed=s)
            for b in (0.0, 0.3, 1.0) for s in (0, 1)]


def agreement() -> list[StudyRun]:
    """BCE against cosine agreement on the same binary channel (paper: 43.4 vs 36.3 mAP)."""
    return [StudyRun("agreement", "cosine", "cifar-toy", bits(agreement="cosine"), seed=s)
            for s in (0, 1)]


def floor() -> list[StudyRun]:
    """The networks the runs start from (same seed, same draws), evaluated untrained."""
    return [StudyRun("floor", "random init", "cifar-toy", {**METHODS["BITS-fixed"], **QUIET},
                     seed=s, kind="floor") for s in SEEDS]


def slow_start() -> list[StudyRun]:
    """The first two epochs, logged every step: the paper's plain head against the BatchNorm
    ending, on cifar-toy and on the quickstart's data."""
    runs = []
    for preset, epochs in (("cifar-toy", 2), ("synthetic-toy", 2)):
        for label, head_norm in (("plain head (paper)", "none"),
                                 ("BatchNorm-ended head", "batchnorm")):
            runs.append(StudyRun("slow_start", f"{preset} {label}", preset,
                                 dict(method="bits", head_norm=head_norm, epochs=epochs,
                                      warmup_epochs=1, log_every=1, eval_every=0),
                                 kind="curve"))
    return runs


def synthetic() -> list[StudyRun]:
    """What the bits encode on the quickstart's images, for several designs of the views."""
    designs = {
        "views cut from one image (DINO's crops)": dict(redraw_factors="", global_scale_min=0.4),
        "background, colour, position, size redrawn": {},
        "the same, former budget (6 epochs, lr 2e-3)": dict(epochs=6, lr=2e-3, eval_every=2),
        "everything but shape redrawn": dict(
            redraw_factors="background,colour,position,size,texture"),
    }
    runs = [StudyRun("synthetic", name, "synthetic-toy", overrides, seed=s)
            for name, overrides in designs.items() for s in (0, 1)]
    runs += [StudyRun("synthetic_floor", "random init", "synthetic-toy", seed=s, kind="floor")
             for s in (0, 1)]
    return runs


GROUPS = {"tuning": tuning, "floor": floor, "slow_start": slow_start, "comparison": comparison,
          "grid": grid, "period": period, "beta": beta, "agreement": agreement,
          "synthetic": synthetic}


def main(argv: list[str] | None = None) -> int:
    return study_main(GROUPS, description=__doc__, results=RESULTS,
                      runs_root=HERE.parent / "runs" / "cpu_recipe", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
