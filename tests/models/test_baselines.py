"""Baselines: last value, historical average, seasonal naive, linear — against hand-built expectations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from stlm.data.datamodule import SpatioTemporalDataModule
from stlm.data.sources.base import SpatioTemporalSeries
from stlm.data.spec import DataSpec
from stlm.models.baselines import HistoricalAverage, LastValue, LinearForecaster, SeasonalNaive, last_observed


class WeeklySource:
    """Two nodes over three weeks: node 0 = hour of day, node 1 = 10 + day of week; one reading missing."""

    def load(self):
        ts = pd.date_range("2024-01-01", periods=21 * 24, freq="1h")
        values = np.stack([ts.hour.to_numpy(float), 10.0 + ts.day_of_week.to_numpy(float)], axis=1)[..., None]
        mask = np.ones_like(values, bool)
        mask[5, 0, 0] = False
        values = np.where(mask, values, 0).astype(np.float32)
        return SpatioTemporalSeries(values=values, mask=mask, timestamps=ts, node_ids=["a", "b"], channels=["v"], name="weekly")


@pytest.fixture(scope="module")
def dm():
    dm = SpatioTemporalDataModule(WeeklySource(), window=6, horizon=3, batch_size=8)
    dm.setup()
    return dm


def _to_original(dm, scaled):
    mean, std = dm.scaler.tensors()
    return scaled * std + mean


def test_last_observed_skips_missing_steps():
    x = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    mask = torch.tensor([1.0, 1.0, 0.0]).view(1, 3, 1, 1)
    assert last_observed(x, mask).item() == 2.0
    assert last_observed(x, torch.zeros_like(mask)).item() == 0.0


def test_last_value_repeats_the_last_input(dm):
    batch = next(iter(dm.test_dataloader()))
    pred = _to_original(dm, LastValue(dm.spec)(batch))
    last_input = _to_original(dm, batch["x"][:, -1])
    assert torch.allclose(pred[:, 0], last_input, atol=1e-4) and torch.allclose(pred[:, 2], last_input, atol=1e-4)


def test_historical_average_recovers_a_weekly_profile(dm):
    ha = HistoricalAverage(dm.spec)
    ha.fit_from_data(dm)
    batch = next(iter(dm.test_dataloader()))
    pred = _to_original(dm, ha(batch))
    # The data are an exact function of the time of week, so the profile reproduces the targets.
    assert torch.allclose(pred, batch["y"], atol=1e-3)


def test_seasonal_naive_uses_last_week(dm):
    sn = SeasonalNaive(dm.spec, season_days=7)
    sn.fit_from_data(dm)
    batch = next(iter(dm.test_dataloader()))
    assert torch.allclose(_to_original(dm, sn(batch)), batch["y"], atol=1e-3)
    with pytest.raises(ValueError, match="shorter than the horizon"):
        SeasonalNaive(DataSpec(2, 1, 6, 48, 24, 7, 60.0), season_days=1)


def test_linear_forecaster_shapes_and_gradients(dm):
    lin = LinearForecaster(dm.spec)
    batch = next(iter(dm.train_dataloader()))
    out = lin(batch)
    assert out.shape == batch["y"].shape
    out.sum().backward()
    assert all(p.grad is not None for p in lin.parameters())
