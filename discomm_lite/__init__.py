"""discomm-lite: BITS, self-supervised learning as discrete communication (arXiv 2602.09764).

The public entry points: `Config` / `make_config` / `PRESETS`, `train`, `load_backbone`,
`evaluate_checkpoint`; the maths lives in `losses`, the data in `data`, the evaluations in
`evaluate` and `language`.
"""

from discomm_lite.checkpoint import load_backbone
from discomm_lite.config import PRESETS, Config, make_config

__all__ = ["PRESETS", "Config", "evaluate_checkpoint", "load_backbone", "make_config", "train"]


def __getattr__(name: str):
    # Lazy: `import discomm_lite` stays light (the engine pulls in torchvision, timm, tqdm).
    if name == "train":
        from discomm_lite.engine import train

        return train
    if name == "evaluate_checkpoint":
        from discomm_lite.suite import evaluate_checkpoint

        return evaluate_checkpoint
    raise AttributeError(f"module 'discomm_lite' has no attribute {name!r}")
