"""The whole evaluation suite in one call: k-NN, linear probes, retrieval, geometry, codes."""

from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from discomm_lite.atomic import atomic_write
from discomm_lite.config import Config
from discomm_lite.data import ImageFolderDataset
from discomm_lite.distributed import resolve_device
from discomm_lite.evaluation.features import extract_features
from discomm_lite.evaluation.geometry import geometry
from discomm_lite.evaluation.language import bit_factor_mutual_information, language_summary
from discomm_lite.evaluation.metrics import evaluate_knn, map_vs_bits, retrieval_map
from discomm_lite.evaluation.probes import dino_linear_probe, linear_probe
from discomm_lite.method import get_method
from discomm_lite.models.model import make_model
from discomm_lite.training.checkpoint import build_saved_model, load_checkpoint
from discomm_lite.training.rebuild import checkpoint_config
from discomm_lite.views.pipeline import load_splits

SELF_SEARCH = ("self-search: each test image queries the rest of the test set (a proxy; the "
               "paper searches a separate database, the FFPQ retrieval split)")
SPLIT_SEARCH = "query/database split: each query image searches the database set"
LINEAR_PROXY = ("fast proxy: logistic regression on features pre-extracted from un-augmented, "
                "center-cropped images (not DINO's eval_linear.py protocol)")
LINEAR_DINO = ("DINO protocol (eval_linear.py): SGD on random-resized, flipped crops through the "
               "frozen backbone; last-epoch accuracy")


class EvaluationNotSavedWarning(UserWarning):
    """An evaluation could not be written beside its checkpoint; it is only returned."""


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
    retrieval_split: tuple | None = None,
    dino_linear_epochs: int = 0,
) -> dict:
    """Every paper evaluation of a frozen backbone (and the codes of its head), as plain floats.

    k-NN (DINO k=20 T=0.07 and lightly k=200 T=0.1) and the fast linear probe (`linear_top1`,
    logistic regression on pre-extracted features: a proxy, see `evaluate.linear_probe`) train on
    `train_set` features and test on `test_set`. Retrieval mAP (mAP@ALL, or mAP@`retrieval_k`),
    cosine on features (`map_cosine`) and Hamming on the head's codes (`map_hamming`,
    `map_vs_bits`): with `retrieval_split = (query_set, database_set)` the queries search the
    database, the paper's protocol (FFPQ's retrieval split on ImageNet); without, the test set
    searches itself (self-search). Geometry (effective dimension and rank) and the code
    statistics are those of the test set; on a dataset with known factors (synthetic),
    `code_max_mi_<factor>` is the largest mutual information (bits) of one bit with that factor.
    `dino_linear_epochs > 0` adds `linear_dino_top1`, DINO's linear protocol
    (`features.dino_linear_probe`, meant for GPUs). The keys `retrieval_protocol` and
    `linear_protocol` say which protocols the numbers come from.
    """
    started = time.perf_counter()

    def features(dataset) -> dict:
        return extract_features(backbone, dataset, image_size=image_size, head=head,
                                device=device)

    bank, query = features(train_set), features(test_set)
    result: dict = {}
    result.update(evaluate_knn(bank["feats"], bank["labels"], query["feats"], query["labels"]))
    result.update(linear_probe(bank["feats"], bank["labels"], query["feats"], query["labels"],
                               epochs=linear_epochs))
    result["linear_protocol"] = LINEAR_PROXY
    if dino_linear_epochs > 0:
        result.update(dino_linear_probe(backbone, train_set, test_set, image_size=image_size,
                                        epochs=dino_linear_epochs, device=device))
        result["linear_dino_protocol"] = LINEAR_DINO
    if retrieval_split is None:
        searcher, database = query, None
        result["retrieval_protocol"] = SELF_SEARCH
    else:
        searcher, database = (features(dataset) for dataset in retrieval_split)
        result["retrieval_protocol"] = SPLIT_SEARCH
    on_database = {} if database is None else {"database": database["feats"],
                                                "database_labels": database["labels"]}
    result["map_cosine"] = retrieval_map(searcher["feats"], searcher["labels"], **on_database,
                                         metric="cosine", k=retrieval_k)["map"]
    geo = geometry(query["feats"])
    result["effective_dim"] = geo["effective_dim"]
    result["effective_rank"] = geo["effective_rank"]
    if head is not None:
        on_codes = {} if database is None else {"database": database["codes"],
                                                "database_labels": database["labels"]}
        vs_bits = map_vs_bits(searcher["codes"], searcher["labels"], **on_codes, k=retrieval_k)
        # Its entry for all K bits is exactly the Hamming retrieval on the whole code.
        result["map_hamming"] = vs_bits[searcher["codes"].shape[1]]
        result["map_vs_bits"] = {str(b): v for b, v in vs_bits.items()}
        result.update({f"code_{k}": v for k, v in language_summary(query["codes"]).items()})
        if getattr(test_set, "factors", None) is not None:  # synthetic: which factor each bit says
            mi = bit_factor_mutual_information(query["codes"], test_set.factors)  # (K, F)
            result.update({f"code_max_mi_{name}": float(mi[:, f].max())
                           for f, name in enumerate(test_set.factor_names)})
    result["eval_seconds"] = time.perf_counter() - started
    return result


def load_retrieval_split(root: str | Path) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    """The (query, database) sets of a retrieval split: <root>/query/ and <root>/database/.

    Each is an ImageFolder tree (<class>/<image>) with the same class folders, so that a label
    means the same class in both (for the paper's protocol: FFPQ's ImageNet retrieval split).
    """
    from torchvision.datasets import ImageFolder

    root = Path(root)
    sets = []
    for name in ("query", "database"):
        if not (root / name).is_dir():
            raise FileNotFoundError(
                f"No {root / name}: a retrieval split is a folder holding query/<class>/<image> "
                "and database/<class>/<image>."
            )
        folder = ImageFolder(str(root / name))
        sets.append(ImageFolderDataset(list(folder.samples), list(folder.classes)))
    if sets[0].classes != sets[1].classes:
        raise ValueError(
            f"The class folders of {root / 'query'} and {root / 'database'} differ: labels would "
            "mean different classes. Give both the same class folders."
        )
    return sets[0], sets[1]


def evaluate_checkpoint(
    path: str | Path,
    *,
    dataset: str | None = None,
    data_root: str | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    device: str = "cpu",
    retrieval_k: int | None = None,
    retrieval_root: str | None = None,
    dino_linear_epochs: int = 0,
    download: bool = False,
    write: bool = True,
) -> dict:
    """Run `evaluate_model` on a checkpoint's teacher and write the result beside it.

    The dataset and subsets default to the checkpoint's own; pass another dataset to measure
    transfer (the teacher's codes are then still those of its head). A checkpoint never decides
    what is downloaded or written (issue 25): data is downloaded only with `download=True`, into
    `data_root` (None: $DISCOMM_DATA, else ./data); the data root the checkpoint records is read
    only when no `data_root` is given, nothing is to be downloaded, and it is a folder on this
    machine (the data of one's own runs); a timm backbone that timm would fetch (hf-hub:,
    local-dir:) is refused. `retrieval_root` holds a query/database split
    (`load_retrieval_split`; without it retrieval is self-search on the test set);
    `dino_linear_epochs > 0` adds DINO's linear protocol. The result records these choices
    under "options", and is written atomically to `evaluation_path` (a different evaluation is
    never overwritten); a folder that cannot be written gets an EvaluationNotSavedWarning.
    """
    path = Path(path).expanduser()
    device = resolve_device(device)
    if retrieval_k is not None and retrieval_k < 1:
        raise ValueError(f"retrieval_k = {retrieval_k}: mAP@k needs k >= 1 (None: mAP@ALL).")
    if dino_linear_epochs < 0:
        raise ValueError(f"dino_linear_epochs = {dino_linear_epochs} must be >= 0 (0: none).")
    payload = load_checkpoint(path)
    config = checkpoint_config(payload, path)  # valid, and its backbone built from local code
    model = build_saved_model(payload, "teacher", config, path).to(device)
    if (data_root is None and not download and config.data_root is not None
            and Path(config.data_root).is_dir()):
        data_root = config.data_root  # one's own run's data, read where it is: nothing written
    changes = {"dataset": dataset, "train_subset": train_subset, "test_subset": test_subset,
               "data_root": data_root, "download": download}
    # The evaluation reads whole images: the training views' redrawn factors do not apply, and
    # would be refused for another dataset than the synthetic one.
    data_config = config.replace(redraw_factors="",
                                 **{k: v for k, v in changes.items()
                                    if v is not None or k == "data_root"})
    train_set, test_set = load_splits(data_config)
    retrieval_split = load_retrieval_split(retrieval_root) if retrieval_root else None
    head = model.head if get_method(config.method).emits_codes else None  # DINO: prototypes
    options = {"dataset": data_config.dataset, "data_root": data_config.data_root,
               "train_subset": data_config.train_subset, "test_subset": data_config.test_subset,
               "retrieval_k": retrieval_k,
               "retrieval_root": str(Path(retrieval_root).resolve()) if retrieval_root else None,
               "dino_linear_epochs": dino_linear_epochs}
    result = {"checkpoint": str(path), "dataset": data_config.dataset, "step": payload["step"],
              "method": config.method, "options": options,
              **evaluate_model(model.backbone, train_set, test_set,
                               image_size=config.image_size, head=head, device=device,
                               retrieval_k=retrieval_k, retrieval_split=retrieval_split,
                               dino_linear_epochs=dino_linear_epochs)}
    if write:
        _write_evaluation(evaluation_path(path, config, **options), result)
    return result


def evaluation_path(checkpoint: str | Path, config: Config, *, dataset: str | None = None,
                    data_root: str | None = None, train_subset: int | None = None,
                    test_subset: int | None = None, retrieval_k: int | None = None,
                    retrieval_root: str | None = None, dino_linear_epochs: int = 0) -> Path:
    """Where `evaluate_checkpoint` writes the evaluation of `checkpoint` with these options.

    `<checkpoint>.eval.json` for the checkpoint's own dataset and subsets (its `config`) and the
    default protocol; else the options that differ name the file, e.g.
    `checkpoint.eval-cifar10.json` or `checkpoint.eval-train_subset=0,test_subset=0.json`.
    Options as in `evaluate_checkpoint` (None: the checkpoint's); `data_root` names no file (two
    copies of one dataset: `_write_evaluation` keeps them apart).
    """
    chosen = {"train_subset": train_subset, "test_subset": test_subset,
              "retrieval_k": retrieval_k,
              "retrieval": Path(retrieval_root).name if retrieval_root else None,
              "dino_linear_epochs": dino_linear_epochs}
    defaults = {"train_subset": config.train_subset, "test_subset": config.test_subset,
                "retrieval_k": None, "retrieval": None, "dino_linear_epochs": 0}
    parts = [dataset] if dataset not in (None, config.dataset) else []
    parts += [f"{k}={v}" for k, v in chosen.items() if v is not None and v != defaults[k]]
    tag = re.sub(r"[^A-Za-z0-9_.,=+-]", "_", ",".join(parts))
    return Path(checkpoint).with_suffix(f".eval-{tag}.json" if tag else ".eval.json")


def _write_evaluation(path: Path, result: dict) -> None:
    """Write `result` to `path` atomically, or beside it when `path` holds another evaluation.

    A file is replaced only by an evaluation with the same options; any other (two data roots,
    say, or a file from before the options were recorded) is kept, and this one goes to
    `<name>.2.json` (or .3, ...). A folder that cannot be written gets an
    EvaluationNotSavedWarning: the result is then only returned (the CLI prints it).
    """
    target, number = path, 1
    while target.exists() and _recorded_options(target) != result["options"]:
        number += 1
        target = path.with_name(f"{path.stem}.{number}.json")
    if target != path:
        warnings.warn(f"{path} holds an evaluation with other options; this one goes to "
                      f"{target}.", stacklevel=3)
    try:
        atomic_write(target, lambda f: f.write((json.dumps(result, indent=2) + "\n").encode()))
    except OSError as err:
        warnings.warn(f"The evaluation was not saved: cannot write {target} ({err}). It is "
                      "returned (and printed by the CLI) only.", EvaluationNotSavedWarning,
                      stacklevel=3)


def _recorded_options(path: Path) -> dict | None:
    """The options an evaluation file records (None if it records none or cannot be read)."""
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return recorded.get("options") if isinstance(recorded, dict) else None


def evaluate_random_init(config: Config, device: str | torch.device = "cpu") -> dict:
    """`evaluate_model` of the network `config` draws before its first step: the floor.

    `step.build_state` seeds torch with `config.seed` before `make_model`, so this is exactly
    the student (and teacher) a run of `config` starts from. It is scored on the run's own sets
    (`train_subset` / `test_subset` applied); set them to 0 for the whole splits.
    """
    torch.manual_seed(config.seed)
    model = make_model(config).to(device)
    train_set, test_set = load_splits(config)
    head = model.head if get_method(config.method).emits_codes else None
    return evaluate_model(model.backbone, train_set, test_set, image_size=config.image_size,
                          head=head, device=device)


def saved_full_evaluation(checkpoint: Path, config: Config) -> dict | None:
    """The evaluation of `checkpoint` on the whole splits that `evaluate_checkpoint` wrote
    (`suite.evaluation_path`), or None when there is none of this data root."""
    path = evaluation_path(checkpoint, config, data_root=config.data_root, train_subset=0,
                           test_subset=0)
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    # The file name says every option but the data root: one of another copy of the data (an
    # evaluation made outside the lab) is not this one.
    return saved if saved.get("options", {}).get("data_root") == config.data_root else None
