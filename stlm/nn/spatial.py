"""Spatial mixer: multi-head global attention across the N tokens (sensors or grid patches) of one step.

    x       [batch, N, d_model]   (time is folded into the batch by the block)
    returns [batch, N, d_model]

Non-causal and equivariant to any permutation of the tokens (it never sees their order; identity comes from
the node embedding). Tokens of sensors whose reading is missing are not masked out by default: their embedding
carries the missing-value mask and the node identity, which is what lets attention fill them in from the
others; ``key_padding_mask`` is for tokens that must not be attended to at all (padding). Optional ``key_padding_mask`` [batch, N] (True = ignore the token) and additive
``bias`` [heads or 1, N, N] (e.g. a graph prior). The attention runs through :mod:`stlm.kernels`.
"""

from __future__ import annotations

import torch
from torch import nn

from stlm.kernels import KernelChoice


class GlobalAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int = 4, dropout: float = 0.0, backend: str = "auto"):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"GlobalAttention: d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.attn_backend = KernelChoice("attention", backend)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
        batch, N, d = x.shape
        q, k, v = self.qkv(x).view(batch, N, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)  # 3 x [batch, heads, N, d_head]
        attend = self.attn_backend(x.device, x.dtype)  # resolved once per device and dtype
        y = attend(q, k, v, key_padding_mask=key_padding_mask, bias=None if bias is None else bias[None])
        return self.dropout(self.out(y.transpose(1, 2).reshape(batch, N, d)))
