"""Notebooks 05 and 07 as a student without a GPU or without ImageNet runs them: outside the
smoke setting, on no GPU. 05 shows what needs no GPU (published peers, the suite's CPU study) and
then refuses to train; 07 prints its torchrun commands and the smoke setting, then says there is
nothing to launch, and ends without a run folder."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from discomm_lite.teach.gpu_stage import LIGHTLY_CIFAR10

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def _execute(name: str, tmp_path: Path, **parameters):
    import papermill

    output = tmp_path / f"{name}.ipynb"
    env = {"DISCOMM_SMOKE": "0", "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")])),
           "CUDA_VISIBLE_DEVICES": ""}  # no GPU, whatever this machine has
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(output),
                                   parameters={"out_dir": str(tmp_path / "run"), **parameters},
                                   cwd=str(NOTEBOOKS), kernel_name="python3",
                                   progress_bar=False)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nbformat.read(output, as_version=4)


def _text(nb) -> str:
    return "\n".join(out.get("text", "") + "".join(
        str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
        for cell in nb.cells for out in cell.get("outputs", []))


@pytest.mark.slow
def test_05_without_a_gpu_shows_what_it_can_then_refuses_to_train(tmp_path):
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as refused:
        _execute("05_full_cifar_gpu", tmp_path)
    assert refused.value.ename == "NeedsGPUError"
    assert "allow_cpu = True" in refused.value.evalue
    assert not (tmp_path / "run").exists()  # nothing trained, no run folder
    nb = nbformat.read(tmp_path / "05_full_cifar_gpu.ipynb", as_version=4)
    shown = _text(nb)
    assert "(published)" in shown and LIGHTLY_CIFAR10.url in shown  # section 1
    assert "BITS-fixed" in shown and "random init" in shown  # section 2, the CPU study


@pytest.mark.slow
def test_07_without_imagenet_prints_the_commands_then_says_there_is_nothing_to_run(tmp_path):
    nb = _execute("07_imagenet", tmp_path, data_root=str(tmp_path / "no-imagenet"))
    shown = _text(nb)
    commands = shown.index("torchrun --standalone --nproc_per_node=gpu")
    assert commands < shown.index("--nnodes=2") < shown.index("No dataset here")
    assert "The smoke setting (DISCOMM_SMOKE=1" in shown
    assert shown.index("The smoke setting") < shown.index("No dataset here")
    assert not (tmp_path / "run").exists()  # nothing launched, no run folder
    assert "(published)" in shown  # the summary's expected results
