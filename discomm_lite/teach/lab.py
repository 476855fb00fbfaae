"""The ablation lab of notebook 03: settings of a base config over seeds, read from the studies'
precomputed grids in an instant, or trained here (after an estimate of what it costs).

The widgets around it are `lab_panel`; the grids are `studies/lab.py`'s (and the other studies'
runs of the same base).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from discomm_lite.config import Config
from discomm_lite.teach.notebook import cached_train, find_data_root, is_smoke
from discomm_lite.teach.study import (
    RESET_HANDLING,
    effective_config,
    final_value,
    mean_std,
    over_seeds,
    paired_difference,
    training_key,
)
from discomm_lite.teach.study_report import floor_values, reset_health_table
from discomm_lite.teach.tables import MarkdownTable, markdown_table

# The knobs of the lab, in the order the widgets show them.
LAB_FIELDS = ("n_bits", "reinit_every", "coding_rate_weight", "agreement", "targets",
              "target_temperature")
# Codes of every K compared at one length: their first 32 bits. Not 16: the grid reuses runs of
# the CPU recipe and reset studies, whose evaluations cut codes from 32 bits up; a 16-bit code
# has no first 32 bits, so its cells show none.
CODE_MAP = "map_hamming_32"
# What the final evaluations are called where the lab shows them.
LAB_KEYS = {"knn20_top1": "k-NN@20", "knn200_top1": "k-NN@200",
            CODE_MAP: "code mAP, first 32 bits",
            "effective_dim": "effective dimension", "map_cosine": "feature mAP",
            "code_mean_abs_correlation": "mean |bit correlation|"}
# The fields a random-init network's backbone depends on (its floor).
_FLOOR_FIELDS = ("dataset", "backbone", "image_size", "train_subset", "test_subset")


@dataclass(frozen=True)
class LabRun:
    """One seed of one lab setting: its metrics records and final evaluation, and where from."""

    setting: dict
    seed: int
    records: list
    final: dict | None
    source: str  # "precomputed" (a study's run) or "trained here"

    def value(self, key: str) -> float:
        """`key` of the final evaluation (`final_value`), else of the last training record
        (the channel's state at the end: coding_rate, bit_agreement, ...); NaN if neither."""
        value = final_value(self.final, key)
        if math.isfinite(value):
            return value
        last = next((r for r in reversed(self.records) if r["kind"] == "train" and key in r), None)
        return float(last[key]) if last is not None else math.nan


def _same_run(config: Config, candidate: Mapping, ignore: Sequence[str] = ()) -> bool:
    """Whether a result's config dict trains like `config` (`study.training_key`)."""
    return training_key(config.to_dict(), ignore) == training_key(candidate, ignore)


class Lab:
    """The ablation lab: settings of the base config, each over `seeds`, precomputed or trained.

    A setting is a dict of `LAB_FIELDS` values. For each seed, a study run (`results`, see
    `study.load_results`) whose config trains like the base with the setting applied is used as
    it is; any other is trained here (`cached_train` under the base's out_dir, so once only) and
    evaluated with the studies' protocol (`evaluate_checkpoint` on the whole splits, or the run's
    subsets with `full_evaluation=False`; default: the whole splits except in the smoke setting).
    `costs` (`study_report.run_costs`) estimates what training a setting here would take;
    `train_overrides` change the runs trained here, not the lookups (the smoke setting shrinks
    them, `notebook.smoke_changes`). In the smoke setting each setting runs with the first seed
    only.
    """

    def __init__(self, base: Config, results: Sequence[dict] = (), *,
                 seeds: Sequence[int] = (0, 1), full_evaluation: bool | None = None,
                 costs: Mapping[str, Mapping] | None = None,
                 train_overrides: Mapping | None = None) -> None:
        if isinstance(seeds, str) or not seeds or not all(
                isinstance(seed, int) and not isinstance(seed, bool) for seed in seeds):
            raise ValueError(f"seeds = {seeds!r:.60} must be a non-empty list of integers, e.g. "
                             "[0, 1] (with papermill: -y 'seeds: [0, 1]').")
        self.base = base
        self.train_overrides = dict(train_overrides or {})
        self.seeds = tuple(seeds[:1]) if is_smoke() else tuple(seeds)
        self.full_evaluation = not is_smoke() if full_evaluation is None else full_evaluation
        self.costs = dict(costs or {})
        # The studies' trained runs of this base: equal to it but for the lab's knobs, the seed
        # and what a reset does (a run without resets reads those as its own); a setting is
        # then looked up by its whole training key.
        ignore = (*LAB_FIELDS, "seed", *RESET_HANDLING)
        self.grid_runs = [r for r in results if r.get("kind") == "train" and r.get("eval")
                          and _same_run(base, r["config"], ignore=ignore)]
        self._by_key = {training_key(r["config"]): r for r in self.grid_runs}
        self.floors = [r for r in results if r.get("kind") == "floor" and r.get("eval")]
        self.tried: dict[str, list[LabRun]] = {}  # label -> its runs, in the order tried
        self._floor: dict | None = None
        self._data_root: str | None = None  # found once, when a setting first trains here

    # ---- settings ---------------------------------------------------------------------------
    def settings(self, **values: Sequence) -> list[dict]:
        """Every combination of `values` (field -> values), e.g. n_bits x reinit_every.

        In the smoke setting only the first two values of each field are kept, so a section of
        the lab stays a few seconds there.
        """
        from discomm_lite.teach.sweep import grid_points

        if is_smoke():
            values = {name: list(options)[:2] for name, options in values.items()}
        return grid_points({name: list(options) for name, options in values.items()})

    def label(self, setting: Mapping) -> str:
        """The fields a setting changes from the base, e.g. 'n_bits=32' ('base' for none)."""
        from discomm_lite.teach.sweep import run_name

        base = effective_config(self.base.to_dict())
        changed = {k: v for k, v in setting.items() if v != base[k]}
        return run_name(changed) if changed else "base"

    def refusal(self, setting: Mapping) -> str | None:
        """Why `setting` would change nothing or cannot run (None when it can): a reset period
        whose resets never fire in this run, a temperature for hard targets, an unknown knob."""
        unknown = sorted(set(setting) - set(LAB_FIELDS))
        if unknown:
            return f"the lab varies {', '.join(LAB_FIELDS)}; not {', '.join(unknown)}"
        config = self.base.replace(**setting)
        every, epochs = config.reinit_every, config.epochs
        if every and every >= epochs:
            return (f"a reset every {every} epochs never fires in a {epochs}-epoch run (the "
                    f"first would be at the start of epoch {every + 1}): it is the same run as "
                    "never resetting")
        if every and not config.reinit_partial_period and 2 * every > epochs:
            return (f"a reset every {every} epochs fires only at epoch {every}, with less than "
                    f"a period left in the {epochs}-epoch run; this base skips such a reset "
                    "(reinit_partial_period=False): it is the same run as never resetting")
        if config.targets == "hard" and config.target_temperature != self.base.target_temperature:
            return "the temperature only softens soft targets: with hard ones it changes nothing"
        return None

    def precomputed(self, setting: Mapping) -> list[LabRun] | None:
        """The seeds of `setting` that the studies ran, or None when they ran none of them.

        A cell the studies ran with fewer seeds than asked is shown with those (one seed: its
        value without a spread), never completed by training here: a lookup stays instant.
        """
        runs = []
        for seed in self.seeds:
            match = self._by_key.get(training_key(self.base.replace(**setting,
                                                                    seed=seed).to_dict()))
            if match is not None:
                runs.append(LabRun(dict(setting), seed, match.get("records", []),
                                   match["eval"], "precomputed"))
        return runs or None

    def estimate_seconds(self, setting: Mapping) -> float | None:
        """What training and evaluating `setting`'s seeds here would take (seconds), from the
        measured cost of a step and of an evaluation on this dataset (`study_report.run_costs`);
        None without a measurement of this dataset."""
        cost = self.costs.get(self.base.dataset)
        if cost is None:
            return None
        config = self.training_config(setting)
        n_images = config.train_subset or cost["train_images"]
        steps = config.epochs * (n_images // config.batch_size)
        per_run = steps * cost["seconds_per_step"] + cost["evaluation_seconds"]
        return per_run * len(self.seeds)

    # ---- runs -------------------------------------------------------------------------------
    def runs(self, setting: Mapping, *, callbacks: Sequence[Callable[[dict], None]] = ()
             ) -> list[LabRun]:
        """Every seed of `setting`, precomputed or trained here; remembered as tried.

        Raises ValueError when the setting is refused (`refusal`). `callbacks` receive each
        record of the seeds trained here (progress, live curves).
        """
        reason = self.refusal(setting)
        if reason:
            raise ValueError(f"{self.label(setting)}: {reason}.")
        label = self.label(setting)
        if label not in self.tried:
            self.tried[label] = self.precomputed(setting) or [
                self._train(dict(setting), seed, callbacks) for seed in self.seeds]
        return self.tried[label]

    def _train(self, setting: dict, seed: int, callbacks) -> LabRun:
        """One seed of a setting off the grid: trained (or taken from the run cache) and
        evaluated with the studies' protocol."""
        from discomm_lite.evaluation.suite import evaluate_checkpoint, saved_full_evaluation

        config = self.training_config(setting).replace(seed=seed, data_root=self.data_root())
        run = cached_train(config, self.base.out_dir or "runs", callbacks=callbacks)
        checkpoint = Path(run.out_dir) / "checkpoint.pt"
        if not self.full_evaluation:
            final = evaluate_checkpoint(checkpoint, write=False)
        else:
            final = (saved_full_evaluation(checkpoint, run.config)
                     or evaluate_checkpoint(checkpoint, train_subset=0, test_subset=0))
        return LabRun(setting, seed, run.records, final, "trained here")

    def training_config(self, setting: Mapping) -> Config:
        """The config a setting trains with here: the base, the setting, `train_overrides`."""
        return self.base.replace(**setting, **self.train_overrides)

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
            keys = ("knn20_top1", "knn200_top1", "linear_top1", "effective_dim")
            if floors:
                self._floor = floor_values(floors, keys)
            else:
                from discomm_lite.evaluation.suite import evaluate_random_init

                config = self.base.replace(data_root=self.data_root())
                if self.full_evaluation:
                    config = config.replace(train_subset=0, test_subset=0)
                result = evaluate_random_init(config)
                self._floor = {k: result[k] for k in keys if k in result}
        return self._floor

    # ---- what the lab shows -----------------------------------------------------------------
    def value(self, setting: Mapping, key: str) -> tuple[float, float, int]:
        """(mean, std, seeds) of `key` over `setting`'s seeds (`LabRun.value`: the final
        evaluation, else the last training record); (NaN, NaN, 0) for a setting not
        precomputed nor tried."""
        label = self.label(setting)
        if label not in self.tried and self.precomputed(setting) is not None:
            self.tried[label] = self.precomputed(setting)  # remembered: the next look is instant
        return mean_std(run.value(key) for run in self.tried.get(label, []))

    def paired(self, setting: Mapping, key: str, reference: Mapping | None = None
               ) -> tuple[float, float, int]:
        """(mean, 95% half-width, seeds) of `setting` minus `reference` (the base by default),
        paired by seed (`study.paired_difference`); NaN where either is not available."""
        values = [{run.seed: run.value(key) for run in self.runs_if_known(s)}
                  for s in (setting, reference or {})]
        return paired_difference(*values)

    def reset_health(self, setting: Mapping) -> MarkdownTable:
        """Each head reset of `setting`'s runs, from their records (`reset_health_table`)."""
        return reset_health_table([(run.seed, run.records)
                                   for run in self.runs_if_known(setting)])

    def runs_if_known(self, setting: Mapping) -> list[LabRun]:
        """`setting`'s runs when it was tried or is precomputed ([] otherwise: nothing trains)."""
        self.value(setting, "knn20_top1")  # remembers a precomputed setting as tried
        return self.tried.get(self.label(setting), [])

    def grid(self, rows: str, columns: str, row_values: Sequence, column_values: Sequence,
             key: str) -> tuple[list[list[float]], list[list[float]]]:
        """(means, spreads) of `key` over the precomputed settings rows x columns (the base's
        other knobs), as (R, C) tables; NaN where a cell is not precomputed or one seed only."""
        means, spreads = [], []
        for r in row_values:
            cells = [self.value({rows: r, columns: c}, key) for c in column_values]
            means.append([mean for mean, _, _ in cells])
            spreads.append([std if n > 1 else math.nan for _, std, n in cells])
        return means, spreads

    def heatmaps(self, rows: str = "n_bits", columns: str = "reinit_every",
                 keys: Sequence[str] = ("knn20_top1", CODE_MAP, "effective_dim"), *,
                 highlight: Mapping | None = None):
        """Heat maps of the precomputed grid rows x columns, one per key, each cell the mean over
        seeds with its spread; `highlight` outlines a setting's cell."""
        from discomm_lite.viz.grids import plot_heatmaps

        row_values = self._grid_values(rows)
        column_values = self._grid_values(columns)
        panels = {LAB_KEYS.get(key, key): self.grid(rows, columns, row_values, column_values,
                                                    key) for key in keys}
        cell = None
        if highlight is not None and highlight.get(rows) in row_values \
                and highlight.get(columns) in column_values:
            cell = (row_values.index(highlight[rows]), column_values.index(highlight[columns]))
        names = {0: "never"} if columns == "reinit_every" else {}
        return plot_heatmaps(panels, [str(v) for v in row_values],
                             [names.get(v, str(v)) for v in column_values],
                             row_name=rows, col_name=columns, highlight=cell)

    def _grid_values(self, field: str) -> list:
        """The values of `field` among the precomputed runs (with the base's), in order."""
        values = {effective_config(r["config"])[field] for r in self.grid_runs}
        values.add(effective_config(self.base.to_dict())[field])
        return sorted(values, key=lambda v: (isinstance(v, str), v))

    def figure(self, settings: Sequence[Mapping] | None = None):
        """Curves and final evaluations of `settings` (default: every setting tried so far).

        Curves: coding rate (with the one-direction rate of each K), bit agreement (chance 0.5)
        and k-NN during training where a run evaluated during training, each run's head resets
        marked; one colour per setting, one line per seed. Finals: k-NN@20 with the random-init
        floor, and the code mAP on the first 32 bits (equal length whatever K >= 32). Nothing
        trains here (`runs` does): a setting neither precomputed nor tried is left out.
        """
        from discomm_lite.viz.plots import channel_references, plot_lab

        if settings is not None:
            labels = [self.label(s) for s in settings if self.runs_if_known(s)]
        else:
            labels = list(self.tried)
        runs = {label: self.tried[label] for label in labels}
        configs = {label: self.base.replace(**seeds[0].setting) for label, seeds in runs.items()}
        floor = {key: {"random-init floor": value} for key, value in self.floor().items()}
        records = {label: [run.records for run in seeds] for label, seeds in runs.items()}
        logged = {key for seeds in records.values() for run in seeds for r in run for key in r}
        finals = {label: [{k: final_value(run.final, k) for k in ("knn20_top1", CODE_MAP)}
                          for run in seeds] for label, seeds in runs.items()}
        return plot_lab(
            records, finals,
            curves=[k for k in ("coding_rate", "bit_agreement", "knn20_top1") if k in logged],
            final_keys=("knn20_top1", CODE_MAP),
            agreement={label: c.agreement for label, c in configs.items()},
            curve_references=channel_references(
                n_bits=sorted({c.n_bits for c in configs.values()}), eps=self.base.eps),
            final_references=floor)

    def table(self) -> MarkdownTable:
        """Every setting tried: seeds, where they come from, final evaluations (mean ± std)."""
        keys = ("knn20_top1", "knn200_top1", CODE_MAP, "effective_dim")
        rows = []
        for label, runs in self.tried.items():
            finals = [run.final for run in runs]
            rows.append([label, len(runs), ", ".join(sorted({run.source for run in runs})),
                         *(over_seeds(final_value(f, k) for f in finals) for k in keys)])
        return markdown_table(rows, ["setting", "seeds", "source",
                                     *(LAB_KEYS.get(k, k) for k in keys)])
