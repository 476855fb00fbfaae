"""Rebuild the tables and figures of studies/README.md from the studies' JSON results.

    python studies/tables.py            # rewrite the README's tables and studies/figures/*.png
    python studies/tables.py --check    # fail if the README's tables differ from the results

Each table sits in the README between `<!-- table:NAME -->` and `<!-- /table:NAME -->`; the text
around them (the verdicts) is written by hand from these tables. The studies: cpu_recipe (the CPU
recipe), resets (the head-reset study), lab (notebook 03's grids), each a folder of results/.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from discomm_lite.teach.study import load_results, mean_std, metric, over_seeds, summarize
from discomm_lite.teach.study_report import FINAL_METHODS, final_comparison, paired_differences
from discomm_lite.teach.tables import markdown_table

HERE = Path(__file__).resolve().parent
STUDIES = ("cpu_recipe", "resets", "lab")
DIAGNOSTICS = HERE / "results" / "diagnostics"
README = HERE / "README.md"
FIGURES = HERE / "figures"

FINAL = ("knn20_top1", "knn200_top1", "linear_top1", "map_cosine", "map_hamming")
GEOMETRY = ("effective_dim", "effective_rank")
# What the reset study reads of each run: the evaluations, the geometry of the backbone's
# features (the paper's Table 2) and the channel's lowest coding rate after a reset.
RESETS = ("knn20_top1", "knn200_top1", "linear_top1", "map_cosine", "map_hamming",
          *GEOMETRY, "reset_rate_low")
CODES = ("code_mean_bit_entropy", "code_mean_abs_correlation")
HEADERS = {
    "knn20_top1": "k-NN@20", "knn200_top1": "k-NN@200", "linear_top1": "linear (proxy)",
    "map_cosine": "mAP cosine", "map_hamming": "mAP Hamming", "val_knn20_top1": "val k-NN@20",
    "code_mean_bit_entropy": "bit entropy", "code_mean_abs_correlation": "mean |bit corr.|",
    "agreement": "final BCE", "bit_agreement": "bit agreement", "coding_rate": "coding rate",
    "train_seconds": "train s", "effective_dim": "eff. dim", "effective_rank": "eff. rank",
    "reset_rate_low": "lowest rate / before a reset",
    "map_hamming_32": "mAP Hamming, first 32 bits",
}
FACTORS = ("shape", "texture", "colour", "size", "position", "background")
HEADERS.update({f"code_max_mi_{f}": f"MI {f}" for f in FACTORS})


def _rows(results: list[dict], keys, variants=None) -> list[list]:
    rows = []
    for row in summarize(results, keys, variants):
        runs = [r for r in results if r["variant"] == row["variant"]]
        if not runs:  # a variant of the plan that the budget left out
            rows.append([row["variant"], "not run", *("–" for _ in keys), None])
            continue
        seconds = mean_std(r.get("train_seconds", float("nan")) for r in runs)[0]
        values = [over_seeds(metric(r, k) for r in runs) for k in keys]
        rows.append([row["variant"], ", ".join(map(str, row["seeds"])), *values,
                     round(seconds) if seconds == seconds else None])
    return rows


def _natural_key(variant: str) -> list:
    """'n_bits=32' before 'n_bits=128': the numbers in a name compared as numbers."""
    return [(0, float(part), "") if re.fullmatch(r"\d+(\.\d+)?", part) else (1, 0.0, part)
            for part in re.split(r"(\d+(?:\.\d+)?)", variant) if part]


def group_table(results: list[dict], group: str, keys=FINAL + CODES, variants=None,
                bases: dict[str, str] | None = None) -> str:
    """Mean ± std over seeds of one group, with the mean training time per run.

    `bases` adds comparison runs as rows of the group: {comparison variant: row label}, e.g. the
    BITS-fixed runs as the beta group's beta=0.1 (they are that setting, with the same seeds).
    """
    chosen = [r for r in results if r["group"] == group]
    for variant, label in (bases or {}).items():
        chosen += [{**r, "group": group, "variant": label} for r in results
                   if r["group"] == "comparison" and r["variant"] == variant]
    if variants is None:
        variants = sorted({r["variant"] for r in chosen}, key=_natural_key)
    return markdown_table(_rows(chosen, keys, variants),
                          ["variant", "seeds", *(HEADERS.get(k, k) for k in keys), "train s"])


def floor_table(results: list[dict], group: str = "floor") -> str:
    floors = [r for r in results if r["group"] == group]
    return markdown_table(_rows(floors, FINAL + CODES),
                          ["network", "seeds", *(HEADERS[k] for k in FINAL + CODES), "train s"])


def synthetic_table(results: list[dict]) -> str:
    """The quickstart's view designs: k-NN and, per factor, the best bit's MI with it."""
    keys = ("knn20_top1", "knn200_top1", "linear_top1", "agreement",
            *(f"code_max_mi_{f}" for f in FACTORS))
    chosen = [r for r in results if r["group"] in ("synthetic", "synthetic_floor")]
    return markdown_table(_rows(chosen, keys), ["views", "seeds", "k-NN@20", "k-NN@200",
                                                "linear (proxy)", "final BCE",
                                                *(f"MI {f}" for f in FACTORS), "train s"])


def slow_start_table(results: list[dict]) -> str:
    """BCE and bit agreement after 10, 39 (one epoch on cifar-toy) and the last step."""
    rows = []
    for r in (r for r in results if r["group"] == "slow_start"):
        train = {x["step"]: x for x in r["records"] if x["kind"] == "train"}
        steps_per_epoch = max(train) // r["config"]["epochs"]
        cells = [r["variant"]]
        for step in (10, steps_per_epoch, max(train)):
            cells += [train[step]["agreement"], train[step]["bit_agreement"]]
        rows.append(cells)
    return markdown_table(rows, ["run", "BCE @10", "bit agr. @10", "BCE @1 epoch",
                                 "bit agr. @1 epoch", "BCE end", "bit agr. end"])


def diagnostic_curves_table(_: list[dict]) -> str:
    """studies/diagnostics/head_scale.py curves: the first 2 epochs (78 steps) of cifar-toy."""
    rows = []
    for path in sorted(DIAGNOSTICS.glob("curves__*.json")):
        r = json.loads(path.read_text())
        train = {x["step"]: x for x in r["records"] if x["kind"] == "train"}
        cells = [r["variant"]]
        for step in (10, 39, max(train)):
            cells += [train[step]["agreement"], train[step]["logit_std"],
                      train[step]["coding_rate"]]
        rows.append(cells)
    return markdown_table(rows, ["head / change", "BCE @10", "logit std @10", "rate @10",
                                 "BCE @39", "logit std @39", "rate @39", "BCE @78",
                                 "logit std @78", "rate @78"], digits=3)


def diagnostic_runs_table(_: list[dict]) -> str:
    """studies/diagnostics/head_scale.py runs: 5 epochs of cifar-toy, the full evaluation."""
    rows = []
    for path in sorted(DIAGNOSTICS.glob("runs__*.json")):
        r = json.loads(path.read_text())
        last = [x for x in r["records"] if x["kind"] == "train"][-1]
        rows.append([r["variant"], *(r["eval"][k] for k in FINAL),
                     r["eval"]["code_mean_bit_entropy"], last["agreement"]])
    return markdown_table(rows, ["head", *(HEADERS[k] for k in FINAL), "bit entropy",
                                 "final BCE"])


def tuning_table(results: list[dict]) -> str:
    keys = ("val_knn20_top1", "knn20_top1", "knn200_top1", "linear_top1")
    return group_table(results, "tuning", keys)


def slow_start_figure(results: list[dict]) -> Path | None:
    """BCE and bit agreement of the slow-start runs, step by step (studies/figures)."""
    from discomm_lite.viz.plots import plot_metrics

    runs = [r for r in results if r["group"] == "slow_start"]
    if not runs:
        return None
    figure = plot_metrics([r["records"] for r in runs], ["agreement", "bit_agreement"],
                          labels=[r["variant"] for r in runs])
    FIGURES.mkdir(exist_ok=True)
    path = FIGURES / "slow_start.png"
    figure.savefig(path, dpi=80, bbox_inches="tight")
    return path


FIRST_RESET = " (reset as first implemented)"


def _first_reset(results: list[dict]) -> list[dict]:
    """`results` with the variants that reset their head labelled as runs of the reset as first
    implemented (cpu_recipe's: a fresh head at the peak lr; the reset study, section 6)."""
    return [{**r, "variant": r["variant"] + FIRST_RESET}
            if r.get("config", {}).get("reinit_every") else r for r in results]


def _renamed(results: list[dict]) -> list[dict]:
    """The reset study's results with its "as before" variant named as the tables name it."""
    return [{**r, "variant": r["variant"].replace("as before", "as first implemented")}
            for r in results]


def final_table(studies: dict[str, list[dict]]) -> str:
    """The final comparison (3 seeds) with the floor: the evaluations and the geometry."""
    chosen = final_comparison([*studies["cpu_recipe"], *studies["resets"]])
    chosen += [{**r, "variant": "random init (floor)"} for r in studies["cpu_recipe"]
               if r["group"] == "floor"]
    keys = FINAL + GEOMETRY
    return markdown_table(_rows(chosen, keys, [*FINAL_METHODS, "random init (floor)"]),
                          ["method", "seeds", *(HEADERS[k] for k in keys), "train s"])


def differences_table(results: list[dict], keys, reference: str, variants) -> str:
    """Each of `variants` minus `reference`, paired by seed: mean and 95 % interval per key."""
    table = paired_differences(results, keys, reference, variants)
    header = "| difference (95 % interval) | seeds | " + " | ".join(HEADERS[k] for k in keys)
    return header + " |\n" + table.split("\n", 1)[1]


def final_differences_table(studies: dict[str, list[dict]]) -> str:
    """Each method of the final comparison minus BITS-fixed, paired by seed, 95 % intervals; and
    the reset study's fix: BITS-reset minus the reset as first implemented (the same seeds)."""
    chosen = final_comparison([*studies["cpu_recipe"], *studies["resets"]])
    first = [r for r in _first_reset(studies["cpu_recipe"]) if r["group"] == "comparison"
             and r["variant"] == "BITS-reset" + FIRST_RESET]
    keys = FINAL + GEOMETRY
    table = differences_table(chosen, keys, "BITS-fixed", FINAL_METHODS)
    fix = differences_table(chosen + first, keys, "BITS-reset" + FIRST_RESET, ["BITS-reset"])
    return table + "\n" + fix.split("\n", 2)[2]


def ablation_differences_table(results: list[dict]) -> str:
    """Section 4's settings minus BITS-fixed (the comparison's runs), paired by seed."""
    first = _first_reset(results)
    chosen = [r for r in first if r["group"] in ("grid", "period", "beta", "agreement")
              or (r["group"] == "comparison" and r["variant"] == "BITS-fixed")]
    variants = [v for group in ("grid", "period", "beta", "agreement")
                for v in sorted({r["variant"] for r in chosen if r["group"] == group},
                                key=_natural_key) if v != "n_bits=128 reinit_every=0"]
    return differences_table(chosen, ("knn20_top1", "knn200_top1", "map_cosine", "map_hamming",
                                      "effective_dim"), "BITS-fixed", variants)


def reset_differences_table(results: list[dict]) -> str:
    """Every setting of the reset study's handling, period and catch-up groups minus never
    resetting (the period group's "never"), paired by seed, 95 % intervals; "every epoch" is
    the handling group's warm-up of 39 steps (the same training), so it is left out."""
    chosen = [r for r in _renamed(results) if r["group"] in ("handling", "period", "catchup")]
    variants = [v for group in ("handling", "period", "catchup")
                for v in sorted({r["variant"] for r in chosen if r["group"] == group},
                                key=_natural_key) if v not in ("never", "every epoch")]
    return differences_table(chosen, ("knn20_top1", "knn200_top1", "map_cosine", "map_hamming",
                                      "effective_dim"), "never", variants)


def reset_rate_figure(studies: dict[str, list[dict]]) -> Path | None:
    """The coding rate and the student's logit scale around the resets of cifar-toy, seed 0: the
    reset as first implemented against the reset study's (studies/figures/reset_rate.png)."""
    from discomm_lite.viz.plots import plot_metrics

    named = {"as first implemented (fresh AdamW, full lr)":
             "handling__as_before__AdamW_state_cleared___seed0",
             "the reset study's (head lr warmed up over 39 steps)":
             "handling__state_cleared__head_lr_warm-up_39_steps__seed0"}
    runs = {label: next((r for r in studies["resets"] if r["name"] == name), None)
            for label, name in named.items()}
    if any(run is None for run in runs.values()):
        return None
    figure = plot_metrics([run["records"] for run in runs.values()],
                          ["coding_rate", "logit_std", "bit_agreement"], x="step",
                          labels=list(runs))
    FIGURES.mkdir(exist_ok=True)
    path = FIGURES / "reset_rate.png"
    figure.savefig(path, dpi=80, bbox_inches="tight")
    return path


def _in(study: str, table):
    """A table of one study's results."""
    return lambda studies: table(studies[study])


TABLES = {
    "diagnostic_curves": _in("cpu_recipe", diagnostic_curves_table),
    "diagnostic_runs": _in("cpu_recipe", diagnostic_runs_table),
    "slow_start": _in("cpu_recipe", slow_start_table),
    "tuning": _in("cpu_recipe", tuning_table),
    "comparison": _in("cpu_recipe", lambda r: group_table(
        _first_reset(r), "comparison", FINAL + GEOMETRY,
        variants=["BITS-fixed", "BITS-reset" + FIRST_RESET, "SimDINO", "DINO"])),
    "floor": _in("cpu_recipe", floor_table),
    "grid": _in("cpu_recipe", lambda r: group_table(_first_reset(r), "grid", FINAL + GEOMETRY)),
    "period": _in("cpu_recipe", lambda r: group_table(
        _first_reset(r), "period", FINAL + GEOMETRY,
        bases={"BITS-fixed": "never (BITS-fixed)",
               "BITS-reset" + FIRST_RESET: "reinit_every=1 (BITS-reset)" + FIRST_RESET})),
    "beta": _in("cpu_recipe", lambda r: group_table(r, "beta", FINAL + CODES + ("coding_rate",),
                                                    bases={"BITS-fixed": "beta=0.1 (BITS-fixed)"})),
    "agreement": _in("cpu_recipe", lambda r: group_table(
        r, "agreement", FINAL + ("bit_agreement",), bases={"BITS-fixed": "bce (BITS-fixed)"})),
    "ablation_differences": _in("cpu_recipe", ablation_differences_table),
    "synthetic": _in("cpu_recipe", synthetic_table),
    "reset_handling": _in("resets", lambda r: group_table(_renamed(r), "handling", RESETS)),
    "reset_period": _in("resets", lambda r: group_table(r, "period", RESETS)),
    "reset_catchup": _in("resets", lambda r: group_table(r, "catchup", RESETS)),
    "reset_differences": _in("resets", reset_differences_table),
    "reset_tuning": _in("resets", lambda r: group_table(
        r, "tuning", ("val_knn20_top1", "knn20_top1", "knn200_top1", "linear_top1"))),
    "reset_scale": _in("resets", lambda r: group_table(r, "scale", RESETS)),
    "final_comparison": final_table,
    "final_differences": final_differences_table,
    "lab_capacity_period": _in("lab", lambda r: group_table(
        r, "capacity_period", ("knn20_top1", "map_hamming_32", "map_hamming", *GEOMETRY,
                               "reset_rate_low"))),
    "lab_axes": _in("lab", lambda r: group_table(
        r, "axes", ("knn20_top1", "knn200_top1", "coding_rate", "bit_agreement",
                    *(f"code_max_mi_{f}" for f in FACTORS)))),
}


def render(readme: str, studies: dict[str, list[dict]]) -> str:
    """`readme` with every marked table replaced by its current version."""
    def replace(match: re.Match) -> str:
        name = match.group(1)
        return f"<!-- table:{name} -->\n{TABLES[name](studies)}\n<!-- /table:{name} -->"

    return re.sub(r"<!-- table:(\w+) -->.*?<!-- /table:\1 -->", replace, readme, flags=re.S)


def load_studies() -> dict[str, list[dict]]:
    """Every study's results (none for a study not run yet), by study."""
    return {name: load_results(HERE / "results" / name) if (HERE / "results" / name).is_dir()
            else [] for name in STUDIES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    studies = load_studies()
    current = README.read_text()
    updated = render(current, studies)
    if args.check:
        if updated != current:
            sys.exit("studies/README.md's tables differ from the results: run "
                     "python studies/tables.py")
        print("studies/README.md agrees with the results")
        return
    README.write_text(updated)
    slow_start_figure(studies["cpu_recipe"])
    reset_rate_figure(studies)
    print(f"rewrote the tables of {README} from "
          f"{sum(len(r) for r in studies.values())} results")


if __name__ == "__main__":
    main()
