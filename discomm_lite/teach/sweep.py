"""Batch experiments: one papermill execution of a notebook per point of a parameter grid.

Each run gets its own folder `OUT/<name>/` (the executed notebook, its `execution.log` of what
papermill and the kernel wrote to stderr, and the run's files through its `out_dir` parameter),
so parallel runs never write into each other's, nor into the caller's output. A failed run is
recorded with its error and the others go on. `OUT/summary.json` collects every run's status,
parameters and last evaluation record.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from discomm_lite.teach.papermill import check_parameters
from discomm_lite.training import runlog


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


def _execute(notebook: str, run_dir: str, parameters: dict) -> dict:
    """Execute one notebook (in a worker process); never raises, reports the error instead."""
    import papermill

    try:
        with open(Path(run_dir) / "execution.log", "w") as log, _stderr_to(log):
            papermill.execute_notebook(notebook, str(Path(run_dir) / Path(notebook).name),
                                       parameters={**parameters, "out_dir": run_dir},
                                       cwd=str(Path(notebook).resolve().parent),
                                       progress_bar=False)
        return {"status": "ok", "error": None}
    except Exception as e:  # papermill wraps the cell's exception; keep its last line
        message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        return {"status": "failed", "error": message,
                "traceback": traceback.format_exc(limit=3)}


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
              parameters: dict | None = None, jobs: int | None = None) -> list[dict]:
    """Execute `notebook` for every grid point with at most `jobs` runs at a time.

    `parameters` are fixed for every run; grid values override them. Every name, and
    `out_dir` (each run's folder), must be assigned by the notebook's parameters cell; anything
    else is refused before a run starts. Returns one record per run: name, parameters, status
    ("ok" or "failed"), error, final_eval.
    """
    parameters = dict(parameters or {})
    notebook = str(Path(notebook).resolve())
    if not Path(notebook).is_file():
        raise FileNotFoundError(f"No notebook at {notebook}: give the path of an .ipynb file.")
    check_parameters(notebook, [*parameters, *grid, "out_dir"])
    out = Path(out_dir).resolve()
    points = grid_points(grid)
    check_run_folders(points)
    jobs = max(1, min(jobs or 2, len(points), os.cpu_count() or 1))
    runs = []
    for point in points:
        name = run_name(point)
        run_dir = out / name
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.append((name, run_dir, {**parameters, **point}))
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_execute, notebook, str(d), p) for _, d, p in runs]
        outcomes = [f.result() for f in futures]
    results = [
        {"name": name, "parameters": params, **outcome, "final_eval": last_eval(run_dir)}
        for (name, run_dir, params), outcome in zip(runs, outcomes, strict=True)
    ]
    (out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def summary_table(results: list[dict], row: str, column: str, metric: str):
    """A (rows x columns) table of `metric` from the runs' final evaluations (NaN if missing).

    Returns (table as a list of lists, row values, column values), for `viz.grids.plot_heatmap`.
    """
    rows = sorted({r["parameters"][row] for r in results})
    cols = sorted({r["parameters"][column] for r in results})
    table = [[float("nan")] * len(cols) for _ in rows]
    for r in results:
        value = (r.get("final_eval") or {}).get(metric)
        if value is not None:
            table[rows.index(r["parameters"][row])][cols.index(r["parameters"][column])] = value
    return table, rows, cols
