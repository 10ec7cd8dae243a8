"""Climate reader: netCDF files (one, or a glob of several) and zarr stores, opened lazily with xarray.

``ClimateSource(path, variables, ...).open()`` validates every file before anything trains and returns a lazy
:class:`~stlm.data.sources.climate_grid.ClimateGrid`:

* one file: ``xr.open_dataset(..., chunks=None, cache=False)`` (each window read straight from the file);
* a glob (``era5_*.nc``): each file is checked, then ``xr.open_mfdataset`` concatenates them in time with dask
  chunks (``chunks``, default one chunk of ``time_chunk`` steps);
* a zarr store (a directory with ``.zgroup`` or ``zarr.json``): ``xr.open_dataset(engine="zarr", chunks=None)``.

Each unusable input raises :class:`DataValidationError` (or :class:`DataFileNotFoundError`) naming the file:
a path or glob that matches nothing, a file that cannot be read or is truncated, a missing variable (the
variables present are listed), grids that differ between files (which coordinate, where), a time axis that
is not strictly increasing (which files), or is irregular.
"""

from __future__ import annotations

import glob as globlib
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from stlm.data.sources._files import DataFileNotFoundError
from stlm.data.sources.base import DataValidationError
from stlm.data.sources.climate_grid import LAT_NAMES, LON_NAMES, ClimateGrid, check_time_axis, find_coord, grid_from_dataset

__all__ = ["ClimateSource"]


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and any((path / marker).exists() for marker in (".zgroup", "zarr.json", ".zmetadata"))


class ClimateSource:
    """ERA5 / WeatherBench-style grids from netCDF or zarr (the ``dataset=era5`` reader).

    Args:
        path: a netCDF file, a glob of netCDF files (sorted by name, concatenated in time), or a zarr store.
        variables: variable names to read (``[t2m]``, ``[z, t]``); each becomes one channel per level.
        levels: pressure levels to keep for variables with a level dimension (None keeps all).
        time_start, time_end: optional inclusive time slice (``"2019-03-01"``, ``"2019-03-31 23:00"``).
        land_sea_mask: name of a static land-fraction variable in the same files (a static input feature).
        time_chunk: dask chunk length in time for globs.
        name: short name (experiment name, messages).
    """

    def __init__(
        self,
        path: str,
        variables: list[str],
        levels: list[float] | None = None,
        time_start: str | None = None,
        time_end: str | None = None,
        land_sea_mask: str | None = None,
        time_chunk: int = 48,
        name: str = "era5",
    ):
        if not path:
            raise DataValidationError("dataset.path is not set; give a netCDF file, a glob of files, or a zarr store")
        if isinstance(variables, str):
            variables = [variables]
        self.path, self.variables = str(path), list(variables)
        self.levels = None if levels is None else [float(v) for v in levels]
        self.time_start, self.time_end = time_start, time_end
        self.land_sea_mask, self.time_chunk, self.name = land_sea_mask, time_chunk, name

    # ---------------------------------------------------------------- files
    def files(self) -> list[Path]:
        """The input files (or the zarr store) the path names; raises if there are none."""
        path = Path(self.path).expanduser()
        if any(ch in self.path for ch in "*?["):
            matches = sorted(Path(p) for p in globlib.glob(str(path)))
            if not matches:
                raise DataFileNotFoundError(
                    f"{self.path}: the glob matches no file (relative paths resolve against {Path.cwd()}); fix dataset.path"
                )
            return matches
        if not path.exists():
            raise DataFileNotFoundError(
                f"{self.path}: not found (looked for {path.resolve()}; relative paths resolve against {Path.cwd()}); "
                "fix dataset.path"
            )
        if path.is_dir() and not _is_zarr(path):
            raise DataValidationError(
                f"{self.path}: a directory that is not a zarr store (no .zgroup / zarr.json); give a file, a glob "
                "such as dir/*.nc, or a zarr store"
            )
        if path.is_file() and path.stat().st_size == 0:
            raise DataValidationError(f"{self.path}: the file is empty (0 bytes); it is an interrupted download: fetch it again")
        return [path]

    def _open_one(self, path: Path) -> xr.Dataset:
        """Open lazily and read one value of each variable at the last step (a truncated file fails here)."""
        try:
            if _is_zarr(path):
                ds = xr.open_dataset(path, engine="zarr", chunks=None)
            else:
                ds = xr.open_dataset(path, chunks=None, cache=False)
        except Exception as err:  # netCDF4/h5py/zarr raise OSError, ValueError, KeyError, RuntimeError...
            raise DataValidationError(
                f"{path}: cannot be read as netCDF or zarr ({type(err).__name__}: {err}); the file is truncated, "
                "corrupt or of another format: download or convert it again"
            ) from err
        for var in self.variables:
            if var in ds.data_vars and ds[var].ndim:
                try:
                    ds[var].isel({d: -1 for d in ds[var].dims}).values
                except Exception as err:
                    raise DataValidationError(
                        f"{path}: variable {var!r} cannot be read to its end ({type(err).__name__}: {err}); the file "
                        "is truncated or corrupt: download it again"
                    ) from err
        return ds

    def _check_same_grid(self, datasets: list[xr.Dataset], files: list[Path]) -> None:
        first = datasets[0]
        for path, ds in zip(files[1:], datasets[1:]):
            for names, what in ((LAT_NAMES, "latitude"), (LON_NAMES, "longitude")):
                a = first[find_coord(first, names, what, str(files[0]))].values
                b = ds[find_coord(ds, names, what, str(path))].values
                if a.shape != b.shape:
                    raise DataValidationError(
                        f"{path}: its grid differs from {files[0]}: {len(b)} {what}s instead of {len(a)} "
                        f"({b[0]:g}..{b[-1]:g} vs {a[0]:g}..{a[-1]:g}); regrid the files to one grid"
                    )
                if not np.allclose(a, b, atol=1e-6):
                    i = int(np.argmax(~np.isclose(a, b, atol=1e-6)))
                    raise DataValidationError(
                        f"{path}: its grid differs from {files[0]}: {what}[{i}] is {b[i]:g} instead of {a[i]:g}; "
                        "regrid the files to one grid"
                    )

    def _check_file_order(self, datasets: list[xr.Dataset], files: list[Path]) -> None:
        for (pa, a), (pb, b) in zip(zip(files, datasets), zip(files[1:], datasets[1:])):
            end, start = a["time"].values[-1], b["time"].values[0]
            if start <= end:
                raise DataValidationError(
                    f"{pb}: time is not monotonic across files: it starts at {start} but the previous file {pa} "
                    f"ends at {end}; the files must cover consecutive, non-overlapping periods in name order "
                    "(rename them or remove the overlap)"
                )

    # ---------------------------------------------------------------- public
    def open(self) -> ClimateGrid:
        files = self.files()
        datasets = [self._open_one(p) for p in files]
        origin = str(files[0]) if len(files) == 1 else f"{self.path} ({len(files)} files)"
        for path, ds in zip(files, datasets):  # per file, so the error names the file
            missing = [v for v in self.variables if v not in ds.data_vars]
            if missing:
                raise DataValidationError(
                    f"{path}: variable(s) {missing} not found; the file has {sorted(map(str, ds.data_vars))}. "
                    "Fix dataset.variables"
                )
        if len(files) == 1:
            ds = datasets[0]
        else:
            self._check_same_grid(datasets, files)
            for path, one in zip(files, datasets):  # order within each file, so the error names the file
                if one.sizes.get("time", 0) > 1:
                    check_time_axis(pd.DatetimeIndex(one["time"].values), str(path))
            self._check_file_order(datasets, files)
            ds = xr.open_mfdataset(
                [str(p) for p in files], combine="nested", concat_dim="time", chunks={"time": self.time_chunk},
                data_vars="minimal", coords="minimal", compat="override", join="override", parallel=False,
            )
        if self.time_start is not None or self.time_end is not None:
            check_time_axis(pd.DatetimeIndex(ds["time"].values), origin)  # a slice needs a sorted time axis
            ds = ds.sel(time=slice(self.time_start, self.time_end))
        return grid_from_dataset(ds, self.variables, self.levels, self.land_sea_mask, self.name, origin)
