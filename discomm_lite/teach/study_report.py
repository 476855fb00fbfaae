"""The study's results as the notebooks show them: loaded with a note when there are none, one
value per seed, tables of mean ± std over seeds, and the random-init floor (notebooks 02, 03).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from discomm_lite.teach.study import (
    load_results,
    mean_std,
    metric,
    paired_difference,
    reset_healths,
    summarize,
)
from discomm_lite.teach.tables import MarkdownTable, markdown_table


def results_folder(study: str = "cpu_recipe") -> Path:
    """Where the results of `study` are: $DISCOMM_STUDIES/<study>, else `studies/results/<study>`
    in the working folder or the nearest folder above it that has one (a notebook runs in the
    checkout's notebooks/ under Jupyter and nbval, in its root under papermill).

    The results are the checkout's files, not the installed package's: without them (an installed
    package run elsewhere) the folder named is one that does not exist, and `study_results` says
    so.
    """
    if os.environ.get("DISCOMM_STUDIES"):
        return Path(os.environ["DISCOMM_STUDIES"]) / study
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "studies" / "results" / study).is_dir():
            return folder / "studies" / "results" / study
    return here / "studies" / "results" / study


def study_results(group: str | None = None, study: str | Sequence[str] = "cpu_recipe",
                  results_dir: str | Path | None = None) -> list[dict]:
    """The results of `study`'s `group` (`study.load_results`), from `results_dir` (default:
    `results_folder(study)`; several studies: all their results); says so when there are
    none."""
    if not isinstance(study, str):
        return [r for name in study for r in study_results(group, name)]
    results_dir = results_folder(study) if results_dir is None else Path(results_dir)
    results = load_results(results_dir, group) if results_dir.is_dir() else []
    if not results:
        which = f"of the study's group {group!r}" if group else "of the study"
        print(f"No results {which} in {results_dir}: what is built from them is empty. "
              f"`python studies/{study}.py --groups {group or 'all'}` makes them (or set "
              "DISCOMM_STUDIES to the folder that holds the studies' results).")
    return results


def seed_values(results: Sequence[dict], keys: Sequence[str],
                variants: Sequence[str] | None = None) -> dict[str, dict[str, list[float]]]:
    """variant -> key -> one value per seed (in seed order), for `plots.plot_final`.

    `results` are result dicts of `discomm_lite.teach.study` (see `study.load_results`); a value is
    `study.metric(result, key)`. `variants` orders (and selects) the variants; default: the
    order in which they first appear.
    """
    order = list(variants) if variants is not None else list(dict.fromkeys(
        r["variant"] for r in results))
    table = {}
    for variant in order:
        runs = sorted((r for r in results if r["variant"] == variant), key=lambda r: r["seed"])
        table[variant] = {key: [metric(r, key) for r in runs] for key in keys}
    return table


def study_table(results: Sequence[dict], keys: Sequence[str],
                variants: Sequence[str] | None = None, *, label: str = "variant",
                digits: int = 3) -> MarkdownTable:
    """Mean ± std over seeds of each variant's `keys` (`study.summarize`), as a Markdown table."""
    rows = [[row["variant"], ", ".join(map(str, row["seeds"])), *(row[k] for k in keys)]
            for row in summarize(results, keys, variants)]
    return markdown_table(rows, [label, "seeds", *keys], digits=digits)


def floor_values(results: Sequence[dict], keys: Sequence[str]) -> dict[str, float]:
    """key -> mean over the floor results (random-init networks) that have it."""
    means = {key: mean_std(metric(r, key) for r in results)[0] for key in keys}
    return {key: value for key, value in means.items() if math.isfinite(value)}


def run_costs(results: Sequence[dict]) -> dict[str, dict]:
    """dataset -> the measured cost of the studies' runs on it: median seconds per training step
    and of a final evaluation, and the training set's size, for `lab.Lab.estimate_seconds`
    (notebooks/costs.json keeps them: `notebooks/execute.py --costs`)."""
    import statistics

    by_dataset: dict[str, list[dict]] = {}
    for r in results:
        if r.get("kind") == "train" and r.get("train_seconds") and r.get("records"):
            by_dataset.setdefault(r["config"]["dataset"], []).append(r)
    costs = {}
    for dataset, runs in by_dataset.items():
        steps = [max(x["step"] for x in r["records"] if x["kind"] == "train") for r in runs]
        costs[dataset] = {
            "seconds_per_step": statistics.median(
                r["train_seconds"] / n for r, n in zip(runs, steps, strict=True)),
            "evaluation_seconds": statistics.median(r.get("eval_seconds", 0.0) for r in runs),
            "train_images": max(r["config"]["train_subset"] or 0 for r in runs) or 50_000,
            "runs": len(runs)}
    return costs


def reset_health_table(runs: Sequence[tuple[int, Sequence[dict]]]) -> MarkdownTable:
    """Every head reset of `runs` ((seed, metrics records) pairs): the coding rate just before it,
    its lowest value after it as a fraction of that, and the steps until it was back at 90 % of
    it (`study.reset_healths`)."""
    rows = [[seed, h["reset_step"], h["coding_rate_before"],
             h["coding_rate_min"] / h["coding_rate_before"], h["steps_to_recover"]]
            for seed, records in runs for h in reset_healths(records) if h["coding_rate_before"]]
    return markdown_table(rows, ["seed", "reset at step", "rate before", "lowest / before",
                                 "steps to 90 %"], digits=2)


# The final comparison of the CPU studies: the methods of cpu_recipe's comparison, with BITS-reset
# from the reset study (the head reset as the preset makes it, `studies/resets.py`, group final).
FINAL_METHODS = ("BITS-fixed", "BITS-reset", "SimDINO", "DINO")


def final_comparison(results: Sequence[dict]) -> list[dict]:
    """The final comparison's results among the studies' `results`: cpu_recipe's comparison
    runs of BITS-fixed, SimDINO and DINO, and the reset study's BITS-reset (renamed so)."""
    chosen = [r for r in results if r["group"] == "comparison" and r["variant"] != "BITS-reset"]
    chosen += [{**r, "group": "comparison", "variant": "BITS-reset"} for r in results
               if r["group"] == "final" and r["variant"].startswith("BITS-reset")]
    return chosen


def paired_differences(results: Sequence[dict], keys: Sequence[str], reference: str,
                       variants: Sequence[str]) -> MarkdownTable:
    """Each variant minus `reference`, paired by seed (`study.paired_difference`): the mean
    difference and its 95 % interval, one column per key."""
    def by_seed(variant: str, key: str) -> dict[int, float]:
        return {r["seed"]: metric(r, key) for r in results if r["variant"] == variant}

    rows = []
    for variant in variants:
        if variant == reference:
            continue
        cells = [paired_difference(by_seed(variant, k), by_seed(reference, k)) for k in keys]
        rows.append([f"{variant} - {reference}", max(n for _, _, n in cells),
                     *(f"{m:+.3f} ± {h:.3f}" if math.isfinite(h) else "–" for m, h, _ in cells)])
    return markdown_table(rows, ["difference (95 % interval)", "seeds", *keys])


def factor_information(results: Sequence[dict], field: str, factors: Sequence[str]
                       ) -> dict[str, list[dict]]:
    """factor -> one record per value of `field` among `results` (a synthetic grid): the mean over
    seeds of the largest mutual information of one bit with the factor (`code_max_mi_<factor>`)
    and the number of seeds, for `plots.plot_metrics(..., x=field)`; the values of `field` in
    order."""
    from discomm_lite.teach.study import effective_config

    values = sorted({effective_config(r["config"])[field] for r in results})
    curves = {}
    for factor in factors:
        curves[factor] = []
        for value in values:
            runs = [r for r in results if effective_config(r["config"])[field] == value]
            mean, _, seeds = mean_std(metric(r, f"code_max_mi_{factor}") for r in runs)
            curves[factor].append({field: value, "best bit's information (bits)": mean,
                                   "seeds": seeds})
    return curves


def value_text(value: tuple[float, float, int], digits: int = 3) -> str:
    """A `mean_std` as a reader should quote it: "0.550 ± 0.008 (2 seeds)", "0.475 (1 seed)",
    or "not measured"."""
    mean, std, n = value
    if n == 0 or not math.isfinite(mean):
        return "not measured"
    if n == 1:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({n} seeds)"


def difference_text(difference: tuple[float, float, int], digits: int = 3) -> str:
    """A `paired_difference` as a reader should quote it: "+0.012 ± 0.034 (2 seeds)", or
    "+0.012 (1 seed: no interval)", or "not measured"."""
    mean, half, n = difference
    if n == 0 or not math.isfinite(mean):
        return "not measured"
    if n == 1:
        return f"{mean:+.{digits}f} (1 seed: no interval)"
    return f"{mean:+.{digits}f} ± {half:.{digits}f} ({n} seeds)"
