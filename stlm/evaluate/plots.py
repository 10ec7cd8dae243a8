"""PNG plots of an evaluation (logged as MLflow artifacts):

* ``error_by_horizon.png``: every metric against the lead;
* sensors, ``forecast_vs_truth.png``: for chosen sensors, the observations and the forecast trajectories of
  successive init times (the horizon fan: each thin line starts at its init time and runs over the leads);
  for quantile forecasts, the observations, the median and the 90% (and 50%) band of the forecasts at one lead
  (the last by default), by valid time, so the band can be read against what happened;
* grids, ``maps.png``: forecast (the median, for quantiles), truth and error maps of the first init time at
  chosen leads, and for quantiles the width of the 90% band.

Ensemble forecasts (a ``member`` dimension) are drawn as the quantile forecasts of their members
(:func:`member_quantiles`: the members' empirical 5, 25, 50, 75 and 95% quantiles).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import xarray as xr

from stlm.evaluate.truth import Truth
from stlm.forecast.layout import MEMBER_DIM, QUANTILE_DIM
from stlm.metrics.horizon import lead_name
from stlm.io.figures import pyplot, save_figure

_KEY = re.compile(r"^(?P<metric>[a-z]+[0-9]*)_(?:h(?P<h>\d+)|lead(?P<lead>.+))$")


def per_horizon(metrics: dict[str, float]) -> dict[str, list[tuple[str, float]]]:
    """``{"mae": [("h1", 1.2), ...]}`` in lead order, from flat metric keys (pooled keys only)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for key, value in metrics.items():
        if "/" in key or not (m := _KEY.match(key)):
            continue
        out.setdefault(m["metric"], []).append((f"h{m['h']}" if m["h"] else m["lead"], value))
    return out


def plot_error_by_horizon(metrics: dict[str, float], path: Path) -> Path:
    plt = pyplot()
    groups = per_horizon(metrics)
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.2), squeeze=False)
    for ax, (name, points) in zip(axes[0], groups.items()):
        ax.plot(range(1, len(points) + 1), [v for _, v in points], marker="o")
        ax.set_xticks(range(1, len(points) + 1), [label for label, _ in points], rotation=90, fontsize=7)
        ax.set_title(name.upper())
        ax.set_xlabel("lead")
        ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=100)


BAND_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)  # what the band plots draw


def member_quantiles(forecasts: xr.Dataset) -> xr.Dataset:
    """An ensemble forecast as the quantiles of its members at :data:`BAND_LEVELS` (``quantile`` last); any
    other forecast as it is."""
    if MEMBER_DIM not in forecasts.dims:
        return forecasts
    out = forecasts.quantile(list(BAND_LEVELS), dim=MEMBER_DIM, keep_attrs=True)
    return out.transpose(..., QUANTILE_DIM)


def _level(var: xr.DataArray, level: float) -> xr.DataArray:
    """The quantile of ``var`` at ``level`` (the nearest level the file holds)."""
    return var.sel({QUANTILE_DIM: level}, method="nearest")


def _has_levels(var: xr.DataArray, *levels: float) -> bool:
    held = var[QUANTILE_DIM].values
    return all(np.abs(held - level).min() < 1e-6 for level in levels)


def plot_sensor_fan(forecasts: xr.Dataset, truth: Truth, sensors: Sequence[str] | None, path: Path,
                    max_init_times: int = 48, lead: int | None = None) -> Path:
    """Observations and forecast trajectories of the first ``max_init_times`` init times, every third one
    (quantile and ensemble forecasts: :func:`plot_sensor_band` at ``lead``)."""
    if QUANTILE_DIM in forecasts.dims or MEMBER_DIM in forecasts.dims:
        return plot_sensor_band(forecasts, truth, sensors, path, lead=lead)
    plt = pyplot()
    channel = truth.channels[0]
    ids = [str(s) for s in (forecasts.sensor_id.values if "sensor_id" in forecasts.coords else range(forecasts.sizes["node"]))]
    chosen = [str(s) for s in sensors] if sensors else ids[:3]
    rows = slice(0, min(max_init_times, forecasts.sizes["init_time"]))
    sub = forecasts.isel(init_time=rows)
    valid = sub.init_time.values[:, None] + sub.lead_time.values[None, :]
    targets = truth.targets(valid)
    fig, axes = plt.subplots(len(chosen), 1, figsize=(9, 2.6 * len(chosen)), squeeze=False)
    for ax, sensor in zip(axes[:, 0], chosen):
        if sensor not in ids:
            raise ValueError(f"plots.sensors: {sensor!r} is not a sensor of the forecasts (first ids: {ids[:5]})")
        n, c = ids.index(sensor), 0
        y, m = targets.y[..., n, c].numpy(), targets.mask[..., n, c].numpy() > 0
        times, order = np.unique(valid.ravel(), return_index=True)
        obs = np.where(m.ravel()[order], y.ravel()[order], np.nan)
        ax.plot(times, obs, color="black", lw=1.5, label="observed")
        values = sub[channel].isel(node=n).values  # [k, H]
        for i in range(0, values.shape[0], 3):
            ax.plot(valid[i], values[i], color="tab:blue", lw=0.8, alpha=0.6, label="forecasts" if i == 0 else None)
        ax.set_title(f"{channel} at sensor {sensor}")
        ax.legend(loc="upper right", fontsize=7)
    fig.autofmt_xdate()
    return save_figure(fig, path, dpi=100)


def plot_sensor_band(forecasts: xr.Dataset, truth: Truth, sensors: Sequence[str] | None, path: Path,
                     lead: int | None = None, max_init_times: int = 288) -> Path:
    """Observations, median and 90% / 50% bands of the forecasts at ``lead`` (1-based; default the last) for
    the first ``max_init_times`` init times, plotted at their valid times."""
    plt = pyplot()
    channel = truth.channels[0]
    H = forecasts.sizes["lead_time"]
    lead = H if lead is None else lead
    if not 1 <= lead <= H:
        raise ValueError(f"plots.lead={lead}: the forecasts have leads 1 .. {H}")
    ids = [str(s) for s in (forecasts.sensor_id.values if "sensor_id" in forecasts.coords else range(forecasts.sizes["node"]))]
    chosen = [str(s) for s in sensors] if sensors else ids[:3]
    sub = forecasts.isel(init_time=slice(0, min(max_init_times, forecasts.sizes["init_time"])), lead_time=lead - 1)
    sub = member_quantiles(sub)
    valid = sub.init_time.values + forecasts.lead_time.values[lead - 1]
    targets = truth.targets(valid[:, None])
    var = sub[channel]
    name = lead_name(forecasts.lead_time.values[lead - 1] / np.timedelta64(1, "m"))
    fig, axes = plt.subplots(len(chosen), 1, figsize=(10, 2.8 * len(chosen)), squeeze=False)
    for ax, sensor in zip(axes[:, 0], chosen):
        if sensor not in ids:
            raise ValueError(f"plots.sensors: {sensor!r} is not a sensor of the forecasts (first ids: {ids[:5]})")
        n = ids.index(sensor)
        at = var.isel(node=n)
        for low, high, alpha, label in ((0.05, 0.95, 0.25, "90% band"), (0.25, 0.75, 0.45, "50% band")):
            if _has_levels(at, low, high):
                ax.fill_between(valid, _level(at, low).values, _level(at, high).values, color="tab:blue", alpha=alpha,
                                lw=0, label=label)
        ax.plot(valid, _level(at, 0.5).values, color="tab:blue", lw=1.0, label="median")
        y, m = targets.y[:, 0, n, 0].numpy(), targets.mask[:, 0, n, 0].numpy() > 0
        ax.plot(valid, np.where(m, y, np.nan), color="black", lw=1.2, label="observed")
        ax.set_title(f"{channel} at sensor {sensor}: forecasts {name} ahead, by valid time", fontsize=9)
        ax.legend(loc="upper right", fontsize=7, ncol=4)
    fig.autofmt_xdate()
    return save_figure(fig, path, dpi=100)


def plot_grid_maps(forecasts: xr.Dataset, truth: Truth, leads: Sequence[int] | None, path: Path) -> Path:
    """Forecast (median), truth and error (and 90% band width) of the first variable at the first init time, one
    row per lead (1-based)."""
    plt = pyplot()
    channel = truth.channels[0]
    H = forecasts.sizes["lead_time"]
    leads = [h for h in (leads or sorted({1, max(1, H // 2), H})) if 1 <= h <= H]
    sub = member_quantiles(forecasts.isel(init_time=slice(0, 1)))
    valid = sub.init_time.values[:, None] + sub.lead_time.values[None, :]
    targets = truth.targets(valid)
    shape = (forecasts.sizes["lat"], forecasts.sizes["lon"])
    extent = [float(forecasts.lon.min()), float(forecasts.lon.max()), float(forecasts.lat.min()), float(forecasts.lat.max())]
    quantiles = QUANTILE_DIM in sub.dims
    fig, axes = plt.subplots(len(leads), 4 if quantiles else 3, figsize=(14.5 if quantiles else 11, 3 * len(leads)), squeeze=False)
    for row, h in zip(axes, leads):
        at = sub[channel].isel(init_time=0, lead_time=h - 1)
        f = (_level(at, 0.5) if quantiles else at).values
        o = np.where(targets.mask[0, h - 1, :, 0].numpy() > 0, targets.y[0, h - 1, :, 0].numpy(), np.nan).reshape(shape)
        lo, hi = np.nanmin([np.nanmin(f), np.nanmin(o)]), np.nanmax([np.nanmax(f), np.nanmax(o)])
        err = f - o
        bound = float(np.nanmax(np.abs(err))) if np.isfinite(err).any() else 1.0
        lead = lead_name(forecasts.lead_time.values[h - 1] / np.timedelta64(1, "m"))
        for ax, image, title, kw in ((row[0], f, "forecast", dict(vmin=lo, vmax=hi)), (row[1], o, "truth", dict(vmin=lo, vmax=hi)),
                                     (row[2], err, "error", dict(vmin=-bound, vmax=bound, cmap="RdBu_r"))):
            im = ax.imshow(image, origin="lower", extent=extent, aspect="auto", **kw)
            ax.set_title(f"{channel} {title}, lead {lead}", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
        if quantiles and _has_levels(at, 0.05, 0.95):
            im = row[3].imshow((_level(at, 0.95) - _level(at, 0.05)).values, origin="lower", extent=extent, aspect="auto",
                               cmap="viridis")
            row[3].set_title(f"{channel} 90% band width, lead {lead}", fontsize=9)
            fig.colorbar(im, ax=row[3], fraction=0.046)
    return save_figure(fig, path, dpi=90)
