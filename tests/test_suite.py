"""The evaluation suite: a query/database retrieval split, protocol labels, DINO's linear probe."""

import pytest
import torch
from PIL import Image
from torch import nn

from discomm_lite.data import ImageTensorDataset, load_dataset
from discomm_lite.evaluation.features import extract_features
from discomm_lite.evaluation.metrics import map_vs_bits, retrieval_map
from discomm_lite.evaluation.probes import dino_linear_probe
from discomm_lite.evaluation.suite import (
    LINEAR_PROXY,
    SELF_SEARCH,
    evaluate_model,
    load_retrieval_split,
)
from discomm_lite.method.heads import ProjectionHead
from discomm_lite.models.backbones import Backbone, make_backbone


def _synthetic(n, seed):
    return load_dataset("synthetic", "test", n_samples=n, seed=seed)


def _model():
    torch.manual_seed(0)
    backbone = make_backbone("convnet-small").eval()
    return backbone, ProjectionHead(backbone.num_features, 16, 32).eval()


def test_query_database_split_is_searched_as_given():
    backbone, head = _model()
    train_set, test_set = _synthetic(48, 0), _synthetic(32, 1)
    query_set, database_set = _synthetic(24, 2), _synthetic(40, 3)
    result = evaluate_model(backbone, train_set, test_set, image_size=32, head=head,
                            linear_epochs=2, retrieval_split=(query_set, database_set))
    query = extract_features(backbone, query_set, image_size=32, head=head)
    database = extract_features(backbone, database_set, image_size=32, head=head)
    expected = retrieval_map(query["feats"], query["labels"], database["feats"],
                             database["labels"])["map"]
    assert result["map_cosine"] == pytest.approx(expected, abs=1e-12)
    expected = retrieval_map(query["codes"], query["labels"], database["codes"],
                             database["labels"], metric="hamming")["map"]
    assert result["map_hamming"] == pytest.approx(expected, abs=1e-12)
    per_bits = map_vs_bits(query["codes"], query["labels"], database=database["codes"],
                           database_labels=database["labels"])
    assert result["map_vs_bits"] == {str(b): v for b, v in per_bits.items()}
    assert result["retrieval_protocol"].startswith("query/database split")
    assert result["linear_protocol"] == LINEAR_PROXY and "proxy" in LINEAR_PROXY

    self_search = evaluate_model(backbone, train_set, test_set, image_size=32, linear_epochs=2)
    test = extract_features(backbone, test_set, image_size=32)
    assert self_search["retrieval_protocol"] == SELF_SEARCH
    assert self_search["map_cosine"] == pytest.approx(
        retrieval_map(test["feats"], test["labels"])["map"], abs=1e-12)


def _write_images(root, classes, per_class, size=12):
    g = torch.Generator().manual_seed(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8)
            pixels[..., c % 3] = 255  # each class its own dominant channel
            Image.fromarray(pixels.numpy()).save(root / name / f"{i}.png")


def test_load_retrieval_split_reads_query_and_database_folders(tmp_path):
    _write_images(tmp_path / "split" / "query", ["a", "b"], 2)
    _write_images(tmp_path / "split" / "database", ["a", "b"], 3)
    query, database = load_retrieval_split(tmp_path / "split")
    assert (len(query), len(database)) == (4, 6)
    assert query.classes == database.classes == ["a", "b"]
    assert database.labels.tolist() == [0, 0, 0, 1, 1, 1]
    _write_images(tmp_path / "other" / "query", ["a", "b"], 1)
    _write_images(tmp_path / "other" / "database", ["a", "c"], 1)
    with pytest.raises(ValueError, match="class folders"):
        load_retrieval_split(tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="query/<class>/<image>"):
        load_retrieval_split(tmp_path / "nowhere")


class MeanColour(nn.Module):
    """Features = mean colour: unchanged by crops and flips of a one-colour image."""

    def forward(self, images):
        return images.mean(dim=(2, 3))  # (N, 3)


def _colour_dataset(per_class, size=16):
    colours = torch.tensor([[230, 25, 25], [25, 230, 25], [25, 25, 230], [230, 230, 230]])
    labels = torch.arange(4).repeat_interleave(per_class)
    images = colours[labels][:, :, None, None].expand(-1, 3, size, size)
    return ImageTensorDataset(images.to(torch.uint8).contiguous(), labels,
                              ["red", "green", "blue", "white"])


def test_dino_linear_probe_learns_a_separable_task_on_augmented_crops():
    backbone = Backbone(MeanColour(), 3, mean=(0, 0, 0), std=(1, 1, 1))
    data = _colour_dataset(8)
    rng = torch.get_rng_state()
    # Features in [0, 1] and 32 images: a large step so that 120 steps suffice.
    result = dino_linear_probe(backbone, data, data, image_size=8, epochs=30, lr=200.0,
                               batch_size=8, seed=3)
    assert result == {"linear_dino_top1": 1.0}
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is left as it was


def test_dino_linear_probe_trains_on_fresh_crops_with_a_frozen_backbone():
    torch.manual_seed(0)
    backbone = make_backbone("convnet-small")
    weights = {k: v.clone() for k, v in backbone.state_dict().items()}
    images = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    data = ImageTensorDataset(images, torch.arange(12) % 3, ["a", "b", "c"])
    seen = []
    hook = backbone.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].clone()))
    first = dino_linear_probe(backbone, data, data, image_size=16, epochs=2, batch_size=6, seed=0)
    hook.remove()
    again = dino_linear_probe(backbone, data, data, image_size=16, epochs=2, batch_size=6, seed=0)
    assert first == again and 0 <= first["linear_dino_top1"] <= 1
    assert backbone.training  # its mode is restored
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, weights[k]), k
    training = torch.cat(seen[:4])  # 2 epochs x 2 batches; then the test pass
    assert training.shape == (24, 3, 16, 16)
    originals = images.float() / 255
    # Random-resized, flipped crops: no training input is one of the images as they are.
    distance = (training[:, None] - originals[None]).abs().flatten(2).mean(2).min(1).values
    assert (distance > 1e-3).all()


def test_dino_linear_probe_reads_image_folders(tmp_path):
    _write_images(tmp_path / "train", ["a", "b", "c"], 3)
    data = load_dataset("imagefolder", "train", tmp_path)
    backbone = Backbone(MeanColour(), 3, mean=(0, 0, 0), std=(1, 1, 1))
    result = dino_linear_probe(backbone, data, data, image_size=8, epochs=2, batch_size=4,
                               num_workers=0)
    assert 0 <= result["linear_dino_top1"] <= 1


def test_random_init_floor_is_the_network_a_run_starts_from():
    from discomm_lite.config import make_config
    from discomm_lite.evaluation.suite import evaluate_random_init
    from discomm_lite.method import get_method
    from discomm_lite.training.setup import build_state
    from discomm_lite.views.pipeline import load_splits

    config = make_config("synthetic-toy", n_bits=8, head_hidden_dim=32, seed=3,
                         train_subset=256, test_subset=128, device="cpu")
    # what `train` starts from
    start = build_state(config, get_method(config.method), torch.device("cpu")).teacher
    train_set, test_set = load_splits(config)
    expected = evaluate_model(start.backbone, train_set, test_set, image_size=32, head=start.head)
    floor = evaluate_random_init(config)
    for key in ("knn20_top1", "knn200_top1", "map_cosine", "map_hamming",
                "code_mean_bit_entropy"):
        assert floor[key] == expected[key]
    assert evaluate_random_init(config.replace(seed=4))["map_cosine"] != floor["map_cosine"]


@pytest.mark.parametrize("k", [None, 5])
def test_map_hamming_is_computed_once_and_is_the_full_code_entry_of_map_vs_bits(k, monkeypatch):
    from discomm_lite.evaluation import suite

    backbone, head = _model()
    train_set, test_set = _synthetic(48, 0), _synthetic(40, 1)
    calls = []
    real = suite.map_vs_bits

    def counted(*args, **kwargs):
        calls.append(kwargs.get("k"))
        return real(*args, **kwargs)

    monkeypatch.setattr(suite, "map_vs_bits", counted)
    monkeypatch.setattr(suite, "retrieval_map", lambda *a, metric="cosine", **kw: (
        retrieval_map(*a, metric=metric, **kw) if metric == "cosine" else pytest.fail(
            "the Hamming mAP of all K bits is map_vs_bits' last entry, not another search")))
    result = evaluate_model(backbone, train_set, test_set, image_size=32, head=head,
                            linear_epochs=2, retrieval_k=k)
    assert calls == [k]
    test = extract_features(backbone, test_set, image_size=32, head=head)
    expected = retrieval_map(test["codes"], test["labels"], metric="hamming", k=k)["map"]
    assert result["map_hamming"] == expected == result["map_vs_bits"]["16"]


def test_evaluation_files_are_named_by_the_options_that_differ():
    from discomm_lite.config import make_config
    from discomm_lite.evaluation.suite import evaluation_path

    config = make_config("synthetic-toy")  # train_subset 2048, test_subset 0
    path = "run/checkpoint.pt"
    assert evaluation_path(path, config).name == "checkpoint.eval.json"
    assert evaluation_path(path, config, dataset="synthetic", train_subset=2048,
                           test_subset=0).name == "checkpoint.eval.json"  # its own: the default
    assert evaluation_path(path, config, dataset="cifar10").name == "checkpoint.eval-cifar10.json"
    assert evaluation_path(path, config, train_subset=0, test_subset=0).name == \
        "checkpoint.eval-train_subset=0.json"
    assert evaluation_path(path, config, dataset="imagefolder", retrieval_k=100,
                           retrieval_root="/data/ffpq split", dino_linear_epochs=2).name == \
        "checkpoint.eval-imagefolder,retrieval_k=100,retrieval=ffpq_split," \
        "dino_linear_epochs=2.json"


def test_retrieval_needs_k_of_at_least_one():
    codes = torch.randint(0, 2, (6, 4))
    with pytest.raises(ValueError, match="k = 0: mAP@k needs k >= 1"):
        retrieval_map(codes, torch.arange(6) % 2, metric="hamming", k=0)


@pytest.mark.slow
def test_a_checkpoint_trained_on_redrawn_views_evaluates_on_another_dataset(tmp_path):
    from discomm_lite.api import train
    from discomm_lite.config import make_config
    from discomm_lite.data.folders import write_image_folder
    from discomm_lite.evaluation.suite import evaluate_checkpoint

    config = make_config("synthetic-toy", train_subset=64, test_subset=32, batch_size=32,
                         epochs=1, warmup_epochs=0, n_bits=8, head_hidden_dim=32, eval_every=0,
                         device="cpu", out_dir=str(tmp_path / "run"))
    assert config.redrawn_factors  # the quickstart's views
    train(config, progress=False)
    target = tmp_path / "target"
    for split, seed in (("train", 5), ("val", 6)):
        write_image_folder(_synthetic(40, seed), target / split)
    result = evaluate_checkpoint(tmp_path / "run" / "checkpoint.pt", dataset="imagefolder",
                                 data_root=str(target), train_subset=0, test_subset=0)
    assert result["dataset"] == "imagefolder" and 0 <= result["knn20_top1"] <= 1
