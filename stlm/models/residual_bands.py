"""Bands for any point model: empirical quantiles of its training residuals, per horizon, token and channel.

    point(batch)   [B, H, N, C]      scaled point forecast
    returns        [B, H, N, C, Q]   point + offset[h, n, c, q]

``offset[h, n, c, q]`` is the level-``q`` quantile of the scaled residuals ``y - point`` of token ``n`` at
horizon ``h`` over (up to ``max_windows`` evenly spread) training windows where the target is observed: the
band a forecaster gets from knowing only how wrong the point model has been, the same at every time of day.
It is the reference of a probabilistic skill score (last value, historical average, persistence and
climatology with bands: ``model=last_value model.quantiles=default``). Quantiles of one sample set are sorted
in their level, so the bands never cross. A token never observed at a horizon takes the quantiles of all
tokens pooled.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stlm.nn.band_scale import BandScale

MAX_RESIDUALS = 32_000_000  # residual values held at once while fitting (128 MB of float32)
QUANTILE_CHUNK = 8_000_000  # values per torch.nanquantile call (it refuses inputs above 2**24 values)


def _nanquantile(values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Quantiles over the first axis, NaN skipped: [S, ...] -> [Q, ...] (NaN where a column has no value)."""
    return torch.nanquantile(values, levels, dim=0)


class ResidualBands(nn.Module):
    """``point`` (a fitted model of the stlm contract) with bands from its training residuals (module docstring).

    Args:
        point: the point model (fitted by its own ``fit_from_data``, if it has one, before the residuals).
        levels: the Q quantile levels, increasing in (0, 1).
        horizon: H, the forecast steps (of the band's per-horizon scale).
        max_windows: at most this many evenly spread training windows give the residuals.
    """

    def __init__(self, point: nn.Module, levels, horizon: int, max_windows: int = 2048):
        super().__init__()
        self.point, self.max_windows = point, max_windows
        self.register_buffer("quantile_levels", torch.as_tensor(list(levels), dtype=torch.float64))
        self.register_buffer("offsets", torch.zeros(0))  # [H, N, C, Q] scaled; saved with the checkpoint
        self.band_scale = BandScale(horizon, self.quantile_levels)  # fitted on validation by the engine

    def fit_from_data(self, datamodule) -> None:
        if hasattr(self.point, "fit_from_data"):
            self.point.fit_from_data(datamodule)
        residuals = self._training_residuals(datamodule)  # [W, H, N, C], NaN where the target is missing
        W, H, N, C = residuals.shape
        q = self.quantile_levels.float()
        rows = residuals.transpose(1, 2).reshape(W * N, H, 1, C)
        pooled = _nanquantile(rows[:: max(1, rows.numel() // QUANTILE_CHUNK)], q)  # [Q, H, 1, C] (a spread subset)
        step = max(1, QUANTILE_CHUNK // (W * H * C))
        per_token = torch.cat([_nanquantile(residuals[:, :, a : a + step], q) for a in range(0, N, step)], dim=2)
        offsets = torch.where(torch.isfinite(per_token), per_token, pooled)  # [Q, H, N, C]
        if not torch.isfinite(offsets).all():
            raise ValueError(f"{datamodule.where}: the training windows hold no observed target at some horizon; "
                             "residual bands need observations at every horizon")
        self.offsets = offsets.permute(1, 2, 3, 0).contiguous()

    @torch.no_grad()
    def _training_residuals(self, datamodule) -> torch.Tensor:
        dataset = datamodule.datasets["train"]
        spec = datamodule.spec
        per_window = spec.horizon * spec.n_nodes * spec.n_channels
        count = min(len(dataset), self.max_windows, max(1, MAX_RESIDUALS // per_window))
        if count == 0:
            raise ValueError(f"{datamodule.where}: the training split has no window to take residuals from")
        picks = np.unique(np.linspace(0, len(dataset) - 1, count).round().astype(int)).tolist()
        mean, std = (torch.as_tensor(v, dtype=torch.float32) for v in (datamodule.scaler.mean, datamodule.scaler.std))
        was_training = self.point.training
        self.point.eval()
        out = []
        for i in range(0, len(picks), 64):
            batch = dataset.__getitems__(picks[i : i + 64])
            residual = (batch["y"] - mean) / std - self.point(batch)
            out.append(torch.where(batch["mask"] > 0, residual, float("nan")))
        self.point.train(was_training)
        return torch.cat(out)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.offsets.numel() == 0:
            raise RuntimeError("ResidualBands needs fit_from_data(datamodule) before forecasting")
        return self.band_scale(self.point(batch).unsqueeze(-1) + self.offsets)
