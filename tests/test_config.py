"""The Config: validation messages, presets, serialisation, and the CLI generated from it."""

import json
import warnings

import pytest

from discomm_lite.cli import build_parser, main, parse_value
from discomm_lite.config import (
    PRESETS,
    Config,
    field_names,
    make_config,
)
from discomm_lite.config.checks import BaselineResetWarning

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
    ("clip_grad_mode", "norm", "per_param, global"),
    ("coding_rate_scope", "local", "global, per_process"),
    ("coding_rate_input", "teacher", "student, student_teacher_mean, or None"),
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
    # The authors' in-place re-init: moments kept, no ramp (its 10 warm-up epochs would span the
    # whole 10-epoch reset period).
    assert (c.reinit_optimizer_state, c.reinit_warmup_steps) == ("keep", 0)


def test_a_reset_warm_up_longer_than_the_reset_period_is_refused():
    with pytest.raises(ValueError, match="never reach its lr before the next reset"):
        make_config("imagenet-paper", reinit_warmup_steps=None, reinit_every=5)
    with pytest.raises(ValueError, match="reinit_warmup_steps = None"):
        Config(reinit_every=2, warmup_epochs=3)
    # As long as the period: the new head reaches its lr at the period's end (cifar-toy's reset
    # every epoch with a one-epoch warm-up, the reset study's measured handling).
    assert make_config("cifar-toy", reinit_every=1).reinit_warmup_steps is None
    assert Config(reinit_every=2, warmup_epochs=2).reinit_warmup_steps is None
    assert Config(reinit_every=2, warmup_epochs=3, reinit_warmup_steps=5).reinit_every == 2


def test_coding_rate_weight_defaults_per_method():
    assert Config(method="bits").beta == 0.1
    assert Config(method="simdino").beta == 1.0
    assert Config(method="simdino", coding_rate_weight=0.5).beta == 0.5


def test_coding_rate_input_defaults_per_method():
    assert Config(method="bits").rate_input == "student"
    assert Config(method="simdino").rate_input == "student_teacher_mean"  # SimDINO --expa_type 1
    assert Config(method="simdino", coding_rate_input="student").rate_input == "student"
    assert Config().coding_rate_scope == "global" and Config().clip_grad_mode == "per_param"


def test_imagenet_paper_clips_per_parameter_and_leaves_beta_to_the_method():
    c = make_config("imagenet-paper")
    assert (c.clip_grad, c.clip_grad_mode, c.coding_rate_weight, c.drop_path) == \
        (1.0, "per_param", None, 0.1)
    assert make_config("cifar-full").clip_grad_mode == "per_param"
    with pytest.warns(BaselineResetWarning, match="make it diverge"):
        simdino = make_config("imagenet-paper", method="simdino")
    assert (simdino.beta, simdino.rate_input) == (1.0, "student_teacher_mean")


def test_simdino_preset_has_simdinos_own_defaults():
    c = make_config("imagenet-paper-simdino")
    # simdino/main_dino.py: MCRLoss(coeff=1), --expa_type 1, README command --eps 0.05;
    # the paper: no head resets for SimDINO. The protocol is the paper's.
    assert (c.method, c.beta, c.eps, c.rate_input, c.reinit_every) == \
        ("simdino", 1.0, 0.05, "student_teacher_mean", 0)
    assert (c.n_bits, c.head_hidden_dim, c.coding_rate_scope) == (256, 2048, "global")
    paper = make_config("imagenet-paper")
    for name in ("backbone", "epochs", "batch_size", "lr", "lr_end", "clip_grad",
                 "clip_grad_mode", "n_local", "momentum", "drop_path"):
        assert getattr(c, name) == getattr(paper, name), name


def test_dino_preset_has_dinos_own_defaults():
    c = make_config("imagenet-paper-dino")
    # dino main_dino.py defaults (its README's vit_base command passes none of these).
    assert (c.method, c.n_prototypes, c.head_bottleneck_dim, c.freeze_last_layer_epochs) == \
        ("dino", 65536, 256, 1)
    assert (c.teacher_temp_warmup, c.teacher_temp, c.teacher_temp_warmup_epochs) == \
        (0.04, 0.04, 0)
    assert (c.student_temp, c.center_momentum, c.reinit_every) == (0.1, 0.9, 0)


def test_toy_presets_follow_each_methods_own_conventions():
    for preset in ("synthetic-toy", "cifar-toy"):
        bits, simdino = make_config(preset), make_config(preset, method="simdino")
        assert bits.rate_input == "student" and bits.beta == 0.1  # the paper's Eq. 9 and beta
        assert (simdino.rate_input, simdino.beta) == ("student_teacher_mean", 1.0)  # SimDINO's


def test_method_settings_turn_a_preset_into_another_methods_run():
    from discomm_lite.config import method_settings
    from discomm_lite.config.presets import METHOD_SETTINGS

    base = make_config("cifar-toy")
    for method, settings in METHOD_SETTINGS["cifar-toy"].items():
        config = base.replace(**method_settings("cifar-toy", method))
        assert config.method == method
        assert {k: getattr(config, k) for k in settings} == settings
        # Only what the method changes moves; the budget stays the preset's.
        assert (config.epochs, config.train_subset, config.batch_size) == (
            base.epochs, base.train_subset, base.batch_size)
    assert method_settings("synthetic-toy", "dino") == {"method": "dino"}
    with pytest.raises(ValueError, match="Unknown preset 'cifar'"):
        method_settings("cifar", "dino")


def test_resets_for_a_baseline_warn_unless_silenced():
    with pytest.warns(BaselineResetWarning, match="reinit_every=0"):
        Config(method="dino", reinit_every=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Config(method="bits", reinit_every=5)
        Config(method="simdino", reinit_at_start=True)
        warnings.filterwarnings("ignore", category=BaselineResetWarning)
        Config(method="simdino", reinit_every=5)


def test_a_run_needs_two_views():
    with pytest.raises(ValueError, match="Config.n_local = 0 .*at least 1 with n_global = 1"):
        Config(n_global=1, n_local=0)
    Config(n_global=1, n_local=1)


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


def test_view_fields_are_checked_by_the_view_spec_they_build():
    with pytest.raises(ValueError, match=r"Config.local_scale_min = 0.5 and Config.local_scale_max "
                                         r"= 0.4 are not valid: they make ViewSpec.local_scale"):
        Config(local_scale_min=0.5, local_scale_max=0.4)
    with pytest.raises(ValueError, match="Config.blur = 1 is not valid: it must be True or False"):
        Config(blur=1)
    with pytest.raises(ValueError, match="Config.n_global = 0 .* an integer >= 1"):
        Config(n_global=0)
    # A wrong type is refused before: by the Config's type check (see test_types_are_checked).
    with pytest.raises(ValueError, match="Config.n_global = 1.5 .* an integer"):
        Config(n_global=1.5)


@pytest.mark.parametrize("name,value,accepted", [
    ("epochs", 2.5, "an integer (got type float)"),  # would train 2.5 epochs
    ("n_bits", True, "an integer (got type bool)"),  # a bool is not an int
    ("n_bits", "64", "an integer (got type str)"),
    ("lr", "0.1", "a number (got type str)"),
    ("lr", False, "a number (got type bool)"),
    ("blur", 1, "True or False (got type int)"),
    ("method", None, "a string (got type NoneType)"),  # not Optional
    ("data_root", 3, "a string, or None (got type int)"),
    ("coding_rate_weight", "0.1", "a number, or None (got type str)"),
    ("lr", float("inf"), "a finite number"),
    ("eps", float("inf"), "a finite number"),
    ("coding_rate_weight", float("inf"), "a finite number"),
    ("momentum", float("nan"), "a finite number"),
    ("out_dir", "", "a path, or None for no run folder"),
    ("pretrained", "  ", "a path, or None"),
])
def test_types_are_checked_and_non_finite_numbers_refused(name, value, accepted):
    with pytest.raises(ValueError) as info:
        Config(**{name: value})
    assert str(info.value) == f"Config.{name} = {value!r} is not valid: it must be {accepted}."


def test_ints_are_floats_numpy_numbers_become_python_ones_and_paths_expand(monkeypatch, tmp_path):
    import numpy as np

    monkeypatch.setenv("HOME", str(tmp_path))
    config = Config(lr=1, lr_end=0, n_bits=np.int64(32), eps=np.float32(0.25),
                    out_dir="~/runs/a", data_root="~/data", pretrained="~/a.pt")
    assert config.lr == 1 and type(config.lr) is int  # as given: config.json keeps 1
    assert type(config.n_bits) is int and config.n_bits == 32
    assert type(config.eps) is float and config.eps == 0.25
    assert (config.out_dir, config.data_root, config.pretrained) == (
        f"{tmp_path}/runs/a", f"{tmp_path}/data", f"{tmp_path}/a.pt")
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config
