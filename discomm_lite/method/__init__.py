"""The methods: BITS (the paper) and its two baselines, SimDINO and DINO.

`registry` (one frozen `Method` record per method: what the training loop asks of it), one module
per method with its record (`bits`, `simdino`, `dino`; DINO's running state lives in its own
module), the pure maths (`losses`: the binary channel's agreement terms and SimDINO's;
`coding_rate`: the coding rate of Eq. 9) and the projection heads (`heads`).

Importing the package registers the three methods (their modules import nothing heavy).
"""

# Each registers its method, in the paper's order (bits, simdino, dino).
from discomm_lite.method import bits  # noqa: F401

# isort: split
from discomm_lite.method import simdino  # noqa: F401

# isort: split
from discomm_lite.method import dino  # noqa: F401

# isort: split
from discomm_lite.method.registry import Method, MethodState, get_method, method_names, register

__all__ = ["Method", "MethodState", "get_method", "method_names", "register"]
