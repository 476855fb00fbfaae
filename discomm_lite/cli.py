"""Command line: `python -m discomm_lite {train,evaluate,sweep,presets} ...`.

The `train` options are generated from the `Config` fields, so the CLI can never drift from the
config. Runs unchanged under `torchrun --nproc_per_node=K -m discomm_lite train ...`.
"""

from __future__ import annotations

import argparse
import json
import sys

from discomm_lite import runlog
from discomm_lite.config import PRESETS, Config, field_types, make_config, optional_fields

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_value(name: str, text: str):
    """Turn a command-line string into the type of Config field `name` ("none" for None)."""
    kind = field_types()[name]
    if text.lower() == "none" and name in optional_fields():
        return None
    if kind is bool:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"--{name} takes true or false, got {text!r}.")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"--{name} takes a value of type {kind.__name__}, got {text!r}.") from None


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Config fields (see discomm_lite.Config)")
    for name, kind in field_types().items():
        if name == "out_dir":
            continue
        default = Config.__dataclass_fields__[name].default
        group.add_argument(f"--{name}", f"--{name.replace('_', '-')}", dest=name, default=None,
                           metavar=kind.__name__.upper(), help=f"(default {default!r})")


def _overrides(args: argparse.Namespace) -> dict:
    names = [n for n in field_types() if n != "out_dir"]
    return {n: parse_value(n, getattr(args, n)) for n in names if getattr(args, n) is not None}


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m discomm_lite`; `train`'s options are the Config's fields."""
    parser = argparse.ArgumentParser(
        prog="python -m discomm_lite",
        description="BITS: self-supervised learning as discrete communication (arXiv 2602.09764).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a run (resumes when --out holds a checkpoint)",
        description="Train BITS, SimDINO or DINO. Writes OUT/config.json, OUT/metrics.jsonl and "
                    "OUT/checkpoint.pt, and resumes when OUT already holds a checkpoint.")
    train.add_argument("--preset", choices=sorted(PRESETS), default=None)
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    _add_config_options(train)

    evaluate = commands.add_parser(
        "evaluate", help="k-NN, linear probe, retrieval and geometry of a checkpoint",
        description="Evaluate a checkpoint's teacher; writes <checkpoint>.eval.json beside it.")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--dataset", default=None, help="default: the checkpoint's dataset")
    evaluate.add_argument("--data-root", default=None)
    evaluate.add_argument("--train-subset", type=int, default=None)
    evaluate.add_argument("--test-subset", type=int, default=None)
    evaluate.add_argument("--retrieval-k", type=int, default=None, help="default: mAP@ALL")
    evaluate.add_argument(
        "--retrieval-root", default=None, metavar="DIR",
        help="a query/database split (DIR/query/<class>/<image>, DIR/database/<class>/<image>), "
             "the paper's protocol; default: self-search on the test set")
    evaluate.add_argument(
        "--dino-linear-epochs", type=int, default=0, metavar="N",
        help="also run DINO's linear protocol (SGD on augmented crops through the frozen "
             "backbone) for N epochs (DINO: 100; meant for GPUs); default 0: only the fast proxy")
    evaluate.add_argument("--device", default="cpu")

    sweep = commands.add_parser(
        "sweep", help="run a notebook over a parameter grid with papermill",
        description="Execute NOTEBOOK once per point of the grid (papermill), each in its own "
                    "folder under --out, a bounded number at a time; failed runs are reported.")
    sweep.add_argument("notebook")
    sweep.add_argument("--grid", nargs="+", required=True, metavar="NAME=V1,V2",
                       help="Config field and its values, e.g. n_bits=32,64 reinit_every=0,2")
    sweep.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                       metavar=("NAME", "VALUE"), help="a fixed parameter for every run")
    sweep.add_argument("--out", required=True)
    sweep.add_argument("--jobs", type=int, default=None, help="parallel runs (default: 2)")

    commands.add_parser("presets", help="list the presets and their settings")
    return parser


def parse_grid(items: list[str]) -> dict[str, list]:
    """`--grid` items NAME=V1,V2,... as {name: [values]}, each value of the field's type."""
    grid = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise ValueError(f"--grid takes NAME=V1,V2,..., got {item!r}.")
        if name not in field_types():
            raise ValueError(f"--grid {name!r} is not a Config field; see --help of train.")
        grid[name] = [parse_value(name, v) for v in values.split(",")]
    return grid


def main(argv: list[str] | None = None) -> int:
    """Run a command; return the exit status (2 with a one-line message for bad input)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            from discomm_lite import distributed
            from discomm_lite.engine import train

            config = make_config(args.preset, **_overrides(args), out_dir=args.out)
            try:
                run = train(config, max_steps=args.max_steps)
                main_process = distributed.is_main_process()
            finally:
                distributed.shutdown()
            if main_process:
                print(json.dumps({"out_dir": args.out,
                                  "final_eval": runlog.last(run.records, "eval")}))
        elif args.command == "evaluate":
            from discomm_lite.suite import evaluate_checkpoint

            result = evaluate_checkpoint(
                args.checkpoint, dataset=args.dataset, data_root=args.data_root,
                train_subset=args.train_subset, test_subset=args.test_subset,
                device=args.device, retrieval_k=args.retrieval_k,
                retrieval_root=args.retrieval_root, dino_linear_epochs=args.dino_linear_epochs)
            print(json.dumps(result, indent=2))
        elif args.command == "sweep":
            from discomm_lite.sweep import run_sweep

            fixed = {n: parse_value(n, v) for n, v in args.parameter}
            results = run_sweep(args.notebook, parse_grid(args.grid), args.out,
                                parameters=fixed, jobs=args.jobs)
            failed = [r for r in results if r["status"] != "ok"]
            for r in failed:
                print(f"FAILED {r['name']}: {r['error']}", file=sys.stderr)
            print(f"{len(results) - len(failed)} runs ok, {len(failed)} failed; "
                  f"summary in {args.out}/summary.json")
            return 1 if failed else 0
        else:
            for name, values in PRESETS.items():
                print(f"{name}: {json.dumps(values)}")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
