"""What the notebooks share: parameters, the smoke setting and its data, tables, live plots, a run
cache, the study's results, and the ablation lab of notebook 03.

The notebooks call these so that no cell holds logic of its own. `DISCOMM_SMOKE=1` (set by the
test suite for nbval and papermill) shrinks any run to seconds through `smoke`, keeps smoke runs
out of the folders real runs use, and lets `find_data_root` stand in for a missing CIFAR-10, so
the smoke setting needs no download.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from discomm_lite.config import Config, field_names, make_config
from discomm_lite.study import effective_config, training_key

# The fast setting of every notebook in CI: one short epoch on a few hundred images.
SMOKE_OVERRIDES = dict(
    epochs=1, warmup_epochs=0, train_subset=256, test_subset=128, batch_size=64,
    eval_every=1, log_every=1, head_hidden_dim=128,
)

# Appended to a notebook's own out_dir in the smoke setting, so that a smoke run (nbval starts its
# kernels in notebooks/, as Jupyter does) never lands in, or is refused by, a real run's folder.
SMOKE_SUFFIX = "-smoke"

# Notebook parameters that are not Config fields: name -> what it sets. A parameters cell may
# assign these besides Config fields; `config_from_parameters` leaves them out of the Config.
NOTEBOOK_PARAMETERS = {
    "grid": "08: the swept values, {Config field: [values, ...]}",
    "jobs": "08: how many runs of the sweep execute at a time",
    "launch_here": "07: train on this machine (True) or only print the torchrun command (False)",
    "seeds": "03: the seeds every setting of the lab runs with",
}

# The CPU recipe study's result files (one JSON per run), read by notebooks 02 and 03.
STUDY_RESULTS = Path(__file__).resolve().parents[1] / "studies" / "results" / "cpu_recipe"

# The first line of the cell papermill injects after the parameters cell
# (papermill.translators.PythonTranslator.codify with comment="Parameters").
_INJECTED_MARKER = "# Parameters"

# Names IPython defines in every namespace; never parameters.
_IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython"})


def is_smoke() -> bool:
    """Whether the notebooks run in their smoke setting (environment variable DISCOMM_SMOKE)."""
    return os.environ.get("DISCOMM_SMOKE", "") not in ("", "0")


def smoke(config: Config, **extra) -> Config:
    """`config` shrunk to the smoke setting when `is_smoke()`, else `config` unchanged.

    `extra` adds notebook-specific overrides (a smaller backbone, smaller crops). The run folder
    is chosen by `config_from_parameters`: in the smoke setting a notebook's own out_dir gets
    the suffix `SMOKE_SUFFIX`.
    """
    if not is_smoke():
        return config
    return config.replace(**{**SMOKE_OVERRIDES, **extra})


def smoke_out_dir(out_dir: str | os.PathLike) -> str:
    """Where the smoke setting puts the run of a notebook whose own out_dir is `out_dir`."""
    return str(Path(out_dir)) + SMOKE_SUFFIX


def find_data_root(dataset: str, data_root: str | None = None) -> str | None:
    """The data root a notebook reads `dataset` from, checked before anything trains.

    `data_root` (None: $DISCOMM_DATA, else ./data) is returned as given when the dataset's train
    split loads from it. When CIFAR-10 is not there, the smoke setting falls back to a small
    CIFAR-10-shaped stand-in (`data.cifar10_standin_root`, read through the real archive path)
    and prints a note that says so and how to provide the real data; so the smoke setting needs
    nothing beside the checkout. Otherwise the library's DatasetNotFoundError is raised: it lists
    where it looked and every way to provide the data.
    """
    from discomm_lite.data import DatasetNotFoundError, cifar10_standin_root, load_dataset

    if dataset == "synthetic":
        return data_root  # rendered in code: there is nothing to find
    try:
        load_dataset(dataset, "train", data_root)
    except DatasetNotFoundError as missing:
        if not (is_smoke() and dataset == "cifar10"):
            raise
        standin = cifar10_standin_root()
        print(f"Smoke setting: this run uses a small stand-in for CIFAR-10 ({standin}: synthetic "
              "shapes in CIFAR-10's ten classes and archive layout, not photographs, so its "
              f"accuracies mean nothing), because\n{missing}")
        return str(standin)
    return data_root


# ---- parameters ----------------------------------------------------------------------------------
def injected_parameters(history: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(injected, declared): the names papermill injected and those of the parameters cell.

    `history` is IPython's `In`, the sources of the cells executed so far. Papermill executes its
    injected cell (first line "# Parameters") right after the notebook's parameters cell, so
    that cell is the one before it. Without an injected cell (Jupyter, nbval) both are empty.
    """
    from discomm_lite.sweep import assigned_names

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


# ---- tables --------------------------------------------------------------------------------------
class MarkdownText(str):
    """Markdown: a plain string that Jupyter displays rendered."""

    def _repr_markdown_(self) -> str:
        return str(self)


class MarkdownTable(MarkdownText):
    """A Markdown table (see `markdown_table`)."""


def show_source(*functions: Callable) -> MarkdownText:
    """The source code of library functions, as a Markdown code block (notebook 01 shows the
    maths next to its equations)."""
    import inspect

    return MarkdownText("\n".join(f"```python\n{inspect.getsource(f).rstrip()}\n```"
                                  for f in functions))


def _cell(value, digits: int) -> str:
    """One table cell: floats rounded, (mean, std) pairs as "m ± s" ("–" without a finite
    mean), None as "–"."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, tuple) and len(value) == 2 and all(
            isinstance(v, (int, float)) for v in value):
        mean, std = value
        return "–" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Mapping | Sequence[Sequence], header: Sequence[str], *,
                   digits: int = 3) -> MarkdownTable:
    """A Markdown table of `rows` under `header`, the one way the notebooks print tables.

    Args:
        rows: a list of rows (sequences of cells); or a mapping name -> value (two columns); or
            a mapping name -> record (dict), whose columns are `header[1:]`, read as keys.
            Floats are rounded to `digits`, a (mean, std) pair is written "mean ± std" ("–" when
            the mean is NaN: no value), None as "–", and "|" in text is escaped.
        header: the column titles.

    Returns:
        The table as a `MarkdownTable` (a string that Jupyter renders).
    """
    if isinstance(rows, Mapping):
        rows = [[name, *((record.get(k) for k in header[1:]) if isinstance(record, Mapping)
                         else [record])]
                for name, record in rows.items()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"A row has {len(row)} cells but the header has {len(header)}: {row}")
        lines.append("| " + " | ".join(_cell(v, digits) for v in row) + " |")
    return MarkdownTable("\n".join(lines))


# ---- runs ----------------------------------------------------------------------------------------
def run_dir(config: Config, root: str | Path = "runs") -> str:
    """A folder name that identifies a configuration (same parameters -> same cached run)."""
    values = {k: v for k, v in config.to_dict().items() if k != "out_dir"}
    digest = hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]
    return str(Path(root) / f"{config.method}-{digest}")


def cached_train(config: Config, root: str | Path = "runs", **train_kwargs):
    """Train `config` in its own folder under `root`, or return the finished run from there.

    A finished run is one whose checkpoint reached the last step; an unfinished one resumes.
    This is what makes moving an ablation slider back instant.
    """
    from discomm_lite.engine import train

    return train(config.replace(out_dir=run_dir(config, root)), **train_kwargs)


def live_plot(keys: tuple[str, ...] = ("loss",), every: int = 1) -> Callable[[dict], None]:
    """A `train` callback that redraws the curves of `keys` in the notebook as records arrive.

    Outside a live notebook (papermill, nbval) nothing is drawn while training; the notebook
    draws its figures from the run's records afterwards.
    """
    records: list[dict] = []
    handle = None

    def callback(record: dict) -> None:
        nonlocal handle
        if record.get("kind") not in ("train", "eval"):
            return
        records.append(record)
        if is_smoke() or len(records) % every:
            return
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is None:
            return
        from discomm_lite.plots import plot_metrics

        figure = plot_metrics([r for r in records if any(k in r for k in keys)], list(keys))
        if handle is None:
            handle = display(figure, display_id=True)
        else:
            handle.update(figure)

    return callback


def augmented_views(config: Config, images, seed: int = 0) -> list:
    """The views a run of `config` trains on, cut from `images` (M, 3, H, W) uint8.

    Returns one float (M, 3, S, S) tensor in [0, 1] per view, globals then locals, drawn from
    `seed` (for `plots.plot_views`).
    """
    import torch

    from discomm_lite.augment import make_views
    from discomm_lite.pipeline import view_spec_from_config

    return make_views(images, view_spec_from_config(config), torch.Generator().manual_seed(seed))


def write_image_folder(dataset, root: str | Path, image_size: int | None = None) -> Path:
    """Write an in-memory dataset as an ImageFolder tree of PNGs (`root/<class>/<i>.png`).

    Used to give the ImageNet and domain-shift stages a tiny ImageFolder to run on in smoke
    settings, through exactly the code path real folders take.
    """
    import torch.nn.functional as F
    from PIL import Image

    root = Path(root)
    images = dataset.images
    if image_size is not None and images.shape[-1] != image_size:
        images = F.interpolate(images.float(), size=image_size, mode="bilinear",
                               antialias=True).round().clamp(0, 255).byte()
    for i, (image, label) in enumerate(zip(images, dataset.labels.tolist(), strict=True)):
        folder = root / dataset.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")
    return root


# ---- the study's results -------------------------------------------------------------------------
def study_results(group: str | None = None, results_dir: str | Path = STUDY_RESULTS
                  ) -> list[dict]:
    """The study's results of `group` (`study.load_results`); says so when there are none."""
    from discomm_lite.study import load_results

    results = load_results(results_dir, group)
    if not results:
        which = f"of the study's group {group!r}" if group else "of the study"
        print(f"No results {which} in {results_dir}: what is built from them is empty. "
              f"`python studies/cpu_recipe.py --groups {group or 'all'}` makes them.")
    return results


def seed_values(results: Sequence[dict], keys: Sequence[str],
                variants: Sequence[str] | None = None) -> dict[str, dict[str, list[float]]]:
    """variant -> key -> one value per seed (in seed order), for `plots.plot_final`.

    `results` are result dicts of `discomm_lite.study` (see `study.load_results`); a value is
    `study.metric(result, key)`. `variants` orders (and selects) the variants; default: the
    order in which they first appear.
    """
    from discomm_lite.study import metric

    order = list(variants) if variants is not None else list(dict.fromkeys(
        r["variant"] for r in results))
    table = {}
    for variant in order:
        runs = sorted((r for r in results if r["variant"] == variant), key=lambda r: r["seed"])
        table[variant] = {key: [metric(r, key) for r in runs] for key in keys}
    return table


def study_table(results: Sequence[dict], keys: Sequence[str],
                variants: Sequence[str] | None = None, *, label: str = "variant",
                digits: int = 3) -> MarkdownTable:
    """Mean ± std over seeds of each variant's `keys` (`study.summarize`), as a Markdown table."""
    from discomm_lite.study import summarize

    rows = [[row["variant"], ", ".join(map(str, row["seeds"])), *(row[k] for k in keys)]
            for row in summarize(results, keys, variants)]
    return markdown_table(rows, [label, "seeds", *keys], digits=digits)


def floor_values(results: Sequence[dict], keys: Sequence[str]) -> dict[str, float]:
    """key -> mean over the floor results (random-init networks) that have it."""
    from discomm_lite.study import mean_std, metric

    means = {key: mean_std(metric(r, key) for r in results)[0] for key in keys}
    return {key: value for key, value in means.items() if math.isfinite(value)}


# ---- the ablation lab (notebook 03) --------------------------------------------------------------
# The knobs of the lab's panel, in the order the widgets show them.
LAB_FIELDS = ("n_bits", "reinit_every", "coding_rate_weight", "agreement", "targets")
# Values every slider offers besides the grid's (the configured value is always added).
LAB_OPTIONS = {
    "n_bits": (16, 32, 64, 128, 256),
    "reinit_every": (0, 1, 2, 5),
    "coding_rate_weight": (0.0, 0.01, 0.03, 0.1, 0.3, 1.0),
    "agreement": ("bce", "cosine"),
    "targets": ("hard", "soft"),
}
# The fields a random-init network's backbone depends on (its floor).
_FLOOR_FIELDS = ("dataset", "backbone", "image_size", "train_subset", "test_subset")


@dataclass(frozen=True)
class LabRun:
    """One seed of one lab setting: its metrics records and final evaluation, and where from."""

    setting: dict
    seed: int
    records: list
    final: dict | None
    source: str  # "precomputed" (the study's grid) or "trained here"


def _same_run(config: Config, candidate: Mapping, ignore: Sequence[str] = ()) -> bool:
    """Whether a result's config dict trains like `config` (`study.training_key`), `ignore`
    aside."""
    return training_key(config.to_dict(), ignore) == training_key(candidate, ignore)


class Lab:
    """The ablation lab: settings of the base config, each over `seeds`, precomputed or trained.

    A setting is a dict of `LAB_FIELDS` values. For each seed, a run of the study (`results`,
    see `study.load_results`) whose config equals the base with the setting applied (machine
    fields aside) is used as it is; any other is trained here (`cached_train` under the base's
    out_dir, so once only) and evaluated with the study's protocol (`evaluate_checkpoint`; the
    whole splits, or the run's subsets with `full_evaluation=False`; default: the whole splits
    except in the smoke setting). The random-init floor comes from the study's floor runs of the
    same backbone and data when there are some; else it is evaluated here once. In the smoke
    setting each setting runs with the first seed only (see also `settings`).
    """

    def __init__(self, base: Config, results: Sequence[dict] = (), *,
                 seeds: Sequence[int] = (0, 1), full_evaluation: bool | None = None) -> None:
        self.base = base
        self.seeds = tuple(seeds[:1]) if is_smoke() else tuple(seeds)
        self.full_evaluation = not is_smoke() if full_evaluation is None else full_evaluation
        # The study's trained runs of this base: equal to it but for the lab's knobs and seed.
        self.precomputed = [r for r in results if r.get("kind") == "train" and r.get("eval")
                            and _same_run(base, r["config"], ignore=(*LAB_FIELDS, "seed"))]
        self.floors = [r for r in results if r.get("kind") == "floor" and r.get("eval")]
        self.tried: dict[str, list[LabRun]] = {}  # label -> its runs, in the order tried
        self._floor: dict | None = None
        self._data_root: str | None = None  # found once, when a setting first trains here

    def settings(self, **values: Sequence) -> list[dict]:
        """Every combination of `values` (field -> values), e.g. n_bits x reinit_every.

        In the smoke setting only the first two values of each field are kept, so a section of
        the lab stays a few seconds there.
        """
        from discomm_lite.sweep import grid_points

        if is_smoke():
            values = {name: list(options)[:2] for name, options in values.items()}
        return grid_points({name: list(options) for name, options in values.items()})

    def label(self, setting: Mapping) -> str:
        """The fields a setting changes from the base, e.g. 'n_bits=32' ('base' for none)."""
        from discomm_lite.sweep import run_name

        base = effective_config(self.base.to_dict())
        changed = {k: v for k, v in setting.items() if v != base[k]}
        return run_name(changed) if changed else "base"

    def runs(self, setting: Mapping) -> list[LabRun]:
        """Every seed of `setting`, looked up in the study or trained here; remembered as tried."""
        unknown = sorted(set(setting) - set(LAB_FIELDS))
        if unknown:
            raise ValueError(f"The lab varies {', '.join(LAB_FIELDS)}; not {unknown}.")
        label = self.label(setting)
        if label not in self.tried:
            self.tried[label] = [self._run(dict(setting), seed) for seed in self.seeds]
        return self.tried[label]

    def _run(self, setting: dict, seed: int) -> LabRun:
        """One seed of a setting: the study's run when it has one, else trained and evaluated."""
        config = self.base.replace(**setting, seed=seed)
        for result in self.precomputed:
            if _same_run(config, result["config"]):
                return LabRun(setting, seed, result.get("records", []), result["eval"],
                              "precomputed")
        from discomm_lite.suite import evaluate_checkpoint

        run = cached_train(config.replace(data_root=self.data_root()), self.base.out_dir or "runs",
                           progress=False)
        subsets = dict(train_subset=0, test_subset=0) if self.full_evaluation else {}
        checkpoint = Path(run.out_dir) / "checkpoint.pt"
        saved = checkpoint.with_suffix(".eval.json")
        final = (json.loads(saved.read_text()) if saved.exists() and self.full_evaluation
                 else evaluate_checkpoint(checkpoint, write=self.full_evaluation, **subsets))
        return LabRun(setting, seed, run.records, final, "trained here")

    def data_root(self) -> str | None:
        """Where the settings trained here read their data (`find_data_root`, asked once)."""
        if self._data_root is None:
            self._data_root = find_data_root(self.base.dataset, self.base.data_root)
        return self._data_root

    def floor(self) -> dict[str, float]:
        """The random-init network's final evaluation (mean over the study's floor seeds), with
        the protocol of the finals: the whole splits, or the run's subsets."""
        if self._floor is None:
            mine = self.base.to_dict()
            floors = [r for r in self.floors
                      if all(r["config"].get(k) == mine[k] for k in _FLOOR_FIELDS)]
            if floors:
                self._floor = floor_values(floors, ("knn20_top1", "knn200_top1", "linear_top1"))
            else:
                from discomm_lite.suite import evaluate_random_init

                config = self.base.replace(data_root=self.data_root())
                if self.full_evaluation:
                    config = config.replace(train_subset=0, test_subset=0)
                result = evaluate_random_init(config)
                self._floor = {k: result[k] for k in ("knn20_top1", "knn200_top1",
                                                      "linear_top1")}
        return self._floor

    def figure(self, settings: Sequence[Mapping] | None = None):
        """Curves and final evaluations of `settings` (default: every setting tried so far).

        Curves: coding rate (with the one-direction rate of each K), bit agreement (chance 0.5),
        k-NN during training; one colour per setting, one line per seed. Bars: k-NN@20 with the
        random-init floor, and the redundancy of the codes (mean |correlation| between bits).
        """
        from discomm_lite.plots import channel_references, plot_lab

        if settings is not None:
            for setting in settings:
                self.runs(setting)
            labels = [self.label(s) for s in settings]
        else:
            labels = list(self.tried)
        runs = {label: self.tried[label] for label in labels}
        configs = {label: self.base.replace(**seeds[0].setting) for label, seeds in runs.items()}
        floor = {key: {"random-init floor": value} for key, value in self.floor().items()}
        return plot_lab(
            {label: [run.records for run in seeds] for label, seeds in runs.items()},
            {label: [run.final for run in seeds] for label, seeds in runs.items()},
            curves=("coding_rate", "bit_agreement", "knn20_top1"),
            final_keys=("knn20_top1", "code_mean_abs_correlation"),
            agreement={label: c.agreement for label, c in configs.items()},
            curve_references=channel_references(
                n_bits=sorted({c.n_bits for c in configs.values()}), eps=self.base.eps),
            final_references=floor)

    def table(self) -> MarkdownTable:
        """Every setting tried: seeds, where they come from, final evaluations (mean ± std)."""
        from discomm_lite.study import mean_std

        keys = ("knn20_top1", "knn200_top1", "code_mean_abs_correlation", "map_hamming")
        rows = []
        for label, runs in self.tried.items():
            finals = [run.final or {} for run in runs]
            last = [[r for r in run.records if r.get("kind") == "train"][-1:] for run in runs]
            rate = mean_std(x[0]["coding_rate"] for x in last if x and "coding_rate" in x[0])
            rows.append([label, len(runs), ", ".join(sorted({run.source for run in runs})),
                         *(mean_std(f.get(k, math.nan) for f in finals)[:2] for k in keys),
                         rate[:2]])
        return markdown_table(rows, ["setting", "seeds", "source", *keys, "final coding rate"])

    def controls(self) -> dict:
        """One widget per `LAB_FIELDS` entry; its options are the grid's, the usual values and
        the configured one (so any configured value can be shown, e.g. n_bits = 48)."""
        import ipywidgets as widgets

        controls = {}
        base = effective_config(self.base.to_dict())
        for name in LAB_FIELDS:
            current = base[name]
            grid = {effective_config(r["config"])[name] for r in self.precomputed}
            options = sorted({*LAB_OPTIONS[name], *grid, current},
                             key=str if isinstance(current, str) else float)
            controls[name] = widgets.Dropdown(options=options, value=current, description=name)
        return controls

    def show(self, **setting):
        """Train or fetch `setting`, then the figure of every setting tried (for the widgets)."""
        self.runs(setting)
        return self.figure()
