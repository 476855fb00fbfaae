"""Projection heads: the binary channel's encoder (BITS, SimDINO) and DINO's prototype head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from discomm_lite.choices import HEAD_NORMS


class ProjectionHead(nn.Module):
    """DINO's 3-layer MLP, in -> hidden -> hidden -> out_dim, GELU, no prototype layer.

    The head of paper Sec. 5 ("the same three-layer MLP projection head as in DINO").

    For BITS the `out_dim = n_bits` outputs are the logits of the K-bit message (bit = logit > 0);
    SimDINO uses the same head and L2-normalises its output in the loss, so the two methods differ
    by their loss alone. `norm="batchnorm"` ends the head with an affine-free BatchNorm1d, like the
    same authors' CroVCA hashing head, which centres each bit's logit over the batch.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        act_layer: type[nn.Module] = nn.GELU,
        norm: str = "none",
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            act_layer(),
            nn.Linear(hidden_dim, hidden_dim),
            act_layer(),
            nn.Linear(hidden_dim, out_dim),
        )
        if norm not in HEAD_NORMS:
            raise ValueError(f"norm must be one of {', '.join(HEAD_NORMS)}, got {norm!r}.")
        self.norm = nn.BatchNorm1d(out_dim, affine=False) if norm == "batchnorm" else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-sample every parameter from its initial distribution (the paper's head reset)."""
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # _BatchNorm: also the SyncBatchNorm that a CUDA DDP run converts the head's norm into.
        if isinstance(self.norm, nn.modules.batchnorm._BatchNorm):
            self.norm.reset_running_stats()

    def forward(self, feats: Tensor) -> Tensor:
        """(N, in_dim) features -> (N, out_dim) outputs (BITS: bit logits)."""
        return self.norm(self.mlp(feats))


class DINOHead(nn.Module):
    """DINO's head: MLP to a bottleneck, L2-normalise, weight-normalised prototype layer.

    facebookresearch/dino vision_transformer.py, DINOHead with norm_last_layer=True.

    The prototype layer's weight norm is fixed to 1 (DINO's `norm_last_layer=True`), written as
    cosine similarities between the normalised bottleneck and normalised prototype vectors.
    """

    def __init__(
        self,
        in_dim: int,
        n_prototypes: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.projection = ProjectionHead(in_dim, bottleneck_dim, hidden_dim, act_layer)
        self.prototypes = nn.Parameter(torch.empty(n_prototypes, bottleneck_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-sample the MLP and the prototypes from their initial distributions."""
        self.projection.reset_parameters()
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, feats: Tensor) -> Tensor:
        """(N, in_dim) features -> (N, P) cosine scores against the P prototypes."""
        z = F.normalize(self.projection(feats), dim=-1)  # (N, bottleneck)
        return z @ F.normalize(self.prototypes, dim=-1).T  # (N, P)

    def cancel_last_layer_gradients(self) -> None:
        """Freeze the prototypes for DINO's first epoch(s), which stabilises its start."""
        self.prototypes.grad = None
