"""The datamodule on grids: lazy windows, NaN as mask, statistics of the training period only, saved and reused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from climate_fixtures import grid_dataset, write

from stlm.data.calendar import calendar_index
from stlm.data.datamodule import SpatioTemporalDataModule
from stlm.data.sources.geometry import static_features
from stlm.data.sources import DataValidationError
from stlm.data.sources.climate import ClimateSource


GRID = dict(day_of_week=False, loss_weighting="area_over_std", metrics=dict(keys="lead", average="lead_mean", per_channel=True, mape=False, acc=True))


def _datamodule(path, **kwargs):
    options = dict(window=4, horizon=2, batch_size=4, split={"train": 0.5, "val": 0.25, "test": 0.25}, **GRID)
    options.update(kwargs)
    dm = SpatioTemporalDataModule(ClimateSource(str(path), ["t2m"]), **options)
    dm.setup()
    return dm


def test_batches_follow_the_contract_and_match_the_file(tmp_path):
    ds = grid_dataset(n_time=48)
    ds["t2m"][10, 1, 2] = np.nan
    dm = _datamodule(write(ds, tmp_path / "a.nc"))
    assert dm.spec.grid_shape == (4, 5) and dm.spec.n_nodes == 20 and dm.spec.days_per_week == 0
    batch = dm.datasets["train"].__getitems__([6, 0, 2])  # sample 6 covers steps 6..11: step 10 is a target
    assert batch["x"].shape == (3, 4, 20, 1) and batch["y"].shape == (3, 2, 20, 1) and batch["x_time"].shape == (3, 4, 4)
    raw = ds["t2m"].values  # file layout: lat ascending already, lon 0..300 -> canonical order [180, 270, 300, 0, 90]
    lon_order = [2, 3, 4, 0, 1]
    expected_y = raw[10:12][:, :, lon_order].reshape(2, 20)
    cell = 1 * 5 + lon_order.index(2)
    assert batch["mask"][0, 0, cell, 0] == 0 and batch["y"][0, 0, cell, 0] == 0  # NaN -> masked, stored as 0
    observed = batch["mask"][0, :, :, 0] > 0
    np.testing.assert_allclose(batch["y"][0, :, :, 0][observed], torch.from_numpy(expected_y)[observed], rtol=1e-6)
    scaled = (raw[6:10][:, :, lon_order].reshape(4, 20) - dm.scaler.mean[0]) / dm.scaler.std[0]
    np.testing.assert_allclose(batch["x"][0, :, :, 0], scaled, rtol=1e-5, atol=1e-5)
    # A batch of neighbouring samples (one read of their union) equals the samples read one by one.
    together = dm.datasets["val"].__getitems__([0, 1, 2])
    alone = [dm.datasets["val"].__getitems__([i]) for i in range(3)]
    for key in ("x", "y", "mask", "x_time"):
        torch.testing.assert_close(together[key], torch.cat([a[key] for a in alone]))


def test_normalization_uses_training_period_only_and_is_saved_then_reused(tmp_path):
    ds = grid_dataset(n_time=40)
    ds["t2m"][20:] = ds["t2m"][20:] + 1000.0  # validation/test period far off: must not move the statistics
    path = write(ds, tmp_path / "a.nc")
    stats = tmp_path / "run" / "normalization.json"
    dm = _datamodule(path, normalization_path=str(stats))
    train = ds["t2m"].values[:20]
    assert dm.scaler.mean[0] == pytest.approx(train.mean(), rel=1e-6)
    assert dm.scaler.std[0] == pytest.approx(train.std(), rel=1e-5)
    saved = json.loads(stats.read_text())
    assert saved["channels"] == ["t2m"] and saved["mean"] == pytest.approx([train.mean()], rel=1e-6)
    saved["mean"] = [123.0]
    stats.write_text(json.dumps(saved))
    assert _datamodule(path, normalization_path=str(stats)).scaler.mean[0] == 123.0  # reused, not recomputed
    saved["channels"] = ["z500"]
    stats.write_text(json.dumps(saved))
    with pytest.raises(DataValidationError, match=r"normalization.json: normalization saved for channels \['z500'\]"):
        _datamodule(path, normalization_path=str(stats))


def test_hour_of_day_climatology_by_hand(tmp_path):
    ds = grid_dataset(n_time=96, freq="6h")  # 24 days, 4 slots per day
    ds["t2m"][0, 0, 0] = np.nan
    dm = _datamodule(write(ds, tmp_path / "a.nc"), split={"train": 0.5, "val": 0.25, "test": 0.25})
    assert dm.climatology_kind == "hour_of_day" and dm.climatology.shape == (4, 20, 1)
    raw = ds["t2m"].values[:48]
    lon_order = [2, 3, 4, 0, 1]
    slot1 = raw[1::4][:, :, lon_order].reshape(-1, 20).mean(0)
    np.testing.assert_allclose(dm.climatology[1, :, 0], slot1, rtol=1e-6)
    slot0_cell = np.nanmean(raw[0::4, 0, 0])  # the NaN is skipped
    assert dm.climatology[0, 3, 0] == pytest.approx(slot0_cell, rel=1e-6)


def test_day_of_year_climatology_needs_coverage(tmp_path):
    ds = grid_dataset(n_time=60, freq="1D")
    with pytest.warns(UserWarning, match="never covers .* days of the year"):
        dm = _datamodule(write(ds, tmp_path / "a.nc"), climatology="day_of_year")
    assert dm.climatology_kind == "hour_of_day"


def test_window_longer_than_a_split_names_the_fix(tmp_path):
    with pytest.raises(DataValidationError, match=r"dataset.window \(20\) \+ dataset.horizon \(2\) = 22 steps do not fit"):
        _datamodule(write(grid_dataset(n_time=48), tmp_path / "a.nc"), window=20)


def test_static_and_calendar_features():
    feats = static_features(np.array([0.0, 90.0]), np.array([-180.0, 90.0]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert feats.shape == (4, 5)
    np.testing.assert_allclose(feats[1], [0.0, 1.0, 1.0, 0.0, 0.0], atol=1e-7)  # lat 0, lon 90, sea
    import pandas as pd

    cal = calendar_index(pd.DatetimeIndex(["2021-03-01 06:00", "2021-12-31 18:00"]), 4)
    assert cal.tolist() == [[1, 0, 59, 2], [3, 4, 364, 11]]
