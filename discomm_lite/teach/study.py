"""Recipe studies: many short runs, one evaluation protocol, results kept as JSON.

A study is a list of `StudyRun` specs (a group, a variant label, a preset, overrides and a seed).
`run_study` trains each one in its own run folder (resuming an interrupted one), evaluates its
teacher with the full protocol of `suite.evaluate_checkpoint` (k-NN with the whole train split as
the bank, the fast linear proxy, retrieval mAP, geometry and code statistics), and writes one JSON
file per run: its config, its metrics records and its evaluation (`study_one.run_one`). A run
whose JSON exists is not run again, so a study can be stopped and continued, and extended by
adding specs. The runs go where an `executors.Executor` says: this machine's processes, or SLURM
jobs (`teach.study_cli` gives a study script those options, and a status view).

`load_results` and `summarize` turn those files into mean +- std tables over seeds; the notebooks
(02, 03) and the study's report read them. Floors (`kind="floor"`) are the same networks at their
initial weights, evaluated with the same protocol.
"""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from discomm_lite.config import Config, make_config
from discomm_lite.teach.executors import Executor, Task
from discomm_lite.teach.study_one import run_one
from discomm_lite.training.runlock import FileLock, LockHeld

JOBS_FOLDER = "jobs"  # under the runs root: each task's record, submitit's files and logs


@dataclass(frozen=True)
class StudyRun:
    """One run of a study: `preset` with `overrides` and `seed`, filed under group/variant.

    kind "train" trains then evaluates; "floor" evaluates the network at its initial weights
    (what the same config draws before its first step); "curve" trains without the final
    evaluation (short runs whose metrics are the result, e.g. the first steps of the loss).
    `validate` adds k-NN scores on a held-out part of the train split, for choosing settings
    without looking at the test set.
    """

    group: str
    variant: str
    preset: str
    overrides: dict = field(default_factory=dict)
    seed: int = 0
    kind: str = "train"
    validate: bool = False

    @property
    def name(self) -> str:
        """File-safe identifier: group, variant and seed."""
        label = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in self.variant)
        return f"{self.group}__{label}__seed{self.seed}"

    def config(self, runs_root: str | Path) -> Config:
        return make_config(self.preset, **{**self.overrides, "seed": self.seed,
                                           "out_dir": str(Path(runs_root) / self.name)})


def run_study(specs: Sequence[StudyRun], runs_root: str | Path, results_dir: str | Path, *,
              jobs: int = 1, threads: int = 1, twin_dirs: Sequence[str | Path] = (),
              executor: Executor | None = None) -> list[str]:
    """Run every spec whose result file is missing, where `executor` says (default: this
    machine, `jobs` processes at a time; `executors.Executor` for SLURM).

    Specs that would train alike (`training_key`) run as one task: the first trains, the others
    reuse its result, as does a spec whose training config is that of a finished run in
    `results_dir` or in one of `twin_dirs` (another study's results).

    Each run is claimed first (`<name>.claim`, a `runlock.FileLock`), so several invocations of a
    study, on one machine or sharing a folder, never run the same spec twice; a spec claimed by a
    live process (or one on another host) is skipped, saying by whom, and a claim left by a killed
    process on this host is taken over with a warning (its run folder resumes). Each task's record
    and submitit's files go to `<runs_root>/jobs/`. Returns the names this call trained or
    evaluated; raises RuntimeError naming the failed runs once the others ran. A stop signal lets
    the running ones save, then raises KeyboardInterrupt or `executors.BatchInterrupted`.
    """
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Two specs share the names {duplicates}: give them distinct variants.")
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    before = {s.name for s in specs if (results_dir / f"{s.name}.json").exists()}
    tasks = [Task(group[0].name, partial(_run_group, group, str(runs_root), str(results_dir),
                                         threads, tuple(str(d) for d in twin_dirs)),
                  done=partial(_all_done, [s.name for s in group], results_dir))
             for group in twin_groups([s for s in specs if s.name not in before], runs_root)]
    executor = executor or Executor(jobs=max(1, jobs))
    folder = Path(runs_root) / JOBS_FOLDER
    batch = executor.run(tasks, folder)
    ran = [s.name for s in specs if s.name not in before and _trained_here(s, results_dir)]
    if batch.stopped_by is not None:
        raise batch.interruption(
            f"the study stopped ({signal.Signals(batch.stopped_by).name}) after {len(ran)} "
            "new run(s); run it again to continue (interrupted runs resume from their "
            "checkpoints).")
    failed = {n: r for n, r in batch.records.items()
              if r and r.get("status") in ("failed", "died", "interrupted")}
    if failed:
        listed = "; ".join(f"{n}: {r.get('error')}" for n, r in failed.items())
        raise RuntimeError(f"{len(failed)} study task(s) did not finish ({listed}); their "
                           f"records are in {folder}.")
    return ran


def twin_groups(specs: Sequence[StudyRun], runs_root: str | Path) -> list[list[StudyRun]]:
    """`specs` grouped so that specs that train alike (kind "train", equal `training_key`) are
    one group, in the order of their first spec; every other spec alone."""
    groups: dict[str, list[StudyRun]] = {}
    for spec in specs:
        key = (training_key(spec.config(runs_root).to_dict()) if spec.kind == "train"
               else spec.name)
        groups.setdefault(key, []).append(spec)
    return list(groups.values())


def _run_group(specs: Sequence[StudyRun], runs_root: str, results_dir: str, threads: int,
               twin_dirs: Sequence[str]) -> dict:
    return {"ran": _work(specs, runs_root, results_dir, threads, twin_dirs)}


def _all_done(names: Sequence[str], results_dir: Path) -> bool:
    return all((Path(results_dir) / f"{n}.json").exists() for n in names)


def _trained_here(spec: StudyRun, results_dir: Path) -> bool:
    path = Path(results_dir) / f"{spec.name}.json"
    return path.exists() and "same_run_as" not in json.loads(path.read_text())


def effective_config(values: Mapping) -> dict:
    """A config dict as it trains: the fields left to the method (None) replaced by the method's
    values, the head's warm-up left to the run (None) in steps where the dict says them, the
    fields added since the dict was written (`checkpoint.FIELDS_ADDED`) filled in with the
    behaviour of the code that wrote it, and what a head reset does made equal for runs without
    one."""
    from discomm_lite.method import get_method
    from discomm_lite.training.checkpoint import FIELDS_ADDED

    values = {**FIELDS_ADDED, **values}
    method = get_method(values.get("method", "bits"))
    defaults = {"coding_rate_weight": method.coding_rate_weight,
                "coding_rate_input": method.coding_rate_input}
    if not values.get("reinit_every") and not values.get("reinit_at_start"):
        values = {**values, **RESET_HANDLING}  # what a reset does cannot change a run without one
    else:
        if values.get("reinit_warmup_steps") is None and values.get("train_subset"):
            # None: the run's own warm-up in steps (an in-memory subset drops its partial batch)
            values = {**values, "reinit_warmup_steps":
                      values["warmup_epochs"] * (values["train_subset"] // values["batch_size"])}
        if values.get("reinit_every") and values["epochs"] % values["reinit_every"] == 0:
            # every reset's period ends with the run: whether a partial one may start is moot
            values = {**values, "reinit_partial_period": RESET_HANDLING["reinit_partial_period"]}
    return {k: defaults[k] if v is None and k in defaults else v for k, v in values.items()}


# The Config fields that say what a head reset does (besides drawing the new head), at the values
# of the code that first had resets.
RESET_HANDLING = {"teacher_head_policy": "copy", "reinit_optimizer_state": "clear",
                  "reinit_warmup_steps": 0, "reinit_teacher_momentum": None,
                  "reinit_catchup_steps": 0, "reinit_partial_period": True}


def training_key(config: Mapping, ignore: Iterable[str] = ()) -> str:
    """What decides a run's trajectory, as a string: two configs with equal keys train alike.

    The effective config (`effective_config`) without the fields a run may change and still
    continue the same trajectory (`checkpoint.RESUMABLE_CHANGES`: where it runs, how often it
    logs or evaluates) and without `ignore`.
    """
    from discomm_lite.training.checkpoint import RESUMABLE_CHANGES

    skip = RESUMABLE_CHANGES | set(ignore)
    return json.dumps({k: v for k, v in effective_config(config).items() if k not in skip},
                      sort_keys=True)


def _reuse_twin(spec: StudyRun, runs_root, results_dir, twin_dirs=()) -> bool:
    """Write `spec`'s result from a finished run of the same training config, if there is one.

    The copy keeps the twin's records and evaluation and names it in `same_run_as` (with its
    study's folder when the twin is another study's).
    """
    if spec.kind != "train":
        return False
    key = training_key(spec.config(runs_root).to_dict())
    for path in [p for d in (results_dir, *twin_dirs) for p in sorted(Path(d).glob("*.json"))]:
        twin = json.loads(path.read_text())
        if twin.get("kind") == "train" and training_key(twin["config"]) == key:
            origin = twin.get("same_run_as", twin["name"])
            if Path(path).parent != Path(results_dir):
                origin = f"{Path(path).parent.name}/{origin}"
            copy = {**twin, **{k: v for k, v in asdict(spec).items()}, "name": spec.name,
                    "same_run_as": origin}
            (Path(results_dir) / f"{spec.name}.json").write_text(json.dumps(copy, indent=1)
                                                                + "\n")
            return True
    return False


def _work(specs: Sequence[StudyRun], runs_root, results_dir, threads: int,
          twin_dirs=()) -> list[str]:
    done = []
    for spec in specs:
        result = Path(results_dir) / f"{spec.name}.json"
        if result.exists() or _reuse_twin(spec, runs_root, results_dir, twin_dirs):
            continue
        claim = FileLock(result.with_suffix(".claim"), f"the study run {spec.name}")
        try:
            claim.acquire()
        except LockHeld as held:
            print(f"skipped {spec.name}: {held}", flush=True)
            continue
        try:  # an interrupted run releases its claim; its run folder resumes next time
            if result.exists():  # finished by another process since the check above
                continue
            run_one(spec, runs_root, results_dir, threads)
        finally:
            claim.release()
        done.append(spec.name)
        print(f"done {spec.name}", flush=True)
    return done


# ---- reading results -----------------------------------------------------------------------------
def load_results(results_dir: str | Path, group: str | None = None) -> list[dict]:
    """Every result file of a study (of one group), sorted by name."""
    paths = sorted(Path(results_dir).glob("*.json"))
    results = [json.loads(p.read_text()) for p in paths]
    return [r for r in results if group is None or r["group"] == group]


def final_value(final: Mapping | None, key: str) -> float:
    """A final evaluation's value: `map_hamming_<b>` reads the mAP of the codes' first b bits
    (`map_vs_bits`), so codes of different lengths compare at an equal length; NaN if absent."""
    final = final or {}
    if key.startswith("map_hamming_"):
        bits = key.rsplit("_", 1)[1]
        by_bits = final.get("map_vs_bits") or {}  # int keys; str once saved as JSON
        return float(by_bits.get(bits, by_bits.get(int(bits), math.nan)))
    return float(final.get(key, math.nan))


def reset_healths(records: Sequence[dict]) -> list[dict]:
    """The "reset_health" record of each head reset in a run's `records`, each over the period
    up to the next reset (`training.reset.reset_health`; also for runs logged before the
    training loop wrote them)."""
    from discomm_lite.training.reset import reset_health

    resets = [i for i, r in enumerate(records) if r["kind"] == "reinit"] + [len(records)]
    healths = [reset_health(records[:end], records[end - 1]["step"]) for end in resets[1:]]
    return [h for h in healths if h is not None]


def lowest_rate_after_reset(records: Sequence[dict]) -> float:
    """The lowest coding rate after a head reset, as a fraction of the rate just before it, over
    a run's resets (NaN without a reset): under 0.5, a reset collapsed the channel."""
    ratios = [h["coding_rate_min"] / h["coding_rate_before"] for h in reset_healths(records)
              if h["coding_rate_before"]]
    return min(ratios) if ratios else math.nan


def metric(result: dict, key: str) -> float:
    """A number of a result: its evaluation (`final_value`: `map_hamming_<b>` too), validation,
    `reset_rate_low` (`lowest_rate_after_reset`), or its last train record (NaN if absent)."""
    if key == "reset_rate_low":
        return lowest_rate_after_reset(result.get("records", []))
    if key in (result.get("eval") or {}) or key.startswith("map_hamming_"):
        return final_value(result.get("eval"), key)
    if key in (result.get("validation") or {}):
        return float(result["validation"][key])
    train_records = [r for r in result.get("records", []) if r["kind"] == "train"]
    if train_records and key in train_records[-1]:
        return float(train_records[-1][key])
    return math.nan


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite values."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    mean = sum(finite) / len(finite)
    if len(finite) == 1:
        return mean, 0.0, 1
    var = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    return mean, math.sqrt(var), len(finite)


def paired_difference(values: Mapping[int, float], reference: Mapping[int, float],
                      confidence: float = 0.95) -> tuple[float, float, int]:
    """The mean of `values - reference` over the seeds both have, and the half-width of its
    `confidence` interval (Student's t with n - 1 degrees of freedom): (mean, half-width, n).

    Pairing by seed removes what two settings share within a seed (the same initial weights and
    batches), so the interval is usually narrower than the two settings' own spreads suggest. With
    one seed the half-width is NaN (no spread to estimate).
    """
    from scipy.stats import t as student_t

    seeds = sorted(set(values) & set(reference))
    diffs = [values[s] - reference[s] for s in seeds
             if math.isfinite(values[s]) and math.isfinite(reference[s])]
    mean, std, n = mean_std(diffs)
    if n < 2:
        return mean, math.nan, n
    return mean, float(student_t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n), n


def over_seeds(values: Iterable[float]) -> float | tuple[float, float]:
    """(mean, std) over the seeds' values, or the value alone for one seed (no spread to show)."""
    mean, std, count = mean_std(values)
    return mean if count == 1 else (mean, std)


def summarize(results: Sequence[dict], keys: Sequence[str],
              variants: Sequence[str] | None = None) -> list[dict]:
    """One row per variant (in `variants` order, else first-seen order): mean/std over seeds.

    Each row: {"variant", "seeds", and for each key: key -> (mean, std)}.
    """
    order = list(variants) if variants is not None else list(dict.fromkeys(
        r["variant"] for r in results))
    rows = []
    for variant in order:
        runs = [r for r in results if r["variant"] == variant]
        row: dict = {"variant": variant, "seeds": sorted(r["seed"] for r in runs)}
        for key in keys:
            mean, std, _ = mean_std(metric(r, key) for r in runs)
            row[key] = (mean, std)
        rows.append(row)
    return rows
