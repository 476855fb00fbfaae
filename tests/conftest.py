"""What the tests share: one small
trained checkpoint per session, and the rule that keeps the fast tier fast.

The rule: a test that trains (runs a step of `training.engine.train`, directly or through a CLI,
a notebook helper or a study) is marked `slow`. In a run that deselects the slow tests
(`pytest tests -m "not slow and not distributed"`), a test that trains without the mark fails,
naming the rule, instead of quietly making the fast tier slower.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tinyrun import tiny_config

from discomm_lite.training import engine


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    """The checkpoint of a finished tiny run, trained once per session (tests using it are slow)."""
    from discomm_lite.api import train

    out = tmp_path_factory.mktemp("trained") / "run"
    train(tiny_config(out), progress=False)
    return out / "checkpoint.pt"


@pytest.fixture(autouse=True)
def _fast_tests_do_not_train(request, monkeypatch):
    if request.node.get_closest_marker("slow") is not None:
        return

    def refused(*args, **kwargs):
        pytest.fail(f"{request.node.nodeid} trains a model but is not marked slow: mark it "
                    "@pytest.mark.slow (tests/conftest.py), so that the fast tier stays fast.")

    monkeypatch.setattr(engine, "train_step", refused)
