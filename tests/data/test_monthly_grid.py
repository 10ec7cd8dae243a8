"""A monthly grid with land as NaN (the issue's SST case): 54 months on 18 x 40 cells, a quarter of them land,
trains with a 6-month window whose validation and test inputs reach back across the split."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from stlm.data.calendar import extended_timestamps
from stlm.data.sources.base import months_per_step, time_axis_fault

N_MONTHS, N_LAT, N_LON = 54, 18, 40


def monthly_sst(path, seed: int = 0) -> tuple[str, np.ndarray]:
    """Sea surface temperature-like (K): a latitude profile, a seasonal cycle of opposite sign in the two
    hemispheres, persistent anomalies (AR(1) month to month), NaN over a fixed 25% of the cells (land)."""
    rng = np.random.default_rng(seed)
    lat = np.linspace(-85.0, 85.0, N_LAT)
    lon = np.arange(N_LON) * 9.0  # 0 .. 351 (the reader wraps to -180 .. 180)
    times = pd.date_range("2015-01-01", periods=N_MONTHS, freq="MS")
    month = np.asarray(times.month)
    base = 300.0 - 25.0 * np.sin(np.deg2rad(lat)) ** 2
    season = 3.0 * np.sin(np.deg2rad(lat))[None, :, None] * np.cos(2 * np.pi * (month - 2) / 12)[:, None, None]
    anomaly = np.zeros((N_MONTHS, N_LAT, N_LON))
    for t in range(1, N_MONTHS):
        anomaly[t] = 0.7 * anomaly[t - 1] + 0.4 * rng.normal(size=(N_LAT, N_LON))
    sst = base[None, :, None] + season + anomaly
    land = np.zeros(N_LAT * N_LON, bool)
    land[rng.choice(N_LAT * N_LON, N_LAT * N_LON // 4, replace=False)] = True
    land = land.reshape(N_LAT, N_LON)
    sst = np.where(land[None], np.nan, sst).astype(np.float32)
    ds = xr.Dataset({"sst": (("time", "lat", "lon"), sst, {"units": "K"})}, coords={"time": times, "lat": lat, "lon": lon})
    ds.to_netcdf(path)
    return str(path), land


def test_monthly_axes_are_regular_and_continue_by_months():
    starts = pd.date_range("2019-11-01", periods=4, freq="MS")
    ends = pd.date_range("2019-11-30", periods=4, freq="ME")
    assert months_per_step(starts) == 1 and months_per_step(ends) == 1 and time_axis_fault(starts) is None
    assert months_per_step(pd.date_range("2020-01-01", periods=3, freq="QS")) == 3
    assert list(extended_timestamps(starts, 2)[-2:]) == [pd.Timestamp("2020-03-01"), pd.Timestamp("2020-04-01")]
    assert list(extended_timestamps(ends, 1)[-1:]) == [pd.Timestamp("2020-03-31")]
    skipped = starts.delete(2)  # a missing month is irregular, not monthly
    assert time_axis_fault(skipped) == ("irregular", 1)


def test_monthly_grid_with_nan_land_trains_with_history_across_splits(tmp_path, compose_train):
    from stlm.train import run

    path, land = monthly_sst(tmp_path / "sst.nc")
    overrides = [
        "dataset=era5", f"dataset.path={path}", "dataset.variables=[sst]", "dataset.window=6", "dataset.horizon=3",
        "dataset.history_across_splits=true", "model.d_model=8", "dataset.batch_size=8", "trainer.max_epochs=2",
        "trainer.enable_model_summary=false", "+trainer.enable_progress_bar=false", "logger=none",
        f"paths.outputs_root={tmp_path / 'outputs'}", f"paths.output_dir={tmp_path / 'outputs' / 'run'}",
    ]
    with pytest.warns(UserWarning, match=rf"{int(land.sum())} of {land.size} cells have no observation"):
        result = run(compose_train(overrides))
    test = result["test"]
    assert {"rmse_lead1mo", "rmse_lead3mo", "acc_lead3mo", "rmse_avg"} <= set(test)
    assert all(math.isfinite(v) for v in test.values()), test
    # A real forecast of the ocean, not of the land's zeros: errors of the order of the anomalies (~0.5 K).
    assert 0.05 < test["rmse_lead1mo"] < 3.0
    for name, baseline in result["baselines"].items():
        assert all(math.isfinite(v) for v in baseline.values()), name
