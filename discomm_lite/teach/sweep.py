"""Batch experiments: one papermill execution of a notebook per point of a parameter grid.

Each run gets its own folder `OUT/<name>/` (the executed notebook, its `execution.log` of what
papermill and the kernel wrote to stderr, and the run's files through its `out_dir` parameter),
so parallel runs never write into each other's, nor into the caller's output. The points run
where an `executors.Executor` says (this machine's processes, or SLURM jobs); each point's record
(`OUT/jobs/<name>.json`: running, ok, failed with its error, interrupted) and lock
(`OUT/jobs/<name>.lock`: one writer per point) live beside the runs, with submitit's files and
logs in `OUT/jobs/submitit/`. A failed run is recorded with its error and the others go on.
`OUT/summary.json` collects every point's status, parameters and last evaluation record; it is
rewritten as each point ends (one writer at a time), so it holds what finished even when the
sweep was stopped. `OUT/sweep.json` says which sweep the folder holds: submitting the same sweep
again skips the finished points and resumes the others; another sweep there is refused.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import json
import os
import re
import signal
import sys
import time
import traceback
from functools import partial
from pathlib import Path

from discomm_lite.atomic import atomic_write
from discomm_lite.teach.executors import Executor, Task
from discomm_lite.teach.papermill import check_parameters
from discomm_lite.teach.task_process import kernels_interrupted, read_record, state
from discomm_lite.training import runlog
from discomm_lite.training.runlock import FileLock, LockHeld, dead_holder, read_holder

JOBS_FOLDER = "jobs"  # the points' records and locks, submitit's files and logs
SUMMARY_FILE = "summary.json"
DEFINITION_FILE = "sweep.json"


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, in the order the names were given."""
    names = list(grid)
    return [dict(zip(names, values, strict=True))
            for values in itertools.product(*(grid[n] for n in names))]


def run_name(parameters: dict) -> str:
    """A folder name that spells out the parameters, e.g. 'n_bits=64,reinit_every=2'."""
    text = ",".join(f"{k}={v}" for k, v in parameters.items())
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", text) or "default"


def check_run_folders(points: list[dict]) -> None:
    """Refuse a grid that puts two of its points into one run folder.

    Two points with equal values (`n_bits=16,016` parses to 16 twice), or values that `run_name`
    spells alike (characters it replaces; letter case, on a case-insensitive disk), would run
    concurrently in one folder and mix their checkpoints and metrics.
    """
    folders: dict[str, list[dict]] = {}
    for point in points:
        folders.setdefault(run_name(point).casefold(), []).append(point)
    shared = [group for group in folders.values() if len(group) > 1]
    if shared:
        described = "; ".join(" and ".join(repr(p) for p in group) for group in shared)
        raise ValueError(f"The grid puts several runs into one run folder: {described}. Give "
                         "each value once, spelled so that the folder names differ.")


def execute_point(notebook: str, run_dir: str, parameters: dict) -> dict:
    """Execute one notebook into `run_dir` (in a task's process); failures are reported.

    A stop signal interrupts the notebook's kernel (its training saves its checkpoint) and the
    point ends "interrupted"; its next execution resumes the run.
    """
    import papermill

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(run_dir) / "execution.log", "w") as log, _stderr_to(log), \
            kernels_interrupted() as stop:
        try:
            papermill.execute_notebook(notebook, str(Path(run_dir) / Path(notebook).name),
                                       parameters={**parameters, "out_dir": run_dir},
                                       cwd=str(Path(notebook).resolve().parent),
                                       progress_bar=False)
        except Exception as e:  # papermill wraps the cell's exception; keep its last line
            message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            if stop.signal is not None:
                return {"status": "interrupted",
                        "error": f"stopped by {signal.Signals(stop.signal).name}: {message}"}
            return {"status": "failed", "error": message,
                    "traceback": traceback.format_exc(limit=3)}
    return {"status": "ok"}


@contextlib.contextmanager
def _stderr_to(log):
    """Send this worker's stderr to `log`: Python's, and the file descriptor the kernel inherits.

    A worker forked from a notebook's kernel would otherwise pour papermill's warnings and the
    child kernel's start-up messages into the calling notebook's output.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(log.fileno(), 2)
    try:
        with contextlib.redirect_stderr(log):
            yield
    finally:
        log.flush()
        os.dup2(saved, 2)
        os.close(saved)


def last_eval(run_dir: Path) -> dict | None:
    """The last evaluation record of a run's metrics.jsonl (None when there is none)."""
    return runlog.last(runlog.read(run_dir / runlog.METRICS_FILE), "eval")


def run_sweep(notebook: str | Path, grid: dict[str, list], out_dir: str | Path, *,
              parameters: dict | None = None, jobs: int | None = None,
              executor: Executor | None = None) -> list[dict]:
    """Execute `notebook` for every grid point that has not run to the end in `out_dir`.

    `parameters` are fixed for every run and grid values vary; a name may be one or the other.
    Every name, and `out_dir` (each run's folder), must be assigned by the notebook's parameters
    cell; anything else is refused before a run starts. `executor` says where the points run
    (default: this machine, `jobs` at a time, 2 by default). A point whose record says "ok" is
    skipped, and so is one whose lock a process that may still run holds (another sweep's, a job
    on another node); any other runs again, and its training resumes from its checkpoint.
    `out_dir` keeps one sweep: another sweep (other notebook, grid or parameters) is refused.

    Returns one record per point: name, parameters, status ("ok", "failed", "interrupted",
    "running" elsewhere, "died", "pending"), error, final_eval; the same as `OUT/summary.json`.
    A stop signal (SIGINT, SIGTERM) lets the running points save, writes the summary and raises
    KeyboardInterrupt or `executors.BatchInterrupted` (exit status 143).
    """
    parameters = dict(parameters or {})
    notebook = str(Path(notebook).resolve())
    if not Path(notebook).is_file():
        raise FileNotFoundError(f"No notebook at {notebook}: give the path of an .ipynb file.")
    both = sorted(set(parameters) & set(grid))
    if both:
        raise ValueError(f"{both} are given both as fixed parameters and in the grid: give each "
                         "name once (the grid's values would silently replace the fixed one).")
    check_parameters(notebook, [*parameters, *grid, "out_dir"])
    out = Path(out_dir).resolve()
    points = grid_points(grid)
    check_run_folders(points)
    plan = {run_name(point): {**parameters, **point} for point in points}
    claim_folder(out, {"notebook": notebook, "parameters": parameters, "grid": grid,
                       "points": plan})
    folder = out / JOBS_FOLDER
    tasks = [Task(name, partial(execute_point, notebook, str(out / name), values),
                  lock=str(folder / f"{name}.lock"), done=partial(_point_done, folder, name),
                  after=partial(write_summary, out))
             for name, values in plan.items()
             if not _point_done(folder, name) and not _held(folder / f"{name}.lock")]
    executor = executor or Executor()
    if executor.kind == "local":
        at_once = min(executor.jobs or jobs or 2, max(1, len(tasks)), os.cpu_count() or 1)
        executor = dataclasses.replace(executor, jobs=max(1, at_once))
    batch = executor.run(tasks, folder)
    results = write_summary(out)
    if batch.stopped_by is not None:
        counts = collections.Counter(r["status"] for r in results)
        raise batch.interruption(
            f"the sweep stopped ({signal.Signals(batch.stopped_by).name}): "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            + f"; summary in {out / SUMMARY_FILE}. Run it again to continue: finished points "
            "are skipped, interrupted ones resume from their checkpoints.")
    return results


def _point_done(folder: Path, name: str) -> bool:
    return state(read_record(folder, name)) == "ok"


def _held(lock: Path) -> bool:
    """Whether a process that may still run holds the point (its lock, if any, is not stale)."""
    holder = read_holder(lock) if lock.exists() else None
    return holder is not None and dead_holder(holder) is None


def claim_folder(out: Path, definition: dict) -> None:
    """Make `out` this sweep's folder (`OUT/sweep.json`), or refuse one that holds another sweep.

    The file is created whole or not at all (a link from a temporary file), so two sweeps
    started together on one folder agree on which is its sweep.
    """
    path = out / DEFINITION_FILE
    normal = json.loads(json.dumps(definition))
    out.mkdir(parents=True, exist_ok=True)
    temporary = out / f".{DEFINITION_FILE}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(normal, indent=1) + "\n")
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    held = json.loads(path.read_text())
    differ = [k for k in ("notebook", "grid", "parameters") if held.get(k) != normal[k]]
    if not differ and list(held.get("points", {})) != list(normal["points"]):
        differ = ["points"]  # the grid's names in another order: other run folders
    if differ:
        described = "; ".join(f"{k}: {held.get(k)!r} there, {normal[k]!r} here" for k in differ)
        raise ValueError(
            f"{out} holds another sweep ({described}): two sweeps in one folder would overwrite "
            f"each other's summary. Give this sweep its own --out, or delete {path} to make "
            f"{out} this sweep's (its run folders stay, and resume).")


def write_summary(out: str | Path) -> list[dict]:
    """Rewrite `OUT/summary.json` from the points' records (one writer at a time); return it."""
    out = Path(out)
    definition = json.loads((out / DEFINITION_FILE).read_text())
    lock = FileLock(out / "summary.lock", f"the summary of {out}")
    deadline = time.monotonic() + 60
    while True:
        try:
            lock.acquire()
            break
        except LockHeld:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        results = []
        for name, values in definition["points"].items():
            record = read_record(out / JOBS_FOLDER, name) or {}
            status = state(record or None)
            result = {"name": name, "parameters": values, "status": status,
                      "error": record.get("error"), "final_eval": last_eval(out / name)}
            if status == "failed" and record.get("traceback"):
                result["traceback"] = record["traceback"]
            results.append(result)
        text = (json.dumps(results, indent=2) + "\n").encode()
        atomic_write(out / SUMMARY_FILE, lambda f: f.write(text))
    finally:
        lock.release()
    return results


def summary_table(results: list[dict], row: str, column: str, metric: str):
    """(rows x columns) tables of `metric` from the runs' final evaluations: the mean over the
    runs of each cell (those that differ in the other swept names, the seed say) and their
    sample standard deviation (NaN for a cell with one run, or none).

    Returns (means, spreads, row values, column values), for `viz.grids.plot_heatmap` (its
    `spread` writes each cell's spread under its mean).
    """
    from discomm_lite.teach.study import mean_std

    rows = sorted({r["parameters"][row] for r in results})
    cols = sorted({r["parameters"][column] for r in results})
    means = [[float("nan")] * len(cols) for _ in rows]
    spreads = [[float("nan")] * len(cols) for _ in rows]
    for i, r_value in enumerate(rows):
        for j, c_value in enumerate(cols):
            values = [(r.get("final_eval") or {}).get(metric) for r in results
                      if r["parameters"][row] == r_value and r["parameters"][column] == c_value]
            mean, std, n = mean_std(v for v in values if v is not None)
            means[i][j] = mean
            spreads[i][j] = std if n > 1 else float("nan")
    return means, spreads, rows, cols
