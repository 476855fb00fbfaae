"""One run of a recipe study: train it (or not, for a floor), evaluate it, write its JSON.

`run_one` is what `study.run_study` runs for each spec, in a task's process: the training resumes
an interrupted run folder, the evaluation is `suite.evaluate_checkpoint`'s full protocol, and the
result file records the machine and the commit it ran on.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: study imports this module
    from discomm_lite.config import Config
    from discomm_lite.teach.study import StudyRun

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
