"""Recipe studies: many short runs, one evaluation protocol, results kept as JSON.

A study is a list of `StudyRun` specs (a group, a variant label, a preset, overrides and a seed).
`run_study` trains each one in its own run folder (resuming an interrupted one), evaluates its
teacher with the full protocol of `suite.evaluate_checkpoint` (k-NN with the whole train split as
the bank, the fast linear proxy, retrieval mAP, geometry and code statistics), and writes one JSON
file per run: its config, its metrics records and its evaluation. A run whose JSON exists is not
run again, so a study can be stopped and continued, and extended by adding specs.

`load_results` and `summarize` turn those files into mean +- std tables over seeds; the notebooks
(02, 03) and the study's report read them. Floors (`kind="floor"`) are the same networks at their
initial weights, evaluated with the same protocol.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from discomm_lite.config import Config, make_config


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


# Fraction of the train split held out as queries for `validate` (a seeded, fixed split).
VALIDATION_QUERIES = 10_000
_VALIDATION_SEED = 12345


def run_one(spec: StudyRun, runs_root: str | Path, results_dir: str | Path,
            threads: int = 1) -> dict:
    """Train and evaluate one spec and write `<results_dir>/<name>.json`; returns the result."""
    import torch

    from discomm_lite.api import train
    from discomm_lite.evaluation.suite import evaluate_checkpoint, evaluate_random_init

    torch.set_num_threads(threads)
    config = spec.config(runs_root)
    result = {"name": spec.name, **asdict(spec), "config": config.to_dict(),
              "machine": machine_description(threads), "commit": _git_commit(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if spec.kind == "floor":
        started = time.perf_counter()
        result["eval"] = evaluate_random_init(config.replace(train_subset=0, test_subset=0))
        result["eval_seconds"] = time.perf_counter() - started
    else:
        started = time.perf_counter()
        run = train(config, progress=False)  # a stop signal raises: the claim is released
        result["train_seconds"] = time.perf_counter() - started
        result["records"] = [r for r in run.records if r["kind"] != "warning"]
        result["warnings"] = [r["message"] for r in run.records if r["kind"] == "warning"]
        if spec.kind == "train":
            started = time.perf_counter()
            checkpoint = Path(config.out_dir) / "checkpoint.pt"
            result["eval"] = evaluate_checkpoint(checkpoint, train_subset=0, test_subset=0)
            if spec.validate:
                result["validation"] = validation_knn(run.backbone, config)
            result["eval_seconds"] = time.perf_counter() - started
    path = Path(results_dir) / f"{spec.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)
    return result


def validation_knn(backbone, config: Config) -> dict[str, float]:
    """k-NN top-1 with a fixed 10k part of the train split as queries and the rest as bank."""
    import torch

    from discomm_lite.evaluation.features import extract_features
    from discomm_lite.evaluation.metrics import evaluate_knn
    from discomm_lite.views.pipeline import load_splits

    train_set, _ = load_splits(config.replace(train_subset=0), with_test=False)
    out = extract_features(backbone, train_set, image_size=config.image_size)
    order = torch.randperm(len(out["labels"]),
                           generator=torch.Generator().manual_seed(_VALIDATION_SEED))
    queries, bank = order[:VALIDATION_QUERIES], order[VALIDATION_QUERIES:]
    scores = evaluate_knn(out["feats"][bank], out["labels"][bank], out["feats"][queries],
                          out["labels"][queries])
    return {f"val_{k}": v for k, v in scores.items()}


def run_study(specs: Sequence[StudyRun], runs_root: str | Path, results_dir: str | Path, *,
              jobs: int = 1, threads: int = 1, twin_dirs: Sequence[str | Path] = ()) -> list[str]:
    """Run every spec whose result file is missing, `jobs` processes at a time.

    A spec whose training config is that of a finished run in `results_dir` or in one of
    `twin_dirs` (another study's results) reuses that run's result instead of training again.

    Each run is claimed first (`<name>.claim`, created exclusively), so several invocations of a
    study, on one machine or sharing a folder, never run the same spec twice. A claim left by a
    killed process stays: delete it to run that spec again (its run folder resumes). Returns the
    names this call ran.
    """
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Two specs share the names {duplicates}: give them distinct variants.")
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    if jobs <= 1:
        return _work(specs, runs_root, results_dir, threads, twin_dirs)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_work, specs, runs_root, results_dir, threads, twin_dirs)
                   for _ in range(jobs)]
        return [name for future in futures for name in future.result()]


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
        claim = result.with_suffix(".claim")
        if result.exists() or _reuse_twin(spec, runs_root, results_dir, twin_dirs):
            continue
        try:
            os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        claim.write_text(f"pid {os.getpid()} on {platform.node()}\n")
        try:
            run_one(spec, runs_root, results_dir, threads)
        finally:  # an interrupted run releases its claim; its run folder resumes next time
            claim.unlink()
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


def machine_description(threads: int) -> str:
    """CPU model, core count and the torch threads a run used."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {threads} torch thread(s)"


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
