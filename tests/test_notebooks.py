"""The notebooks: a parameters cell that papermill can set and that refuses what it does not read,
no logic of their own, questions with answers, outputs that come from a default run of the current
code, one source for their costs, and a headless run.

Every notebook is executed by papermill in its smoke setting (DISCOMM_SMOKE=1, seconds each) with
`out_dir` pointing into a temporary folder, and what it leaves there is checked where it is
stable. Nothing beside the checkout is needed: without CIFAR-10 under $DISCOMM_DATA (else ./data)
the CIFAR notebooks run on the library's stand-in and say so. `pytest --nbval-lax notebooks` runs
them once more under nbval (see notebooks/conftest.py), skipping a notebook's cells after the
first that fails.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from discomm_lite.config import field_names
from discomm_lite.teach.papermill import NOTEBOOK_PARAMETERS

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

# The notebooks that need GPUs: committed without outputs, with expected results from a source.
GPU_NOTEBOOKS = {"05_full_cifar_gpu", "07_imagenet"}
# The notebooks with no equations of their own.
WITHOUT_EQUATIONS = {"08_sweep"}
QUESTION = "**Predict, then check ("  # a numbered question
ANSWER = "<details><summary><b>Answer"

# Logic belongs in the library: cells call it and display what it returns. Cells tagged
# "exercise" (under a markdown cell that says "Exercise") may define a function: the student's.
EXERCISE_ALLOWS = {"a function definition"}
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


def load_execute():
    """notebooks/execute.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("execute", NOTEBOOK_DIR / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def test_the_suite_is_complete():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@by_stem(NOTEBOOKS)
def test_parameters_cell_assigns_config_fields_and_notebook_parameters_only(path):
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
    unknown = sorted(set(names) - set(field_names()) - set(NOTEBOOK_PARAMETERS))
    assert not unknown, (f"{path.name}: {unknown} are neither fields of discomm_lite.Config nor "
                         "notebook parameters (discomm_lite.teach.notebook.NOTEBOOK_PARAMETERS)")
    assert len(names) == len(set(names)), f"{path.name}: a parameter is assigned twice"
    # papermill reads each line to list the parameters (`papermill --help-notebook`); a comment
    # it cannot parse hides that parameter and puts a warning in every sweep's output.
    from papermill.translators import PythonTranslator

    assert [p.name for p in PythonTranslator.inspect(cell)] == names, (
        f"{path.name}: papermill cannot parse a line of the parameters cell (quotes or '=' in a "
        "comment?)")
    assert "out_dir" in names, f"{path.name}: out_dir must be a parameter (tests and sweeps set it)"
    following = nb.cells[nb.cells.index(cell) + 1]
    assert following.cell_type == "code"
    # smoke(...) shrinks the run; the lab (03) shrinks only what it trains (smoke_changes)
    assert "config_from_parameters(" in following.source and "globals()" in following.source \
        and ("smoke(" in following.source or "smoke_changes(" in following.source), (
            f"{path.name}: the cell after the parameters must build the config with "
            "smoke(config_from_parameters(PRESET, globals()), ...)")
    assert "make_config(" not in following.source


@by_stem(NOTEBOOKS)
def test_notebook_is_documented(path):
    nb = read(path)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    for heading in ("Learning goals", "Cost", "Hardware", "Data"):
        assert heading in first.source, f"{path.name}: the first cell does not state {heading!r}"
    assert "smoke" in first.source, f"{path.name}: the first cell must state the smoke cost"
    assert any("summary" in c.source.lower() for c in nb.cells if c.cell_type == "markdown"), (
        f"{path.name}: no results summary (a 'Summary' section)")


@by_stem(NOTEBOOKS)
def test_every_notebook_ends_with_take_aways_exercises_and_linked_references(path):
    nb = read(path)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    ending = "\n".join(c.source for c in nb.cells[-3:] if c.cell_type == "markdown")
    for heading in ("## Take-aways", "## Exercises", "## References"):
        assert heading in markdown, f"{path.name}: no {heading!r} section"
    assert "## References" in ending, f"{path.name}: the references come last"
    exercises = re.findall(r"\*\*Exercise \d", markdown)
    solutions = markdown.count("<details><summary><b>Solution")
    assert len(exercises) >= 2 and solutions >= 2, (
        f"{path.name}: {len(exercises)} exercises and {solutions} folded solutions; at least 2 of "
        "each")
    references = markdown[markdown.index("## References"):]
    assert len(re.findall(r"\]\((https?://|\.\./)", references)) >= 2, (
        f"{path.name}: its references must link to what they cite")
    assert not re.search(r"\bissue \d+|#\d{2,}\b", markdown, re.I), (
        f"{path.name}: points to an issue number a student cannot open")


@by_stem(NOTEBOOKS)
def test_questions_with_folded_answers_and_equations(path):
    nb = read(path)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    questions = sum(text.count(QUESTION) for text in markdown)
    # an answer is folded markdown, or a cell that builds it from its outputs (`tables.folded`)
    answers = sum(text.count(ANSWER) for text in markdown) + sum(
        c.source.count("folded(") for c in nb.cells if c.cell_type == "code")
    assert 3 <= questions <= 7, f"{path.name}: {questions} '{QUESTION}' questions, expected 3-7"
    assert answers >= questions, f"{path.name}: {questions} questions but {answers} answers"
    if path.stem not in WITHOUT_EQUATIONS:
        assert any("$" in text for text in markdown), f"{path.name}: no LaTeX equation"
    for i, cell in enumerate(nb.cells):  # an answer comes after the question it answers
        if (cell.cell_type == "markdown" and ANSWER in cell.source) or (
                cell.cell_type == "code" and "folded(" in cell.source):
            before = "".join(c.source for c in nb.cells[:i] if c.cell_type == "markdown")
            # a question may have its reading in prose and its numbers computed below it: each
            # prose answer needs its own question; a computed one, a question before it
            prose = before.count(ANSWER) + (cell.cell_type == "markdown")
            assert before.count(QUESTION) >= max(prose, 1), (
                f"{path.name}, cell {i}: an answer before its question")


@by_stem(NOTEBOOKS)
def test_no_logic_in_cells(path):
    cells = read(path).cells
    for i, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        exercise = "exercise" in tags(cell)
        if exercise:
            assert "Exercise" in cells[i - 1].source, (
                f"{path.name}, cell {i}: an exercise cell must follow a markdown cell that says "
                "'Exercise' and what to do")
        for what, pattern in FORBIDDEN.items():
            if exercise and what in EXERCISE_ALLOWS:
                continue
            assert not pattern.search(cell.source), (
                f"{path.name}, cell {i}: {what} — put it in the library and call it from here")


def literal_parameters(path: Path) -> dict:
    """The values a notebook's parameters cell assigns."""
    body = ast.parse(parameters_cells(read(path))[0].source).body
    return {node.targets[0].id: ast.literal_eval(node.value) for node in body}


def test_the_quickstart_restates_its_preset_and_the_sweep_its_budget():
    """00's default run is the synthetic-toy preset (the study's design "background, colour,
    position, size redrawn", seed 0): a preset changed without the notebook would be undone by
    its parameters cell. 08 sweeps the quickstart at the quickstart's budget."""
    from discomm_lite.config import make_config
    from discomm_lite.teach.study import effective_config

    quickstart = literal_parameters(NOTEBOOK_DIR / "00_quickstart.ipynb")
    stated = make_config("synthetic-toy", **quickstart).replace(out_dir=None)
    assert effective_config(stated.to_dict()) == effective_config(
        make_config("synthetic-toy").to_dict())
    assert literal_parameters(NOTEBOOK_DIR / "08_sweep.ipynb")["epochs"] == quickstart["epochs"]


def test_the_exercise_rule_exempts_only_tagged_cells():
    definition = "def my_bce(s, z):\n    return s"
    assert FORBIDDEN["a function definition"].search(definition)
    assert EXERCISE_ALLOWS == {"a function definition"}  # a backward pass stays forbidden


# ---- executed copies and costs -----------------------------------------------------------------
def test_the_freshness_hash_follows_the_library_code_a_notebook_imports(tmp_path):
    # A copy of the package: editing a module that 01's cells reach (through its imports, and
    # theirs) changes 01's hash, so `check` asks for 01 to be executed again; editing a module
    # they never reach leaves it alone.
    execute = load_execute()
    package = tmp_path / "discomm_lite"
    shutil.copytree(execute.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    nb = read(NOTEBOOK_DIR / "01_binary_channel.ipynb")
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    reached = execute.library_modules(sources, package)
    before = execute.code_hash(nb, package, tmp_path / "no-studies")
    losses = package / "method" / "losses.py"
    assert losses in reached  # 01 shows bits_loss
    losses.write_text(losses.read_text().replace("return loss, parts", "return 2 * loss, parts"))
    assert execute.code_hash(nb, package, tmp_path / "no-studies") != before
    others = sorted(set(package.rglob("*.py")) - set(reached))
    assert others, "every module is reached: nothing to check the other way"
    changed = execute.code_hash(nb, package, tmp_path / "no-studies")
    others[0].write_text(others[0].read_text() + "\n# an edit 01 cannot see\n")
    assert execute.code_hash(nb, package, tmp_path / "no-studies") == changed


def test_outputs_come_from_a_default_run_of_the_current_code_and_costs_agree():
    execute = load_execute()
    assert execute.check() == []
    costs = execute.load_costs()
    for path in NOTEBOOKS:
        nb = read(path)
        record = execute.execution_of(nb)
        if path.stem in GPU_NOTEBOOKS:
            assert record is None and "Expected results" in nb.cells[0].source, (
                f"{path.name}: a GPU notebook states its expected results and their source")
            continue
        if record is None:
            continue  # not executed yet: no outputs at all (check() says so otherwise)
        assert "default" in costs[path.stem], f"{path.name}: executed but its cost is not kept"
        note = [c for c in nb.cells if execute.NOTE_TAG in tags(c)]
        assert [c.source for c in note] == [execute.execution_note(record)]
        last_code = [c for c in nb.cells if c.cell_type == "code"][-1]
        assert last_code.outputs, f"{path.name}: the summary cell of the executed copy is empty"
        assert "<!-- from-run:" not in "".join(c.source for c in nb.cells), (
            f"{path.name}: executed, but its prose still has numbers to fill from the run")
        for cell in nb.cells:  # small images keep the repository light
            for out in cell.get("outputs", []):
                assert len(out.get("data", {}).get("image/png", "")) < 200_000, path.name


def test_a_notebook_whose_code_changed_must_be_re_executed(tmp_path, monkeypatch):
    execute = load_execute()
    executed = [p for p in NOTEBOOKS if execute.execution_of(read(p))]
    assert executed, "no notebook is committed with the outputs of a default run"
    copy = tmp_path / executed[0].name
    nb = read(executed[0])
    next(c for c in nb.cells if c.cell_type == "code").source += "\n# edited"
    nbformat.write(nb, copy)
    shutil.copy(NOTEBOOK_DIR / "costs.json", tmp_path / "costs.json")
    monkeypatch.setattr(execute, "HERE", tmp_path)
    monkeypatch.setattr(execute, "COSTS", tmp_path / "costs.json")
    problems = execute.check()
    assert f"re-run notebooks/execute.py {executed[0].stem}" in " ".join(problems)
    nb.cells[-1].outputs = []  # outputs without a record of their run are refused too
    del nb.metadata["discomm_execution"]
    nbformat.write(nb, copy)
    assert any("no default run" in p for p in execute.check())


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
    assert "views (the study's precomputed runs, 2 seeds)" in output_text(nb)  # section 8


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
    # Every setting the notebook reads is in the studies' grids: nothing trains, even in smoke.
    assert not cached_run_dirs(run)
    text = output_text(nb)
    assert "k-NN@20 by capacity" in text and "Paired differences from it" in text
    figures = [out for c in nb.cells for out in c.get("outputs", [])
               if "image/png" in out.get("data", {})]
    assert len(figures) >= 4  # heat maps, the reset figure, the two axes figures


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
    # The control: the same budget on the same target, from random initialisation.
    (control,) = cached_run_dirs(run / "control")
    control_config = json.loads((control / "config.json").read_text())
    assert control_config["pretrained"] is None and not control_config["reinit_at_start"]
    same = {k: v for k, v in config.items() if k not in ("pretrained", "reinit_at_start",
                                                        "out_dir")}
    assert all(control_config[k] == v for k, v in same.items())
    assert "adaptation's margin (adapted - control)" in output_text(nb)


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


@pytest.mark.slow
def test_a_parameter_the_notebook_does_not_read_is_refused(tmp_path, smoke_env):
    from papermill.exceptions import PapermillExecutionError

    path = NOTEBOOK_DIR / "01_binary_channel.ipynb"
    with pytest.raises(PapermillExecutionError) as typo:
        execute(path, tmp_path, n_bit=64)  # a typo of n_bits
    assert typo.value.ename == "ValueError" and "'n_bit'" in typo.value.evalue
    with pytest.raises(PapermillExecutionError) as unread:
        execute(path, tmp_path, lr=0.1)  # a Config field 01 never reads
    assert "'lr'" in unread.value.evalue and "parameters cell does not assign" in (
        unread.value.evalue)
    # A parameter the notebook reads, and the switch of 07 that is not a Config field.
    assert "K = 8 bits" in output_text(execute(path, tmp_path, n_bits=8))


def test_a_sweep_over_a_name_the_notebook_does_not_read_is_refused(tmp_path):
    from discomm_lite.teach.sweep import run_sweep

    with pytest.raises(ValueError, match=r"\['lr'\] for 00_quickstart.ipynb"):
        run_sweep(NOTEBOOK_DIR / "00_quickstart.ipynb", {"lr": [1e-3, 1e-2]}, tmp_path / "out")
    with pytest.raises(ValueError, match=r"\['grid'\] for 03_ablation_lab.ipynb"):
        run_sweep(NOTEBOOK_DIR / "03_ablation_lab.ipynb", {"grid": [{}]}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


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


def test_the_knobs_the_issue_named_are_settable_by_papermill():
    settable = {path.stem: set(notebook_names(path)) for path in NOTEBOOKS}
    assert {"compile", "head_norm"} <= settable["05_full_cifar_gpu"]
    assert {"compile", "launch_here"} <= settable["07_imagenet"]
    assert {"grid", "jobs"} <= settable["08_sweep"]
    assert "seeds" in settable["03_ablation_lab"]
    for stem in ("00_quickstart", "02_toy_cifar_cpu", "03_ablation_lab", "04_binary_language"):
        assert "head_norm" in settable[stem], stem


def notebook_names(path: Path) -> list[str]:
    from discomm_lite.teach.papermill import notebook_parameters

    return notebook_parameters(path)
