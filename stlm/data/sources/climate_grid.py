"""A lat-lon grid read lazily from an xarray Dataset: the lazy implementation of the :class:`~stlm.data.sources.base.Series` contract.

Nothing here loads the archive: every channel stays a lazy ``xr.DataArray`` (a backend array read on indexing,
or a dask array) in a canonical layout, and :meth:`ClimateGrid.read` reads one time block on demand, as
``[steps, N = H * W, C]`` with cells flattened latitude-major (:mod:`stlm.data.sources.geometry`).

Canonical layout (whatever the file uses):

* dims ``(time, lat, lon)`` per channel; latitude ascending (south to north, a descending file is flipped);
  longitude in [-180, 180) ascending (0..360 files are wrapped and reordered);
* one channel per variable, or per (variable, pressure level) named ``f"{var}{level}"`` (``z500``, ``t850``);
* missing values (land, outside coverage, gaps) are NaN in the arrays; the windows turn them into the mask.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from stlm.data.sources.base import DataValidationError, time_axis_fault
from stlm.data.sources.geometry import Geometry

LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "longitude")
LEVEL_DIMS = ("level", "pressure_level", "isobaricInhPa", "plev", "lev")


@dataclass
class ClimateGrid:
    """C lazy channels of T steps on an H x W lat-lon grid.

    Attributes:
        arrays: C lazy DataArrays, each dims ``(time, lat, lon)`` in the canonical layout (module docstring).
        channels, units: C names (``t2m``, ``z500``) and unit strings.
        lat: [H] degrees north, ascending.  lon: [W] degrees east in [-180, 180), ascending.
        timestamps: length-T regular ``DatetimeIndex``.
        land_sea_mask: [H, W] float32 land fraction in [0, 1], or None.
        name, origin: short name and where it came from (paths), for messages and tags.
    """

    arrays: list[xr.DataArray]
    channels: list[str]
    units: list[str]
    lat: np.ndarray
    lon: np.ndarray
    timestamps: pd.DatetimeIndex
    land_sea_mask: np.ndarray | None = None
    name: str = "climate"
    origin: str = ""

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(T, H, W, C)."""
        return len(self.timestamps), len(self.lat), len(self.lon), len(self.channels)

    @property
    def n_steps(self) -> int:
        return len(self.timestamps)

    @property
    def n_nodes(self) -> int:
        return len(self.lat) * len(self.lon)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def freq(self) -> pd.Timedelta:
        return self.timestamps[1] - self.timestamps[0]

    @property
    def geometry(self) -> Geometry:
        return Geometry.lat_lon(self.lat, self.lon, self.land_sea_mask)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Steps ``start .. stop-1`` of every channel: [stop - start, H * W, C] float32, NaN where missing.

        Reads only that time block from the files (one backend read or one small dask graph per channel).
        """
        blocks = [np.asarray(a.isel(time=slice(start, stop)).values, dtype=np.float32) for a in self.arrays]
        block = np.stack(blocks, axis=-1)
        return block.reshape(block.shape[0], -1, block.shape[-1])

    def read_grid(self, start: int, stop: int) -> np.ndarray:
        """:meth:`read` in the map layout: [stop - start, H, W, C]."""
        return self.read(start, stop).reshape(stop - start, len(self.lat), len(self.lon), len(self.channels))

    def select_nodes(self, keep: np.ndarray) -> "ClimateGrid":
        self.geometry.select(keep, self.origin)  # raises: a grid keeps all its cells
        return self

    def fingerprint(self) -> str:
        """A short hash of the grid, the time axis, the channels and the first and last steps' values.

        Hashing every value would read the whole archive; the coordinates plus two time steps catch a
        different file, grid, period or variable, which is what the tag is for.
        """
        h = hashlib.sha256()
        h.update(np.asarray(self.lat, dtype=np.float64).tobytes() + np.asarray(self.lon, dtype=np.float64).tobytes())
        h.update(np.asarray(self.timestamps.asi8).tobytes())
        h.update("\x00".join(self.channels).encode())
        T = len(self.timestamps)
        for step in {0, T - 1}:
            h.update(np.nan_to_num(self.read(step, step + 1), nan=-9999.0).tobytes())
        return h.hexdigest()[:16]


def find_coord(ds: xr.Dataset | xr.DataArray, names: tuple[str, ...], what: str, origin: str) -> str:
    """The name of the ``lat``/``lon`` coordinate (``lat`` or ``latitude``, ...); raises listing what exists."""
    for name in names:
        if name in ds.coords or name in ds.dims:
            return name
    raise DataValidationError(
        f"{origin}: no {what} coordinate (looked for {list(names)}); the file has dims {list(ds.dims)} and "
        f"coords {list(ds.coords)}. Rename it (ds.rename({{'<name>': '{names[0]}'}})) before training"
    )


def _canonical_order(lat: np.ndarray, lon: np.ndarray, origin: str) -> tuple[slice | np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indexers that put latitude ascending and longitude in [-180, 180) ascending, and the new coordinates."""
    dlat = np.diff(lat)
    if len(lat) > 1 and not ((dlat > 0).all() or (dlat < 0).all()):
        raise DataValidationError(f"{origin}: latitude is not monotonic ({lat[:5]} ...); a lat-lon grid needs sorted latitudes")
    lat_index = slice(None, None, -1) if len(lat) > 1 and dlat[0] < 0 else slice(None)
    wrapped = (lon + 180.0) % 360.0 - 180.0
    lon_order = np.argsort(wrapped, kind="stable")
    if len(np.unique(wrapped)) != len(wrapped):
        raise DataValidationError(f"{origin}: duplicate longitudes after wrapping to [-180, 180) ({lon[:5]} ...)")
    return lat_index, lon_order, lat[lat_index], wrapped[lon_order]


def _channels_of(da: xr.DataArray, var: str, levels: list[float] | None, origin: str) -> list[tuple[str, xr.DataArray]]:
    """Split one variable into channels: one per requested pressure level, else the variable itself."""
    level_dim = next((d for d in LEVEL_DIMS if d in da.dims), None)
    if level_dim is None:
        return [(var, da)]
    available = da[level_dim].values
    wanted = available if levels is None else levels
    out = []
    for level in wanted:
        if not np.isclose(available, float(level)).any():
            raise DataValidationError(
                f"{origin}: variable {var!r} has no level {level} on dim {level_dim!r}; available levels: "
                f"{[float(v) for v in available]}. Fix dataset.levels"
            )
        index = int(np.flatnonzero(np.isclose(available, float(level)))[0])
        out.append((f"{var}{float(level):g}", da.isel({level_dim: index}, drop=True)))
    return out


def grid_from_dataset(
    ds: xr.Dataset,
    variables: list[str],
    levels: list[float] | None = None,
    land_sea_mask: str | None = None,
    name: str = "climate",
    origin: str = "",
) -> ClimateGrid:
    """Lazily put ``variables`` of ``ds`` (dims time, lat/latitude, lon/longitude[, level]) in the canonical layout.

    Raises :class:`DataValidationError` naming ``origin`` for a missing variable (listing those present), a
    missing coordinate, an extra dimension, or a time axis that is not strictly increasing and regular.
    """
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise DataValidationError(
            f"{origin}: variable(s) {missing} not found; the file has {sorted(map(str, ds.data_vars))}. "
            "Fix dataset.variables"
        )
    if not variables:
        raise DataValidationError(f"{origin}: dataset.variables is empty; choose from {sorted(map(str, ds.data_vars))}")
    lat_name = find_coord(ds, LAT_NAMES, "latitude", origin)
    lon_name = find_coord(ds, LON_NAMES, "longitude", origin)
    if "time" not in ds.dims:
        raise DataValidationError(f"{origin}: no 'time' dimension; the file has dims {list(ds.dims)}")
    timestamps = check_time_axis(pd.DatetimeIndex(ds["time"].values), origin)
    lat_index, lon_order, lat, lon = _canonical_order(ds[lat_name].values.astype(np.float64), ds[lon_name].values.astype(np.float64), origin)
    identity_lon = np.array_equal(lon_order, np.arange(len(lon_order)))

    def canonical(da: xr.DataArray) -> xr.DataArray:
        da = da.isel({lat_name: lat_index})
        if not identity_lon:
            da = da.isel({lon_name: lon_order})
        return da.rename({lat_name: "lat", lon_name: "lon"})

    arrays, channels, units = [], [], []
    for var in variables:
        da = ds[var]
        for channel, part in _channels_of(da, var, levels, origin):
            extra = [d for d in part.dims if d not in ("time", lat_name, lon_name)]
            for d in extra:
                if part.sizes[d] != 1:
                    raise DataValidationError(
                        f"{origin}: variable {var!r} has an extra dimension {d!r} of size {part.sizes[d]} (dims "
                        f"{list(da.dims)}); select one value before training (e.g. ds.isel({d}=0))"
                    )
            part = part.isel({d: 0 for d in extra}, drop=True) if extra else part
            arrays.append(canonical(part).transpose("time", "lat", "lon"))
            channels.append(channel)
            units.append(str(da.attrs.get("units", "")))
    lsm = None
    if land_sea_mask:
        if land_sea_mask not in ds.data_vars:
            raise DataValidationError(
                f"{origin}: dataset.land_sea_mask={land_sea_mask!r} is not a variable of the file; it has "
                f"{sorted(map(str, ds.data_vars))}"
            )
        m = canonical(ds[land_sea_mask])
        m = m.isel({d: 0 for d in m.dims if d not in ("lat", "lon")}).transpose("lat", "lon")
        lsm = np.nan_to_num(np.asarray(m.values, dtype=np.float32), nan=0.0)
    return ClimateGrid(arrays, channels, units, lat, lon, timestamps, lsm, name=name, origin=origin)


def check_time_axis(timestamps: pd.DatetimeIndex, origin: str) -> pd.DatetimeIndex:
    """Strictly increasing and regular, else :class:`DataValidationError` naming the first bad step."""
    if len(timestamps) < 2:
        raise DataValidationError(f"{origin}: the time axis has {len(timestamps)} step(s); need at least 2")
    fault = time_axis_fault(timestamps)
    if fault is None:
        return timestamps
    kind, i = fault
    if kind == "irregular":
        raise DataValidationError(
            f"{origin}: irregular time step at step {i + 1} ({timestamps[i]} -> {timestamps[i + 1]}, expected every "
            f"{timestamps[1] - timestamps[0]}); insert the missing steps as NaN (they become missing values)"
        )
    raise DataValidationError(
        f"{origin}: time is not monotonic: it {'repeats' if kind == 'repeats' else 'goes backwards'} at step {i + 1} "
        f"({timestamps[i]} then {timestamps[i + 1]}); sort the files by time and remove duplicated steps"
    )
