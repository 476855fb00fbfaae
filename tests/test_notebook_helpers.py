"""The helpers the notebooks call: smoke setting and its data, parameters, tables, run cache,
ImageFolder writing, the study's results and the ablation lab."""

import io
import json
import math
import re
from pathlib import Path

import pytest
import torch

from discomm_lite.config import make_config
from discomm_lite.data import DatasetNotFoundError, load_dataset, write_cifar10_standin
from discomm_lite.data.folders import write_image_folder
from discomm_lite.data.synthetic import make_synthetic
from discomm_lite.teach.lab import Lab
from discomm_lite.teach.lab_panel import describe, widget_options
from discomm_lite.teach.notebook import (
    SMOKE_OVERRIDES,
    cached_train,
    find_data_root,
    run_dir,
    smoke,
    smoke_out_dir,
)
from discomm_lite.teach.papermill import (
    NOTEBOOK_PARAMETERS,
    config_from_parameters,
    injected_parameters,
)
from discomm_lite.teach.study_report import factor_information, seed_values, study_table
from discomm_lite.teach.tables import markdown_table, show_source
from discomm_lite.views.pipeline import augmented_views


def test_smoke_shrinks_only_when_asked(monkeypatch):
    config = make_config("cifar-toy")
    monkeypatch.delenv("DISCOMM_SMOKE", raising=False)
    assert smoke(config) is config
    monkeypatch.setenv("DISCOMM_SMOKE", "1")
    small = smoke(config, backbone="convnet-small-gn")
    assert small.epochs == SMOKE_OVERRIDES["epochs"] and small.backbone == "convnet-small-gn"
    assert small.dataset == "cifar10"


def test_find_data_root_stands_in_for_missing_cifar10_only_in_smoke(monkeypatch, tmp_path,
                                                                     capsys):
    monkeypatch.setenv("DISCOMM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DISCOMM_DATA", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.delenv("DISCOMM_SMOKE", raising=False)
    with pytest.raises(DatasetNotFoundError, match="download=True") as missing:
        find_data_root("cifar10", str(empty))
    assert str(empty) in str(missing.value) and "DISCOMM_DATA" in str(missing.value)
    assert not (tmp_path / "cache" / "standin").exists()

    monkeypatch.setenv("DISCOMM_SMOKE", "1")
    with pytest.raises(DatasetNotFoundError):
        find_data_root("cifar100", str(empty))  # the stand-in is CIFAR-10 only
    root = find_data_root("cifar10", str(empty))
    assert root == str(tmp_path / "cache" / "standin")
    note = capsys.readouterr().out
    for needle in ("stand-in for CIFAR-10", root, str(empty), "DISCOMM_DATA", "download=True",
                   "cifar10-jpeg.tar.gz"):
        assert needle in note
    train = load_dataset("cifar10", "train", root)
    assert train.images.shape[1:] == (3, 32, 32) and len(train.classes) == 10

    # Where CIFAR-10 is found, the root is kept as given, in the smoke setting too, silently.
    real = tmp_path / "real"
    write_cifar10_standin(real, train_per_class=1, test_per_class=1)
    assert find_data_root("cifar10", str(real)) == str(real)
    monkeypatch.setenv("DISCOMM_DATA", str(real))
    assert find_data_root("cifar10") is None
    assert find_data_root("synthetic") is None
    assert capsys.readouterr().out == ""


PARAMETERS_CELL = "n_bits = 64  # K\nreinit_every = 0\nout_dir = 'runs/x'\njobs = 2"


def test_parameters_become_the_config_and_typos_are_refused(monkeypatch):
    monkeypatch.delenv("DISCOMM_SMOKE", raising=False)
    namespace = {"n_bits": 32, "reinit_every": 2, "out_dir": None, "torch": torch,
                 "PRESET": "synthetic-toy", "_hidden": 3, "In": [""], "make_config": make_config,
                 "jobs": 2, "grid": {"n_bits": [8]}}
    config = config_from_parameters("synthetic-toy", namespace)
    assert (config.n_bits, config.reinit_every, config.dataset) == (32, 2, "synthetic")
    assert {"jobs", "grid"} <= set(NOTEBOOK_PARAMETERS)  # notebook knobs, not Config fields
    with pytest.raises(ValueError, match=r"\['n_bit'\].*neither fields"):
        config_from_parameters("synthetic-toy", {"n_bit": 32})


def test_a_name_papermill_injected_must_be_a_parameter_of_the_notebook(monkeypatch):
    monkeypatch.delenv("DISCOMM_SMOKE", raising=False)
    # IPython's In: the imports, the parameters cell, papermill's injected cell, this cell.
    history = ["", "import torch", PARAMETERS_CELL, "# Parameters\nn_bits = 32\nlr = 0.1\n",
               "config = config_from_parameters(...)"]
    assert injected_parameters(history) == (["n_bits", "lr"],
                                            ["n_bits", "reinit_every", "out_dir", "jobs"])
    assert injected_parameters(["", "import torch", PARAMETERS_CELL]) == ([], [])
    namespace = {"In": history, "n_bits": 32, "lr": 0.1, "reinit_every": 0, "out_dir": "runs/x",
                 "jobs": 2}
    # lr is a Config field, but this notebook never reads it: it would change nothing.
    with pytest.raises(ValueError, match=r"\['lr'\].*parameters are: n_bits, reinit_every"):
        config_from_parameters("synthetic-toy", namespace)
    history[3] = "# Parameters\nn_bits = 32\n"
    del namespace["lr"]
    assert config_from_parameters("synthetic-toy", namespace).n_bits == 32


LAB_CELL = "n_bits = 128\nseeds = [0, 1]\ngrid = {'n_bits': [32, 64]}\nout_dir = None\njobs = 2"


def papermill_run(cell: str, p: dict[str, str] | None = None, y: str = "") -> dict:
    """A notebook's namespace after its parameters `cell` and the cell papermill injects for
    `-p NAME VALUE` (`p`, as papermill's CLI types it) and `-y YAML`, by papermill's own code."""
    import yaml
    from papermill.cli import _resolve_type
    from papermill.translators import translate_parameters

    given = {**{name: _resolve_type(value) for name, value in (p or {}).items()},
             **(yaml.safe_load(y) if y else {})}
    injected = translate_parameters("python", "python", given, "Parameters")
    namespace: dict = {"In": ["", cell, injected]}
    exec(cell, namespace)
    exec(injected, namespace)
    del namespace["__builtins__"]
    return namespace


@pytest.mark.parametrize("yaml_text,kind", [("n_bits: [16, 32]", "a list"),
                                            ("n_bits: {a: 16}", "a dict")])
def test_a_list_or_dict_for_a_config_field_is_refused_naming_the_field(monkeypatch, yaml_text,
                                                                         kind):
    monkeypatch.delenv("DISCOMM_SMOKE", raising=False)
    namespace = papermill_run(LAB_CELL, y=yaml_text)
    with pytest.raises(ValueError, match=rf"^Config.n_bits was given .* \({kind}\), but a "
                                         rf"notebook run takes one value .*-p n_bits VALUE.*sweep "
                                         rf"NOTEBOOK --grid n_bits=") as info:
        config_from_parameters("cifar-toy", namespace)
    assert ("--grid n_bits=16,32)" if kind == "a list" else "--grid n_bits=V1,V2)") in str(
        info.value)


@pytest.mark.parametrize("given,seeds,grid", [
    ({"p": {"seeds": "[0]"}}, [0], {"n_bits": [32, 64]}),  # papermill -p passes the text "[0]"
    ({"y": "seeds: [0, 2]"}, [0, 2], {"n_bits": [32, 64]}),
    ({"p": {"grid": "{'n_bits': [8, 16]}"}}, [0, 1], {"n_bits": [8, 16]}),
    ({"y": "grid: {n_bits: [8], reinit_every: [0, 2]}"}, [0, 1],
     {"n_bits": [8], "reinit_every": [0, 2]}),
])
def test_list_parameters_of_a_notebook_are_read_from_p_and_y(monkeypatch, given, seeds, grid):
    monkeypatch.delenv("DISCOMM_SMOKE", raising=False)
    namespace = papermill_run(LAB_CELL, **given)
    config = config_from_parameters("cifar-toy", namespace)
    assert (namespace["seeds"], namespace["grid"], config.seed) == (seeds, grid, 0)
    assert Lab(config, seeds=namespace["seeds"]).seeds == tuple(seeds)


def test_every_notebook_parameter_has_a_kind_and_a_syntax():
    from discomm_lite.teach.papermill import _NOTEBOOK_KINDS

    assert set(_NOTEBOOK_KINDS) == set(NOTEBOOK_PARAMETERS)


@pytest.mark.parametrize("name,text,syntax", [
    ("seeds", "[0", "-y 'seeds: [0, 1]'"), ("seeds", "0", "-y 'seeds: [0, 1]'"),
    ("seeds", "['a']", "-y 'seeds: [0, 1]'"), ("grid", "{'n_bit': [8]}", "-y 'grid: {n_bits:"),
    ("jobs", "two", "-p jobs 2"),
])
def test_a_notebook_parameter_of_the_wrong_kind_shows_the_syntax(monkeypatch, name, text,
                                                                 syntax):
    monkeypatch.delenv("DISCOMM_SMOKE", raising=False)
    namespace = papermill_run(LAB_CELL, p={name: text})
    with pytest.raises(ValueError, match=rf"^The notebook parameter {name} = .* is not valid: it "
                                         rf"must be .*With papermill: {re.escape(syntax)}"):
        config_from_parameters("cifar-toy", namespace)
    with pytest.raises(ValueError, match="seeds = '\\[0\\]' must be a non-empty list"):
        Lab(make_config("cifar-toy"), seeds="[0]")


def test_smoke_runs_go_beside_the_notebooks_own_out_dir_not_into_it(monkeypatch):
    namespace = {"In": ["", PARAMETERS_CELL], "n_bits": 64, "reinit_every": 0,
                 "out_dir": "runs/x", "jobs": 2}
    monkeypatch.delenv("DISCOMM_SMOKE", raising=False)
    assert config_from_parameters("synthetic-toy", namespace).out_dir == "runs/x"
    monkeypatch.setenv("DISCOMM_SMOKE", "1")
    assert config_from_parameters("synthetic-toy", namespace).out_dir == "runs/x-smoke"
    assert smoke_out_dir("runs/x/") == "runs/x-smoke"
    # An out_dir given from outside (tests, sweeps) is where the caller looks: kept.
    injected = {**namespace, "out_dir": "/tmp/elsewhere",
                "In": ["", PARAMETERS_CELL, "# Parameters\nout_dir = '/tmp/elsewhere'\n"]}
    assert config_from_parameters("synthetic-toy", injected).out_dir == "/tmp/elsewhere"
    assert config_from_parameters("synthetic-toy", {**namespace, "out_dir": None}).out_dir is None


def test_markdown_table():
    table = markdown_table([["a|b", 0.12345, None, (0.5, 0.25), 3, True, (math.nan, math.nan)]],
                           ["name", "x", "missing", "mean ± std", "n", "ok", "no seeds"], digits=2)
    assert table == ("| name | x | missing | mean ± std | n | ok | no seeds |\n"
                     "|---|---|---|---|---|---|---|\n"
                     "| a\\|b | 0.12 | – | 0.50 ± 0.25 | 3 | True | – |")
    assert table._repr_markdown_() == table
    assert markdown_table({"k": 1.0, "s": "text"}, ["quantity", "value"]) == (
        "| quantity | value |\n|---|---|\n| k | 1.000 |\n| s | text |")
    runs = {"run a": {"acc": 0.5, "map": float("nan")}, "run b": {"acc": 0.25}}
    assert markdown_table(runs, ["run", "acc", "map"], digits=1) == (
        "| run | acc | map |\n|---|---|---|\n| run a | 0.5 | nan |\n| run b | 0.2 | – |")
    with pytest.raises(ValueError, match="2 cells but the header has 3"):
        markdown_table([[1, 2]], ["a", "b", "c"])


def test_run_dir_identifies_the_configuration():
    a, b = make_config("synthetic-toy"), make_config("synthetic-toy", n_bits=8)
    assert run_dir(a) == run_dir(a.replace(out_dir="x")) != run_dir(b)


@pytest.mark.slow
def test_cached_train_returns_the_finished_run(tmp_path):
    config = make_config("synthetic-toy", train_subset=128, batch_size=64, epochs=1,
                         eval_every=0, n_bits=8, head_hidden_dim=32)
    first = cached_train(config, tmp_path, progress=False)
    second = cached_train(config, tmp_path, progress=False)
    assert second.records == first.records
    assert len(list(tmp_path.iterdir())) == 1


def light_backgrounds(images) -> torch.Tensor:
    """(N,) bool: whether each image's top row is light, i.e. shows a light background (the
    object never reaches the top row, and a flip keeps it on top)."""
    return images.float()[:, :, 0].mean((1, 2)) > (0.5 if images.is_floating_point() else 127.5)


def test_augmented_views_are_the_first_batch_and_redraw_the_configured_factors():
    data = make_synthetic(256, seed=5)
    # Without solarisation (which inverts light pixels), brightness and contrast jitter move a
    # background across 0.5 in a few percent of the views.
    cut = make_config("synthetic-toy", redraw_factors="", solarize=False, batch_size=128)
    images, views = augmented_views(cut, data, n=128)
    assert images.dtype == torch.uint8 and images.shape == (128, 3, 32, 32)
    assert [v.shape for v in views] == [(128, 3, 32, 32)] * 2
    image, first, second = (light_backgrounds(x) for x in (images, *views))
    # Views cut from the image shown beside them keep its background; a view of another image
    # would disagree about half of the time.
    assert (image != first).double().mean() < 0.15 and (image != second).double().mean() < 0.15

    redrawn = cut.replace(redraw_factors="background")
    same_images, views = augmented_views(redrawn, data, n=128)
    assert torch.equal(same_images, images)  # the same first batch: the order is the seed's
    first, second = (light_backgrounds(v) for v in views)
    assert 0.3 < (first != second).double().mean() < 0.7  # a background of its own per view
    assert 0.3 < (image != first).double().mean() < 0.7
    again = augmented_views(redrawn, data, n=128)[1]
    assert all(torch.equal(v, w) for v, w in zip(views, again, strict=True))

    with pytest.raises(ValueError, match="batch_size = 128"):
        augmented_views(redrawn, data, n=129)


def test_write_image_folder_round_trips_through_the_imagefolder_loader(tmp_path):
    data = make_synthetic(16, seed=3)
    write_image_folder(data, tmp_path / "train")
    write_image_folder(data, tmp_path / "val")
    loaded = load_dataset("imagefolder", "train", tmp_path)
    assert len(loaded) == 16
    classes = sorted({data.classes[i] for i in data.labels.tolist()})
    assert loaded.classes == classes
    image, label = loaded[0]
    assert image.size == (32, 32) and loaded.classes[label] in classes


# ---- the study's results and the lab ------------------------------------------------------------
def result(config, *, kind="train", variant="v", seed=0, final=None, records=()):
    """A result dict as `teach.study.run_one` writes it (the fields the notebooks read)."""
    return {"name": f"g__{variant}__seed{seed}", "group": "g", "variant": variant, "seed": seed,
            "kind": kind, "overrides": {}, "config": config.to_dict(), "records": list(records),
            "eval": final, "train_seconds": 1.0}


def test_factor_information_is_the_mean_over_the_seeds_that_ran_and_counts_them():
    config = make_config("synthetic-toy")
    results = [result(config.replace(coding_rate_weight=b), seed=s, final={"code_max_mi_shape": v})
               for b, s, v in ((0.1, 0, 0.2), (0.1, 1, 0.4), (0.3, 0, 0.1))]
    (curve,) = factor_information(results, "coding_rate_weight", ["shape"]).values()
    key = "best bit's information (bits)"
    assert [(r["coding_rate_weight"], r[key], r["seeds"]) for r in curve] == [
        (0.1, pytest.approx(0.3), 2), (0.3, 0.1, 1)]


def test_seed_values_and_study_table():
    config = make_config("synthetic-toy")
    results = [result(config, variant="B", seed=1, final={"knn20_top1": 0.7}),
               result(config, variant="A", seed=0, final={"knn20_top1": 0.2}),
               result(config, variant="B", seed=0, final={"knn20_top1": 0.5})]
    assert seed_values(results, ["knn20_top1"]) == {"B": {"knn20_top1": [0.5, 0.7]},
                                                    "A": {"knn20_top1": [0.2]}}
    table = study_table(results, ["knn20_top1"], variants=["A", "B"], label="method")
    std_b = math.sqrt(((0.5 - 0.6) ** 2 + (0.7 - 0.6) ** 2) / 1)  # sample std of two seeds
    assert table == ("| method | seeds | knn20_top1 |\n|---|---|---|\n"
                     "| A | 0 | 0.200 ± 0.000 |\n"
                     f"| B | 0, 1 | 0.600 ± {std_b:.3f} |")


@pytest.fixture
def lab_base(tmp_path):
    return make_config("synthetic-toy", train_subset=64, test_subset=64, batch_size=32, epochs=1,
                       warmup_epochs=0, eval_every=0, log_every=1, n_bits=12, head_hidden_dim=32,
                       out_dir=str(tmp_path / "lab"))


@pytest.mark.slow
def test_lab_uses_the_precomputed_grid_and_trains_the_rest(lab_base, monkeypatch):
    monkeypatch.delenv("DISCOMM_SMOKE", raising=False)
    records = [{"kind": "train", "step": 2, "epoch": 1.0, "coding_rate": 5.0,
                "bit_agreement": 0.7}]
    grid = [result(lab_base.replace(n_bits=16, seed=s, out_dir="/elsewhere", device="cuda"),
                   seed=s, final={"knn20_top1": 0.6 + s / 10, "code_mean_abs_correlation": 0.1},
                   records=records)
            for s in (0, 1)]
    other_base = result(lab_base.replace(n_bits=24, epochs=2), final={"knn20_top1": 0.9})
    floors = [result(lab_base.replace(n_bits=256, seed=s), kind="floor", seed=s,
                     final={"knn20_top1": 0.3 + s / 10}) for s in (0, 1)]
    lab = Lab(lab_base, [*grid, other_base, *floors], seeds=(0, 1), full_evaluation=False)

    assert lab.label({"n_bits": 16}) == "n_bits=16"
    assert lab.label({"n_bits": 12, "coding_rate_weight": 0.1}) == "base"  # the method's beta
    precomputed = lab.runs({"n_bits": 16})
    assert [(r.seed, r.source, r.final["knn20_top1"]) for r in precomputed] == [
        (0, "precomputed", 0.6), (1, "precomputed", 0.7)]
    assert precomputed[0].records == records
    assert lab.floor() == pytest.approx({"knn20_top1": 0.35})  # the floor seeds' mean

    trained = lab.runs({})  # the base itself is not in the grid: trained here, both seeds
    assert [(r.seed, r.source) for r in trained] == [(0, "trained here"), (1, "trained here")]
    for run in trained:
        assert 0 <= run.final["knn20_top1"] <= 1 and "code_mean_abs_correlation" in run.final
    configs = [json.loads(p.read_text()) for p in Path(lab_base.out_dir).glob("*/config.json")]
    assert sorted((c["n_bits"], c["seed"]) for c in configs) == [(12, 0), (12, 1)]
    assert lab.runs({}) is trained  # asked again: the same runs, nothing retrained
    assert list(lab.tried) == ["n_bits=16", "base"]

    table = lab.table()
    assert table.splitlines()[2].startswith("| n_bits=16 | 2 | precomputed | 0.650 ± 0.071 |")
    lab.figure().savefig(io.BytesIO(), format="png")
    options = widget_options(lab, "n_bits")
    assert 12 in options and 16 in options and 24 not in options  # 24: another base's run
    with pytest.raises(ValueError, match="lr"):
        lab.runs({"lr": 0.1})


def test_a_cell_the_studies_ran_with_one_seed_is_shown_with_it_and_nothing_trains(lab_base):
    # Fast tier: a lookup that trained would fail here (tests/conftest.py).
    records = [{"kind": "train", "step": 1, "coding_rate": 5.0},
               {"kind": "eval", "step": 2, "coding_rate": 9.0},
               {"kind": "train", "step": 2, "coding_rate": 7.0}]
    grid = [result(lab_base.replace(n_bits=16, seed=0), final={"knn20_top1": 0.6},
                   records=records)]
    lab = Lab(lab_base, grid, seeds=(0, 1), full_evaluation=False)
    # what the final evaluation lacks is the last training record's
    assert lab.value({"n_bits": 16}, "coding_rate") == (7.0, 0.0, 1)
    (run,) = lab.runs({"n_bits": 16})
    assert (run.seed, run.source) == (0, "precomputed")
    mean, std, n = lab.value({"n_bits": 16}, "knn20_top1")
    assert (mean, std, n) == (0.6, 0.0, 1)  # no spread from one seed
    assert "seeds 0)" in describe(lab, {"n_bits": 16}) and "±" not in describe(lab, {"n_bits": 16})
    assert lab.precomputed({"n_bits": 20}) is None  # no seed ran: off the grid
    # a figure shows what is known and trains nothing (the setting off the grid is left out)
    lab.figure([{"n_bits": 16}, {"n_bits": 20}]).savefig(io.BytesIO(), format="png")
    assert list(lab.tried) == ["n_bits=16"]


@pytest.mark.slow
def test_lab_reads_back_the_full_evaluation_it_saved(lab_base, monkeypatch):
    from discomm_lite.evaluation import suite

    monkeypatch.delenv("DISCOMM_SMOKE", raising=False)
    scored = []  # the sets each evaluation scored: the whole splits, not the run's 64 images

    def evaluate_model(backbone, train_set, test_set, **kwargs):
        scored.append((len(train_set), len(test_set)))
        return {"knn20_top1": 0.25 + len(scored) / 100}

    monkeypatch.setattr(suite, "evaluate_model", evaluate_model)
    first = Lab(lab_base, seeds=(0,)).runs({})[0]
    assert scored == [(4096, 1024)] and first.final["knn20_top1"] == 0.26
    run_folder = next(Path(lab_base.out_dir).iterdir())
    saved = run_folder / "checkpoint.eval-train_subset=0,test_subset=0.json"
    assert json.loads(saved.read_text())["knn20_top1"] == 0.26  # what evaluate_checkpoint wrote

    again = Lab(lab_base, seeds=(0,)).runs({})[0]  # a new session: the file is read back
    assert scored == [(4096, 1024)] and again.final == first.final

    # An evaluation of another copy of the data (the file name does not tell) is not reused.
    other = json.loads(saved.read_text())
    other["options"]["data_root"] = "/another/copy"
    saved.write_text(json.dumps(other))
    with pytest.warns(UserWarning, match="holds an evaluation with other options"):
        third = Lab(lab_base, seeds=(0,)).runs({})[0]
    assert len(scored) == 2 and third.final["knn20_top1"] == 0.27


def test_lab_settings_are_the_grid_and_shrink_in_the_smoke_setting(lab_base, monkeypatch):
    monkeypatch.delenv("DISCOMM_SMOKE", raising=False)
    lab = Lab(lab_base)
    assert lab.settings(n_bits=[8, 16, 32], reinit_every=[0, 2]) == [
        {"n_bits": k, "reinit_every": n} for k in (8, 16, 32) for n in (0, 2)]
    assert lab.full_evaluation and lab.seeds == (0, 1)
    monkeypatch.setenv("DISCOMM_SMOKE", "1")
    lab = Lab(lab_base, seeds=(3, 4))
    assert lab.settings(n_bits=[8, 16, 32], reinit_every=[0, 2]) == [
        {"n_bits": k, "reinit_every": n} for k in (8, 16) for n in (0, 2)]
    assert not lab.full_evaluation and lab.seeds == (3,)


def test_show_source_is_a_markdown_code_block():
    from discomm_lite.method.losses import bce_agreement

    text = show_source(bce_agreement)
    assert text.startswith("```python\ndef bce_agreement(") and text.endswith("\n```")
    assert text._repr_markdown_() == text
