"""Baselines: last value, historical average, seasonal naive, linear — against hand-built expectations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from stlm.data.datamodule import SpatioTemporalDataModule
from stlm.data.sources.base import InMemorySource, SpatioTemporalSeries
from stlm.data.spec import DataSpec
from stlm.models.baselines import HistoricalAverage, LastValue, LinearForecaster, SeasonalNaive, last_observed


class WeeklySource(InMemorySource):
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


def test_historical_average_auto_picks_the_profile_that_fits_validation_data(dm):
    # The data repeat every week and differ between weekdays, so the per-weekday profile is the right one.
    ha = HistoricalAverage(dm.spec, profile="auto", smoothing_minutes=60)
    ha.fit_from_data(dm)
    assert ha.chosen == "week, smoothing 0 min"


def test_profile_is_fitted_on_the_training_period_only(dm):
    train_end = dm.periods["train"][1]

    class Shifted(WeeklySource):
        def load(self):
            series = super().load()
            series.values[train_end:] += 1000.0  # validation and test periods move
            return series

    other = SpatioTemporalDataModule(Shifted(), window=6, horizon=3, batch_size=8)
    other.setup()
    profiles = []
    for datamodule in (dm, other):
        ha = HistoricalAverage(datamodule.spec, profile="week")
        ha.fit_from_data(datamodule)
        profiles.append(ha.profile)
    assert torch.equal(profiles[0], profiles[1])


def test_historical_average_daytype_profile_shares_weekdays(dm):
    ha = HistoricalAverage(dm.spec, profile="daytype", smoothing_minutes=0)
    ha.fit_from_data(dm)
    mon_noon, tue_noon, sat_noon = (torch.tensor([[[12, d]]]) for d in (0, 1, 5))
    assert torch.equal(ha.lookup(mon_noon), ha.lookup(tue_noon))
    assert not torch.equal(ha.lookup(mon_noon), ha.lookup(sat_noon))
    # Node b = 10 + day of week. Training (70 % of 21 days from a Monday) holds three Monday noons and two of
    # each other weekday: the weekday mean is 10 + (0*3 + (1+2+3+4)*2) / 11.
    assert _to_original(dm, ha.lookup(tue_noon))[0, 0, 1, 0].item() == pytest.approx(10 + 20 / 11, abs=1e-4)


def test_historical_average_smoothing_borrows_from_neighbouring_slots():
    from stlm.models.historical_average import fit_profile

    hours = np.arange(14 * 24)
    values = np.where(hours % 24 == 0, 24.0, 0.0)[:, None, None]  # a spike at midnight, hourly slots, 2 weeks
    calendar = np.stack([hours % 24, (hours // 24) % 7], axis=1)
    mask = np.ones_like(values, bool)
    sharp = fit_profile(values, mask, calendar, 24, "day", 0.0)
    smooth = fit_profile(values, mask, calendar, 24, "day", 1.0)
    assert sharp[0, 0, 0, 0] == 24.0 and sharp[0, 1, 0, 0] == 0.0
    assert 0 < smooth[0, 1, 0, 0] < smooth[0, 0, 0, 0] < 24.0
    assert smooth[0, 23, 0, 0] == pytest.approx(smooth[0, 1, 0, 0])  # 23:00 is next to the following midnight
    assert smooth[:, :, 0, 0].mean() == pytest.approx(1.0)  # smoothing moves mass, it does not create it


def test_smoothing_crosses_midnight_into_the_neighbouring_day():
    """Monday 00:00 borrows from Sunday 23:00 (a weekend hour), not from Monday 23:00."""
    from stlm.models.historical_average import fit_profile

    hours = np.arange(14 * 24)
    day, hour = (hours // 24) % 7, hours % 24
    values = np.where((day == 6) & (hour == 23), 100.0, 0.0)[:, None, None]  # only late Sunday is busy
    calendar = np.stack([hour, day], axis=1)
    profile = fit_profile(values, np.ones_like(values, bool), calendar, 24, "week", 1.0)
    assert profile[0, 0, 0, 0] > 1.0  # Monday just after midnight
    assert profile[0, 22, 0, 0] < 0.01  # Monday late evening is far from Sunday night


def test_historical_average_refuses_a_weekly_profile_without_weekdays():
    spec = DataSpec(2, 1, 6, 3, 24, 0, 60.0)
    with pytest.raises(ValueError, match="profile='week' needs the day-of-week feature"):
        HistoricalAverage(spec, profile="week")


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
