"""The command line every study script shares (studies/cpu_recipe.py, resets.py, lab.py).

    python studies/cpu_recipe.py --list
    python studies/cpu_recipe.py --groups tuning comparison --jobs 2
    python studies/cpu_recipe.py --groups grid --executor slurm --slurm-partition gpu \\
        --slurm-gpus-per-task 1 --slurm-time 60
    python studies/cpu_recipe.py --status

A script gives `study_main` its groups of specs (name -> a function returning `StudyRun`s), its
results folder and its runs root; the options choose the specs (--groups, --match, --shard), say
where they run (`batch_cli.add_executor_options`: this machine, or SLURM), and list, verify or
show the status of them instead of running them. Errors are one line on stderr, exit status 2
for bad input and 1 for failed runs; a stopped study exits 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from discomm_lite.teach.batch_cli import add_executor_options, executor_from_args, format_status
from discomm_lite.teach.executors import status
from discomm_lite.teach.study import (
    JOBS_FOLDER,
    StudyRun,
    load_results,
    run_study,
    training_key,
    twin_groups,
)
from discomm_lite.teach.task_process import state
from discomm_lite.training.runlock import read_holder

Groups = Mapping[str, Callable[[], list[StudyRun]]]


def build_parser(groups: Groups, description: str, results: Path,
                 runs_root: Path) -> argparse.ArgumentParser:
    """The options of a study script (see the module docstring)."""
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", nargs="+", default=["all"], choices=[*groups, "all"],
                        metavar="GROUP", help=f"groups of runs: {', '.join(groups)}, or all")
    parser.add_argument("--runs-root", default=str(runs_root),
                        help="run folders (checkpoints), and jobs/: records and job logs")
    parser.add_argument("--results", default=str(results), help="one JSON file per run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th pending spec from i")
    parser.add_argument("--match", nargs="+", default=[], help="keep specs whose name has one")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="list the specs, run nothing")
    action.add_argument("--verify", action="store_true",
                        help="check that every result's config is what its spec builds today")
    action.add_argument("--status", action="store_true",
                        help="which runs are done, running, failed (with the log's last line) "
                             "or pending")
    add_executor_options(parser)
    return parser


def study_main(groups: Groups, *, description: str, results: Path, runs_root: Path,
               twin_dirs: Sequence[Path] = (), argv: Sequence[str] | None = None) -> int:
    """Run a study script's command line; return its exit status."""
    args = build_parser(groups, description, results, runs_root).parse_args(argv)
    args.default_cpus = args.threads  # a SLURM job's cores: the run's threads, unless given
    try:
        specs = select(groups, args.groups, args.match, args.shard)
        if args.list:
            for spec in specs:
                print(spec.name, spec.overrides)
        elif args.verify:
            return verify(specs, args.runs_root, args.results)
        elif args.status:
            print(format_status(study_status(specs, args.runs_root, args.results)))
        else:
            executor = executor_from_args(args)
            ran = run_study(specs, args.runs_root, args.results, threads=args.threads,
                            twin_dirs=twin_dirs, executor=executor)
            if executor.wait:
                print(f"{len(ran)} run(s) done by this call; results in {args.results}")
            else:
                print(f"submitted ({executor.kind}); records and logs in "
                      f"{Path(args.runs_root) / JOBS_FOLDER}. Follow them with --status.")
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 128 + signal.SIGINT
    except SystemExit as e:
        if e.code != 128 + signal.SIGTERM:
            raise
        print(f"interrupted: {e}", file=sys.stderr)
        return e.code
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    return 0


def select(groups: Groups, names: Sequence[str], match: Sequence[str],
           shard: str) -> list[StudyRun]:
    """The specs of the named groups ("all": every group), filtered by `match` and `shard`."""
    chosen = list(groups) if "all" in names else list(dict.fromkeys(names))
    specs = [spec for group in chosen for spec in groups[group]()]
    if match:
        specs = [s for s in specs if any(m in s.name for m in match)]
    try:
        index, count = (int(x) for x in shard.split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        raise ValueError(f"--shard takes i/n with 0 <= i < n, got {shard!r}.") from None
    return specs[index::count]


def verify(specs: Sequence[StudyRun], runs_root: str, results: str) -> int:
    """1 (and the names) unless each result was trained as its spec, built today, says."""
    recorded = {r["name"]: r for r in load_results(results)}
    wrong = [s.name for s in specs if s.name in recorded and training_key(
        recorded[s.name]["config"]) != training_key(s.config(runs_root).to_dict())]
    print(f"{sum(s.name in recorded for s in specs)} results checked against their specs")
    if wrong:
        print(f"error: {len(wrong)} results were trained otherwise than their specs say: "
              + ", ".join(wrong), file=sys.stderr)
        return 1
    return 0


def study_status(specs: Sequence[StudyRun], runs_root: str | Path,
                 results: str | Path) -> list[dict]:
    """A row per spec: ok (its result file), else its task's state (`executors.status`) or its
    claim's (a run of another invocation)."""
    results = Path(results)
    done = {s.name: json.loads((results / f"{s.name}.json").read_text()) for s in specs
            if (results / f"{s.name}.json").exists()}
    groups = twin_groups([s for s in specs if s.name not in done], runs_root)
    tasks = {r["name"]: r for r in status(Path(runs_root) / JOBS_FOLDER,
                                          [g[0].name for g in groups])}
    leader = {s.name: g[0].name for g in groups for s in g}
    rows = []
    for spec in specs:
        if spec.name in done:
            twin = done[spec.name].get("same_run_as")
            rows.append({"name": spec.name, "state": "ok",
                         "detail": f"same run as {twin}" if twin else "result written"})
            continue
        row = {**tasks[leader[spec.name]], "name": spec.name}
        claim = read_holder(results / f"{spec.name}.claim")
        if row["state"] == "pending" and claim is not None:
            holder = {"status": "running", **claim}
            row.update(state=state(holder), detail=f"claimed by process {claim.get('pid')} on "
                                                   f"{claim.get('host')}")
        if leader[spec.name] != spec.name:
            row["detail"] = f"{row['detail']} (reuses {leader[spec.name]})".lstrip()
        rows.append(row)
    return rows
