"""What a run's records answer (teach.run_records): the BCE against ln 2, each head reset with the
channel and the k-NN around it, and several runs side by side; on hand-written records whose
answers are known."""

from __future__ import annotations

import math

from discomm_lite.teach.run_records import (
    bce_summary,
    curve_ends,
    evaluations_side_by_side,
    reset_effects,
    reset_report,
)


def _records():
    def train(step, epoch, bce, entropy):
        return {"kind": "train", "step": step, "epoch": epoch, "agreement": bce,
                "bit_entropy": entropy, "bit_agreement": 0.6}

    return [train(10, 0.5, 0.69, 0.9), train(20, 1.0, 0.66, 0.95),
            {"kind": "eval", "step": 20, "epoch": 1, "knn200_top1": 0.40},
            {"kind": "reinit", "step": 20, "epoch": 1},
            train(30, 1.5, 0.693, 0.7), train(40, 2.0, 0.64, 0.96),
            {"kind": "eval", "step": 40, "epoch": 2, "knn200_top1": 0.38},
            {"kind": "reinit", "step": 40, "epoch": 2}]


def test_reset_effects_read_the_records_around_each_reset():
    first, last = reset_effects(_records())
    assert first == {"epoch": 1, "step": 20, "agreement_before": 0.66, "agreement_after": 0.693,
                     "bit_entropy_before": 0.95, "bit_entropy_after": 0.7,
                     "knn_before": 0.40, "knn_before_epoch": 1,
                     "knn_after": 0.38, "knn_after_epoch": 2}
    # The run ended at the last reset: nothing after it.
    assert last["agreement_after"] is None and last["knn_after"] is None
    assert last["knn_before"] == 0.38
    report = str(reset_report(_records()))
    assert "| 1 | 0.660 | 0.693 |" in report and "0.380 (epoch 2)" in report
    assert "no head reset" in reset_report([r for r in _records() if r["kind"] != "reinit"])


def test_bce_summary_is_read_at_the_start_after_one_epoch_and_at_the_end():
    text = str(bce_summary(_records()))
    assert "| first record | 10 |" in text and "| after one epoch | 20 |" in text
    assert "| last record | 40 |" in text and f"{math.log(2):.3f}" in text
    assert "no training record" in bce_summary([])




def test_several_runs_side_by_side():
    other = [{"kind": "train", "step": 5, "epoch": 0.5, "agreement": 0.7},
             {"kind": "eval", "step": 20, "epoch": 1, "knn200_top1": 0.45},
             {"kind": "eval", "step": 60, "epoch": 3, "knn200_top1": 0.5}]
    table = str(evaluations_side_by_side({"a": _records(), "b": other}, "knn200_top1"))
    assert table.splitlines()[0] == "| epoch | a | b | a - b |"
    assert "| 1 | 0.400 | 0.450 | -0.050 |" in table  # signed: a difference
    assert "| 2 | 0.380 | – | – |" in table and "| 3 | – | 0.500 | – |" in table
    ends = str(curve_ends({"a": _records(), "b": other}, ["agreement"]))
    assert "| a | 0.690 | 0.640 |" in ends and "| b | 0.700 | 0.700 |" in ends
    assert "| c | – | – |" in str(curve_ends({"c": []}, ["agreement"]))
