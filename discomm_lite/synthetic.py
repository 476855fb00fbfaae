"""The embedded synthetic images live in `discomm_lite.data.synthetic`; this path keeps old imports.

Import from `discomm_lite.data.synthetic` in new code.
"""

from discomm_lite.data.synthetic import (
    FACTOR_VALUES,
    LABEL_FACTORS,
    SYNTHETIC_CLASSES,
    SYNTHETIC_FACTORS,
    make_synthetic,
    render_synthetic,
    synthetic_labels,
)

__all__ = ["FACTOR_VALUES", "LABEL_FACTORS", "SYNTHETIC_CLASSES", "SYNTHETIC_FACTORS",
           "make_synthetic", "render_synthetic", "synthetic_labels"]
