"""`train` as the CLI, the notebooks and `discomm_lite.train` run it: with its k-NN evaluation.

`training.engine.train` takes its in-loop evaluation as an argument so that training imports no
evaluation code; this is the one place that joins them.
"""

from __future__ import annotations

from discomm_lite.config import Config
from discomm_lite.evaluation.during_training import knn_during_training
from discomm_lite.training import engine


def train(config: Config, **kwargs) -> engine.Run:
    """`training.engine.train(config, **kwargs)` with the k-NN evaluation every `eval_every`
    epochs (`evaluation.during_training.knn_during_training`) unless `evaluator` is given."""
    kwargs.setdefault("evaluator", knn_during_training)
    return engine.train(config, **kwargs)
