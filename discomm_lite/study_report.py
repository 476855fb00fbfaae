"""The study's results as the notebooks show them: loaded with a note when there are none, one
value per seed, tables of mean ± std over seeds, and the random-init floor (notebooks 02, 03).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from discomm_lite.notebook import MarkdownTable, markdown_table
from discomm_lite.study import load_results, mean_std, metric, summarize

# The CPU recipe study's result files (one JSON per run), read by notebooks 02 and 03.
STUDY_RESULTS = Path(__file__).resolve().parents[1] / "studies" / "results" / "cpu_recipe"


def study_results(group: str | None = None, results_dir: str | Path = STUDY_RESULTS
                  ) -> list[dict]:
    """The study's results of `group` (`study.load_results`); says so when there are none."""
    results = load_results(results_dir, group)
    if not results:
        which = f"of the study's group {group!r}" if group else "of the study"
        print(f"No results {which} in {results_dir}: what is built from them is empty. "
              f"`python studies/cpu_recipe.py --groups {group or 'all'}` makes them.")
    return results


def seed_values(results: Sequence[dict], keys: Sequence[str],
                variants: Sequence[str] | None = None) -> dict[str, dict[str, list[float]]]:
    """variant -> key -> one value per seed (in seed order), for `plots.plot_final`.

    `results` are result dicts of `discomm_lite.study` (see `study.load_results`); a value is
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
