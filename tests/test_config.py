"""The Config: validation messages, presets, serialisation, and the CLI generated from it."""

import json

import pytest

from discomm_lite.cli import build_parser, main, parse_value
from discomm_lite.config import PRESETS, Config, field_names, make_config

BAD_VALUES = [
    ("n_bits", 0, ">= 1"),
    ("reinit_every", -1, ">= 0"),
    ("method", "byol", "bits, simdino, dino"),
    ("dataset", "mnist", "synthetic, cifar10"),
    ("backbone", "resnet19", "convnet-small"),
    ("agreement", "l2", "bce, cosine"),
    ("targets", "fuzzy", "hard, soft"),
    ("eps", 0.0, "> 0"),
    ("coding_rate_weight", -0.1, ">= 0"),
    ("lr_end", 1.0, "at most lr"),
    ("momentum", 1.5, "in [0, 1]"),
    ("local_size", 64, "at most global_size"),
    ("global_scale_min", 0.0, "in (0, 1]"),
    ("batch_size", 0, ">= 1"),
    ("teacher_head_policy", "warm", "copy, keep"),
    ("device", "tpu", "auto, cpu, cuda"),
    ("precision", "fp8", "auto, fp32"),
]


@pytest.mark.parametrize("name,value,accepted", BAD_VALUES)
def test_bad_values_name_the_field_the_value_and_the_range(name, value, accepted):
    with pytest.raises(ValueError) as info:
        Config(**{name: value})
    message = str(info.value)
    assert f"Config.{name}" in message and repr(value) in message and accepted in message


def test_unknown_names_are_refused_with_the_list_of_fields():
    with pytest.raises(ValueError, match="n_bit"):
        Config.from_dict({"n_bit": 64})
    with pytest.raises(ValueError, match="Unknown preset"):
        make_config("imagenet-huge")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_are_valid_and_round_trip_through_json(preset, tmp_path):
    config = make_config(preset)
    config.save(tmp_path / "config.json")
    assert Config.load(tmp_path / "config.json") == config


def test_imagenet_paper_preset_is_the_paper_protocol():
    c = make_config("imagenet-paper")
    assert (c.backbone, c.epochs, c.batch_size, c.n_bits, c.beta, c.reinit_every) == \
        ("vit-base/16", 100, 256, 256, 0.1, 10)
    assert (c.clip_grad, c.lr_end, c.n_global, c.n_local, c.global_size, c.local_size) == \
        (1.0, 5e-5, 2, 10, 224, 96)
    assert (c.lr, c.warmup_epochs, c.weight_decay, c.weight_decay_end, c.momentum) == \
        (5e-4, 10, 0.04, 0.4, 0.996)


def test_coding_rate_weight_defaults_per_method():
    assert Config(method="bits").beta == 0.1
    assert Config(method="simdino").beta == 1.0
    assert Config(method="simdino", coding_rate_weight=0.5).beta == 0.5


def test_every_field_is_a_cli_option_with_its_type():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    options = {a.dest for a in train._actions}
    assert set(field_names()) - {"out_dir"} <= options
    assert parse_value("n_bits", "64") == 64
    assert parse_value("lr", "1e-3") == 1e-3
    assert parse_value("blur", "false") is False
    assert parse_value("pretrained", "none") is None
    assert parse_value("head_norm", "none") == "none"  # a value of a non-optional field
    with pytest.raises(ValueError, match="--n_bits"):
        parse_value("n_bits", "many")


def test_cli_reports_bad_parameters_without_a_traceback(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--n_bits", "0"]) == 2
    err = capsys.readouterr().err
    assert "Config.n_bits = 0" in err and "Traceback" not in err


def test_cli_lists_presets(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert name in out
    json.loads(out.splitlines()[0].split(": ", 1)[1])
