"""Causal self-attention over time: the ablation of the selective SSM temporal mixer (``model/temporal=attention``).

    x       [batch, L, d_model]   one sequence per node (nodes are folded into the batch by the block)
    returns [batch, L, d_model]

Each step attends to itself and every earlier step (causal), with rotary position embeddings (RoFormer, Su et
al. 2021) on queries and keys so scores depend on the distance in steps. It runs through PyTorch's fused
``scaled_dot_product_attention`` with ``is_causal=True`` (flash-style on CPU and GPU: no L x L matrix is kept),
so the comparison with the SSM is against attention's best implementation, not a strawman. Its cost still grows
with L^2 in time, and it has no fixed-size state: streaming would need a cache of every past key and value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rotary(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate pairs of channels of x [batch, heads, L, d_head] by position-dependent angles (d_head even)."""
    L, d = x.shape[-2], x.shape[-1]
    inv_freq = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)  # [d/2]
    angles = torch.arange(L, device=x.device, dtype=torch.float32)[:, None] * inv_freq  # [L, d/2]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class CausalTemporalAttention(nn.Module):
    """Multi-head causal attention over the time axis with rotary positions.

    ``backend`` is accepted for the mixer-factory contract (see :mod:`stlm.nn.block`); the op is always
    PyTorch's fused causal SDPA, which picks its own kernel per device.
    """

    def __init__(self, d_model: int, n_heads: int = 2, dropout: float = 0.0, backend: str = "auto"):
        super().__init__()
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(
                f"CausalTemporalAttention: d_model={d_model} must split into n_heads={n_heads} heads of even width"
            )
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, L, d = x.shape
        q, k, v = self.qkv(x).view(batch, L, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(rotary(q), rotary(k), v, is_causal=True)  # [batch, heads, L, d_head]
        return self.dropout(self.out(y.transpose(1, 2).reshape(batch, L, d)))
