"""The notebooks: a parameters cell of Config fields, no logic of their own, and a headless run.

Every notebook is executed by papermill in its smoke setting (DISCOMM_SMOKE=1, seconds each) with
`out_dir` pointing into a temporary folder, and what it leaves there is checked where it is
stable. Nothing beside the checkout is needed: without CIFAR-10 under $DISCOMM_DATA (else ./data)
the CIFAR notebooks run on the library's stand-in and say so. `pytest --nbval-lax notebooks` runs
them once more under nbval (see notebooks/conftest.py), skipping a notebook's cells after the
first that fails.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from discomm_lite.config import field_names

pytest_plugins = ["pytester"]  # test_nbval_skips_the_cells_after_a_failed_one

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = [
    "00_quickstart", "01_binary_channel", "02_toy_cifar_cpu", "03_ablation_lab",
    "04_binary_language", "05_full_cifar_gpu", "06_domain_shift", "07_imagenet", "08_sweep",
]
# The first words of the note find_data_root prints when a smoke run falls back to the stand-in.
STANDIN_NOTE = "Smoke setting: this run uses a small stand-in for CIFAR-10"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]

# Logic belongs in the library: cells call it and display what it returns.
FORBIDDEN = {
    "a function definition": re.compile(r"^\s*(async\s+)?def\s", re.M),
    "a class definition": re.compile(r"^\s*class\s", re.M),
    "a backward pass": re.compile(r"\.backward\("),
    "an optimiser step": re.compile(r"\.zero_grad\(|\boptimizer\.step\("),
    "torch.nn / torch.optim internals": re.compile(
        r"\btorch\.nn\b|\bfrom torch import\b.*\bnn\b|\btorch\.optim\b"),
}


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def parameters_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]


def by_stem(paths):
    return pytest.mark.parametrize("path", paths, ids=[p.stem for p in paths])


def test_the_suite_is_complete():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@by_stem(NOTEBOOKS)
def test_parameters_cell_assigns_config_fields_only(path):
    nb = read(path)
    cells = parameters_cells(nb)
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged 'parameters', expected 1"
    cell = cells[0]
    assert cell.cell_type == "code"
    names = []
    for node in ast.parse(cell.source).body:
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), (
            f"{path.name}: the parameters cell may only assign names, found {ast.dump(node)[:60]}")
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            assert isinstance(target, ast.Name), f"{path.name}: assign plain names only"
            names.append(target.id)
        ast.literal_eval(node.value)  # papermill can only override literal values
    unknown = sorted(set(names) - set(field_names()))
    assert not unknown, f"{path.name}: {unknown} are not fields of discomm_lite.Config"
    assert len(names) == len(set(names)), f"{path.name}: a parameter is assigned twice"
    assert "out_dir" in names, f"{path.name}: out_dir must be a parameter (tests and sweeps set it)"
    following = nb.cells[nb.cells.index(cell) + 1]
    assert following.cell_type == "code"
    assert "make_config(" in following.source and "smoke(" in following.source, (
        f"{path.name}: the cell after the parameters must build the config with "
        "make_config(...) and smoke(...)")


@by_stem(NOTEBOOKS)
def test_notebook_is_saved_clean_and_documented(path):
    nb = read(path)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: saved with outputs; clear them before committing")
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    for heading in ("Learning goals", "Cost", "Hardware", "Data"):
        assert heading in first.source, f"{path.name}: the first cell does not state {heading!r}"
    assert "smoke" in first.source, f"{path.name}: the first cell must state the smoke cost"
    last_heading = [c for c in nb.cells if c.cell_type == "markdown"][-1]
    assert nb.cells[-1].cell_type == "code" and "summary" in last_heading.source.lower(), (
        f"{path.name}: the notebook must end with a results summary (a 'Summary' section)")


@by_stem(NOTEBOOKS)
def test_no_logic_in_cells(path):
    for i, cell in enumerate(read(path).cells):
        if cell.cell_type != "code":
            continue
        for what, pattern in FORBIDDEN.items():
            assert not pattern.search(cell.source), (
                f"{path.name}, cell {i}: {what} — put it in the library and call it from here")


# ---- headless execution ------------------------------------------------------------------------
@pytest.fixture
def smoke_env(monkeypatch):
    """The environment papermill's kernels inherit: smoke setting, Agg, this checkout.

    One OpenMP thread per process unless set (see notebooks/conftest.py: on a busy 2-core machine
    several spinning threads per process make a smoke notebook 2-5 times slower).
    """
    monkeypatch.setenv("DISCOMM_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), *paths]))


def execute(path: Path, tmp_path: Path, **parameters) -> nbformat.NotebookNode:
    import papermill

    output = tmp_path / path.name
    papermill.execute_notebook(
        str(path), str(output), parameters={"out_dir": str(tmp_path / "run"), **parameters},
        cwd=str(NOTEBOOK_DIR), kernel_name="python3", progress_bar=False)
    return read(output)


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def cached_run_dirs(root: Path) -> list[Path]:
    """Run folders made by `cached_train` under root (one per configuration)."""
    return sorted(p.parent for p in root.glob("*/checkpoint.pt"))


def output_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


def check_00(nb, run):
    summary = json.loads((run / "summary.json").read_text())
    expected = {"train_seconds", "steps", "final_agreement", "final_bit_agreement",
                "knn20_top1", "knn20_top1_random_init", "knn200_top1", "knn200_top1_random_init",
                "linear_top1", "mean_bit_entropy",
                *(f"max_mi_{f}" for f in ("shape", "colour", "size", "position", "background",
                                          "texture"))}
    assert set(summary) == expected
    config = json.loads((run / "config.json").read_text())
    assert summary["steps"] == config["epochs"] * (config["train_subset"] // config["batch_size"])
    for key in ("knn20_top1", "knn20_top1_random_init", "linear_top1", "mean_bit_entropy"):
        assert 0 <= summary[key] <= 1
    assert {"config.json", "metrics.jsonl", "checkpoint.pt"} <= {p.name for p in run.iterdir()}


def check_01(nb, run):
    text = output_text(nb)
    assert "bit agreement across a head reset" in text
    assert not run.exists()  # pure tensors: no run folder


def check_02(nb, run):
    dirs = cached_run_dirs(run)
    (data_root,) = {json.loads((d / "config.json").read_text())["data_root"] for d in dirs}
    # data_root is None here unless find_data_root fell back to the stand-in, and said so.
    assert (data_root is not None) == (STANDIN_NOTE in output_text(nb))
    assert sorted(json.loads((d / "config.json").read_text())["method"] for d in dirs) == [
        "bits", "bits", "dino", "simdino"]
    for d in dirs:
        kinds = [r["kind"] for r in records(d)]
        assert kinds.count("eval") == 2  # smoke: 2 epochs, k-NN after each
    resets = [sum(r["kind"] == "reinit" for r in records(d)) for d in dirs]
    assert sorted(resets) == [0, 0, 0, 1]  # only BITS-reset re-initialises its head


def check_03(nb, run):
    dirs = cached_run_dirs(run)
    assert len(dirs) == 3  # the three default settings
    assert {json.loads((d / "config.json").read_text())["coding_rate_weight"] for d in dirs} == {
        0.0, 0.1}


def check_04(nb, run):
    assert len(cached_run_dirs(run)) == 1
    assert "code mAP" in output_text(nb)


def check_05(nb, run):
    result = json.loads((run / "checkpoint.eval.json").read_text())
    for key in ("knn20_top1", "knn200_top1", "linear_top1", "map_cosine", "map_hamming",
                "effective_dim", "map_vs_bits"):
        assert key in result
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == "cifar10"
    assert (config["data_root"] is not None) == (STANDIN_NOTE in output_text(nb))


def check_06(nb, run):
    (adapted,) = cached_run_dirs(run / "adapted")
    config = json.loads((adapted / "config.json").read_text())
    assert config["dataset"] == "imagefolder" and config["reinit_at_start"]
    assert config["pretrained"].startswith(str(run / "source"))
    first = records(adapted)[0]
    assert first["kind"] == "reinit" and first["step"] == 0
    assert len(list((run / "target" / "train").glob("*/*.png"))) == config["train_subset"]
    assert sorted(p.name for p in (run / "target" / "val").iterdir()) == CIFAR10_CLASSES


def check_07(nb, run):
    steps = [r["step"] for r in records(run) if r["kind"] == "train"]
    assert steps == [1, 2]  # 1 step, interrupted, then resumed to the end
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"] == "vit-tiny/16" and config["dataset"] == "imagefolder"
    assert (run / "checkpoint.eval.json").exists()


def check_08(nb, run):
    summary = json.loads((run / "summary.json").read_text())
    assert [r["status"] for r in summary] == ["ok", "ok"]
    for r in summary:
        folder = run / r["name"]
        assert (folder / "00_quickstart.ipynb").exists()  # one executed notebook per run
        assert (folder / "metrics.jsonl").exists() and r["final_eval"]["kind"] == "eval"
        assert json.loads((folder / "config.json").read_text())["n_bits"] == r["parameters"][
            "n_bits"]


CHECKS = {f.__name__[-2:]: f for f in (check_00, check_01, check_02, check_03, check_04,
                                       check_05, check_06, check_07, check_08)}


@pytest.mark.slow
@by_stem(NOTEBOOKS)
def test_notebook_runs_headless_in_smoke_setting(path, tmp_path, smoke_env):
    nb = execute(path, tmp_path)
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert last.outputs, f"{path.name}: the summary cell displayed nothing"
    CHECKS[path.stem[:2]](nb, tmp_path / "run")


@pytest.mark.slow
def test_missing_dataset_stops_with_the_library_message(tmp_path, smoke_env, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    monkeypatch.setenv("DISCOMM_SMOKE", "0")  # the default setting: no stand-in
    empty = tmp_path / "no-data-here"
    empty.mkdir()
    with pytest.raises(PapermillExecutionError) as failure:
        execute(NOTEBOOK_DIR / "02_toy_cifar_cpu.ipynb", tmp_path, data_root=str(empty))
    assert failure.value.ename == "DatasetNotFoundError"
    for needle in (str(empty), "DISCOMM_DATA", "cifar10-jpeg.tar.gz", "download=True"):
        assert needle in failure.value.evalue
    assert not (tmp_path / "run").exists()  # stopped before anything trained


# ---- nbval: one failure per broken notebook ----------------------------------------------------


def code_notebook(*sources: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in sources],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}})


@pytest.mark.slow
def test_nbval_skips_the_cells_after_a_failed_one(pytester):
    shutil.copy(NOTEBOOK_DIR / "conftest.py", pytester.path / "conftest.py")
    nbformat.write(code_notebook("x = 1", "value = 1 / 0", "print(value)", "print(x)"),
                   pytester.path / "a_broken.ipynb")
    nbformat.write(code_notebook("y = 2", "print(y)"), pytester.path / "b_fine.ipynb")
    args = ["--nbval-lax", "-p", "no:cacheprovider", "-rs"]

    # Without the hook, the cell after the failure fails too, on a NameError.
    bare = pytester.runpytest_subprocess(*args, "--noconftest")
    bare.assert_outcomes(passed=4, failed=2)
    bare.stdout.fnmatch_lines(["*NameError*value*"])

    hooked = pytester.runpytest_subprocess(*args)
    hooked.assert_outcomes(passed=3, failed=1, skipped=2)
    hooked.stdout.fnmatch_lines(["*ZeroDivisionError*",
                                 "SKIPPED*Cell 1 of this notebook failed*"])
    assert "NameError" not in hooked.stdout.str()
