"""Forecast heads: per-node hidden states over the window -> all horizons at once.

    h       [B, T, N, d_model]
    returns [B, H, N, C]        (scaled units)

``flatten`` reads the whole window of hidden states (a linear map from T * d_model, as STAEformer's output
layer); ``last`` reads only the last step's state (what a recurrent, streaming forecaster has at hand).
"""

from __future__ import annotations

import torch
from torch import nn

HEAD_MODES = ("flatten", "last")


class ForecastHead(nn.Module):
    def __init__(self, window: int, d_model: int, horizon: int, n_channels: int, mode: str = "flatten"):
        super().__init__()
        if mode not in HEAD_MODES:
            raise ValueError(f"model.head={mode!r}; choose one of {list(HEAD_MODES)}")
        self.mode, self.horizon, self.n_channels = mode, horizon, n_channels
        d_in = window * d_model if mode == "flatten" else d_model
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_in, horizon * n_channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, T, N, d = h.shape
        h = self.norm(h)
        feats = h.permute(0, 2, 1, 3).reshape(B, N, T * d) if self.mode == "flatten" else h[:, -1]
        out = self.proj(feats).view(B, N, self.horizon, self.n_channels)
        return out.permute(0, 2, 1, 3)
