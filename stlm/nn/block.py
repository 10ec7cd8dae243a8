"""STBlock: pre-norm residual temporal mixer, then spatial mixer, then MLP, on [B, T, N, d_model].

    h = h + temporal(norm(h))   nodes folded into the batch: [B*N, T, d]   (causal over T)
    h = h + spatial(norm(h))    time folded into the batch:  [B*T, N, d]   (one step's tokens)
    h = h + mlp(norm(h))

The mixers arrive as factories (``factory(d_model=..., backend=...) -> nn.Module``, where ``backend`` is the
kernel backend of the mixer's op, see :mod:`stlm.kernels.dispatch`) so the block never names Mamba or
attention: an ablation (attention over time, no spatial mixing) is a config change. A factory of ``None``
leaves that mixer out.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

MixerFactory = Callable[..., nn.Module]


class STBlock(nn.Module):
    def __init__(
        self,
        d_model: int,
        temporal: MixerFactory | None,
        spatial: MixerFactory | None,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        kernels: str = "auto",
    ):
        super().__init__()
        self.temporal = temporal(d_model=d_model, backend=kernels) if temporal is not None else None
        self.spatial = spatial(d_model=d_model, backend=kernels) if spatial is not None else None
        self.norm_t = nn.LayerNorm(d_model) if self.temporal is not None else None
        self.norm_s = nn.LayerNorm(d_model) if self.spatial is not None else None
        hidden = int(round(mlp_ratio * d_model))
        self.norm_m = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, T, N, d = h.shape
        if self.temporal is not None:
            t_in = self.norm_t(h).transpose(1, 2).reshape(B * N, T, d)
            h = h + self.dropout(self.temporal(t_in).reshape(B, N, T, d).transpose(1, 2))
        if self.spatial is not None:
            s_in = self.norm_s(h).reshape(B * T, N, d)
            h = h + self.dropout(self.spatial(s_in).reshape(B, T, N, d))
        return h + self.dropout(self.mlp(self.norm_m(h)))
