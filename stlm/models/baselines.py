"""Baselines in the same engine and on the same split as STLM.

* :class:`LastValue` — the last observed input of each node, repeated over the horizon.
* :class:`HistoricalAverage` — each node's training mean at the same time of day and kind of day
  (see :mod:`stlm.models.historical_average`); fitted, not trained.
* :class:`SeasonalNaive` — the value one season earlier (default one week), falling back to the last value
  where that reading is missing; fitted (it keeps the scaled series), not trained.
* :class:`LinearForecaster` — one linear map from the window to every horizon, shared by all nodes
  (per channel), trained like STLM.

All return scaled predictions [B, H, N, C], like every model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stlm.data.spec import DataSpec
from stlm.models.historical_average import HistoricalAverage
from stlm.models.seasonal_prior import SeasonalPrior

__all__ = ["HistoricalAverage", "LastValue", "LinearForecaster", "SeasonalNaive", "last_observed"]


def last_observed(x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
    """Last observed value of each series in the window: [B, T, N, C] -> [B, N, C] (0 if never observed)."""
    T = x.shape[1]
    steps = torch.arange(1, T + 1, device=x.device, dtype=x.dtype).view(1, T, 1, 1)
    last = (x_mask * steps).argmax(dim=1, keepdim=True)  # index of the last observed step (0 if none)
    value = torch.gather(x, 1, last).squeeze(1)
    seen = x_mask.amax(dim=1)
    return value * seen


class LastValue(nn.Module):
    """Persistence: every horizon equals the last observed input."""

    def __init__(self, spec: DataSpec):
        super().__init__()
        self.horizon = spec.horizon

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        last = last_observed(batch["x"], batch["x_mask"])
        return last.unsqueeze(1).expand(-1, self.horizon, -1, -1)


class SeasonalNaive(nn.Module):
    """The reading one season before each target (one week by default), else the last observed input."""

    def __init__(self, spec: DataSpec, season_days: float = 7.0):
        super().__init__()
        self.horizon = spec.horizon
        self.season = int(round(season_days * 24 * 60 / spec.interval_minutes))
        if self.season < spec.horizon:
            raise ValueError(
                f"SeasonalNaive: season_days={season_days} is {self.season} steps, shorter than the horizon "
                f"({spec.horizon}); a season must reach back before the forecast starts"
            )
        self.register_buffer("series", torch.zeros(0), persistent=False)
        self.register_buffer("observed", torch.zeros(0), persistent=False)

    def fit_from_data(self, datamodule) -> None:
        """Keep the scaled series and its mask (lookups by absolute step index)."""
        raw = datamodule.series.read(0, datamodule.series.n_steps)  # [T, N, C], NaN = missing
        observed = np.isfinite(raw)
        scaled = np.where(observed, datamodule.scaler.transform(np.where(observed, raw, np.float32(0.0))), 0.0)
        self.series = torch.from_numpy(scaled.astype(np.float32))
        self.observed = torch.from_numpy(observed.astype(np.float32))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.series.numel() == 0:
            raise RuntimeError("SeasonalNaive needs fit_from_data(datamodule) before forecasting")
        H = self.horizon
        steps = batch["index"][:, None] + torch.arange(H, device=batch["index"].device) - self.season  # [B, H]
        valid = (steps >= 0)[..., None, None]
        steps = steps.clamp_min(0)
        seasonal, seen = self.series[steps], self.observed[steps] * valid  # [B, H, N, C]
        fallback = last_observed(batch["x"], batch["x_mask"]).unsqueeze(1)
        return seen * seasonal + (1 - seen) * fallback


class LinearForecaster(nn.Module):
    """A linear map from the window to every horizon, per node, shared by all nodes (one map per channel).

    Inputs per node and channel: the window's values and missing-value mask (and, with ``seasonal_prior``,
    the departures from the node's time-of-week training mean, which is then added to the output, as in
    :class:`~stlm.models.forecaster.STLMForecaster`): ``y[h] = prior[h] + sum_t W[h, t] f[t] + b[h]``.
    """

    def __init__(self, spec: DataSpec, seasonal_prior: bool = True):
        super().__init__()
        self.prior = SeasonalPrior(spec, enabled=seasonal_prior)
        self.n_features = self.prior.n_features // spec.n_channels
        self.proj_per_channel = nn.ModuleList(
            nn.Linear(self.n_features * spec.window, spec.horizon) for _ in range(spec.n_channels)
        )

    def fit_from_data(self, datamodule) -> None:
        self.prior.fit_from_data(datamodule)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        B, T, N, C = batch["x"].shape
        feats = self.prior.features(batch).view(B, T, N, self.n_features, C)  # features grouped per channel
        feats = feats.permute(0, 2, 4, 3, 1).reshape(B, N, C, self.n_features * T)
        out = torch.stack([lin(feats[:, :, c]) for c, lin in enumerate(self.proj_per_channel)], dim=-1)  # [B, N, H, C]
        return self.prior.add(out.permute(0, 2, 1, 3), batch)
