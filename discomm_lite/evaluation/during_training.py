"""The k-NN evaluation a run makes every `eval_every` epochs (`training.engine.train`'s evaluator).

Training takes its evaluation as an argument, so that `training` never imports `evaluation`:
`train(config, evaluator=knn_during_training)` (what `discomm_lite.train`, the CLI and the notebooks
do).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from discomm_lite.config import Config
from discomm_lite.data import ImageFolderDataset, ImageTensorDataset
from discomm_lite.evaluation.features import extract_features
from discomm_lite.evaluation.metrics import evaluate_knn
from discomm_lite.views.pipeline import load_split


def knn_during_training(config: Config, train_set: ImageTensorDataset | ImageFolderDataset,
                        device: torch.device) -> Callable[[nn.Module], dict]:
    """The run's evaluation: weighted k-NN of a backbone's features (DINO's and lightly's k), the
    run's training set as the bank and its test split (`test_subset`) as queries."""
    test_set = load_split(config, "test")

    @torch.no_grad()
    def evaluate(backbone: nn.Module) -> dict:
        bank = extract_features(backbone, train_set, image_size=config.image_size, device=device)
        query = extract_features(backbone, test_set, image_size=config.image_size, device=device)
        return evaluate_knn(bank["feats"], bank["labels"], query["feats"], query["labels"])

    return evaluate
