"""pytest settings for the notebooks under nbval (`pytest --nbval-lax notebooks`).

Set at import, so the kernels nbval starts inherit them: the smoke setting (every notebook runs
in seconds), a headless matplotlib backend, the offline CIFAR-10 copy beside the checkout, and an
import path to this checkout's library (kernels start in notebooks/, where `discomm_lite` is not
importable unless the package is installed).
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

os.environ["DISCOMM_SMOKE"] = "1"
os.environ["MPLBACKEND"] = "Agg"

_SHARED_DATA = REPO.parent / "shared" / "data"
if not os.environ.get("DISCOMM_DATA") and _SHARED_DATA.is_dir():
    os.environ["DISCOMM_DATA"] = str(_SHARED_DATA)

_paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
if str(REPO) not in _paths:
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, _paths)])
