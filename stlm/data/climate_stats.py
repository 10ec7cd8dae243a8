"""Statistics of a grid's training period, computed lazily with dask (the archive is never loaded whole).

* :func:`fit_normalization`: per-channel mean and std over all observed values (time, lat, lon) of the training
  period, as a :class:`~stlm.data.scalers.StandardScaler` (mean, std [C], original units).
  :func:`save_normalization` / :func:`load_normalization` keep it beside the run (``normalization.json``), so
  a forecast job and a resumed run scale with the very same numbers.
* :func:`fit_climatology`: the training-period mean per cell for each time-of-day slot (``hour_of_day``,
  table [n_slots, H * W, C]) or each day of the year (``day_of_year``, [366, H * W, C]), original units.
  A slot never observed at a cell falls back to the cell's mean over all slots, then to the channel mean.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import dask
import numpy as np
import xarray as xr

from stlm.data.scalers import StandardScaler
from stlm.data.sources.base import DataValidationError
from stlm.data.sources.climate_grid import ClimateGrid
from stlm.io.atomic import atomic_write_json

CLIMATOLOGY_KINDS = ("auto", "hour_of_day", "day_of_year")


def _lazy(array: xr.DataArray, start: int, stop: int, time_chunk: int) -> xr.DataArray:
    """The training block of one channel as a dask-backed float64 array (chunked in time)."""
    block = array.isel(time=slice(start, stop))
    if block.chunks is None:
        block = block.chunk({"time": time_chunk})
    return block.astype(np.float64)


def fit_normalization(grid: ClimateGrid, start: int, stop: int, time_chunk: int = 48) -> StandardScaler:
    """Per-channel mean/std of steps ``start .. stop-1`` ignoring NaN, computed chunk by chunk with dask."""
    lazy = [_lazy(a, start, stop, time_chunk) for a in grid.arrays]
    stats = dask.compute(*[(a.mean(skipna=True).data, a.std(skipna=True).data) for a in lazy])
    mean = np.array([float(m) for m, _ in stats])
    std = np.array([float(s) for _, s in stats])
    never = ~np.isfinite(mean)
    if never.any():
        raise DataValidationError(
            f"{grid.origin}: channel(s) {[c for c, n in zip(grid.channels, never) if n]} have no observed value in the "
            "training period (all NaN); drop them from dataset.variables or use another period"
        )
    scaler = StandardScaler(per_node=False)
    scaler.mean = mean.astype(np.float32)
    scaler.std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    return scaler


def save_normalization(path: str | Path, scaler: StandardScaler, channels: list[str], origin: str) -> None:
    atomic_write_json(Path(path), {"channels": list(channels), "origin": origin, **scaler.state_dict()})


def load_normalization(path: str | Path, channels: list[str]) -> StandardScaler:
    """The saved statistics; raises naming the file if they belong to other channels."""
    try:
        state = json.loads(Path(path).read_text())
        saved = state.pop("channels")
        state.pop("origin", None)
    except (OSError, ValueError, KeyError) as err:
        raise DataValidationError(f"{path}: unreadable normalization file ({err}); delete it to recompute") from err
    if saved != list(channels):
        raise DataValidationError(
            f"{path}: normalization saved for channels {saved}, but this data set has {list(channels)}; "
            "point dataset.normalization_path elsewhere or delete the file to recompute"
        )
    return StandardScaler.from_state_dict(state)


def choose_climatology(kind: str, calendar: np.ndarray, train: tuple[int, int], origin: str) -> str:
    """Resolve ``auto`` and check coverage: ``day_of_year`` only when training covers every later day of year."""
    if kind not in CLIMATOLOGY_KINDS:
        raise ValueError(f"dataset.climatology={kind!r}; choose one of {list(CLIMATOLOGY_KINDS)}")
    a, b = train
    unseen = sorted(set(calendar[b:, 2].tolist()) - set(calendar[a:b, 2].tolist()))
    if kind == "hour_of_day" or (kind == "auto" and unseen):
        return "hour_of_day"
    if unseen:
        warnings.warn(
            f"{origin}: the training period never covers {len(unseen)} days of the year that the validation/test "
            "periods contain (a day-of-year climatology needs several years); using hour_of_day instead",
            stacklevel=2,
        )
        return "hour_of_day"
    return "day_of_year"


def fit_climatology(
    grid: ClimateGrid, calendar: np.ndarray, start: int, stop: int, kind: str, n_slots: int, time_chunk: int = 48
) -> np.ndarray:
    """[K, H * W, C] float32 training mean per slot (``hour_of_day``, K = n_slots) or day of year (K = 366)."""
    column, size = (0, n_slots) if kind == "hour_of_day" else (2, 366)
    keys = xr.DataArray(calendar[start:stop, column], dims="time", name="key")
    tables = []
    for array in grid.arrays:
        lazy = _lazy(array, start, stop, time_chunk)
        grouped = lazy.groupby(keys).mean(skipna=True).reindex(key=np.arange(size))
        tables.append(grouped)
    computed = dask.compute(*[t.data for t in tables])
    table = np.stack([np.asarray(t) for t in computed], axis=-1)  # [K, H, W, C]
    K, H, W, C = table.shape
    table = table.reshape(K, H * W, C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells: handled below
        cell_mean = np.nanmean(table, axis=0, keepdims=True)
        channel_mean = np.nanmean(table, axis=(0, 1), keepdims=True)
    _report_unobserved_cells(grid, np.isnan(cell_mean[0]))
    table = np.where(np.isfinite(table), table, cell_mean)
    table = np.where(np.isfinite(table), table, np.nan_to_num(channel_mean))
    return table.astype(np.float32)


def _report_unobserved_cells(grid: ClimateGrid, never: np.ndarray) -> None:
    """Warn about cells with no observation in the training period (``never`` [H * W, C]): they stay in the grid
    (inputs masked, targets scored only where observed) and their climatology is the channel's mean."""
    for c, channel in enumerate(grid.channels):
        cells = np.flatnonzero(never[:, c])
        if len(cells) == 0:
            continue
        W = len(grid.lon)
        shown = ", ".join(f"({grid.lat[i // W]:g}, {grid.lon[i % W]:g})" for i in cells[:5])
        warnings.warn(
            f"{grid.origin}: {len(cells)} of {never.shape[0]} cells of {channel} have no observation in the training "
            f"period (lat, lon: {shown}{' ...' if len(cells) > 5 else ''}); kept: inputs masked, targets scored only "
            "where observed, climatology = the variable's mean. Check dataset.time_start / the split if unexpected",
            stacklevel=3,
        )
