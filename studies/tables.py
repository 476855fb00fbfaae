"""Rebuild the tables and figures of studies/README.md from the study's JSON results.

    python studies/tables.py            # rewrite the README's tables and studies/figures/*.png
    python studies/tables.py --check    # fail if the README's tables differ from the results

Each table sits in the README between `<!-- table:NAME -->` and `<!-- /table:NAME -->`; the text
around them (the verdicts) is written by hand from these tables.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from discomm_lite.teach.study import load_results, mean_std, metric, over_seeds, summarize
from discomm_lite.teach.tables import markdown_table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "cpu_recipe"
DIAGNOSTICS = HERE / "results" / "diagnostics"
README = HERE / "README.md"
FIGURES = HERE / "figures"

FINAL = ("knn20_top1", "knn200_top1", "linear_top1", "map_cosine", "map_hamming")
CODES = ("code_mean_bit_entropy", "code_mean_abs_correlation")
HEADERS = {
    "knn20_top1": "k-NN@20", "knn200_top1": "k-NN@200", "linear_top1": "linear (proxy)",
    "map_cosine": "mAP cosine", "map_hamming": "mAP Hamming", "val_knn20_top1": "val k-NN@20",
    "code_mean_bit_entropy": "bit entropy", "code_mean_abs_correlation": "mean |bit corr.|",
    "agreement": "final BCE", "bit_agreement": "bit agreement", "coding_rate": "coding rate",
    "train_seconds": "train s",
}
FACTORS = ("shape", "texture", "colour", "size", "position", "background")


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


TABLES = {
    "diagnostic_curves": diagnostic_curves_table,
    "diagnostic_runs": diagnostic_runs_table,
    "slow_start": slow_start_table,
    "tuning": tuning_table,
    "comparison": lambda r: group_table(r, "comparison",
                                        variants=["BITS-fixed", "BITS-reset", "SimDINO", "DINO"]),
    "floor": floor_table,
    "grid": lambda r: group_table(r, "grid"),
    "period": lambda r: group_table(r, "period",
                                    bases={"BITS-fixed": "never (BITS-fixed)",
                                           "BITS-reset": "reinit_every=1 (BITS-reset)"}),
    "beta": lambda r: group_table(r, "beta", FINAL + CODES + ("coding_rate",),
                                  bases={"BITS-fixed": "beta=0.1 (BITS-fixed)"}),
    "agreement": lambda r: group_table(r, "agreement", FINAL + ("bit_agreement",),
                                       bases={"BITS-fixed": "bce (BITS-fixed)"}),
    "synthetic": synthetic_table,
}


def render(readme: str, results: list[dict]) -> str:
    """`readme` with every marked table replaced by its current version."""
    def replace(match: re.Match) -> str:
        name = match.group(1)
        return f"<!-- table:{name} -->\n{TABLES[name](results)}\n<!-- /table:{name} -->"

    return re.sub(r"<!-- table:(\w+) -->.*?<!-- /table:\1 -->", replace, readme, flags=re.S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    results = load_results(RESULTS)
    current = README.read_text()
    updated = render(current, results)
    if args.check:
        if updated != current:
            sys.exit("studies/README.md's tables differ from the results: run "
                     "python studies/tables.py")
        print("studies/README.md agrees with the results")
        return
    README.write_text(updated)
    slow_start_figure(results)
    print(f"rewrote the tables of {README} from {len(results)} results")


if __name__ == "__main__":
    main()

