"""The command line: every bad value gets its one-line message, every library error a non-zero
exit status and one line on stderr (--debug: the traceback) (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from discomm_lite.api import train
from discomm_lite.cli import build_parser, main
from discomm_lite.config import make_config
from discomm_lite.evaluation import suite
from discomm_lite.method import losses
from discomm_lite.training import checkpoint

TINY = ["--preset", "synthetic-toy", "--train_subset", "128", "--test_subset", "64",
        "--batch_size", "64", "--n_bits", "8", "--head_hidden_dim", "16", "--epochs", "1",
        "--eval_every", "0"]


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `python -m discomm_lite *argv`, in this process; stderr
    without the progress bars (which a carriage return clears)."""
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's refusals
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err.split("\r")[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run's checkpoint."""
    out = tmp_path_factory.mktemp("cli") / "run"
    train(make_config("synthetic-toy", train_subset=128, test_subset=64, batch_size=64, n_bits=8,
                      head_hidden_dim=16, epochs=1, eval_every=0, out_dir=str(out)),
          progress=False)
    return out / "checkpoint.pt"


@pytest.mark.parametrize("argv,message", [
    (["train", "--out", ""], "argument --out: an empty path names nothing"),
    (["train", "--out", "x", "--max-steps", "-1"], "argument --max-steps: takes an integer >= 1, "
                                                   "got -1"),
    (["train", "--out", "x", "--max-steps", "0"], "takes an integer >= 1, got 0"),
    (["train", "--out", "x", "--n_bit", "64"], "unrecognized arguments: --n_bit 64"),
    (["train", "--out", "x", "--epoch", "2"], "unrecognized arguments: --epoch 2"),
    (["train", "--ou", "x"], "the following arguments are required: --out"),
    (["evaluate", "--checkpoint", "c.pt", "--retrieval-k", "0"], "argument --retrieval-k: takes "
                                                                 "an integer >= 1, got 0"),
    (["evaluate", "--checkpoint", "c.pt", "--dino-linear-epochs", "-2"], "takes an integer >= 0"),
    (["evaluate", "--checkpoint", "c.pt", "--test-subset", "-1"], "takes an integer >= 0"),
    (["sweep", "nb.ipynb", "--grid", "n_bits=8", "--out", "o", "--jobs", "0"], "argument --jobs: "
                                                                               "takes an integer "
                                                                               ">= 1, got 0"),
])
def test_no_op_and_abbreviated_options_are_refused_by_the_parser(argv, message, capsys):
    status, _, err = run_cli(argv, capsys)
    assert status == 2
    assert message in err


@pytest.mark.parametrize("option,value,message", [
    ("--lr", "inf", "Config.lr = inf is not valid: it must be a finite number."),
    ("--eps", "inf", "Config.eps = inf is not valid: it must be a finite number."),
    ("--coding_rate_weight", "inf", "Config.coding_rate_weight = inf is not valid"),
    ("--epochs", "2.5", "--epochs takes a value of type int, got '2.5'."),
    ("--n_bits", "100000", "coding-rate K x K matrices 596.0 GiB"),  # 8 K^2 G floats
    ("--device", "tpu", "Config.device = 'tpu' is not valid"),
])
def test_bad_training_values_get_one_line_each_before_anything_runs(tmp_path, option, value,
                                                                    message, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a GPU machine
    status, out, err = run_cli(["train", "--out", str(tmp_path / "run"), *TINY, option, value],
                               capsys)
    assert status == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()  # refused before the run folder is touched


def test_a_sweep_parameter_that_is_no_config_field_is_a_message(capsys):
    status, _, err = run_cli(["sweep", "nb.ipynb", "--grid", "n_bits=8", "--out", "o", "-p",
                              "nope", "1"], capsys)
    assert status == 2
    assert err == "error: 'nope' is not a Config field: --grid and -p take Config fields (see " \
                  "python -m discomm_lite train --help).\n"


@pytest.mark.parametrize("device,message", [
    ("bogus", "device = 'bogus' is not a device: use auto, cpu, cuda or cuda:N."),
    ("cuda:7", "this machine has no CUDA GPU"),
])
def test_a_device_that_does_not_exist_is_a_message(trained, device, message, capsys,
                                                   monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status, _, err = run_cli(["evaluate", "--checkpoint", str(trained), "--device", device],
                             capsys)
    assert status == 2 and message in err and err.count("\n") == 1


@pytest.mark.slow
def test_library_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys,
                                                                   monkeypatch):
    real = losses.bits_loss

    def nan_loss(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        return loss * float("nan"), parts

    monkeypatch.setattr(losses, "bits_loss", nan_loss)
    argv = ["train", "--out", str(tmp_path / "run"), *TINY, "--log_every", "1"]
    status, out, err = run_cli(argv, capsys)
    assert status == 1 and out == ""
    assert err.startswith("error: The loss is not finite at step 1") and err.count("\n") == 1
    status, _, err = run_cli([*argv[:1], "--debug", *argv[1:]], capsys)
    assert status == 1 and "Traceback (most recent call last)" in err
    assert "NonFiniteLossError" in err and err.splitlines()[-1].startswith("error: The loss")


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_is_one_line(tmp_path, capsys, monkeypatch):
    def full_disk(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    status, _, err = run_cli(["train", "--out", str(tmp_path / "run"), *TINY], capsys)
    assert status == 1 and err.count("\n") == 1
    assert err.startswith(f"error: Cannot write the checkpoint {tmp_path / 'run'}/checkpoint.pt "
                          "([enforce fail")
    assert "free some space" in err


def test_an_unexpected_error_names_its_type_and_points_to_debug(trained, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(suite, "load_checkpoint", broken)
    status, _, err = run_cli(["evaluate", "--checkpoint", str(trained)], capsys)
    assert status == 1
    assert err == "error: KeyError: 'surprise' (run again with --debug for the traceback)\n"


def test_paths_are_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    args = build_parser().parse_args(["train", "--out", "~/runs/a"])
    assert args.out == f"{tmp_path}/runs/a"
    args = build_parser().parse_args(["evaluate", "--checkpoint", "~/c.pt", "--retrieval-root",
                                      "~/split", "--data-root", "~/data"])
    assert (args.checkpoint, args.retrieval_root, args.data_root) == (
        f"{tmp_path}/c.pt", f"{tmp_path}/split", f"{tmp_path}/data")


# ---- evaluate: one file per evaluation, written atomically, printed when it cannot be ---------


@pytest.mark.slow
def test_evaluations_with_other_options_go_to_files_of_their_own(trained, capsys):
    default = trained.with_suffix(".eval.json")
    subsets = trained.with_suffix(".eval-train_subset=64,test_subset=32,retrieval_k=5.json")
    assert run_cli(["evaluate", "--checkpoint", str(trained)], capsys)[0] == 0
    status, out, _ = run_cli(["evaluate", "--checkpoint", str(trained), "--train-subset", "64",
                              "--test-subset", "32", "--retrieval-k", "5"], capsys)
    assert status == 0
    first, second = json.loads(default.read_text()), json.loads(subsets.read_text())
    assert json.loads(out) == second  # what is printed is what is written
    assert first["options"] == {"dataset": "synthetic", "data_root": None, "train_subset": 128,
                                "test_subset": 64, "retrieval_k": None, "retrieval_root": None,
                                "dino_linear_epochs": 0}
    assert second["options"] == {**first["options"], "train_subset": 64, "test_subset": 32,
                                 "retrieval_k": 5}
    # The same evaluation again replaces its own file; one with other options under the same
    # name (another data root) is kept, and the new one goes beside it.
    assert run_cli(["evaluate", "--checkpoint", str(trained)], capsys)[0] == 0
    assert json.loads(default.read_text())["options"] == first["options"]
    status, _, err = run_cli(["evaluate", "--checkpoint", str(trained), "--data-root",
                              str(trained.parent)], capsys)
    assert status == 0 and "holds an evaluation with other options" in err
    assert json.loads(default.read_text())["options"] == first["options"]
    beside = json.loads(trained.with_suffix(".eval.2.json").read_text())
    assert beside["options"]["data_root"] == str(trained.parent)


@pytest.mark.slow
def test_an_evaluation_that_cannot_be_written_is_printed_with_a_warning(trained, capsys,
                                                                        monkeypatch):
    def read_only(path, write):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(suite, "atomic_write", read_only)
    status, out, err = run_cli(["evaluate", "--checkpoint", str(trained), "--test-subset", "16"],
                               capsys)
    assert status == 0
    assert json.loads(out)["options"]["test_subset"] == 16  # the result, printed
    assert err.startswith("warning: The evaluation was not saved: cannot write ")
    assert "Permission denied" in err
