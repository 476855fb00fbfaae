"""The ablation lab of notebook 03: settings of a base config over seeds, taken from the study's
precomputed grid or trained here, with their curves, final evaluations and table."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from discomm_lite.config import Config
from discomm_lite.teach.notebook import cached_train, find_data_root, is_smoke
from discomm_lite.teach.study import effective_config, over_seeds, training_key
from discomm_lite.teach.study_report import floor_values
from discomm_lite.teach.tables import MarkdownTable, markdown_table

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


def _saved_full_evaluation(checkpoint: Path, config: Config) -> dict | None:
    """The evaluation of `checkpoint` on the whole splits that `evaluate_checkpoint` wrote
    (`suite.evaluation_path`), or None when there is none of this data root."""
    from discomm_lite.evaluation.suite import evaluation_path

    path = evaluation_path(checkpoint, config, data_root=config.data_root, train_subset=0,
                           test_subset=0)
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    # The file name says every option but the data root: one of another copy of the data (an
    # evaluation made outside the lab) is not this one.
    return saved if saved.get("options", {}).get("data_root") == config.data_root else None


class Lab:
    """The ablation lab: settings of the base config, each over `seeds`, precomputed or trained.

    A setting is a dict of `LAB_FIELDS` values. For each seed, a run of the study (`results`,
    see `study.load_results`) whose config equals the base with the setting applied (machine
    fields aside) is used as it is; any other is trained here (`cached_train` under the base's
    out_dir, so once only) and evaluated with the study's protocol (`evaluate_checkpoint`; the
    whole splits, saved beside the checkpoint and read back when asked again, or the run's
    subsets with `full_evaluation=False`; default: the whole splits except in the smoke
    setting). The random-init floor comes from the study's floor runs of the same backbone and
    data when there are some; else it is evaluated here once. In the smoke setting each setting
    runs with the first seed only (see also `settings`).
    """

    def __init__(self, base: Config, results: Sequence[dict] = (), *,
                 seeds: Sequence[int] = (0, 1), full_evaluation: bool | None = None) -> None:
        if isinstance(seeds, str) or not seeds or not all(
                isinstance(seed, int) and not isinstance(seed, bool) for seed in seeds):
            raise ValueError(f"seeds = {seeds!r:.60} must be a non-empty list of integers, e.g. "
                             "[0, 1] (with papermill: -y 'seeds: [0, 1]').")
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
        from discomm_lite.evaluation.suite import evaluate_checkpoint

        run = cached_train(config.replace(data_root=self.data_root()), self.base.out_dir or "runs",
                           progress=False)
        checkpoint = Path(run.out_dir) / "checkpoint.pt"
        if not self.full_evaluation:
            final = evaluate_checkpoint(checkpoint, write=False)
        else:
            final = (_saved_full_evaluation(checkpoint, run.config)
                     or evaluate_checkpoint(checkpoint, train_subset=0, test_subset=0))
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
                from discomm_lite.evaluation.suite import evaluate_random_init

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
        and k-NN during training where a run evaluated during training (the study's runs did not:
        their k-NN is the final one); one colour per setting, one line per seed. Bars: k-NN@20
        with the random-init floor, and the redundancy of the codes (mean |correlation| between
        bits).
        """
        from discomm_lite.viz.plots import channel_references, plot_lab

        if settings is not None:
            for setting in settings:
                self.runs(setting)
            labels = [self.label(s) for s in settings]
        else:
            labels = list(self.tried)
        runs = {label: self.tried[label] for label in labels}
        configs = {label: self.base.replace(**seeds[0].setting) for label, seeds in runs.items()}
        floor = {key: {"random-init floor": value} for key, value in self.floor().items()}
        records = {label: [run.records for run in seeds] for label, seeds in runs.items()}
        logged = {key for seeds in records.values() for run in seeds for r in run for key in r}
        return plot_lab(
            records,
            {label: [run.final for run in seeds] for label, seeds in runs.items()},
            curves=[k for k in ("coding_rate", "bit_agreement", "knn20_top1") if k in logged],
            final_keys=("knn20_top1", "code_mean_abs_correlation"),
            agreement={label: c.agreement for label, c in configs.items()},
            curve_references=channel_references(
                n_bits=sorted({c.n_bits for c in configs.values()}), eps=self.base.eps),
            final_references=floor)

    def table(self) -> MarkdownTable:
        """Every setting tried: seeds, where they come from, final evaluations (mean ± std)."""
        keys = ("knn20_top1", "knn200_top1", "code_mean_abs_correlation", "map_hamming")
        rows = []
        for label, runs in self.tried.items():
            finals = [run.final or {} for run in runs]
            last = [[r for r in run.records if r.get("kind") == "train"][-1:] for run in runs]
            rate = over_seeds(x[0]["coding_rate"] for x in last if x and "coding_rate" in x[0])
            rows.append([label, len(runs), ", ".join(sorted({run.source for run in runs})),
                         *(over_seeds(f.get(k, math.nan) for f in finals) for k in keys), rate])
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
