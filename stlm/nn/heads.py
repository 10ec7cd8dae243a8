"""Forecast heads: per-node hidden states over the window -> all horizons at once.

    h       [B, T, N, d_model]
    returns [B, H, N, C]        (scaled units), or [B, H, N, C, Q] with Q quantile levels


``flatten`` reads the whole window of hidden states (a linear map from T * d_model, as STAEformer's output
layer); ``last`` reads only the last step's state. Given more steps than the trained window, ``flatten`` reads
the last ``window`` of them; given fewer, the missing oldest steps count as zeros after the norm (what a
streaming forecaster's buffer holds before it has seen a whole window), so any history length is accepted.

With ``quantiles`` (levels in (0, 1)) the head gives Q outputs per target, made non-crossing by
:func:`stlm.nn.quantiles.non_crossing` (the median plus positive steps outward), and exposes the levels as
``quantile_levels``, then widened per horizon and level by ``band_scale`` (identity until the engine fits it on
the validation split; eval mode only); without, it is the point head (the same weights as before quantiles existed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stlm.nn.band_scale import BandScale
from stlm.nn.quantiles import gaussian_step_bias, median_index, non_crossing

# Spread (scaled units) of the band a quantile head starts from: the residual of a forecast is a fraction of the
# data's spread (the seasonal prior and the last value explain most of it), so half of it is a plausible start.
INITIAL_SPREAD = 0.5

HEAD_MODES = ("flatten", "last")


class ForecastHead(nn.Module):
    def __init__(self, window: int, d_model: int, horizon: int, n_channels: int, mode: str = "flatten", steps: int | None = None,
                 quantiles: torch.Tensor | None = None):
        super().__init__()
        if mode not in HEAD_MODES:
            raise ValueError(f"model.head={mode!r}; choose one of {list(HEAD_MODES)}")
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ValueError(f"model.head_steps must be a positive integer or null (the whole window), got {steps!r}")
        # ``flatten`` reads the last ``steps`` states (the whole window by default; fewer for long windows,
        # where the SSM has already summarized the older history into its state).
        window = min(window, steps) if steps is not None else window
        self.mode, self.window, self.horizon, self.n_channels = mode, window, horizon, n_channels
        d_in = window * d_model if mode == "flatten" else d_model
        self.register_buffer("quantile_levels", None if quantiles is None else torch.as_tensor(quantiles, dtype=torch.float64))
        self.n_quantiles = 1 if quantiles is None else len(quantiles)
        self.median = None if quantiles is None else median_index(self.quantile_levels)
        # Fitted on the validation split by the engine, applied in eval mode only (stlm.nn.band_scale).
        self.band_scale = None if quantiles is None else BandScale(horizon, self.quantile_levels)
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_in, horizon * n_channels * self.n_quantiles)
        if self.median is not None:
            with torch.no_grad():
                bias = self.proj.bias.view(horizon, n_channels, self.n_quantiles)
                steps = gaussian_step_bias(self.quantile_levels, INITIAL_SPREAD).to(bias)
                bias[..., torch.arange(self.n_quantiles) != self.median] = steps[torch.arange(self.n_quantiles) != self.median]

    @property
    def steps_read(self) -> int:
        """How many of the latest (normalized) hidden states a forecast reads."""
        return self.window if self.mode == "flatten" else 1

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.project(self.norm(h))

    def project(self, normed: torch.Tensor) -> torch.Tensor:
        """Normalized hidden states [B, T, N, d] (any T) -> forecast [B, H, N, C] (or [B, H, N, C, Q])."""
        B, T, N, d = normed.shape
        if self.mode == "last":
            feats = normed[:, -1]
        else:
            if T > self.window:
                normed = normed[:, T - self.window :]
            elif T < self.window:
                normed = F.pad(normed, (0, 0, 0, 0, self.window - T, 0))
            feats = normed.permute(0, 2, 1, 3).reshape(B, N, self.window * d)
        out = self.proj(feats)
        if self.median is None:
            return out.view(B, N, self.horizon, self.n_channels).permute(0, 2, 1, 3)
        out = non_crossing(out.view(B, N, self.horizon, self.n_channels, self.n_quantiles), self.median)
        return self.band_scale(out.permute(0, 2, 1, 3, 4))
