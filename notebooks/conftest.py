"""pytest settings for the notebooks under nbval (`pytest --nbval-lax notebooks`).

Set at import, so the kernels nbval starts inherit them: the smoke setting (every notebook runs
in seconds), a headless matplotlib backend, one OpenMP thread per process, the offline CIFAR-10
copy beside the checkout, and an import path to this checkout's library (kernels start in
notebooks/, where `discomm_lite` is not importable unless the package is installed).

One thread, unless OMP_NUM_THREADS is already set: on a small shared machine (2 cores in CI),
processes with several busy-waiting OpenMP threads stall each other — scikit-learn's t-SNE of 128
codes took 25-60 s instead of 2 s, and a smoke notebook twice as long, under a load of 4-5.
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

os.environ["DISCOMM_SMOKE"] = "1"
os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("OMP_NUM_THREADS", "1")

_SHARED_DATA = REPO.parent / "shared" / "data"
if not os.environ.get("DISCOMM_DATA") and _SHARED_DATA.is_dir():
    os.environ["DISCOMM_DATA"] = str(_SHARED_DATA)

_paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
if str(REPO) not in _paths:
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, _paths)])
