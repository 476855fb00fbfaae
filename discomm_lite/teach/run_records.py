"""What a run's own records answer, as the notebooks fold it under their questions: whether the
BCE left ln 2 (`bce_summary`), what each head reset did to the channel and the k-NN
(`reset_effects`, `reset_report`), and how several runs' curves compare (`curve_ends`,
`evaluations_side_by_side`). Every number comes from the records passed in; nothing is assumed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from discomm_lite.teach.tables import MarkdownTable, MarkdownText, markdown_table


# ---- one run -------------------------------------------------------------------------------
def bce_summary(records: Sequence[Mapping]) -> MarkdownText:
    """The BCE agreement and the bit agreement of a run at its first train record, after its
    first epoch and at its last, beside ln 2 (the BCE of a student that predicts 1/2 for every
    bit, whatever the teacher sends)."""
    train = [r for r in records if r.get("kind") == "train" and "agreement" in r]
    if not train:
        return MarkdownText("This run logged no training record with a BCE agreement.")
    points = {"first record": train[0]}
    one_epoch = next((r for r in train if r["epoch"] >= 1), None)
    if one_epoch is not None and one_epoch is not train[-1]:
        points["after one epoch"] = one_epoch
    points["last record"] = train[-1]
    rows = [[when, r["step"], r["epoch"], r["agreement"], r.get("bit_agreement")]
            for when, r in points.items()]
    table = markdown_table(rows, ["when", "step", "epoch", "BCE (nats)", "bit agreement"])
    return MarkdownText(f"{table}\n\nln 2 = {math.log(2):.3f} nats; a bit agreement of 0.5 is "
                        "chance.")


# ---- head resets in a run's records --------------------------------------------------------
def reset_effects(records: Sequence[Mapping], knn_key: str = "knn200_top1") -> list[dict]:
    """Each head reset of a run ("reinit" records) with the channel and the backbone around it.

    For the reset at step s: the BCE agreement and the bit entropy of the last train record
    before s and of the first after it, and `knn_key` of the last evaluation at or before s and
    of the first after it (with their epochs; None where the run has no such record).
    """
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval" and knn_key in r]
    effects = []
    for reset in (r for r in records if r.get("kind") == "reinit"):
        step = reset["step"]
        before = next((r for r in reversed(train) if r["step"] <= step), None)
        after = next((r for r in train if r["step"] > step), None)
        eval_before = next((r for r in reversed(evals) if r["step"] <= step), None)
        eval_after = next((r for r in evals if r["step"] > step), None)
        effects.append({
            "epoch": reset["epoch"], "step": step,
            **{f"{key}_{when}": (None if r is None else r.get(key))
               for key in ("agreement", "bit_entropy")
               for when, r in (("before", before), ("after", after))},
            "knn_before": None if eval_before is None else eval_before[knn_key],
            "knn_before_epoch": None if eval_before is None else eval_before["epoch"],
            "knn_after": None if eval_after is None else eval_after[knn_key],
            "knn_after_epoch": None if eval_after is None else eval_after["epoch"]})
    return effects


def reset_report(records: Sequence[Mapping], knn_key: str = "knn200_top1") -> MarkdownText:
    """`reset_effects` as a Markdown table, or a sentence when the run made no reset."""
    effects = reset_effects(records, knn_key)
    if not effects:
        return MarkdownText("This run made no head reset (`reinit_every = 0`, or the run ended "
                            "before the first one).")
    rows = [[e["epoch"], e["agreement_before"], e["agreement_after"], e["bit_entropy_before"],
             e["bit_entropy_after"],
             None if e["knn_before"] is None else f"{e['knn_before']:.3f} (epoch "
                                                   f"{e['knn_before_epoch']})",
             None if e["knn_after"] is None else f"{e['knn_after']:.3f} (epoch "
                                                  f"{e['knn_after_epoch']})"]
            for e in effects]
    return MarkdownText(markdown_table(rows, [
        "reset at epoch", "BCE before", "BCE after", "bit entropy before", "bit entropy after",
        f"{knn_key} before", f"{knn_key} after"]))


# ---- several runs --------------------------------------------------------------------------
def curve_ends(runs: Mapping[str, Sequence[Mapping]], keys: Sequence[str]) -> MarkdownTable:
    """Each run's first and last train record of every key in `keys` (one row per run)."""
    rows = []
    for name, records in runs.items():
        row = [name]
        for key in keys:
            values = [r[key] for r in records if r.get("kind") == "train" and key in r]
            row += [values[0], values[-1]] if values else [None, None]
        rows.append(row)
    return markdown_table(rows, ["run", *(f"{key} {end}" for key in keys
                                          for end in ("first", "last"))])


def evaluations_side_by_side(runs: Mapping[str, Sequence[Mapping]],
                             key: str = "knn20_top1") -> MarkdownTable:
    """`key` of every run's evaluations ("eval" records) by epoch, one column per run; with two
    runs, a last column of the first minus the second ("–" where one has no evaluation)."""
    by_run = {name: {r["epoch"]: r[key] for r in records if r.get("kind") == "eval" and key in r}
              for name, records in runs.items()}
    epochs = sorted({epoch for values in by_run.values() for epoch in values})
    names = list(by_run)
    rows = []
    for epoch in epochs:
        row = [epoch, *(by_run[name].get(epoch) for name in names)]
        if len(names) == 2:
            a, b = row[1], row[2]
            row.append(None if a is None or b is None else f"{a - b:+.3f}")
        rows.append(row)
    header = ["epoch", *names] + ([f"{names[0]} - {names[1]}"] if len(names) == 2 else [])
    return markdown_table(rows, header)
