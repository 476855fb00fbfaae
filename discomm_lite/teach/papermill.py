"""Notebook parameters, as papermill sets them: one place that reads a parameters cell.

A notebook's `parameters` cell assigns a subset of the Config's fields (and a few notebook
parameters, `NOTEBOOK_PARAMETERS`); papermill injects a cell after it with the values given by
`-p`/`-y`. `config_from_parameters` turns them into the notebook's Config and refuses what
papermill would only warn about; `notebook_parameters` and `check_parameters` read the cell
from the notebook's file for sweeps.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from pathlib import Path

import nbformat

from discomm_lite.config import Config, field_names, make_config
from discomm_lite.teach.notebook import is_smoke, smoke_out_dir

# Notebook parameters that are not Config fields: name -> what it sets. A parameters cell may
# assign these besides Config fields; `config_from_parameters` leaves them out of the Config.
NOTEBOOK_PARAMETERS = {
    "allow_cpu": "05: start the default run on a CPU too (refused by default: hours of training)",
    "grid": "08: the swept values, {Config field: [values, ...]}",
    "jobs": "08: how many runs of the sweep execute at a time",
    "launch_here": "07: train on this machine (True) or only print the torchrun command (False)",
    "seeds": "03: the seeds every setting of the lab runs with",
}


# The first line of the cell papermill injects after the parameters cell
# (papermill.translators.PythonTranslator.codify with comment="Parameters").
_INJECTED_MARKER = "# Parameters"


# Names IPython defines in every namespace; never parameters.
_IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython"})


def assigned_names(source: str) -> list[str]:
    """The names a cell's top-level assignments bind, in order (a parameters cell's parameters)."""
    names = []
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        names.extend(t.id for t in targets if isinstance(t, ast.Name))
    return names


def notebook_parameters(notebook: str | Path) -> list[str]:
    """The names the notebook's `parameters` cell assigns: the only ones a run can set.

    Raises ValueError when the notebook has no cell tagged "parameters" (papermill would inject
    the values at the top, where the notebook's own assignments overwrite them).
    """
    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{notebook} has {len(cells)} cells tagged 'parameters'; a sweep needs "
                         "exactly one (Jupyter: View > Cell toolbar > Tags).")
    return assigned_names(cells[0].source)


def check_parameters(notebook: str | Path, names) -> None:
    """Refuse `names` the notebook does not read: papermill would inject them and run on."""
    known = notebook_parameters(notebook)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(
            f"Unknown parameter(s) {unknown} for {Path(notebook).name}: its parameters cell does "
            f"not assign them, so every run would ignore them. Its parameters are: "
            f"{', '.join(known)}.")


def injected_parameters(history: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(injected, declared): the names papermill injected and those of the parameters cell.

    `history` is IPython's `In`, the sources of the cells executed so far. Papermill executes its
    injected cell (first line "# Parameters") right after the notebook's parameters cell, so
    that cell is the one before it. Without an injected cell (Jupyter, nbval) both are empty.
    """
    history = list(history or [])
    for i in range(len(history) - 1, 0, -1):
        if history[i].lstrip().startswith(_INJECTED_MARKER):
            return assigned_names(history[i]), assigned_names(history[i - 1])
    return [], []


def config_from_parameters(preset: str | None, namespace: Mapping) -> Config:
    """The Config of a notebook: `preset` plus every parameter assigned in `namespace`.

    Call it with `globals()` right after the `parameters` cell (and papermill's injected one).
    Every plain value (number, string, bool, None) assigned there is a Config field, except the
    notebook parameters of `NOTEBOOK_PARAMETERS` (and UPPER_CASE constants). Refused, with an
    error naming them, where papermill itself would only warn and run on:
    - a name papermill injected that the notebook's parameters cell does not assign (`-p lr 0.1`
      on a notebook that never reads `lr` would change nothing);
    - a plain value that is neither a Config field nor a notebook parameter (`-p n_bit 64`).
    In the smoke setting, an out_dir the notebook itself assigns becomes `smoke_out_dir(out_dir)`;
    one given from outside (tests, sweeps) is kept as it is.
    """
    injected, declared = injected_parameters(namespace.get("In"))
    undeclared = sorted(set(injected) - set(declared))
    if undeclared:
        raise ValueError(
            f"Parameter(s) {undeclared} were given to this notebook, but its parameters cell does "
            f"not assign them, so they would be ignored. Its parameters are: "
            f"{', '.join(declared)}. Check the spelling, or change them in a notebook that reads "
            "them.")
    plain = (int, float, str, bool, type(None))
    values = {k: v for k, v in namespace.items()
              if isinstance(v, plain) and not k.startswith("_") and not k.isupper()
              and k not in _IPYTHON_NAMES and k not in NOTEBOOK_PARAMETERS}
    unknown = sorted(set(values) - set(field_names()))
    if unknown:
        raise ValueError(
            f"Unknown parameter(s) {unknown}: they are neither fields of discomm_lite.Config nor "
            f"notebook parameters ({', '.join(NOTEBOOK_PARAMETERS)}). Check the spelling.")
    if is_smoke() and values.get("out_dir") and "out_dir" not in injected:
        values["out_dir"] = smoke_out_dir(values["out_dir"])
    return make_config(preset, **values)
