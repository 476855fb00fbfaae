"""Executed reference copies of the notebooks, and the one table of what they cost.

    python notebooks/execute.py 01_binary_channel     # default run, outputs saved in the notebook
    python notebooks/execute.py --smoke               # time every notebook's smoke setting
    python notebooks/execute.py --costs               # rewrite the Cost lines and README's table
    python notebooks/execute.py --check               # what the tests check: everything agrees

A default run executes a notebook through papermill as `jupyter` would (its own parameters, no
smoke setting; CIFAR-10 from $DISCOMM_DATA) and saves its outputs into notebooks/NAME.ipynb, with
the machine, date, wall time, library version and a hash of its code cells in the notebook's
metadata and in a note under its title. A smoke measurement executes it with DISCOMM_SMOKE=1 and
changes nothing but the cost table. Both start their kernel in a fresh temporary folder beside
copies of the notebooks, so no run cached by an earlier execution shortens a measurement.

notebooks/costs.json is the single source of every cost figure: the "Cost" line in each
notebook's first cell and the stage table of README.md are generated from it (`--costs` runs after
every measurement). The GPU notebooks (05, 07) are not executed by default; their default cost is
an order of magnitude stated in UNMEASURED.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
COSTS = HERE / "costs.json"
PACKAGE = REPO / "discomm_lite"
STUDY_RESULTS = REPO / "studies" / "results"
README = REPO / "README.md"
NOTE_TAG = "execution-note"  # the markdown cell under the title that says where outputs come from
COST_PREFIX = "**Cost**"  # the line of the first cell that this script writes
TABLE_BEGIN, TABLE_END = "<!-- stages:begin -->", "<!-- stages:end -->"

# What each stage teaches, for README's table (the costs come from costs.json).
STAGES = {
    "00_quickstart": "BITS end to end: the channel, the views, curves, bit usage, k-NN vs the "
                     "random floor, bits vs known factors",
    "01_binary_channel": "the message, BCE vs cosine, hard vs soft targets, the coding rate, "
                         "bounded gradients, head resets (pure tensors)",
    "02_toy_cifar_cpu": "BITS-fixed vs BITS-reset (the fixed reset) vs SimDINO vs DINO on "
                        "CIFAR-10: the study's seeds, paired differences, the floor, this "
                        "notebook's curves",
    "03_ablation_lab": "capacity x reset period on CIFAR-10, coding-rate weight, agreement, soft "
                       "targets: the lab's precomputed grids in a second, other settings trained "
                       "live after asking",
    "04_binary_language": "entropies, correlations, code retrieval vs bits kept, Hamming t-SNE, "
                          "galleries, bit-factor MI",
    "05_full_cifar_gpu": "ResNet-18 on CIFAR-10/100, hundreds of epochs, the whole evaluation "
                         "suite, published peers",
    "06_domain_shift": "adapting a checkpoint to a new ImageFolder dataset, against the same "
                       "budget from random initialisation",
    "07_imagenet": "the paper's protocol through torchrun, one or many GPUs/nodes, resume, "
                   "evaluation",
    "08_sweep": "papermill grids over notebook parameters, aggregated into a table and a heat map",
}
# Default runs this script does not make (they need GPUs): what they cost, and on what grounds.
UNMEASURED = {
    "05_full_cifar_gpu": "hours on one GPU (200 epochs of ResNet-18 on 50,000 images; not "
                         "measured here, time it from the first epochs' `time` field)",
    "07_imagenet": "days on a node of 8 GPUs for 100 epochs of ViT-B/16 (an order of magnitude, "
                   "not measured here); the notebook itself only prints the command unless "
                   "`launch_here` is set",
}


# ---- what the notebooks hold -------------------------------------------------------------------
def notebook_path(name: str) -> Path:
    """notebooks/NAME.ipynb."""
    return HERE / f"{name}.ipynb"


def notebook_names() -> list[str]:
    """Every notebook of the suite, by name ("00_quickstart", ...)."""
    return sorted(p.stem for p in HERE.glob("*.ipynb"))


def code_hash(nb: nbformat.NotebookNode, package: Path = PACKAGE,
              studies: Path = STUDY_RESULTS) -> str:
    """A hash of what a notebook's outputs are of: its code cells (papermill's injected cell
    aside), the source of every library module they import, directly or through other modules,
    and, when it reads the studies' results, those result files. A library change that can alter
    a notebook's numbers changes its hash, and `check` asks for it to be executed again."""
    sources = [c.source for c in nb.cells if c.cell_type == "code"
               and "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    digest = hashlib.sha256("\0".join(sources).encode())
    for path in library_modules(sources, package):
        digest.update(path.relative_to(package.parent).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    if any("study_results" in source for source in sources) and studies.is_dir():
        for path in sorted(studies.rglob("*.json")):
            digest.update(path.relative_to(studies).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def library_modules(sources: list[str], package: Path = PACKAGE) -> list[Path]:
    """The library's source files that code `sources` import, directly or through other library
    modules (every import in a module's code, also those inside functions), sorted."""
    def module_file(name: str) -> Path | None:
        relative = Path(*name.split(".")[1:])
        for candidate in (package / relative / "__init__.py", (package / relative).with_suffix(
                ".py")):
            if candidate.is_file():
                return candidate
        return None

    def imported(code: str) -> set[str]:
        # IPython's magics and shell escapes are not Python: read them as comments.
        tree = ast.parse("\n".join("#" + line if line.lstrip().startswith(("%", "!")) else line
                                   for line in code.splitlines()))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        return {n for n in names if n.split(".")[0] == package.name}

    todo = set().union(*(imported(source) for source in sources))
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for prefix in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
            path = module_file(prefix)  # a package's __init__ runs before its modules
            if path is not None and path not in files:
                files.add(path)
                todo |= imported(path.read_text())
    return sorted(files)


def execution_of(nb: nbformat.NotebookNode) -> dict | None:
    """The record of the default run whose outputs the notebook holds (None: not executed)."""
    return nb.metadata.get("discomm_execution")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# ---- the machine -------------------------------------------------------------------------------
def machine() -> dict:
    """CPU model, cores, the OpenMP threads kernels get, and the load when a measurement starts."""
    from discomm_lite.devices import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "omp_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_at_start": round(os.getloadavg()[0], 2), "python": platform.python_version()}


def library_version() -> str:
    """The package version and the commit of this checkout (with '+dirty' for local changes)."""
    from importlib.metadata import version

    def git(*args: str) -> str:
        """The output of a git command in this checkout."""
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = "+dirty" if git("status", "--porcelain", "--", "discomm_lite").strip() else ""
    return f"discomm-lite {version('discomm-lite')} ({commit}{dirty}), torch {_torch_version()}"


def _torch_version() -> str:
    from importlib.metadata import version

    return version("torch")


# ---- running -----------------------------------------------------------------------------------
def _papermill(source: Path, output: Path, *, smoke: bool, parameters: dict | None = None
               ) -> float:
    """Execute `source` into `output` with papermill; returns the wall time.

    The kernel starts in a fresh folder holding a copy of every notebook (notebook 08 sweeps
    00 by its file name): the notebooks' relative run folders (`runs/...`) start empty there, so
    nothing cached by an earlier run shortens the measurement, and nothing is left behind.
    """
    import papermill

    # The kernel runs outside the checkout, so it is told where the studies' results are.
    environment = {"DISCOMM_SMOKE": "1" if smoke else "0", "MPLBACKEND": "Agg",
                   "DISCOMM_STUDIES": os.environ.get("DISCOMM_STUDIES", str(STUDY_RESULTS))}
    saved = {k: os.environ.get(k) for k in environment}
    os.environ.update(environment)
    with tempfile.TemporaryDirectory(prefix="discomm-execute-") as cwd:
        for notebook in HERE.glob("*.ipynb"):
            shutil.copy(notebook, cwd)
        started = time.perf_counter()
        try:
            papermill.execute_notebook(str(source), str(output), parameters=parameters or {},
                                       cwd=cwd, kernel_name="python3", progress_bar=False)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return time.perf_counter() - started


def _strip_papermill(nb: nbformat.NotebookNode) -> None:
    """Drop papermill's per-cell timings and its notebook record (noise in every diff)."""
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        for key in ("papermill", "execution"):
            cell.metadata.pop(key, None)


def execution_note(record: dict) -> str:
    """The line under a notebook's title that says which run its outputs come from."""
    m = record["machine"]
    return (f"> **The outputs below come from a default run** ({record['date']}, "
            f"{_duration(record['wall_seconds'])} on {m['cores']} CPU cores (load "
            f"{m['load_at_start']} at the start), {record['library']}, code hash "
            f"`{record['code_hash']}`). Re-run it with `python notebooks/execute.py "
            f"{record['name']}`; executing the notebook yourself replaces them.")


def set_execution_note(nb: nbformat.NotebookNode, text: str | None) -> None:
    """Put `text` in the note cell under the title (None removes the cell)."""
    nb.cells = [c for c in nb.cells if NOTE_TAG not in c.get("metadata", {}).get("tags", [])]
    if text is not None:
        cell = nbformat.v4.new_markdown_cell(text, metadata={"tags": [NOTE_TAG]})
        cell.id = f"{nb.cells[0].get('id', 'note')}-note"
        nb.cells.insert(1, cell)


def execute_default(name: str) -> dict:
    """Run notebook `name` in its default setting and save its outputs in place."""
    if name in UNMEASURED:
        raise SystemExit(f"{name} needs GPUs ({UNMEASURED[name]}); run it on one, in Jupyter.")
    path = notebook_path(name)
    source = nbformat.read(path, as_version=4)
    set_execution_note(source, None)
    record = {"name": name, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(),
              "library": library_version(), "code_hash": code_hash(source)}
    with tempfile.TemporaryDirectory() as folder:
        clean = Path(folder) / "source.ipynb"
        nbformat.write(source, clean)
        executed = Path(folder) / path.name
        record["wall_seconds"] = round(_papermill(clean, executed, smoke=False), 1)
        nb = nbformat.read(executed, as_version=4)
    _strip_papermill(nb)
    nb.metadata["discomm_execution"] = record
    set_execution_note(nb, execution_note(record))
    nbformat.write(nb, path)
    _record_cost(name, "default", record)
    return record


def measure_smoke(name: str) -> dict:
    """Time notebook `name` in its smoke setting, from scratch (a fresh run folder)."""
    with tempfile.TemporaryDirectory() as folder:
        record = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine()}
        record["wall_seconds"] = round(_papermill(
            notebook_path(name), Path(folder) / "executed.ipynb", smoke=True,
            parameters={"out_dir": str(Path(folder) / "run")}), 1)
    _record_cost(name, "smoke", record)
    return record


# ---- the cost table ----------------------------------------------------------------------------
def load_costs() -> dict:
    """costs.json: notebook name -> {"default", "smoke"} -> {wall_seconds, date, machine}."""
    return json.loads(COSTS.read_text()) if COSTS.exists() else {}


def _record_cost(name: str, setting: str, record: dict) -> None:
    costs = load_costs()
    costs.setdefault(name, {})[setting] = {k: record[k] for k in ("wall_seconds", "date",
                                                                  "machine")}
    COSTS.write_text(json.dumps(dict(sorted(costs.items())), indent=1) + "\n")


def default_cost(name: str, costs: dict) -> str:
    """The default run's cost as the notebooks and README state it."""
    if name in UNMEASURED:
        return UNMEASURED[name]
    measured = costs.get(name, {}).get("default")
    if measured is None:
        return "not measured yet (`python notebooks/execute.py " + name + "`)"
    return (f"{_duration(measured['wall_seconds'])} measured on {measured['machine']['cores']} "
            f"CPU cores ({measured['date'][:10]}, load {measured['machine']['load_at_start']} "
            "at the start)")


def smoke_cost(name: str, costs: dict) -> str:
    """The smoke setting's cost as the notebooks and README state it."""
    measured = costs.get(name, {}).get("smoke")
    return "not measured yet" if measured is None else _duration(measured["wall_seconds"])


def cost_line(name: str, costs: dict) -> str:
    """The Cost line of a notebook's first cell."""
    return (f"{COST_PREFIX} (from `notebooks/costs.json`, written by `notebooks/execute.py`) "
            f"default run: {default_cost(name, costs)}; smoke setting (`DISCOMM_SMOKE=1`, the "
            f"tests): {smoke_cost(name, costs)}.")


def stage_table(costs: dict) -> str:
    """README's table of the stages, costs from costs.json."""
    lines = ["| notebook | what you learn | default run | smoke (CI) |", "|---|---|---|---|"]
    for name, what in STAGES.items():
        default = UNMEASURED.get(name, "").split(" (")[0] or default_cost(name, costs)
        lines.append(f"| `{name}` | {what} | {default} | {smoke_cost(name, costs)} |")
    return "\n".join(lines)


def first_cell_cost_lines(nb: nbformat.NotebookNode) -> list[str]:
    """The lines of the notebook's first cell that state its cost."""
    return [line for line in nb.cells[0].source.splitlines() if line.startswith(COST_PREFIX)]


def write_costs() -> None:
    """Rewrite every notebook's Cost line and README's stage table from costs.json, and the
    measured cost of the studies' runs it keeps for the ablation lab (`study_report.run_costs`)."""
    from discomm_lite.teach.study import load_results
    from discomm_lite.teach.study_report import run_costs

    costs = load_costs()
    results = [r for folder in sorted(STUDY_RESULTS.glob("*")) if folder.is_dir()
               for r in load_results(folder)]
    costs["runs"] = {**run_costs(results), "source": "the median over the studies' runs in "
                     "studies/results (2 shared CPU cores, 1 torch thread per run)"}
    COSTS.write_text(json.dumps(costs, indent=1) + "\n")
    for name in notebook_names():
        path = notebook_path(name)
        nb = nbformat.read(path, as_version=4)
        lines = nb.cells[0].source.splitlines()
        new = [cost_line(name, costs) if line.startswith(COST_PREFIX) else line for line in lines]
        if new != lines:
            nb.cells[0].source = "\n".join(new)
            nbformat.write(nb, path)
    text = README.read_text()
    begin, end = text.index(TABLE_BEGIN) + len(TABLE_BEGIN), text.index(TABLE_END)
    README.write_text(text[:begin] + "\n" + stage_table(costs) + "\n" + text[end:])


def check() -> list[str]:
    """Every disagreement between the notebooks, costs.json and README (empty: all agree)."""
    costs = load_costs()
    problems = []
    for name in notebook_names():
        nb = nbformat.read(notebook_path(name), as_version=4)
        if first_cell_cost_lines(nb) != [cost_line(name, costs)]:
            problems.append(f"{name}: its Cost line is not the one costs.json gives; run "
                            "`python notebooks/execute.py --costs`")
        record = execution_of(nb)
        has_outputs = any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
        if record is None:
            if has_outputs:
                problems.append(f"{name}: saved with outputs that no default run of "
                                "notebooks/execute.py made; clear them, or re-run "
                                f"notebooks/execute.py {name}")
        elif record["code_hash"] != code_hash(nb):
            problems.append(f"{name}: its code changed since its outputs were made; re-run "
                            f"notebooks/execute.py {name}")
    text = README.read_text()
    if TABLE_BEGIN not in text or stage_table(costs) not in text:
        problems.append("README.md: the stage table is not the one costs.json gives; run "
                        "`python notebooks/execute.py --costs`")
    return problems


def main() -> None:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="notebooks to execute in their default setting")
    parser.add_argument("--smoke", action="store_true",
                        help="time the smoke setting of the named notebooks (default: all)")
    parser.add_argument("--costs", action="store_true", help="only rewrite the cost lines")
    parser.add_argument("--check", action="store_true", help="report disagreements, exit 1")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # see notebooks/conftest.py
    unknown = sorted(set(args.names) - set(notebook_names()))
    if unknown:
        raise SystemExit(f"No notebook named {unknown}; the notebooks: {notebook_names()}")
    if args.check:
        problems = check()
        print("\n".join(problems) or "notebooks, costs.json and README agree")
        sys.exit(1 if problems else 0)
    if args.smoke:
        for name in args.names or notebook_names():
            print(f"{name}: smoke {measure_smoke(name)['wall_seconds']} s", flush=True)
    elif not args.costs:
        for name in args.names:
            record = execute_default(name)
            print(f"{name}: default run {record['wall_seconds']} s", flush=True)
    write_costs()


if __name__ == "__main__":
    main()
