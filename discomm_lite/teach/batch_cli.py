"""The command-line side of batch runs: where sweeps and studies run, and how they stand.

`add_executor_options` gives a parser the options of `executors.Executor` (`--executor local`,
the default, or `slurm` / `submitit-local` with the `--slurm-*` settings); `executor_from_args`
turns them back into an Executor, refusing a setting that the chosen executor would ignore.
`batch_status` and `format_status` are the `status` view of a sweep's or a study's folder.
Used by `python -m discomm_lite sweep` / `status` and by the study scripts (`teach.study_cli`).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
from pathlib import Path

from discomm_lite.teach.executors import KINDS, TASKS_FILE, Executor, SlurmOptions, status

# --slurm-* option -> SlurmOptions field
_SLURM = {"--slurm-partition": "partition", "--slurm-gpus-per-task": "gpus_per_task",
          "--slurm-cpus-per-task": "cpus_per_task", "--slurm-mem-gb": "mem_gb",
          "--slurm-time": "time_min", "--slurm-array-parallelism": "array_parallelism",
          "--slurm-account": "account", "--slurm-qos": "qos", "--slurm-setup": "setup",
          "--slurm-flag": "flags", "--slurm-max-requeues": "max_requeues"}


def _count(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"takes an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """The options that say where a batch's runs go (`executor_from_args` reads them)."""
    group = parser.add_argument_group(
        "where the runs go",
        "local: processes on this machine. slurm: one SLURM job per run (an array job), through "
        "submitit; OUT must be on a file system the nodes share. submitit-local: the slurm code "
        "path on this machine, every run at once (to try a set-up).")
    group.add_argument("--executor", choices=KINDS, default="local", help="(default: local)")
    group.add_argument("--jobs", type=_count(1), default=None, metavar="N",
                       help="local: runs at a time (default 2)")
    group.add_argument("--wait", action="store_true",
                       help="slurm, submitit-local: wait for the jobs and report as local does "
                            "(default: return once they are queued; see the status command)")
    slurm = parser.add_argument_group("SLURM settings (--executor slurm or submitit-local)")
    slurm.add_argument("--slurm-partition", default=None, metavar="NAME")
    slurm.add_argument("--slurm-gpus-per-task", type=_count(0), default=None, metavar="N",
                       help="GPUs of each run (default 0)")
    slurm.add_argument("--slurm-cpus-per-task", type=_count(1), default=None, metavar="N",
                       help="CPU cores of each run (default 1, or a study's --threads)")
    slurm.add_argument("--slurm-mem-gb", type=float, default=None, metavar="GB",
                       help="memory of each run")
    slurm.add_argument("--slurm-time", type=_count(1), default=None, metavar="MINUTES",
                       help="time limit of each job (default 120); a run that needs longer is "
                            "requeued from its checkpoint, --slurm-max-requeues times")
    slurm.add_argument("--slurm-array-parallelism", type=_count(1), default=None,
                       metavar="N",
                       help="jobs of the array running at once (default 16)")
    slurm.add_argument("--slurm-account", default=None, metavar="NAME")
    slurm.add_argument("--slurm-qos", default=None, metavar="NAME")
    slurm.add_argument("--slurm-setup", action="append", default=None, metavar="COMMAND",
                       help="a shell line run before each job, e.g. 'module load cuda' "
                            "(repeatable)")
    slurm.add_argument("--slurm-flag", action="append", default=None, metavar="NAME[=VALUE]",
                       help="any other sbatch flag, e.g. constraint=a100 or exclusive "
                            "(repeatable)")
    slurm.add_argument("--slurm-max-requeues", type=_count(0), default=None, metavar="N",
                       help="time-outs and preemptions a run survives (default 3)")
    parser.set_defaults(default_cpus=1)


def executor_from_args(args: argparse.Namespace) -> Executor:
    """The Executor the options ask for; ValueError for a setting the executor would ignore."""
    given = {option: getattr(args, option[2:].replace("-", "_")) for option in _SLURM}
    given = {option: value for option, value in given.items() if value is not None}
    if args.executor == "local":
        if given:
            raise ValueError(f"{next(iter(given))} applies to --executor slurm or "
                             "submitit-local; these runs go to this machine's processes.")
        if args.wait:
            raise ValueError("--wait applies to --executor slurm or submitit-local; the local "
                             "executor always waits for its runs.")
        return Executor("local", jobs=args.jobs)
    if args.jobs is not None:
        raise ValueError("--jobs applies to --executor local; on SLURM every run is a job, and "
                         "--slurm-array-parallelism says how many run at once.")
    settings = {_SLURM[option]: value for option, value in given.items()}
    settings.setdefault("cpus_per_task", args.default_cpus)
    settings["setup"] = tuple(settings.get("setup", ()))
    settings["flags"] = tuple(_flag(text) for text in settings.get("flags", ()))
    return Executor(args.executor, slurm=SlurmOptions(**settings), wait=args.wait)


def _flag(text: str) -> tuple[str, str | bool]:
    name, sep, value = text.lstrip("-").partition("=")
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ValueError(f"--slurm-flag takes an sbatch flag NAME or NAME=VALUE (such as "
                         f"constraint=a100), got {text!r}.")
    return name, value if sep else True


def batch_status(root: str | Path) -> list[dict]:
    """The status rows of a sweep's OUT (its points, in grid order) or of any folder whose
    `jobs/` holds task records (a study's runs root)."""
    root = Path(root)
    folder = root / "jobs"
    if (root / "sweep.json").is_file():
        names = list(json.loads((root / "sweep.json").read_text())["points"])
    elif folder.is_dir():
        try:
            noted = list(json.loads((folder / TASKS_FILE).read_text()))
        except (OSError, ValueError):
            noted = []
        recorded = [p.stem for p in sorted(folder.glob("*.json")) if p.name != TASKS_FILE]
        names = list(dict.fromkeys([*recorded, *noted]))
    else:
        raise ValueError(f"{root} holds no sweep (sweep.json) and no batch records (jobs/): give "
                         "a sweep's --out or a study's runs root.")
    return status(folder, names)


def format_status(rows: list[dict]) -> str:
    """One line per task (state, name, detail) and a line of counts."""
    width = max((len(r["name"]) for r in rows), default=0)
    lines = [f"{r['state']:<11} {r['name']:<{width}}  {r['detail']}".rstrip() for r in rows]
    counts = collections.Counter(r["state"] for r in rows)
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no tasks")
    return "\n".join(lines)
