"""Scores of a forecast file with the metric code of training (the truth datamodule's metrics: per-horizon
MAE/RMSE/MAPE for sensors, latitude-weighted RMSE/MAE/ACC per lead for grids), accumulated chunk by chunk.
A file with a ``quantile`` dimension is scored as training scores a quantile model: the point metrics on the
median, CRPS, pinball loss, coverage and width of the 90% interval beside them; one with a ``member`` dimension
as an ensemble: the point metrics on the members' median, the fair CRPS, coverage and width of the members'
central 90%."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import xarray as xr

from stlm.evaluate.truth import Truth
from stlm.forecast.layout import MEMBER_DIM, PROBABILISTIC_DIMS, QUANTILE_DIM


def metric_for(forecasts: xr.Dataset, truth: Truth, mape_min_abs: float):
    """The truth datamodule's metric, for the forecasts' spatial positions, variables, leads and step."""
    interval = pd.Timedelta(forecasts.lead_time.values[0]) / pd.Timedelta(minutes=1)
    levels = forecasts[QUANTILE_DIM].values.tolist() if QUANTILE_DIM in forecasts.dims else None
    members = forecasts.sizes[MEMBER_DIM] if MEMBER_DIM in forecasts.dims else None
    factory = truth.dm.metric_factory(forecasts.sizes["lead_time"], interval, truth.node_index, truth.channel_index,
                                      levels=levels, members=members)
    return factory(mape_min_abs=mape_min_abs, sync_on_compute=False)


def forecast_values(forecasts: xr.Dataset, channels: list[str], rows: slice) -> torch.Tensor:
    """[k, H, N, C] (or quantiles [k, H, N, C, Q], members [k, H, N, C, M]) float32 forecasts of init-time rows
    ``rows`` (grids flattened latitude-major; the quantile or member axis last, whatever the file's order of dims)."""
    parts = []
    for name in channels:
        var = forecasts[name].isel(init_time=rows)
        last = next((d for d in PROBABILISTIC_DIMS if d in var.dims), None)
        if last is not None:
            array = var.transpose(..., last).values
            parts.append(array.reshape(array.shape[0], array.shape[1], -1, array.shape[-1]))
        else:
            array = var.values
            parts.append(array.reshape(array.shape[0], array.shape[1], -1))
    return torch.from_numpy(np.stack(parts, axis=3).astype(np.float32))


def score(forecasts: xr.Dataset, truth: Truth, mape_min_abs: float = 0.0, chunk: int = 256) -> dict[str, float]:
    """``{"mae_h1": ..., "mae_avg": ...}`` (sensors) or ``{"rmse_lead6h": ..., "acc_avg": ...}`` (grids)."""
    metric = metric_for(forecasts, truth, mape_min_abs)
    K = forecasts.sizes["init_time"]
    for a in range(0, K, chunk):
        rows = slice(a, min(a + chunk, K))
        pred = forecast_values(forecasts, truth.channels, rows)
        valid = forecasts.init_time.values[rows, None] + forecasts.lead_time.values[None, :]
        targets = truth.targets(valid)
        if not torch.isfinite(pred[targets.mask > 0]).all():
            raise ValueError(f"{truth.where}: forecasts hold NaN or inf where the truth is observed (init times "
                             f"{forecasts.init_time.values[rows][[0, -1]]}); a forecast file must be complete")
        metric.update(pred, targets.batch())
    return {k: float(v) for k, v in metric.compute().items()}
