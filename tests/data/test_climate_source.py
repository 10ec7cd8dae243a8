"""The climate reader: layouts it accepts (names, orders, conventions, globs, zarr, levels) and every clear error."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr
from climate_fixtures import grid_dataset, write

from stlm.data.sources import DataFileNotFoundError, DataValidationError
from stlm.data.sources.climate import ClimateSource


def _open(path, variables=("t2m",), **kwargs):
    return ClimateSource(str(path), list(variables), **kwargs).open()


# ---------------------------------------------------------------- layouts
def test_canonical_layout_from_descending_latitude_and_0_360_longitude(tmp_path):
    ds = grid_dataset(lat=(40.0, 30.0, 20.0, 10.0), lon=(0.0, 90.0, 180.0, 270.0, 300.0), names=("latitude", "longitude"))
    grid = _open(write(ds, tmp_path / "a.nc"))
    assert grid.lat.tolist() == [10.0, 20.0, 30.0, 40.0]
    assert grid.lon.tolist() == [-180.0, -90.0, -60.0, 0.0, 90.0]
    block = grid.read_grid(0, 2)
    assert block.shape == (2, 4, 5, 1) and block.dtype == np.float32
    # The file's (lat index 3 = 10 deg, lon index 2 = 180 deg) lands at canonical (0, 0): value 100 * 3 + 2.
    assert block[0, 0, 0, 0] == pytest.approx(302.0)
    assert block[1, 3, 3, 0] == pytest.approx(0.001)  # 40 deg (file row 0), 0 deg (file col 0), step 1


def test_dims_in_either_order_and_lat_lon_names(tmp_path):
    ds = grid_dataset().transpose("time", "lon", "lat")
    grid = _open(write(ds, tmp_path / "a.nc"))
    assert grid.read_grid(0, 1)[0, 1, 1, 0] == pytest.approx(103.0)  # lat 20 (file 1), lon -90 = 270 (file 3)


def test_nan_stays_nan_for_the_mask(tmp_path):
    ds = grid_dataset()
    ds["t2m"][5, 0, 0] = np.nan
    grid = _open(write(ds, tmp_path / "a.nc"))
    assert np.isnan(grid.read_grid(5, 6)[0, 0, 3, 0])  # file (0, 0) = lat 10, lon 0: canonical column 3
    assert np.isfinite(grid.read_grid(4, 5)).all() and np.isnan(grid.read_grid(0, 48)).sum() == 1


def test_glob_concatenates_files_in_time(tmp_path):
    ds = grid_dataset(n_time=48)
    write(ds.isel(time=slice(0, 24)), tmp_path / "era5_a.nc")
    write(ds.isel(time=slice(24, 48)), tmp_path / "era5_b.nc")
    grid = _open(tmp_path / "era5_*.nc")
    assert grid.shape == (48, 4, 5, 1)
    np.testing.assert_allclose(grid.read_grid(20, 30), _open(write(ds, tmp_path / "whole.nc")).read_grid(20, 30))


def test_zarr_store_levels_and_time_slice(tmp_path):
    ds = grid_dataset(n_time=24, variables=("t",))
    ds = xr.concat([ds, ds + 1000.0], dim=xr.DataArray([500.0, 850.0], dims="level", name="level")).transpose("time", "level", ...)
    ds.to_zarr(tmp_path / "store.zarr")
    grid = _open(tmp_path / "store.zarr", ["t"], levels=[850], time_start="2020-01-01 02:00", time_end="2020-01-01 05:00")
    assert grid.channels == ["t850"] and grid.shape == (4, 4, 5, 1)
    assert grid.read_grid(0, 1)[0, 0, 0, 0] == pytest.approx(1002.002)  # level 850 (+1000), lon -180 = file col 2, step 2


# ---------------------------------------------------------------- errors
def test_missing_file_and_empty_glob_name_the_path(tmp_path):
    with pytest.raises(DataFileNotFoundError, match="nope.nc: not found"):
        _open(tmp_path / "nope.nc")
    with pytest.raises(DataFileNotFoundError, match=r"\*.nc: the glob matches no file"):
        _open(tmp_path / "*.nc")


def test_truncated_file_names_the_file(tmp_path):
    path = write(grid_dataset(), tmp_path / "whole.nc")
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(open(path, "rb").read()[: os.path.getsize(path) // 2])
    with pytest.raises(DataValidationError, match=r"truncated.nc: cannot be read.*truncated"):
        _open(truncated)


def test_unreadable_file_of_another_format(tmp_path):
    bad = tmp_path / "notes.nc"
    bad.write_text("this is not netCDF\n")
    with pytest.raises(DataValidationError, match="notes.nc: cannot be read as netCDF"):
        _open(bad)


def test_missing_variable_lists_those_present(tmp_path):
    path = write(grid_dataset(variables=("t2m", "u10")), tmp_path / "a.nc")
    with pytest.raises(DataValidationError, match=r"a.nc: variable\(s\) \['z500'\] not found; the file has \['t2m', 'u10'\]"):
        _open(path, ["t2m", "z500"])


def test_grids_that_differ_between_files_say_where(tmp_path):
    write(grid_dataset(n_time=4), tmp_path / "f1.nc")
    write(grid_dataset(n_time=4, start="2020-01-01 04:00", lon=(0.0, 90.0, 180.0, 270.0, 301.0)), tmp_path / "f2.nc")
    with pytest.raises(DataValidationError, match=r"f2.nc: its grid differs from .*f1.nc: longitude\[4\] is 301 instead of 300"):
        _open(tmp_path / "f*.nc")
    write(grid_dataset(n_time=4, start="2020-01-01 04:00", lat=(10.0, 20.0, 30.0)), tmp_path / "f2.nc")
    with pytest.raises(DataValidationError, match=r"f2.nc: its grid differs .*3 latitudes instead of 4"):
        _open(tmp_path / "f*.nc")


def test_non_monotonic_time_across_files_names_both(tmp_path):
    write(grid_dataset(n_time=4, start="2020-01-02"), tmp_path / "f1.nc")
    write(grid_dataset(n_time=4, start="2020-01-01"), tmp_path / "f2.nc")
    with pytest.raises(DataValidationError, match=r"f2.nc: time is not monotonic across files.*previous file .*f1.nc"):
        _open(tmp_path / "f*.nc")


def test_non_monotonic_time_within_a_file(tmp_path):
    ds = grid_dataset(n_time=6)
    ds = ds.isel(time=[0, 1, 3, 2, 4, 5])
    with pytest.raises(DataValidationError, match=r"a.nc: time is not monotonic: it goes backwards at step 3"):
        _open(write(ds, tmp_path / "a.nc"))


def test_irregular_time_step_asks_for_nan_steps(tmp_path):
    ds = grid_dataset(n_time=6).isel(time=[0, 1, 2, 4, 5])
    with pytest.raises(DataValidationError, match="irregular time step .* insert the missing steps as NaN"):
        _open(write(ds, tmp_path / "a.nc"))


def test_missing_level_lists_available(tmp_path):
    ds = grid_dataset(n_time=4, variables=("z",)).expand_dims(level=[500.0]).transpose("time", "level", ...)
    with pytest.raises(DataValidationError, match=r"no level 850.0 .* available levels: \[500.0\]"):
        _open(write(ds, tmp_path / "a.nc"), ["z"], levels=[850])


def test_missing_coordinate_lists_dims(tmp_path):
    ds = grid_dataset(n_time=4).rename({"lat": "y"})
    with pytest.raises(DataValidationError, match=r"no latitude coordinate .* dims \['time', 'y', 'lon'\]"):
        _open(write(ds, tmp_path / "a.nc"))
