"""The checks of a `Config`: each field's type and range, the view fields, the method's rules.

`Config.__post_init__` calls `validate`; every refusal is a ValueError that names the field, the
value and what it must be. Values are shown by `shown`, a repr bounded in length and work: a
configuration read from a shared file may hold a list that would take hours to print.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import os
import typing
import warnings
from dataclasses import fields
from typing import TYPE_CHECKING

from discomm_lite.choices import (
    AGREEMENTS,
    CLIP_GRAD_MODES,
    CODING_RATE_INPUTS,
    CODING_RATE_SCOPES,
    DATASETS,
    HEAD_NORMS,
    PRECISIONS,
    REINIT_OPTIMIZER_STATES,
    SYNTHETIC_FACTORS,
    TARGETS,
    TEACHER_HEAD_POLICIES,
    check_backbone_name,
)
from discomm_lite.config.view_spec import CONFIG_FIELDS, InvalidField, view_spec_from_config
from discomm_lite.method import get_method, method_names

if TYPE_CHECKING:  # annotations only: config imports this module
    from discomm_lite.config import Config


class BaselineResetWarning(UserWarning):
    """Head resets asked for a method other than BITS (the paper: they make SimDINO diverge)."""


@functools.cache
def _hints(cls: type) -> dict:
    # Evaluating the (string) annotations is the costly part of a Config's checks: once per class.
    return typing.get_type_hints(cls)


def plain_field_types(cls: type) -> dict[str, type]:
    """The plain Python type of each field of the dataclass `cls`, Optional removed."""
    hints = _hints(cls)
    plain = {}
    for f in fields(cls):
        args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
        plain[f.name] = args[0] if args else hints[f.name]
    return plain


def optional_field_names(cls: type) -> frozenset[str]:
    """The fields of the dataclass `cls` that accept None."""
    hints = _hints(cls)
    return frozenset(f.name for f in fields(cls)
                     if type(None) in typing.get_args(hints[f.name]))


def shown(value, limit: int = 100) -> str:
    """`repr(value)` for a message, at most about `limit` characters, in bounded time and memory.

    Strings, bytes and numbers as repr shows them (cut); an integer too long to print as its
    size; lists, tuples, sets and dicts by their first three items, two levels deep; any other
    object by its type (and shape, for a tensor). Whatever the value (a list nested 30 deep
    whose items are one shared list, say), this visits at most a few dozen objects.
    """
    text = _shown(value, levels=2)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _shown(value, levels: int) -> str:
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, numbers.Integral):
        bits = int(value).bit_length()
        return repr(value) if bits <= 64 else f"<an integer of {bits} bits>"
    if isinstance(value, str | bytes):
        return repr(value[:100]) + ("..." if len(value) > 100 else "")
    brackets = {list: "[]", tuple: "()", dict: "{}", set: "{}", frozenset: "{}"}
    kind = next((k for k in brackets if isinstance(value, k)), None)
    if kind is None:
        shape = getattr(value, "shape", None)
        return f"<{type(value).__name__}" + (f" of shape {tuple(shape)}>"
                                             if isinstance(shape, tuple) else ">")
    if levels == 0 or not value:
        inner = "..." if value else ""
    else:
        first = list(itertools.islice(value.items() if kind is dict else value, 3))
        parts = ([f"{_shown(k, levels - 1)}: {_shown(v, levels - 1)}" for k, v in first]
                 if kind is dict else [_shown(item, levels - 1) for item in first])
        inner = ", ".join(parts) + (", ..." if len(value) > 3 else "")
    return brackets[kind][0] + inner + brackets[kind][1]


def _fail(name: str, value, accepted: str) -> None:
    raise ValueError(f"Config.{name} = {shown(value)} is not valid: it must be {accepted}.")


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "True or False", str: "a string"}
_PATH_FIELDS = ("out_dir", "data_root", "pretrained")


def _is_finite(value: numbers.Real) -> bool:
    """Whether `value` is a finite float, or an int that converts to one (float() of an int
    beyond 2**1023 may overflow)."""
    if isinstance(value, numbers.Integral):
        return abs(int(value)) < 2**1023
    return math.isfinite(value)


def _check_types(c: Config) -> None:
    """Each field holds its declared type (None where Optional), finite, with ~ expanded.

    An int is a valid float; a bool is neither an int nor a float. Other numeric types (NumPy's)
    become the field's Python type, so that config.json can record them. A frozen dataclass
    normalises through object.__setattr__.
    """
    optional = optional_field_names(type(c))
    for name, kind in plain_field_types(type(c)).items():
        value = getattr(c, name)
        if value is None and name in optional:
            continue
        if kind is int:
            valid = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        elif kind is float:
            valid = isinstance(value, numbers.Real) and not isinstance(value, bool)
        else:
            valid = isinstance(value, kind)
        if not valid:
            _fail(name, value, _TYPE_NAMES[kind] + (", or None" if name in optional else "")
                  + f" (got type {type(value).__name__})")
        if kind is float and not _is_finite(value):
            _fail(name, value, "a finite number")
        if kind in (int, float) and type(value) not in (int, float):
            object.__setattr__(c, name, kind(value))
    for name in _PATH_FIELDS:
        value = getattr(c, name)
        if value is not None and not value.strip():
            _fail(name, value, "a path, or None" + (" for no run folder" if name == "out_dir"
                                                     else ""))
        if value is not None:
            object.__setattr__(c, name, os.path.expanduser(value))


def _check_views(c: Config) -> None:
    """The view fields, by building the run's ViewSpec: its checks are the only ones."""
    try:
        view_spec_from_config(c)
    except InvalidField as err:
        names = CONFIG_FIELDS[err.name]
        if names == (err.name,):
            _fail(err.name, err.value, err.accepted)
        given = " and ".join(f"Config.{n} = {shown(getattr(c, n))}" for n in names)
        verb = "is not valid: it makes" if len(names) == 1 else "are not valid: they make"
        raise ValueError(f"{given} {verb} ViewSpec.{err.name} = {err.value!r}, which must be "
                         f"{err.accepted}.") from None


def validate(c: Config) -> None:
    """Raise ValueError naming the first field of `c` that is not valid (see the module)."""
    _check_types(c)
    choices = {
        "method": method_names(), "agreement": AGREEMENTS, "targets": TARGETS,
        "teacher_head_policy": TEACHER_HEAD_POLICIES, "precision": PRECISIONS,
        "head_norm": HEAD_NORMS, "clip_grad_mode": CLIP_GRAD_MODES,
        "coding_rate_scope": CODING_RATE_SCOPES, "dataset": DATASETS,
        "reinit_optimizer_state": REINIT_OPTIMIZER_STATES,
    }
    for name, accepted in choices.items():
        if getattr(c, name) not in accepted:
            _fail(name, getattr(c, name), "one of " + ", ".join(accepted))
    check_backbone_name(c.backbone)
    method = get_method(c.method)

    at_least = {
        "n_bits": 1, "epochs": 1, "batch_size": 1, "image_size": 1, "reinit_every": 0,
        "warmup_epochs": 0, "log_every": 1,
        "checkpoint_every": 1, "eval_every": 0, "head_hidden_dim": 1, "head_bottleneck_dim": 1,
        "n_prototypes": 1, "train_subset": 0, "test_subset": 0, "num_workers": -1,
        "teacher_temp_warmup_epochs": 0, "freeze_last_layer_epochs": 0,
        "reinit_warmup_steps": 0, "reinit_catchup_steps": 0,
    }
    for name, low in at_least.items():
        if getattr(c, name) is not None and getattr(c, name) < low:
            _fail(name, getattr(c, name), f"an integer >= {low}"
                  + (", or None" if name in optional_field_names(type(c)) else ""))
    _check_views(c)
    if c.warmup_epochs >= c.epochs and c.epochs > 1:
        _fail("warmup_epochs", c.warmup_epochs, f"smaller than epochs ({c.epochs})")
    positive = ("lr", "eps", "target_temperature", "teacher_temp", "teacher_temp_warmup",
                "student_temp")
    for name in positive:
        if not getattr(c, name) > 0:
            _fail(name, getattr(c, name), "a number > 0")
    non_negative = ("lr_end", "weight_decay", "weight_decay_end", "clip_grad", "drop_path")
    for name in non_negative:
        if not getattr(c, name) >= 0:
            _fail(name, getattr(c, name), "a number >= 0")
    if c.coding_rate_input is not None and c.coding_rate_input not in CODING_RATE_INPUTS:
        _fail("coding_rate_input", c.coding_rate_input,
              "one of " + ", ".join(CODING_RATE_INPUTS) + ", or None for the method's default")
    if c.views_per_image < 2:
        _fail("n_local", c.n_local, f"at least {2 - c.n_global} with n_global = {c.n_global}: "
              "every loss compares a view with another, so a run needs two views or more")
    if c.coding_rate_weight is not None and not c.coding_rate_weight >= 0:
        _fail("coding_rate_weight", c.coding_rate_weight, "a number >= 0, or None for the default")
    if c.lr_end > c.lr:
        _fail("lr_end", c.lr_end, f"at most lr ({c.lr})")
    unit = ("momentum", "momentum_end", "center_momentum", "collapse_warn")
    for name in unit:
        if not 0 <= getattr(c, name) <= 1:
            _fail(name, getattr(c, name), "in [0, 1]")
    if c.reinit_teacher_momentum is not None and not 0 <= c.reinit_teacher_momentum <= 1:
        _fail("reinit_teacher_momentum", c.reinit_teacher_momentum,
              "in [0, 1], or None for the schedule's momentum")
    # A ramp as long as the period is allowed: it is cifar-toy's measured reset (1 and 1 epoch).
    if c.reinit_every > 0 and c.reinit_warmup_steps is None and c.warmup_epochs > c.reinit_every:
        _fail("reinit_warmup_steps", None,
              f"a number of steps when warmup_epochs ({c.warmup_epochs}) is longer than the reset "
              f"period (reinit_every={c.reinit_every}): None ramps each new head's lr up over the "
              "run's own warm-up, so it would never reach its lr before the next reset. Set it "
              "(0: no ramp, as the paper's code) or shorten warmup_epochs")
    if c.local_size > c.global_size:
        _fail("local_size", c.local_size, f"at most global_size ({c.global_size})")
    defaults = {f.name: f.default for f in fields(c)}
    for other in method_names():
        for name in set(get_method(other).options) - set(method.options):
            if getattr(c, name) != defaults[name]:
                _fail(name, getattr(c, name),
                      f"left at its default {defaults[name]!r} for method={c.method!r}: it is an "
                      f"option of method {other!r} only, which this run does not use")
    if method.coding_rate_weight is None and c.coding_rate_weight is not None:
        _fail("coding_rate_weight", c.coding_rate_weight,
              f"None for method={c.method!r}, which has no coding-rate term")
    for name, required, reason in method.fixed_fields:
        if getattr(c, name) != required:
            _fail(name, getattr(c, name),
                  f"left at {required!r} for method={c.method!r} ({reason})")
    if c.device != "auto" and not (c.device == "cpu" or c.device.startswith("cuda")):
        _fail("device", c.device, "auto, cpu, cuda or cuda:N")
    unknown = sorted(set(c.redrawn_factors) - set(SYNTHETIC_FACTORS))
    if unknown:
        _fail("redraw_factors", c.redraw_factors,
              "comma-separated names of " + ", ".join(SYNTHETIC_FACTORS))
    if c.redrawn_factors and c.dataset != "synthetic":
        _fail("redraw_factors", c.redraw_factors,
              f"empty for dataset={c.dataset!r} (only synthetic images can be drawn again)")
    if c.reinit_every > 0 and not method.head_resets:
        warnings.warn(
            f"Config.reinit_every = {c.reinit_every} with method={c.method!r}: head resets are "
            "part of BITS; the paper reports that applied to SimDINO they make it diverge (and "
            "DINO's published recipe has none). Set reinit_every=0 (the presets "
            "imagenet-paper-simdino and imagenet-paper-dino do), or, to run it on purpose, "
            "silence this with warnings.filterwarnings('ignore', "
            "category=discomm_lite.config.checks.BaselineResetWarning).",
            BaselineResetWarning, stacklevel=4)
