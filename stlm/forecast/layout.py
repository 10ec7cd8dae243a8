"""The layout of forecast files (CF conventions), shared by the writer and the evaluator.

Sensors::

    <channel>(init_time, lead_time, node)   float32, original units, one variable per physical quantity
    init_time(init_time)     standard_name forecast_reference_time (time of the last observed input)
    lead_time(lead_time)     standard_name forecast_period (timedelta: 1 .. horizon steps)
    valid_time(init_time, lead_time)  standard_name time (= init_time + lead_time)
    sensor_id(node), lat(node), lon(node)   (coordinates where the data set knows them)

Quantile forecasts (``model.quantiles``) add a last dimension: ``<channel>(init_time, lead_time, node, quantile)``
with the coordinate ``quantile(quantile)``, the probability level of each quantile (``long_name`` "quantile level",
units 1): ``ds.speed.sel(quantile=0.5)`` is the median, the point forecast the point metrics score.
Ensemble forecasts (``model.ensemble=M``) add ``member`` instead (coordinate 0 .. M-1, ``standard_name``
realization, the CF name of an ensemble axis): ``ds.speed.median("member")`` is the point forecast.

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


QUANTILE_DIM = "quantile"
MEMBER_DIM = "member"
PROBABILISTIC_DIMS = (QUANTILE_DIM, MEMBER_DIM)  # at most one of them: the last dim of a forecast variable


def coordinates(init_times: pd.DatetimeIndex, horizon: int, interval: pd.Timedelta, geometry, levels=None,
                members: int | None = None) -> dict:
    """The coordinates of a forecast over ``init_times`` on the data's ``geometry`` (its spatial coordinates:
    :meth:`stlm.data.sources.geometry.Geometry.space_coords`), and the quantile ``levels`` or the number of
    ensemble ``members`` if it has them."""
    leads = pd.to_timedelta(np.arange(1, horizon + 1) * interval)
    valid = init_times.values[:, None] + leads.values[None, :]
    coords = {
        "init_time": ("init_time", init_times.values, {"standard_name": "forecast_reference_time",
                                                       "long_name": "time of the last observed input"}),
        "lead_time": ("lead_time", leads.values, {"standard_name": "forecast_period", "long_name": "lead time"}),
        "valid_time": (("init_time", "lead_time"), valid, {"standard_name": "time", "long_name": "valid time"}),
    }
    if levels is not None:  # rounded: the levels travel as float32 buffers, 0.05 is 0.05 in the file
        coords[QUANTILE_DIM] = (QUANTILE_DIM, np.round(np.asarray(levels, dtype=np.float64), 6),
                                {"long_name": "quantile level", "units": "1",
                                 "comment": "probability of a value at or below the forecast quantile"})
    if members is not None:
        coords[MEMBER_DIM] = (MEMBER_DIM, np.arange(members, dtype=np.int32),
                              {"standard_name": "realization", "long_name": "ensemble member",
                               "comment": "equally likely members (MC dropout); score with the fair CRPS"})
    return {**coords, **geometry.space_coords()}


def forecast_dims(space_dims: tuple[str, ...], coords: dict) -> tuple[str, ...]:
    """The dims of every forecast variable: init and lead time, the space dims, and ``quantile`` or ``member``
    if present."""
    return ("init_time", "lead_time", *space_dims, *(d for d in PROBABILISTIC_DIMS if d in coords))


def forecast_dataset(values: np.ndarray, coords: dict, channels, units, space_dims: tuple[str, ...], attrs: dict) -> xr.Dataset:
    """A forecast Dataset from ``values`` [K, H, N, C], quantiles [K, H, N, C, Q] or members [K, H, N, C, M]
    (N = lat x lon for grids, latitude-major)."""
    dims = forecast_dims(space_dims, coords)
    shape = tuple(len(coords[d][1]) for d in dims[2:])
    values = values if values.ndim == 5 else values[..., None]
    data_vars = {name: (dims, values[:, :, :, c].reshape(values.shape[:2] + shape), var_attrs)
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
