"""The layout of forecast files (CF conventions), shared by the writer and the evaluator.

Sensors::

    <channel>(init_time, lead_time, node)   float32, original units, one variable per physical quantity
    init_time(init_time)     standard_name forecast_reference_time (time of the last observed input)
    lead_time(lead_time)     standard_name forecast_period (timedelta: 1 .. horizon steps)
    valid_time(init_time, lead_time)  standard_name time (= init_time + lead_time)
    sensor_id(node), lat(node), lon(node)   (coordinates where the data set knows them)

Grids: ``<channel>(init_time, lead_time, lat, lon)`` with 1-D ``lat``/``lon`` in degrees (ascending
latitude, longitude in [-180, 180)). ``format=wb2`` renames to the WeatherBench 2 names: ``time``,
``prediction_timedelta``, ``latitude``, ``longitude`` (:func:`to_wb2`; :func:`from_wb2` reverses it).

Global attributes: ``Conventions``, ``title``, ``source`` (stlm version, model, git sha), ``history``, and the
``stlm_*`` provenance the evaluator reads (checkpoint, model fingerprint, MLflow run id, dataset config).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

CONVENTIONS = "CF-1.8"
WB2_NAMES = {"init_time": "time", "lead_time": "prediction_timedelta", "lat": "latitude", "lon": "longitude"}


def coordinates(init_times: pd.DatetimeIndex, horizon: int, interval: pd.Timedelta, data) -> dict:
    """The coordinates of a forecast over ``init_times`` (``data``: a :class:`stlm.forecast.data.ForecastData`)."""
    leads = pd.to_timedelta(np.arange(1, horizon + 1) * interval)
    valid = init_times.values[:, None] + leads.values[None, :]
    coords = {
        "init_time": ("init_time", init_times.values, {"standard_name": "forecast_reference_time",
                                                       "long_name": "time of the last observed input"}),
        "lead_time": ("lead_time", leads.values, {"standard_name": "forecast_period", "long_name": "lead time"}),
        "valid_time": (("init_time", "lead_time"), valid, {"standard_name": "time", "long_name": "valid time"}),
    }
    if data.is_grid:
        coords["lat"] = ("lat", data.lat.astype(np.float64), {"standard_name": "latitude", "units": "degrees_north"})
        coords["lon"] = ("lon", data.lon.astype(np.float64), {"standard_name": "longitude", "units": "degrees_east"})
        return coords
    coords["node"] = ("node", np.arange(len(data.node_ids)), {"long_name": "index of the sensor"})
    coords["sensor_id"] = ("node", np.asarray(data.node_ids, dtype=str), {"long_name": "sensor identifier", "cf_role": "timeseries_id"})
    if data.node_coords is not None:
        coords["lat"] = ("node", data.node_coords[:, 0].astype(np.float64), {"standard_name": "latitude", "units": "degrees_north"})
        coords["lon"] = ("node", data.node_coords[:, 1].astype(np.float64), {"standard_name": "longitude", "units": "degrees_east"})
    return coords


def space_dims(is_grid: bool) -> tuple[str, ...]:
    return ("lat", "lon") if is_grid else ("node",)


def forecast_dataset(values: np.ndarray, coords: dict, channels, units, is_grid: bool, attrs: dict) -> xr.Dataset:
    """A forecast Dataset from ``values`` [K, H, N, C] (N = lat x lon for grids, latitude-major)."""
    K, H, N, C = values.shape
    dims = ("init_time", "lead_time", *space_dims(is_grid))
    shape = (K, H, *(len(coords[d][1]) for d in space_dims(is_grid)))
    data_vars = {name: (dims, values[..., c].reshape(shape), var_attrs)
                 for c, (name, var_attrs) in enumerate(variable_attrs(channels, units).items())}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def variable_attrs(channels, units) -> dict[str, dict[str, str]]:
    """CF attributes of each forecast variable, by channel name (units ``1`` when the data set names none)."""
    units = list(units) or [""] * len(channels)
    return {name: {"units": unit or "1", "long_name": f"forecast of {name}"} for name, unit in zip(channels, units)}


def to_wb2(ds: xr.Dataset) -> xr.Dataset:
    """WeatherBench 2 names for a grid forecast (``time``, ``prediction_timedelta``, ``latitude``, ``longitude``)."""
    return ds.rename({k: v for k, v in WB2_NAMES.items() if k in ds.variables or k in ds.dims})


def from_wb2(ds: xr.Dataset) -> xr.Dataset:
    """The stlm names for a forecast in either layout (a no-op for stlm's own)."""
    back = {v: k for k, v in WB2_NAMES.items()}
    return ds.rename({k: v for k, v in back.items() if k in ds.variables or k in ds.dims})
