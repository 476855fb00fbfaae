"""Command line: `python -m discomm_lite {train,evaluate,sweep,status,presets} ...`.

The `train` options are generated from the `Config` fields, so the CLI can never drift from the
config. Runs unchanged under `torchrun --nproc_per_node=K -m discomm_lite train ...`.

Exit status: 0 done; 1 a run or an evaluation failed (a damaged checkpoint, a diverged loss, a
full disk, ...); 2 bad input; 128 + the signal when SIGINT (130) or SIGTERM (143) stopped a run
after its checkpoint. Every error is one message on stderr; `--debug` shows its traceback.
Options must be spelled in full (no abbreviations): `--n_bit 64` must not silently mean n_bits.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sys
import traceback
import warnings

from discomm_lite.arguments import at_least
from discomm_lite.config import (
    PRESETS,
    Config,
    field_types,
    make_config,
    method_settings,
    optional_fields,
)
from discomm_lite.teach.batch_cli import (
    add_executor_options,
    batch_status,
    executor_from_args,
    format_status,
)
from discomm_lite.training import runlog

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_value(name: str, text: str):
    """Turn a command-line string into the type of Config field `name` ("none" for None)."""
    if name not in field_types():
        raise ValueError(f"{name!r} is not a Config field: --grid and -p take Config fields (see "
                         "python -m discomm_lite train --help).")
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


def _path(text: str) -> str:
    """An argparse type: a non-empty path, with ~ expanded."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path names nothing; give a folder or file")
    return os.path.expanduser(text)


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m discomm_lite`; `train`'s options are the Config's fields."""
    parser = argparse.ArgumentParser(
        prog="python -m discomm_lite", allow_abbrev=False,
        description="BITS: self-supervised learning as discrete communication (arXiv 2602.09764).",
    )
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--debug", action="store_true",
                        help="on an error, show its traceback (default: a one-line message)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name: str, **kwargs) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], allow_abbrev=False, **kwargs)

    train = add_command(
        "train", help="train a run (resumes when --out holds a checkpoint)",
        description="Train BITS, SimDINO or DINO. Writes OUT/config.json, OUT/metrics.jsonl and "
                    "OUT/checkpoint.pt, and resumes when OUT already holds a checkpoint.")
    train.add_argument("--preset", choices=sorted(PRESETS), default=None)
    train.add_argument("--out", type=_path, required=True, help="run folder")
    train.add_argument("--max-steps", type=at_least(1), default=None,
                       help="stop after this many steps")
    _add_config_options(train)

    evaluate = add_command(
        "evaluate", help="k-NN, linear probe, retrieval and geometry of a checkpoint",
        description="Evaluate a checkpoint's teacher; writes <checkpoint>.eval.json beside it "
                    "(<checkpoint>.eval-<options>.json with other data or protocol options).")
    evaluate.add_argument("--checkpoint", type=_path, required=True)
    evaluate.add_argument("--dataset", default=None, help="default: the checkpoint's dataset")
    evaluate.add_argument("--data-root", type=_path, default=None,
                          help="default: the checkpoint's data root if it is a folder here, "
                               "else $DISCOMM_DATA, else ./data")
    evaluate.add_argument("--download", action="store_true",
                          help="download the dataset (CIFAR) into the data root if it is not "
                               "there (never decided by the checkpoint)")
    evaluate.add_argument("--train-subset", type=at_least(0), default=None,
                          help="default: the checkpoint's; 0: the whole split")
    evaluate.add_argument("--test-subset", type=at_least(0), default=None,
                          help="default: the checkpoint's; 0: the whole split")
    evaluate.add_argument("--retrieval-k", type=at_least(1), default=None,
                          help="default: mAP@ALL")
    evaluate.add_argument(
        "--retrieval-root", type=_path, default=None, metavar="DIR",
        help="a query/database split (DIR/query/<class>/<image>, DIR/database/<class>/<image>), "
             "the paper's protocol; default: self-search on the test set")
    evaluate.add_argument(
        "--dino-linear-epochs", type=at_least(0), default=0, metavar="N",
        help="also run DINO's linear protocol (SGD on augmented crops through the frozen "
             "backbone) for N epochs (DINO: 100; meant for GPUs); default 0: only the fast proxy")
    evaluate.add_argument("--device", default="cpu")

    sweep = add_command(
        "sweep", help="run a notebook over a parameter grid with papermill",
        description="Execute NOTEBOOK once per point of the grid (papermill), each in its own "
                    "folder under --out: on this machine, a bounded number at a time, or as "
                    "SLURM jobs. Failed runs are reported; running the same sweep again skips "
                    "the finished points and resumes the others from their checkpoints. "
                    "Ctrl-C or SIGTERM stops it: the running points save their checkpoints and "
                    "OUT/summary.json lists what finished.")
    sweep.add_argument("notebook", type=_path)
    sweep.add_argument("--grid", nargs="+", action="extend", required=True, metavar="NAME=V1,V2",
                       help="Config field and its values, e.g. n_bits=32,64 reinit_every=0,2 "
                            "(several --grid options add up; each name once)")
    sweep.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                       metavar=("NAME", "VALUE"), help="a fixed parameter for every run")
    sweep.add_argument("--out", type=_path, required=True)
    add_executor_options(sweep)

    status = add_command(
        "status", help="where the runs of a sweep (or a study) stand",
        description="For each point of the sweep in OUT (or each run of a study's runs root): "
                    "ok, failed (with its error and the last line of its log), interrupted, "
                    "died, running (where, since when) or pending (its job).")
    status.add_argument("out", type=_path, metavar="OUT")

    add_command("presets", help="list the presets and their settings")
    return parser


def parse_grid(items: list[str]) -> dict[str, list]:
    """`--grid` items NAME=V1,V2,... as {name: [values]}, each value of the field's type.

    A name given twice (`n_bits=16 n_bits=32`, or in two --grid options) is refused: its values
    go together, comma-separated.
    """
    grid: dict[str, list] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise ValueError(f"--grid takes NAME=V1,V2,..., got {item!r}.")
        if name not in field_types():
            raise ValueError(f"--grid {name!r} is not a Config field; see --help of train.")
        if name in grid:
            earlier = ",".join(str(v) for v in grid[name])
            raise ValueError(f"--grid gives {name} twice ({name}={earlier} and {item}): give its "
                             f"values once, comma-separated ({name}={earlier},{values}).")
        grid[name] = [parse_value(name, v) for v in values.split(",")]
    return grid


def parse_fixed(pairs: list[list[str]]) -> dict:
    """`-p NAME VALUE` pairs as {name: value}; a name given twice is refused."""
    fixed: dict = {}
    for name, text in pairs:
        if name in fixed:
            raise ValueError(f"-p gives {name} twice: give each fixed parameter once.")
        fixed[name] = parse_value(name, text)
    return fixed


def main(argv: list[str] | None = None) -> int:
    """Run a command; return the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return _run(args)
        except KeyboardInterrupt as e:  # SIGINT: train saved its checkpoint first
            print(f"interrupted: {str(e) or 'stopped by SIGINT'}", file=sys.stderr)
            return 130
        except SystemExit as e:
            # SIGTERM: training.monitor.RunInterrupted once the loop ran (its checkpoint saved),
            # a bare SystemExit(143) before it (monitor.sigterm_raises)
            if e.code != 128 + signal.SIGTERM:
                raise
            message = str(e) if str(e) != str(e.code) else (
                "stopped by SIGTERM before training started (an earlier checkpoint of the run "
                "is intact)")
            print(f"interrupted: {message}", file=sys.stderr)
            return e.code
        except Exception as e:
            if args.debug:
                traceback.print_exc()
            print(f"error: {_message(e)}", file=sys.stderr)
            return EXIT_BAD_INPUT if isinstance(e, ValueError) else EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        from discomm_lite import distributed
        from discomm_lite.api import train

        overrides = _overrides(args)
        config = make_config(args.preset, **overrides, out_dir=args.out)
        _say_method_settings(args.preset, overrides)
        try:
            run = train(config, max_steps=args.max_steps)
            main_process = distributed.is_main_process()
        finally:
            distributed.shutdown()
        if main_process:
            print(json.dumps({"out_dir": config.out_dir,
                              "final_eval": runlog.last(run.records, "eval")}))
    elif args.command == "evaluate":
        from discomm_lite.evaluation.suite import evaluate_checkpoint

        result = evaluate_checkpoint(
            args.checkpoint, dataset=args.dataset, data_root=args.data_root,
            train_subset=args.train_subset, test_subset=args.test_subset,
            device=args.device, retrieval_k=args.retrieval_k,
            retrieval_root=args.retrieval_root, dino_linear_epochs=args.dino_linear_epochs,
            download=args.download)
        print(json.dumps(result, indent=2))
    elif args.command == "sweep":
        return _sweep(args)
    elif args.command == "status":
        print(format_status(batch_status(args.out)))
    else:
        for name, values in PRESETS.items():
            print(f"{name}: {json.dumps(values)}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from discomm_lite.teach.sweep import run_sweep

    grid, fixed, executor = parse_grid(args.grid), parse_fixed(args.parameter), \
        executor_from_args(args)
    results = run_sweep(args.notebook, grid, args.out, parameters=fixed, executor=executor)
    if not executor.wait:
        queued = sum(r["status"] == "pending" for r in results)
        print(f"{queued} runs submitted ({executor.kind}), {len(results) - queued} already "
              f"done or running; records and logs in {args.out}/jobs. Follow them with: "
              f"python -m discomm_lite status {args.out}")
        return 0
    failed = [r for r in results if r["status"] != "ok"]
    for r in failed:
        why = r["error"] or ("run by another process: python -m discomm_lite status "
                             f"{args.out}" if r["status"] == "running" else "no error recorded")
        print(f"{r['status'].upper()} {r['name']}: {why}", file=sys.stderr)
    counts = collections.Counter(r["status"] for r in results)
    print(f"{', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}; summary in "
          f"{args.out}/summary.json")
    return EXIT_FAILED if failed else 0


def _say_method_settings(preset: str | None, overrides: dict) -> None:
    """Tell which of a preset's per-method settings `--method` brought (stderr, one line)."""
    if preset is None or "method" not in overrides:
        return
    applied = {k: v for k, v in method_settings(preset, overrides["method"]).items()
               if k != "method" and k not in overrides}
    if applied:
        listed = ", ".join(f"{k}={v!r}" for k, v in applied.items())
        print(f"note: preset {preset} with method {overrides['method']}: applied that method's "
              f"own settings {listed} (presets.METHOD_SETTINGS; give an option to override one)",
              file=sys.stderr)


def _message(error: Exception) -> str:
    """An exception as the CLI shows it: the library's own message; else type and message."""
    text = str(error).strip()
    if "Original Traceback" in text:  # raised in a DataLoader worker: the last line is the error
        text = text.splitlines()[-1]
    if isinstance(error, (ValueError, OSError, RuntimeError, ArithmeticError)):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text} (run again with --debug for the traceback)"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr, without the source line that raised them."""
    print(f"warning: {message}", file=sys.stderr)
