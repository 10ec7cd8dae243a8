"""Tiny lat-lon files for the climate tests (a few KB each, written in the test's tmp_path)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr


def grid_dataset(
    n_time: int = 48,
    lat=(10.0, 20.0, 30.0, 40.0),
    lon=(0.0, 90.0, 180.0, 270.0, 300.0),
    start: str = "2020-01-01",
    freq: str = "1h",
    names=("lat", "lon"),
    variables=("t2m",),
    seed: int = 0,
) -> xr.Dataset:
    """``variables`` as (time, lat, lon) float32 with a value that encodes its position: 100 * lat_index + lon_index
    + time / 1000 (so tests can check where each value went)."""
    times = pd.date_range(start, periods=n_time, freq=freq)
    la, lo = np.meshgrid(np.arange(len(lat)), np.arange(len(lon)), indexing="ij")
    base = (100.0 * la + lo)[None] + (np.arange(n_time) / 1000.0)[:, None, None]
    data = {}
    for k, var in enumerate(variables):
        data[var] = (("time", names[0], names[1]), (base + 10_000 * k).astype(np.float32), {"units": "K"})
    return xr.Dataset(data, coords={"time": times, names[0]: list(lat), names[1]: list(lon)})


def write(ds: xr.Dataset, path) -> str:
    ds.to_netcdf(path)
    return str(path)
