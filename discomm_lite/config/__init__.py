"""The one frozen `Config`: the single source of parameters for notebooks, the CLI and checkpoints.

Notebooks assign a subset of its fields in their papermill `parameters` cell, the CLI is generated
from its fields, and every checkpoint and metrics file records it. Components never read it: only
factories (`make_*`, `from_config`) do. Its checks are in `checks`, the named presets in
`presets`, and the views it describes in `view_spec`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path

from discomm_lite.config.checks import optional_field_names, plain_field_types, shown, validate
from discomm_lite.config.presets import METHOD_SETTINGS, PRESETS
from discomm_lite.method import get_method


@dataclass(frozen=True)
class Config:
    """Every parameter of a run. Defaults are the toy CPU setting on the embedded dataset."""

    # ---- method ---------------------------------------------------------------------------
    method: str = "bits"  # bits | simdino | dino, or any registered method (discomm_lite.method)
    n_bits: int = 256  # K: capacity of the binary channel (bits for BITS, output dim for SimDINO)
    head_hidden_dim: int = 2048
    head_norm: str = "none"  # none (paper) | batchnorm (CroVCA-style last normalisation layer)

    # ---- BITS's channel (method bits only) -------------------------------------------------
    agreement: str = "bce"  # bce (paper) | cosine (ablation: cosine to the +/-1 message)
    targets: str = "hard"  # hard (paper: logit > 0) | soft (sigmoid(teacher_logit / temperature))
    target_temperature: float = 0.1  # only for targets="soft"

    # ---- the coding rate (bits, simdino) ---------------------------------------------------
    coding_rate_weight: float | None = None  # beta; None: the method's (0.1 bits, 1.0 simdino)
    eps: float = 0.05  # coding-rate eps (plays eps^2 of the paper, as in SimDINO/CroVCA code)
    # Which features the coding rate measures, on each global view g:
    #   student: the student's normalised outputs s_g/|s_g| (the paper's Eq. 9; SimDINO's
    #     --expa_type 0);
    #   student_teacher_mean: (s_g/|s_g| + t_g/|t_g|) / 2 with the teacher's output t_g on the same
    #     view, not renormalised (SimDINO's default --expa_type 1, a smoothing its README suggests
    #     against coding-rate spikes); the gradient reaches the student's half only.
    # None: the method's default (student for bits, student_teacher_mean for simdino).
    coding_rate_input: str | None = None
    # Which batch the coding rate's covariance is taken over under torchrun:
    #   global: the K x K Gram matrix summed over processes (with gradient), so the rate is that of
    #     the global batch whatever the number of processes (SimDINO's --reduce_cov 1);
    #   per_process: each process's own Gram matrix, divided by the global N as SimDINO does
    #     (SimDINO's default --reduce_cov 0: the effective covariance, and so the rate and its
    #     gradient, then change with the number of processes at a fixed global batch).
    # Identical on one process.
    coding_rate_scope: str = "global"

    # ---- head resets (paper Sec. 4.5; part of BITS) ----------------------------------------
    reinit_every: int = 0  # re-init the student head every n epochs (0: never; paper 10/100;
    # BITS only: for simdino or dino a BaselineResetWarning says the paper saw SimDINO diverge)
    reinit_at_start: bool = False  # re-initialise the head once before training (adaptation)
    teacher_head_policy: str = "copy"  # at a re-init: copy the new student head | keep the EMA
    # What else a head reset does. The paper says only that the head is "re-sampled from its
    # initial distribution"; its code re-initialises the head's modules in place, which leaves
    # AdamW's moments as they were. Each choice below was measured (studies/README.md, resets):
    reinit_optimizer_state: str = "clear"  # clear the head's AdamW moments | keep them
    # The new head's lr ramps up from 0 over this many steps after a reset; None: as many as the
    # run's own lr warm-up (warmup_epochs), the schedule the first head had. Without it, a reset
    # at a toy run's peak lr collapsed the channel (cifar-toy: k-NN@20 -7 points).
    reinit_warmup_steps: int | None = None
    # The teacher head's EMA momentum for reinit_catchup_steps steps after a reset (None: the
    # schedule's, as the backbone's). In the paper a reset period is ~50,000 steps at momentum
    # >= 0.996, so the teacher head forgets its random draw; a 39-step toy epoch at 0.99 does not.
    reinit_teacher_momentum: float | None = None
    reinit_catchup_steps: int = 0
    # Also reset when the run ends before the reset's period does. False (the paper's calendar:
    # resets at 10, 20, ..., 90 of 100 epochs, each with a whole period after it) keeps the final
    # codes those of a head that learned for a whole period.
    reinit_partial_period: bool = False

    # ---- DINO's options (method dino only; discomm_lite.method.dino reads them) ------------
    n_prototypes: int = 4096  # 65536 in DINO's ImageNet recipe
    head_bottleneck_dim: int = 256  # the prototype head's bottleneck
    teacher_temp: float = 0.04  # final teacher temperature
    teacher_temp_warmup: float = 0.04  # initial teacher temperature
    teacher_temp_warmup_epochs: int = 0
    student_temp: float = 0.1
    center_momentum: float = 0.9
    freeze_last_layer_epochs: int = 0  # keep the prototype layer fixed at the start

    # ---- data and views --------------------------------------------------------------------
    dataset: str = "synthetic"  # synthetic | cifar10 | cifar100 | imagefolder
    data_root: str | None = None  # None: $DISCOMM_DATA, else ./data
    download: bool = False  # let torchvision download CIFAR into data_root when online
    train_subset: int = 0  # train on the first n images of a seeded shuffle (0: all)
    test_subset: int = 0  # evaluate on n test images (0: all)
    image_size: int = 32  # evaluation resolution (and synthetic image side)
    n_global: int = 2
    n_local: int = 0
    global_size: int = 32
    local_size: int = 16
    global_scale_min: float = 0.4
    local_scale_max: float = 0.4
    local_scale_min: float = 0.05
    blur: bool = False  # DINO's Gaussian blur (off for 32 px images, as lightly and solo-learn)
    solarize: bool = True
    # Synthetic data only: factors drawn again, independently, for each view (comma-separated
    # names from discomm_lite.choices.SYNTHETIC_FACTORS, e.g. "background,colour"). The views
    # then share exactly the other factors, which is all the bits can agree on. Empty: every
    # view is an augmentation of one image.
    redraw_factors: str = ""

    # ---- backbone --------------------------------------------------------------------------
    backbone: str = "convnet-small"  # see discomm_lite.models.backbones.BACKBONES, or timm:<name>
    drop_path: float = 0.0

    # ---- optimisation ----------------------------------------------------------------------
    epochs: int = 10
    batch_size: int = 256  # global batch (all processes together)
    lr: float = 1e-3  # peak learning rate after warmup (not rescaled by batch size)
    lr_end: float = 1e-5  # final learning rate of the cosine decay
    warmup_epochs: int = 1
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum: float = 0.99  # EMA teacher momentum at the start
    momentum_end: float = 1.0
    clip_grad: float = 1.0  # max gradient norm (0: no clipping); what it bounds: clip_grad_mode
    # per_param: each parameter tensor's gradient norm is clipped to clip_grad on its own (DINO's
    #   and SimDINO's utils.clip_gradients, so the paper's "gradient clipping 1" and its clipping
    #   ablation); global: the norm of all gradients together (torch's clip_grad_norm_). The CPU
    #   toy presets set their own mode.
    clip_grad_mode: str = "per_param"

    # ---- run -------------------------------------------------------------------------------
    out_dir: str | None = None  # run folder: config.json, metrics.jsonl, checkpoint.pt (None: none)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    compile: bool = False  # torch.compile the backbones
    num_workers: int = -1  # DataLoader workers for ImageFolder data (-1: machine default)
    eval_every: int = 1  # k-NN on the test split every n epochs (0: never)
    log_every: int = 10  # steps between metric flushes (the only host-device syncs)
    checkpoint_every: int = 1  # epochs between checkpoints (one is also written at the end)
    # Checkpoint to continue from on new data (domain adaptation, the paper's Table 8): student and
    # teacher start from its teacher's backbone and, unless reinit_at_start, its teacher's head
    # (and the method's running state), as a continued run would. A head of another shape needs
    # reinit_at_start=True.
    pretrained: str | None = None
    collapse_warn: float = 0.5  # warn when this fraction of teacher bits is constant in a batch

    def __post_init__(self) -> None:
        validate(self)

    @property
    def beta(self) -> float:
        """The coding-rate weight in force: `coding_rate_weight`, or the method's default (0 for a
        method without a coding rate)."""
        if self.coding_rate_weight is None:
            return get_method(self.method).coding_rate_weight or 0.0
        return self.coding_rate_weight

    @property
    def rate_input(self) -> str:
        """The coding rate's features in force: `coding_rate_input`, or the method's default."""
        if self.coding_rate_input is None:
            return get_method(self.method).coding_rate_input
        return self.coding_rate_input

    @property
    def redrawn_factors(self) -> tuple[str, ...]:
        """`redraw_factors` as a tuple of factor names."""
        return tuple(name.strip() for name in self.redraw_factors.split(",") if name.strip())

    @property
    def views_per_image(self) -> int:
        """V: the global and local views cut from each image."""
        return self.n_global + self.n_local

    # ---- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Every field by name: what config.json, checkpoints and metrics files record."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        """Build a Config, refusing unknown names (a typo must not be silently ignored)."""
        if not isinstance(values, dict):
            raise ValueError(f"A Config is made from a dict of its fields, not from a "
                             f"{type(values).__name__} ({shown(values)}).")
        check_field_names(values)
        return cls(**values)

    def replace(self, **changes) -> Config:
        """A copy with `changes` (validated again); unknown names are refused."""
        check_field_names(changes)
        return dataclasses.replace(self, **changes)

    def save(self, path: str | Path) -> None:
        """Write the config as JSON to `path` (a run folder's config.json)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """The Config saved at `path` by `save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def field_names() -> tuple[str, ...]:
    """The Config's field names, in declaration order."""
    return tuple(f.name for f in fields(Config))


def field_types() -> dict[str, type]:
    """The plain Python type of each field (`int`, `float`, `str`, `bool`), Optional removed."""
    return plain_field_types(Config)


def optional_fields() -> frozenset[str]:
    """The fields that accept None (`data_root`, `pretrained`, ...)."""
    return optional_field_names(Config)


def check_field_names(values: dict) -> None:
    """Raise ValueError, listing the accepted names, if `values` holds a name not a field."""
    names = set(field_names())
    unknown = [name for name in values if not (isinstance(name, str) and name in names)]
    if unknown:
        listed = ", ".join(shown(name, 40) for name in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ValueError(
            f"Unknown parameter(s) [{listed}]{more}: they are not fields of discomm_lite.Config. "
            f"Check the spelling; the accepted names are: {', '.join(field_names())}."
        )


def make_config(preset: str | None = None, **overrides) -> Config:
    """The Config of a named preset (`presets.PRESETS`) with `overrides` applied.

    A `method` among the overrides brings that method's own settings on the preset first
    (`method_settings`: SimDINO's head and tuned lr on cifar-toy, say), then the other overrides
    apply. No preset: the defaults with `overrides`. Unknown names are refused, as by
    `Config.from_dict`.
    """
    if preset is None:
        return Config.from_dict(overrides)
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}: the presets are {', '.join(PRESETS)}.")
    check_field_names(overrides)
    method = overrides.get("method")
    settings = method_settings(preset, method) if method is not None else {}
    return Config.from_dict({**PRESETS[preset], **settings, **overrides})


def method_settings(preset: str, method: str) -> dict:
    """The overrides that make `preset`'s run one of `method` with that method's own settings.

    A preset's values are BITS's; `presets.METHOD_SETTINGS` holds what another method changes on
    it (its tuned learning rate, its head). For a method without entry: just the method's name.
    `make_config(preset, method=...)` applies them; on a Config already built:

        config.replace(**method_settings("cifar-toy", "simdino"))
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}: the presets are {', '.join(PRESETS)}.")
    return dict(METHOD_SETTINGS.get(preset, {}).get(method, {"method": method}))
