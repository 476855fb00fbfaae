"""Recipe studies: run keys, claims, reused twins, and mean +- std tables."""

from __future__ import annotations

import json
import math
import socket
import statistics

import pytest

from discomm_lite.config import make_config
from discomm_lite.teach.executors import Executor
from discomm_lite.teach.study import (
    StudyRun,
    load_results,
    mean_std,
    paired_difference,
    run_study,
    summarize,
    training_key,
)
from discomm_lite.teach.study_report import difference_text, value_text

TINY = dict(train_subset=128, test_subset=64, batch_size=32, epochs=1, warmup_epochs=0,
            n_bits=8, head_hidden_dim=32, eval_every=0, log_every=1, device="cpu")


def test_training_key_ignores_only_what_leaves_the_trajectory_alone():
    base = make_config("synthetic-toy")
    key = training_key(base.to_dict())
    for change in (dict(log_every=1), dict(eval_every=0), dict(out_dir="elsewhere"),
                   dict(coding_rate_weight=0.1)):  # 0.1 is BITS's own default (None)
        assert training_key(base.replace(**change).to_dict()) == key, change
    for change in (dict(lr=1e-2), dict(seed=1), dict(n_bits=32), dict(coding_rate_weight=0.2)):
        assert training_key(base.replace(**change).to_dict()) != key, change
    assert training_key(base.replace(lr=1e-2).to_dict(), ignore=["lr"]) == training_key(
        base.to_dict(), ignore=["lr"])


def test_mean_std_is_the_sample_statistics_of_the_finite_values():
    values = [0.52, 0.55, 0.49, math.nan]
    mean, std, count = mean_std(values)
    assert count == 3
    assert mean == pytest.approx(statistics.mean(values[:3]))
    assert std == pytest.approx(statistics.stdev(values[:3]))
    assert mean_std([0.5]) == (0.5, 0.0, 1)
    assert all(math.isnan(x) for x in mean_std([math.nan])[:2])


def test_summarize_averages_each_variant_over_its_seeds():
    results = [{"variant": v, "seed": s, "eval": {"knn20_top1": x}}
               for v, s, x in (("a", 0, 0.5), ("a", 1, 0.7), ("b", 0, 0.4))]
    rows = summarize(results, ["knn20_top1"], variants=["b", "a"])
    assert [r["variant"] for r in rows] == ["b", "a"]
    assert rows[1]["seeds"] == [0, 1]
    assert rows[1]["knn20_top1"] == pytest.approx((0.6, statistics.stdev([0.5, 0.7])))
    assert rows[0]["knn20_top1"] == (0.4, 0.0)


@pytest.mark.slow
def test_run_study_writes_one_result_per_spec_and_reuses_a_twin(tmp_path):
    runs_root, results = tmp_path / "runs", tmp_path / "results"
    specs = [StudyRun("g", "first", "synthetic-toy", TINY, kind="curve"),
             StudyRun("g", "same run, other log interval", "synthetic-toy",
                      {**TINY, "log_every": 2}, kind="curve"),
             StudyRun("g", "trained", "synthetic-toy", TINY, seed=1)]
    specs.append(StudyRun("h", "twin of trained", "synthetic-toy", {**TINY, "log_every": 4},
                          seed=1))
    assert run_study(specs, runs_root, results) == [s.name for s in specs[:3]]
    by_name = {r["name"]: r for r in load_results(results)}
    assert set(by_name) == {s.name for s in specs}
    first, other = by_name[specs[0].name], by_name[specs[1].name]
    assert "eval" not in first and first["records"]  # a curve: records only
    # Curves are never reused (their records are the result), so both trained the same steps:
    # a record every 2 steps is the mean of the two records logged at every step.
    every_step = {r["step"]: r["loss"] for r in first["records"] if r["kind"] == "train"}
    for record in (r for r in other["records"] if r["kind"] == "train"):
        step = record["step"]
        assert record["loss"] == pytest.approx((every_step[step - 1] + every_step[step]) / 2)
    trained, twin = by_name[specs[2].name], by_name[specs[3].name]
    assert 0 <= trained["eval"]["knn20_top1"] <= 1
    assert twin["same_run_as"] == trained["name"] and twin["group"] == "h"
    assert twin["eval"] == trained["eval"]
    assert run_study(specs, runs_root, results) == []  # everything is there: nothing reruns


@pytest.mark.slow
def test_a_claimed_spec_is_left_to_its_claimer(tmp_path):
    spec = StudyRun("g", "claimed", "synthetic-toy", TINY, kind="curve")
    results = tmp_path / "results"
    results.mkdir()
    (results / f"{spec.name}.claim").write_text("pid 1 on elsewhere\n")
    assert run_study([spec], tmp_path / "runs", results) == []
    assert not (results / f"{spec.name}.json").exists()
    (results / f"{spec.name}.claim").unlink()
    assert run_study([spec], tmp_path / "runs", results) == [spec.name]
    assert json.loads((results / f"{spec.name}.json").read_text())["variant"] == "claimed"
    assert not (results / f"{spec.name}.claim").exists()  # released after the run


def test_two_specs_with_one_name_are_refused(tmp_path):
    spec = StudyRun("g", "x", "synthetic-toy", TINY)
    with pytest.raises(ValueError, match="share the names"):
        run_study([spec, spec], tmp_path / "runs", tmp_path / "results")


def _load_tables_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "studies" / "tables.py"
    spec = importlib.util.spec_from_file_location("study_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reports_tables_are_those_of_the_committed_results():
    tables = _load_tables_script()
    readme = tables.README.read_text()
    assert tables.render(readme, tables.load_studies()) == readme, (
        "studies/README.md's tables differ from studies/results: run python studies/tables.py")


def test_study_tables_order_numbers_as_numbers_and_add_the_comparisons_runs_as_rows():
    tables = _load_tables_script()
    names = ["n_bits=256", "n_bits=32", "beta=0.3", "n_bits=128", "beta=0", "beta=1"]
    assert sorted(names, key=tables._natural_key) == [
        "beta=0", "beta=0.3", "beta=1", "n_bits=32", "n_bits=128", "n_bits=256"]
    runs = [{"group": "comparison", "variant": "BITS-fixed", "seed": s,
             "eval": {"knn20_top1": v}, "train_seconds": 1.0} for s, v in ((0, 0.5), (1, 0.7))]
    runs.append({"group": "beta", "variant": "beta=0", "seed": 0, "eval": {"knn20_top1": 0.4},
                 "train_seconds": 1.0})
    table = tables.group_table(runs, "beta", ("knn20_top1",),
                               bases={"BITS-fixed": "beta=0.1 (BITS-fixed)"})
    rows = [line for line in table.splitlines() if line.startswith("| beta")]
    assert rows[0].startswith("| beta=0 | 0 | 0.400 |")
    assert rows[1].startswith("| beta=0.1 (BITS-fixed) | 0, 1 | 0.600 ± 0.141 |")


def test_paired_difference_is_the_t_interval_of_the_seedwise_differences():
    a = {0: 0.553, 1: 0.540, 2: 0.549, 3: 0.1}
    b = {0: 0.555, 1: 0.544, 2: 0.546}  # seed 3 has no partner: left out
    mean, half, n = paired_difference(a, b)
    diffs = [-0.002, -0.004, 0.003]
    assert n == 3 and mean == pytest.approx(statistics.mean(diffs))
    # t(0.975, 2) = 4.3027 (tables), times the standard error of the mean difference
    assert half == pytest.approx(4.3027 * statistics.stdev(diffs) / math.sqrt(3), rel=1e-4)
    assert math.isnan(paired_difference({0: 1.0}, {0: 0.5})[1])


def test_a_difference_is_quoted_with_its_seeds_and_no_interval_from_one_seed():
    assert difference_text(paired_difference({0: 0.56, 1: 0.54}, {0: 0.55, 1: 0.55})) == (
        "+0.000 ± 0.127 (2 seeds)")  # t(0.975, 1) = 12.706 times the std 0.0141 over sqrt 2
    assert difference_text(paired_difference({0: 0.56}, {0: 0.55})) == (
        "+0.010 (1 seed: no interval)")
    assert difference_text(paired_difference({1: 0.56}, {0: 0.55})) == "not measured"
    assert value_text(mean_std([0.54, 0.56])) == "0.550 ± 0.014 (2 seeds)"  # sample std
    assert value_text(mean_std([0.475])) == "0.475 (1 seed)"
    assert value_text(mean_std([])) == "not measured"


# ---- the study runner as a batch (issues 23, 25) -------------------------------------------------
def _train_losses(result: dict) -> list[float]:
    return [r["loss"] for r in result["records"] if r["kind"] == "train"]


@pytest.mark.slow
def test_a_study_through_submitit_gives_the_local_pools_results(tmp_path):
    specs = [StudyRun("g", "a", "synthetic-toy", TINY, kind="curve"),
             StudyRun("g", "b", "synthetic-toy", {**TINY, "n_bits": 16}, kind="curve")]
    assert run_study(specs, tmp_path / "runs-local", tmp_path / "local", jobs=2) == [
        s.name for s in specs]
    assert run_study(specs, tmp_path / "runs-submitit", tmp_path / "submitit",
                     executor=Executor("submitit-local")) == [s.name for s in specs]
    local = {r["name"]: r for r in load_results(tmp_path / "local")}
    submitted = {r["name"]: r for r in load_results(tmp_path / "submitit")}
    for spec in specs:
        assert _train_losses(submitted[spec.name]) == _train_losses(local[spec.name])
    jobs = tmp_path / "runs-submitit" / "jobs"
    assert {r["status"] for r in map(json.loads, (p.read_text() for p in jobs.glob("g__*.json")))
            } == {"ok"}
    assert list((jobs / "submitit").glob("*_log.err"))  # submitit's logs beside the records


@pytest.mark.slow
def test_a_claim_left_by_a_killed_study_run_is_taken_over(tmp_path, capfd):
    import subprocess
    import sys

    spec = StudyRun("g", "left", "synthetic-toy", TINY, kind="curve")
    results = tmp_path / "results"
    results.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (results / f"{spec.name}.claim").write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "started": "earlier"}))
    assert run_study([spec], tmp_path / "runs", results) == [spec.name]  # not skipped forever
    assert not (results / f"{spec.name}.claim").exists()
    # A claim from another host is never taken for stale: that spec is skipped, saying by whom.
    other = StudyRun("g", "elsewhere", "synthetic-toy", TINY, kind="curve")
    (results / f"{other.name}.claim").write_text(json.dumps({"pid": 1, "host": "node7"}))
    capfd.readouterr()
    assert run_study([other], tmp_path / "runs", results) == []
    assert (f"skipped {other.name}: the study run {other.name} is held by process 1 on node7"
            in capfd.readouterr().out)


STUDY_SCRIPT = """
import sys
from pathlib import Path
from discomm_lite.teach.study import StudyRun
from discomm_lite.teach.study_cli import study_main
TINY = {tiny!r}
GROUPS = {{"g": lambda: [StudyRun("g", "long", "synthetic-toy", {{**TINY, "epochs": 12}},
                                  kind="curve")]}}
raise SystemExit(study_main(GROUPS, description="a test study", results=Path(sys.argv[1]),
                            runs_root=Path(sys.argv[2]), argv=sys.argv[3:]))
"""


@pytest.mark.slow
def test_sigterm_to_the_study_runner_releases_its_claim_and_the_next_run_resumes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "study.py"
    script.write_text(STUDY_SCRIPT.format(tiny=TINY))
    results, runs = tmp_path / "results", tmp_path / "runs"
    name = "g__long__seed0"
    command = [sys.executable, str(script), str(results), str(runs)]
    runner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = runs / name / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().count('"train"') >= 4):
        assert time.monotonic() < deadline, "the study never trained"
        time.sleep(0.1)
    runner.send_signal(signal.SIGTERM)
    _, err = runner.communicate(timeout=120)
    assert runner.returncode == 143
    assert err.strip().splitlines()[-1].startswith("interrupted: the study stopped (SIGTERM)")
    assert not (results / f"{name}.claim").exists()  # released: the next run takes the spec
    assert (runs / name / "checkpoint.pt").exists()
    status = subprocess.run([*command, "--status"], capture_output=True, text=True, check=True)
    assert status.stdout.startswith(f"interrupted {name}  stopped by SIGTERM: Training stopped")
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    (result,) = load_results(results)
    assert [r["step"] for r in result["records"] if r["kind"] == "train"] == list(range(1, 49))


def test_both_study_scripts_share_one_command_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    studies = Path(__file__).resolve().parents[1] / "studies"

    def script(name, *args):
        return subprocess.run([sys.executable, str(studies / name), *args], cwd=studies,
                              capture_output=True, text=True, timeout=300)

    listed = script("cpu_recipe.py", "--groups", "floor", "--list")
    assert listed.returncode == 0 and listed.stdout.count("floor__random_init__seed") == 3
    for name in ("cpu_recipe.py", "resets.py"):
        assert "--executor {local,slurm,submitit-local}" in script(name, "--help").stdout
    checked = script("resets.py", "--verify", "--results", str(tmp_path))
    assert checked.returncode == 0 and "0 results checked" in checked.stdout
    ignored = script("resets.py", "--slurm-partition", "gpu", "--results", str(tmp_path),
                     "--runs-root", str(tmp_path / "runs"))
    assert ignored.returncode == 2
    assert ignored.stderr == ("error: --slurm-partition applies to --executor slurm or "
                              "submitit-local; these runs go to this machine's processes.\n")
    assert not (tmp_path / "runs").exists()
