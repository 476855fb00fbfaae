"""pytest settings for the notebooks under nbval (`pytest --nbval-lax notebooks`).

Set at import, so the kernels nbval starts inherit them: the smoke setting (every notebook runs
in seconds, and a missing CIFAR-10 is replaced by the library's small stand-in, so nothing beside
the checkout is needed), a headless matplotlib backend, one OpenMP thread per process, and an
import path to this checkout's library (kernels start in notebooks/, where `discomm_lite` is not
importable unless the package is installed). The real CIFAR-10 is used only when DISCOMM_DATA
points at a copy.

One thread, unless OMP_NUM_THREADS is already set: on a small shared machine (2 cores in CI),
processes with several busy-waiting OpenMP threads stall each other — scikit-learn's t-SNE of 128
codes took 25-60 s instead of 2 s, and a smoke notebook twice as long, under a load of 4-5.

A notebook's cells share one kernel, so once a cell fails the later ones would fail too (a
cascade of NameErrors): they are skipped instead, and a broken notebook reports one failure.
nbval has no option for this (nbval issue #145).
"""

import os
from pathlib import Path

import pytest
from nbval.plugin import IPyNbCell

REPO = Path(__file__).resolve().parent.parent

os.environ["DISCOMM_SMOKE"] = "1"
os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("OMP_NUM_THREADS", "1")

_paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
if str(REPO) not in _paths:
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, _paths)])

_FAILED_CELL = pytest.StashKey[str]()  # on a notebook: the name of its cell that failed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and isinstance(item, IPyNbCell):
        item.parent.stash.setdefault(_FAILED_CELL, item.name)
    return report


def pytest_runtest_setup(item: pytest.Item) -> None:
    if isinstance(item, IPyNbCell) and _FAILED_CELL in item.parent.stash:
        pytest.skip(f"{item.parent.stash[_FAILED_CELL]} of this notebook failed; the cells "
                    "after it are not run (they share its kernel)")
