"""What a loaded checkpoint describes, checked before anything is built from it (issue 25).

- `checkpoint_config`, `check_local_backbone`: the recorded configuration is valid, and never
  names a backbone that timm would fetch from the network or from a folder the file chooses;
- `check_shapes`: the saved tensors have the shapes of the model the configuration builds, made
  on the meta device (nothing allocated) before it is built for real: a `head_hidden_dim` of
  40000 over a 16-wide head's weights would otherwise allocate gigabytes first.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from discomm_lite.config import Config
from discomm_lite.config.checks import shown
from discomm_lite.training.untrusted import CheckpointError


def check_shapes(expected: Mapping[str, tuple[int, ...]], saved, what: str,
                 path: Path | str) -> None:
    """Refuse `saved` (a state_dict read from `path`) unless it holds exactly the tensors of
    `expected` (name -> shape), naming the first that differ; nothing is built or copied."""
    if not isinstance(saved, Mapping):
        raise CheckpointError(f"{path}: its {what} is a {type(saved).__name__}, not a dict of "
                              "tensors.")
    names = set(expected) | {k for k in saved if isinstance(k, str)}
    differ = sorted(
        (k for k in names if not isinstance(saved.get(k), Tensor) or k not in expected
         or tuple(saved[k].shape) != tuple(expected[k])))
    differ += [shown(k, 40) for k in saved if not isinstance(k, str)]
    if differ:
        described = "; ".join(f"{k}: saved {_shape_of(saved.get(k))}, the configuration's "
                              f"{_shape_of(expected.get(k))}" for k in differ[:3])
        more = f"; and {len(differ) - 3} more" if len(differ) > 3 else ""
        raise CheckpointError(
            f"{path}: its {what} do not fit the model its configuration describes "
            f"({described}{more}): the configuration or the tensors were edited, or the file "
            "is damaged. Nothing was built from it.")


def _shape_of(value) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Tensor | tuple | torch.Size):
        return str(tuple(value.shape if isinstance(value, Tensor) else value))
    return f"a {type(value).__name__}"


def checkpoint_config(payload: dict, path: Path | str, *, local_backbone: bool = True
                      ) -> Config:
    """The Config a checkpoint records, valid, and (`local_backbone`) with a backbone that is
    built from local code (`check_local_backbone`)."""
    try:
        config = Config.from_dict(payload["config"])
    except ValueError as err:
        raise CheckpointError(f"{path} records a configuration this version does not accept: "
                              f"{err}") from None
    if local_backbone:
        check_local_backbone(config.backbone, path)
    return config


def check_local_backbone(backbone: str, path: Path | str) -> None:
    """Refuse a loaded configuration's timm backbone that timm would not build from its own
    code: `hf-hub:` (a download), `local-dir:` (a folder the file chooses), an unknown name."""
    if not backbone.startswith("timm:"):
        return
    import timm

    name = backbone.removeprefix("timm:")
    if ":" in name or not timm.is_model(name):
        reason = ("which timm would fetch from the Hugging Face hub or a folder the file names"
                  if ":" in name else "which timm does not know")
        raise CheckpointError(
            f"{path} records the backbone {shown(backbone, 80)}, {reason}: a checkpoint never "
            "decides what is downloaded or read. Use a checkpoint of a backbone timm builds "
            "from its own code (timm:<registered model name>), or build the model yourself.")
