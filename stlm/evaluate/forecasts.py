"""Opening forecast files for scoring: stlm's own or another model's in the same layout (``stlm.forecast.layout``).

A netCDF file or a zarr store; the WeatherBench 2 names (``time``, ``prediction_timedelta``, ``latitude``,
``longitude``) are mapped back to stlm's. A zarr store that a forecast job has not finished is refused.
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from stlm.forecast.layout import from_wb2
from stlm.forecast.store import progress_dir

REQUIRED_DIMS = ("init_time", "lead_time")


class ForecastFileError(ValueError):
    """A forecast file that cannot be scored, with the file and the fix in the message."""


def open_forecasts(path: str | Path) -> xr.Dataset:
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise ForecastFileError(f"forecasts={path} does not exist; pass a .nc file or .zarr store written by stlm.forecast")
    if progress_dir(path).exists():
        raise ForecastFileError(f"forecasts={path} is unfinished (its forecast job stopped before the last chunk); "
                                "rerun the same stlm.forecast command to complete it")
    try:
        ds = xr.open_zarr(path, consolidated=False) if path.is_dir() else xr.open_dataset(path, chunks={})
    except Exception as err:
        raise ForecastFileError(f"forecasts={path} cannot be opened ({type(err).__name__}: {err}); is it a netCDF "
                                "file or zarr store?") from err
    ds = from_wb2(ds)
    missing = [d for d in REQUIRED_DIMS if d not in ds.dims]
    if missing:
        raise ForecastFileError(f"forecasts={path} lacks the dims {missing} (has {list(ds.dims)}); forecast files are "
                                "(init_time, lead_time, node) for sensors or (init_time, lead_time, lat, lon) for grids")
    ds.attrs.setdefault("stlm_path", str(path))
    return ds
