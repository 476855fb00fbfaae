"""The whole evaluation suite in one call: k-NN, linear probe, retrieval, geometry, codes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

from discomm_lite.checkpoint import load_checkpoint
from discomm_lite.config import Config
from discomm_lite.evaluate import evaluate_knn, geometry, linear_probe, map_vs_bits, retrieval_map
from discomm_lite.features import extract_features
from discomm_lite.language import language_summary
from discomm_lite.model import make_model
from discomm_lite.pipeline import load_splits


def evaluate_model(
    backbone: nn.Module,
    train_set,
    test_set,
    *,
    image_size: int,
    head: nn.Module | None = None,
    device: str | torch.device = "cpu",
    retrieval_k: int | None = None,
    linear_epochs: int = 100,
) -> dict:
    """Every paper evaluation of a frozen backbone (and the codes of its head), as plain floats.

    k-NN (DINO k=20 T=0.07 and lightly k=200 T=0.1) and a linear probe train on `train_set`
    features and test on `test_set`; retrieval mAP (mAP@ALL, or mAP@`retrieval_k`) uses the test
    set as its own database, with cosine on features and Hamming distance on the head's codes;
    geometry is the effective dimension and rank of the test features.
    """
    started = time.perf_counter()
    bank = extract_features(backbone, train_set, image_size=image_size, head=head, device=device)
    query = extract_features(backbone, test_set, image_size=image_size, head=head, device=device)
    result: dict = {}
    result.update(evaluate_knn(bank["feats"], bank["labels"], query["feats"], query["labels"]))
    result.update(linear_probe(bank["feats"], bank["labels"], query["feats"], query["labels"],
                               epochs=linear_epochs))
    feature_map = retrieval_map(query["feats"], query["labels"], metric="cosine", k=retrieval_k)
    result["map_cosine"] = feature_map["map"]
    geo = geometry(query["feats"])
    result["effective_dim"] = geo["effective_dim"]
    result["effective_rank"] = geo["effective_rank"]
    if head is not None:
        codes = query["codes"]
        result["map_hamming"] = retrieval_map(codes, query["labels"], metric="hamming",
                                              k=retrieval_k)["map"]
        result["map_vs_bits"] = {str(b): v for b, v in
                                 map_vs_bits(codes, query["labels"], k=retrieval_k).items()}
        result.update({f"code_{k}": v for k, v in language_summary(codes).items()})
    result["eval_seconds"] = time.perf_counter() - started
    return result


def evaluate_checkpoint(
    path: str | Path,
    *,
    dataset: str | None = None,
    data_root: str | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    device: str = "cpu",
    retrieval_k: int | None = None,
    write: bool = True,
) -> dict:
    """Run `evaluate_model` on a checkpoint's teacher and write the result beside it.

    The dataset and subsets default to the checkpoint's own; pass another dataset to measure
    transfer (the teacher's codes are then still those of its head). The file is
    `<checkpoint>.eval.json`, or `<checkpoint>.eval-<dataset>.json` for another dataset.
    """
    path = Path(path)
    payload = load_checkpoint(path)
    config = Config.from_dict(payload["config"])
    model = make_model(config)
    model.load_state_dict(payload["teacher"])
    model.to(device)
    changes = {"dataset": dataset, "data_root": data_root, "train_subset": train_subset,
               "test_subset": test_subset}
    data_config = config.replace(**{k: v for k, v in changes.items() if v is not None})
    train_set, test_set = load_splits(data_config)
    head = model.head if config.method != "dino" else None  # DINO has prototypes, not codes
    result = {"checkpoint": str(path), "dataset": data_config.dataset, "step": payload["step"],
              "method": config.method,
              **evaluate_model(model.backbone, train_set, test_set,
                               image_size=config.image_size, head=head, device=device,
                               retrieval_k=retrieval_k)}
    if write:
        suffix = ".eval.json" if data_config.dataset == config.dataset else \
            f".eval-{data_config.dataset}.json"
        path.with_suffix(suffix).write_text(json.dumps(result, indent=2) + "\n")
    return result
