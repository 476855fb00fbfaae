"""The tiny run the tests share (`from tinyrun import tiny_config`).

Not in conftest.py: `pytest --nbval-lax tests notebooks` collects notebooks/conftest.py too, and
an import of "conftest" from a test can find that one instead.
"""

from __future__ import annotations

from pathlib import Path

from discomm_lite.config import Config, make_config

# The tiny run: the quickstart's data, 128 images in 2 steps of 64, 8 bits, one epoch; a second
# or two on 2 CPU cores.
TINY = dict(train_subset=128, test_subset=64, batch_size=64, n_bits=8, head_hidden_dim=16,
            epochs=1, warmup_epochs=0, eval_every=0, log_every=1, device="cpu")


def tiny_config(out_dir: str | Path | None = None, **changes) -> Config:
    """The tiny run (`TINY` on the synthetic-toy preset) with `changes`, writing to `out_dir`."""
    return make_config("synthetic-toy", **{**TINY, "out_dir": None if out_dir is None
                                           else str(out_dir), **changes})
