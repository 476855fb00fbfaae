"""discomm-lite: BITS, self-supervised learning as discrete communication (arXiv 2602.09764).

The public entry points: `Config` / `make_config` / `PRESETS`, `train`, `load_model`,
`load_backbone`, `evaluate_checkpoint`; the methods live in `methods`, their maths in `losses`, the
data in `data`, the evaluations in `evaluate` and `language`.
"""

from discomm_lite.config import PRESETS, Config, make_config

__all__ = ["PRESETS", "Config", "evaluate_checkpoint", "load_backbone", "load_model",
           "make_config", "train"]

# Imported on first use: `import discomm_lite` and the Config stay free of torch.
_LAZY = {"train": "discomm_lite.api",
         "evaluate_checkpoint": "discomm_lite.evaluation.suite",
         "load_backbone": "discomm_lite.training.checkpoint",
         "load_model": "discomm_lite.training.checkpoint"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'discomm_lite' has no attribute {name!r}")
