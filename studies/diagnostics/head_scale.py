"""Diagnostic of the slow start (issue 13, item 1): why BITS's BCE sits at ln 2 on cifar-toy.

Not part of the library: to try a logit scale on the student (a temperature on its BCE), this
script multiplies the projection head's output by a constant, by wrapping
`ProjectionHead.forward`. The teacher's bits (signs) and the coding rate (on L2-normalised logits)
do not change with that scale, so it acts on the BCE alone, as a student temperature 1/scale.

    python studies/diagnostics/head_scale.py curves   # 2 epochs, every step logged
    python studies/diagnostics/head_scale.py runs     # 5 epochs + the study's full evaluation
    python studies/diagnostics/head_scale.py curves --quick   # a few steps, to check it runs

Results go to studies/results/diagnostics/<mode>__<variant>.json (config, records, evaluation).
What they showed (studies/README.md, "The slow start"): with the paper's plain head the logits
are ~0.005, the BCE cannot leave ln 2 and the coding rate alone moves the features; a larger
learning rate, a faster EMA or a larger last-layer initialisation do not change that; a scale of
10 makes the BCE fall slowly, 30 and 100 collapse the channel (most bits constant); a BatchNorm at
the end of the head (head_norm="batchnorm") makes every logit ~1 and every bit balanced from the
first step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from discomm_lite import make_config, train
from discomm_lite.evaluation.suite import evaluate_checkpoint
from discomm_lite.method import heads

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results" / "diagnostics"
RUNS = HERE.parents[1] / "runs" / "diagnostics"

# variant: (Config overrides, head output scale, last-layer init std (None: the paper's 0.02))
CURVES = {
    "plain head (paper)": ({}, 1.0, None),
    "BatchNorm-ended head": ({"head_norm": "batchnorm"}, 1.0, None),
    "lr x 3": ({"lr": 6e-3}, 1.0, None),
    "EMA momentum 0.9": ({"momentum": 0.9}, 1.0, None),
    "last layer init 1/sqrt(fan_in)": ({}, 1.0, "fan_in"),
    "head output x 10": ({}, 10.0, None),
    "head output x 100": ({}, 100.0, None),
}
RUNS_5_EPOCHS = {
    "plain head (paper)": ({}, 1.0, None),
    "head output x 10": ({}, 10.0, None),
    "head output x 30": ({}, 30.0, None),
    "BatchNorm-ended head": ({"head_norm": "batchnorm"}, 1.0, None),
}


def patch_head(scale: float, last_init: str | None) -> None:
    """Make every ProjectionHead built from now on scale its output / re-init its last layer."""
    forward, reset = heads.ProjectionHead._original

    def scaled_forward(self, feats):
        return forward(self, feats) * scale

    def reset_parameters(self):
        reset(self)
        if last_init == "fan_in":
            last = self.mlp[-1]
            nn.init.trunc_normal_(last.weight, std=last.in_features ** -0.5)

    heads.ProjectionHead.forward = scaled_forward
    heads.ProjectionHead.reset_parameters = reset_parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("curves", "runs"))
    parser.add_argument("--quick", action="store_true", help="a few steps on 512 images")
    args = parser.parse_args()
    torch.set_num_threads(1)
    heads.ProjectionHead._original = (heads.ProjectionHead.forward,
                                      heads.ProjectionHead.reset_parameters)
    variants = CURVES if args.mode == "curves" else RUNS_5_EPOCHS
    base = dict(epochs=2, eval_every=0, log_every=1) if args.mode == "curves" else {}
    if args.quick:
        base.update(epochs=1, warmup_epochs=0, train_subset=512, test_subset=256, batch_size=64)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, (overrides, scale, last_init) in variants.items():
        patch_head(scale, last_init)
        label = "".join(c if c.isalnum() else "_" for c in name)
        out_dir = RUNS / f"{args.mode}__{label}{'__quick' if args.quick else ''}"
        config = make_config("cifar-toy", **{**base, **overrides, "clip_grad_mode": "global",
                                             "device": "cpu", "out_dir": str(out_dir)})
        started = time.perf_counter()
        run = train(config, progress=False)
        result = {"variant": name, "mode": args.mode, "head_output_scale": scale,
                  "last_layer_init": last_init or "trunc_normal(std=0.02)",
                  "config": config.to_dict(), "train_seconds": time.perf_counter() - started,
                  "records": run.records}
        if args.mode == "runs":
            result["eval"] = evaluate_checkpoint(out_dir / "checkpoint.pt", train_subset=0,
                                                 test_subset=0)
        if not args.quick:
            path = RESULTS / f"{args.mode}__{label}.json"
            path.write_text(json.dumps(result, indent=1) + "\n")
        last = run.last("train")
        print(f"{name}: BCE {last['agreement']:.4f}, bit agreement {last['bit_agreement']:.3f}, "
              f"logit std {last['logit_std']:.4f}, coding rate {last['coding_rate']:.1f}",
              flush=True)


if __name__ == "__main__":
    main()
