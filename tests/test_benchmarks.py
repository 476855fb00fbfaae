"""The benchmark scripts run on a CPU in their quickest setting and print their tables.

Smoke runs only: one timed call per measurement on a shared CPU measures nothing, so no number is
checked, only that each script exits 0 and prints its table and its ratio. The smallest
backbones of the library stand in for the GPU cases (same code paths: a CIFAR-crop convnet and a
multi-resolution ViT) to keep the file within about a minute on 2 cores.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# One thread: OpenMP threads that spin for cores other jobs hold slow a 2-core runner ~5x.
QUICK = ["--quick", "--steps", "1", "--warmup", "0", "--repeats", "1", "--threads", "1"]


def run_script(name: str, *args: str, env: dict | None = None) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_default_cases_have_the_issue_crops_and_batches():
    spec = importlib.util.spec_from_file_location("benchmarks_common",
                                                  ROOT / "benchmarks" / "common.py")
    common = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # for dataclasses
    spec.loader.exec_module(common)
    configs = {case: common.case_config(case, device=torch.device("cpu"))
               for case in common.CASES}
    assert {case: (common.crops_label(c), c.batch_size) for case, c in configs.items()} == {
        "resnet18-cifar": ("2x32", 512),
        "vit-small/16": ("2x224 + 10x96", 64),
        "vit-base/16": ("2x224 + 10x96", 64),
    }
    assert configs["vit-base/16"].backbone == "vit-base/16" and configs["vit-base/16"].n_bits == 256


@pytest.mark.slow
def test_step_prints_its_table_and_the_step_to_backbone_ratio():
    out = run_script("step.py", "--device", "cpu", *QUICK, "--cases", "convnet-small",
                     "vit-tiny/16")
    assert "| measurement" in out and "| BITS step (train_step)" in out
    assert "crops 2x32 + 2x16" in out  # the ViT's two crop resolutions
    assert "cpu (CPU), fp32, eager, 1 CPU threads" in out
    assert "| n/a" in out  # no MFU, CUDA memory or sync count on a CPU
    assert len(re.findall(r"step / bare backbone: \d+\.\d+x; method's own cost", out)) == 2
    assert re.search(r"\| vit-tiny/16 +\| [\d.]+ +\| [\d.]+ +\| \d+\.\d+x", out)  # summary row


@pytest.mark.slow
def test_data_pipeline_prints_both_ratios_and_verdicts():
    out = run_script("data_pipeline.py", "--device", "cpu", *QUICK, "--backbone-a",
                     "convnet-small", "--backbone-b", "vit-tiny/16")
    assert "## (a) in-memory" in out and "## (b) ImageFolder" in out
    assert "| pipeline: InMemoryViews" in out and "| pipeline: FolderViews" in out
    verdicts = re.findall(r"pipeline / step: \d+\.\d+x -> (the step|the pipeline)", out)
    assert len(verdicts) == 2


@pytest.mark.slow
def test_cpu_presets_estimates_the_quickstart_and_skips_missing_cifar(tmp_path):
    env = {**os.environ, "DISCOMM_DATA": str(tmp_path)}  # an empty data root: no CIFAR-10
    out = run_script("cpu_presets.py", "--quick", "--threads", "1", env=env)
    assert "| synthetic-toy bits" in out
    assert re.search(r"synthetic-toy: estimated [\d.]+ min for its runs \([\d.]+ min of CPU "
                     r"time\), target 3 min: ratio \d+\.\d+", out)
    assert f"skipped cifar-toy: cifar10 was not found under the data root {tmp_path}" in out
    assert re.search(r"\| synthetic-toy \| quickstart \(00\) \| 1 ", out)  # threads column
