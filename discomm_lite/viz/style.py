"""What every figure of the notebooks shares: panel size, resolution, colours, arrays in.

The figure helpers (`plots`, `code_plots`, `illustrations`) take data (dicts, lists, tensors or
arrays) and return a new ``matplotlib.figure.Figure``. Figures are built with the object API and
never registered with pyplot: nothing is shown or kept alive behind the caller's back, they work
under any backend (Agg included), a notebook displays one returned as a cell's last expression,
and ``fig.savefig(path)`` writes it.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

PANEL = 4.0  # inches per panel side
DPI = 80  # a modest resolution keeps the executed notebooks (and the repository) light


def as_numpy(x) -> np.ndarray:
    """A tensor (any device) or array-like as a NumPy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def distinct_colours(n: int) -> list:
    """n distinguishable colours: tab10 or tab20 when they suffice, else a continuous map."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](i / (n - 1)) for i in range(n)]
