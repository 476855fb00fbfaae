"""Notebook parameters, as papermill sets them: one place that reads a parameters cell.

A notebook's `parameters` cell assigns a subset of the Config's fields (and a few notebook
parameters, `NOTEBOOK_PARAMETERS`); papermill injects a cell after it with the values given by
`-p`/`-y`. `config_from_parameters` turns them into the notebook's Config and refuses what
papermill would only warn about or silently drop; `notebook_parameters` and `check_parameters`
read the cell from the notebook's file for sweeps.

papermill's `-p NAME VALUE` passes VALUE as text unless it reads as a number, a bool or None:
`-p seeds [0]` gives the string "[0]". A notebook parameter that is a list or a dict given so
is parsed as a Python literal (`read_notebook_parameters`); `-y 'seeds: [0]'` gives the list.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

import nbformat

from discomm_lite.config import Config, field_names, make_config
from discomm_lite.config.checks import shown
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


# What each notebook parameter must be, and how to give it with papermill.
_NOTEBOOK_KINDS = {
    "allow_cpu": ("True or False", "-p allow_cpu True"),
    "grid": ("a dict of Config fields to lists of values",
             "-y 'grid: {n_bits: [32, 64], reinit_every: [0, 2]}'"),
    "jobs": ("an integer >= 1", "-p jobs 2"),
    "launch_here": ("True or False", "-p launch_here True"),
    "seeds": ("a list of integers", "-y 'seeds: [0, 1]' (or -p seeds '[0, 1]')"),
}
_STRUCTURED = (list, tuple, dict, set, frozenset)


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


def read_notebook_parameters(namespace: MutableMapping) -> None:
    """Check the notebook parameters in `namespace` (`NOTEBOOK_PARAMETERS`); a list or dict that
    papermill's `-p` passed as text is parsed (`ast.literal_eval`: a literal, nothing run) and
    written back into `namespace`, so that the notebook reads the list. A value of the wrong
    kind raises ValueError naming the parameter and the papermill syntax that gives it."""
    for name, (kind, example) in _NOTEBOOK_KINDS.items():
        if name not in namespace:
            continue
        value = namespace[name]
        if isinstance(value, str) and name in ("grid", "seeds"):
            try:
                value = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                pass  # refused below, as the text it is
        if not _is_notebook_parameter(name, value):
            raise ValueError(f"The notebook parameter {name} = {shown(namespace[name])} is not "
                             f"valid: it must be {kind}. With papermill: {example}.")
        namespace[name] = value


def _is_notebook_parameter(name: str, value) -> bool:
    def is_int(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if name == "seeds":
        return isinstance(value, list | tuple) and bool(value) and all(map(is_int, value))
    if name == "grid":
        return isinstance(value, dict) and all(
            isinstance(k, str) and k in field_names() and isinstance(v, list | tuple) and v
            for k, v in value.items())
    if name == "jobs":
        return is_int(value) and value >= 1
    return isinstance(value, bool)


def _check_single_values(namespace: Mapping) -> None:
    """Refuse a list, tuple, dict or set given for a Config field (`-y 'n_bits: [16, 32]'`),
    which a notebook run would otherwise drop for the preset's value without a word."""
    for name in field_names():
        value = namespace.get(name)
        if isinstance(value, _STRUCTURED):
            values = ",".join(shown(v, 20) for v in list(value)[:4]) if isinstance(
                value, list | tuple) else "V1,V2"
            raise ValueError(
                f"Config.{name} was given {shown(value, 60)} (a {type(value).__name__}), but a "
                f"notebook run takes one value for each Config field: give one (papermill -p "
                f"{name} VALUE), or run one notebook per value with a sweep (python -m "
                f"discomm_lite sweep NOTEBOOK --grid {name}={values}).")


def config_from_parameters(preset: str | None, namespace: Mapping) -> Config:
    """The Config of a notebook: `preset` plus every parameter assigned in `namespace`.

    Call it with `globals()` right after the `parameters` cell (and papermill's injected one).
    Every plain value (number, string, bool, None) assigned there is a Config field, except the
    notebook parameters of `NOTEBOOK_PARAMETERS` (and UPPER_CASE constants). Refused, with an
    error naming them, where papermill itself would only warn and run on:
    - a name papermill injected that the notebook's parameters cell does not assign (`-p lr 0.1`
      on a notebook that never reads `lr` would change nothing);
    - a plain value that is neither a Config field nor a notebook parameter (`-p n_bit 64`);
    - a list, tuple, dict or set given for a Config field (`-y 'n_bits: [16, 32]'`), which
      would be dropped for the preset's value;
    - a notebook parameter of the wrong kind (`read_notebook_parameters`, which also parses a
      list given as text by `-p`, writing it back into `namespace`).
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
    if isinstance(namespace, MutableMapping):
        read_notebook_parameters(namespace)
    _check_single_values(namespace)
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
