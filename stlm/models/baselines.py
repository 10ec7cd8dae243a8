"""Baselines in the same engine and on the same split as STLM.

* :class:`LastValue` — the last observed input of each node, repeated over the horizon.
* :class:`HistoricalAverage` — the mean of the training period at the same time of the week (time of day
  when the day-of-week feature is off), per node; fitted, not trained.
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


class HistoricalAverage(nn.Module):
    """Time-of-week profile of the training period: [slots x days, N, C] means in scaled units."""

    def __init__(self, spec: DataSpec):
        super().__init__()
        self.n_slots = max(spec.steps_per_day, 1)
        self.n_days = max(spec.days_per_week, 1)  # 1 = profile by time of day only
        self.register_buffer("profile", torch.zeros(self.n_slots * self.n_days, spec.n_nodes, spec.n_channels))

    def _bucket(self, calendar: torch.Tensor) -> torch.Tensor:
        day = calendar[..., 1] if self.n_days > 1 else torch.zeros_like(calendar[..., 1])
        return day * self.n_slots + calendar[..., 0].clamp_max(self.n_slots - 1)

    def fit_from_data(self, datamodule) -> None:
        """Mean of observed training values per (time-of-week bucket, node, channel).

        Buckets never observed for a node fall back to that node's time-of-day mean, then its overall mean.
        """
        period = datamodule.training_period()
        values = datamodule.scaler.transform(period["values"])
        mask = period["mask"].astype(np.float64)
        bucket = self._bucket(torch.from_numpy(period["calendar"])).numpy()
        n_buckets = self.n_slots * self.n_days
        total = np.zeros((n_buckets,) + values.shape[1:])
        count = np.zeros_like(total)
        np.add.at(total, bucket, values * mask)
        np.add.at(count, bucket, mask)
        overall = (values * mask).sum(0) / np.maximum(mask.sum(0), 1)
        by_slot_total = total.reshape(self.n_days, self.n_slots, *total.shape[1:]).sum(0)
        by_slot_count = count.reshape(self.n_days, self.n_slots, *count.shape[1:]).sum(0)
        by_slot = np.where(by_slot_count > 0, by_slot_total / np.maximum(by_slot_count, 1), overall)
        fallback = np.tile(by_slot, (self.n_days, 1, 1))
        profile = np.where(count > 0, total / np.maximum(count, 1), fallback)
        self.profile.copy_(torch.from_numpy(profile.astype(np.float32)))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.profile[self._bucket(batch["y_time"])]  # [B, H, N, C]


class SeasonalNaive(nn.Module):
    """The reading one season before each target (one week by default), else the last observed input."""

    def __init__(self, spec: DataSpec, season_days: float = 7.0):
        super().__init__()
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
        ds = datamodule.datasets["train"]
        self.series = ds.scaled.clone()
        self.observed = ds.mask.float().clone()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.series.numel() == 0:
            raise RuntimeError("SeasonalNaive needs fit_from_data(datamodule) before forecasting")
        H = batch["y"].shape[1]
        steps = batch["index"][:, None] + torch.arange(H, device=batch["index"].device) - self.season  # [B, H]
        valid = (steps >= 0)[..., None, None]
        steps = steps.clamp_min(0)
        seasonal, seen = self.series[steps], self.observed[steps] * valid  # [B, H, N, C]
        fallback = last_observed(batch["x"], batch["x_mask"]).unsqueeze(1)
        return seen * seasonal + (1 - seen) * fallback


class LinearForecaster(nn.Module):
    """``y[h] = sum_t W[h, t, c] x[t] + b[h, c]`` per node, with the missing-value mask as extra inputs."""

    def __init__(self, spec: DataSpec):
        super().__init__()
        self.horizon, self.n_channels = spec.horizon, spec.n_channels
        self.proj_per_channel = nn.ModuleList(nn.Linear(2 * spec.window, spec.horizon) for _ in range(spec.n_channels))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x, m = batch["x"], batch["x_mask"]  # [B, T, N, C]
        feats = torch.cat([x * m, m], dim=1).permute(0, 2, 3, 1)  # [B, N, C, 2T]
        out = torch.stack([lin(feats[:, :, c]) for c, lin in enumerate(self.proj_per_channel)], dim=-1)  # [B, N, H, C]
        return out.permute(0, 2, 1, 3)
