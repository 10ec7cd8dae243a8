"""Band calibration: the per-(horizon, level) factors that make each quantile level hold on held-out data.

Known answers: a Gaussian band of half the true spread needs factor 2 at every level, one of twice the spread
factor 0.5; after scaling, each level's empirical frequency of ``y <= q`` is its level. End to end: bands fitted
on a quiet training period and applied to a noisier validation and test period under-cover; calibrated on the
validation split they cover 90% of the test targets.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from stlm.data.datamodule import SpatioTemporalDataModule
from stlm.data.sources.base import InMemorySource, SpatioTemporalSeries
from stlm.engines.forecasting import ForecastingEngine
from stlm.metrics.calibration import BandCalibration
from stlm.models.baselines import HistoricalAverage
from stlm.models.residual_bands import ResidualBands
from stlm.nn.band_scale import BandScale

LEVELS = torch.tensor([0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95], dtype=torch.float64)


def _gaussian_band(n: int, spreads: list[float], true_std: float = 1.0, seed: int = 0):
    """Targets N(0, true_std^2) [n, H, 1, 1] and quantiles of N(0, spread_h^2) per horizon [n, H, 1, 1, Q]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, len(spreads), 1, 1, generator=g) * true_std
    z = torch.distributions.Normal(0.0, 1.0).icdf(LEVELS.float())
    q = torch.tensor(spreads).view(1, -1, 1, 1, 1) * z
    return y, q.expand(n, -1, 1, 1, -1).clone()


def test_factors_undo_a_too_narrow_and_a_too_wide_band_per_horizon():
    y, q = _gaussian_band(200_000, spreads=[0.5, 2.0])
    metric = BandCalibration(2, LEVELS)
    for a in range(0, len(y), 50_000):  # accumulated over batches as a validation pass does
        metric.update(q[a : a + 50_000], y[a : a + 50_000], torch.ones_like(y[a : a + 50_000]))
    factors = metric.compute()
    assert factors.shape == (2, 7)
    outer = [0, 1, 2, 4, 5, 6]  # the median's factor is 1 by definition: it is never moved
    torch.testing.assert_close(factors[0, outer], torch.full((6,), 2.0), atol=0.0, rtol=0.04)
    torch.testing.assert_close(factors[1, outer], torch.full((6,), 0.5), atol=0.0, rtol=0.04)
    assert (factors[:, 3] == 1).all()

    scale = BandScale(2, LEVELS).eval()
    scale.scale.copy_(factors)
    calibrated = scale(q)
    hit = (y.unsqueeze(-1) <= calibrated).double().mean(dim=(0, 2, 3))  # [H, Q] share below each quantile
    torch.testing.assert_close(hit, LEVELS.expand(2, -1), atol=0.01, rtol=0.0)


def test_masked_targets_are_ignored_and_an_unobserved_horizon_keeps_its_factor():
    y, q = _gaussian_band(40_000, spreads=[1.0, 1.0])
    weight = torch.ones_like(y)
    weight[:20_000, 0] = 0  # outliers at zero weight: they must not widen the band
    y[:20_000, 0] = 1000.0
    weight[:, 1] = 0  # horizon 2 never observed
    metric = BandCalibration(2, LEVELS)
    metric.update(q, y, weight)
    factors = metric.compute()
    torch.testing.assert_close(factors[0], torch.ones(7), atol=0.0, rtol=0.06)
    assert torch.equal(factors[1], torch.ones(7))


def test_a_collapsed_band_on_part_of_the_data_does_not_ask_for_the_widest_factor():
    """Hangzhou metro at night: the head puts every quantile within a hair of the median and the targets sit a
    little off it, so ``r = (y - m) / d`` is enormous there. Counted, those points alone (30% here) would ask
    for the largest factor; weighted by ``|d|`` (the pinball-optimal factor) they hardly count."""
    y, q = _gaussian_band(100_000, spreads=[1.0])
    night = slice(0, 30_000)
    q[night] *= 1e-6
    y[night] = 0.01 * torch.randn(30_000, 1, 1, 1, generator=torch.Generator().manual_seed(1))
    metric = BandCalibration(1, LEVELS)
    metric.update(q, y, torch.ones_like(y))
    factors = metric.compute()
    torch.testing.assert_close(factors[0], torch.ones(7), atol=0.0, rtol=0.06)


def test_the_pinball_optimal_factor_lowers_the_validation_pinball_loss():
    y, q = _gaussian_band(50_000, spreads=[0.4])
    q = q * (1 + torch.rand(50_000, 1, 1, 1, 1, generator=torch.Generator().manual_seed(2)))  # offsets vary
    metric = BandCalibration(1, LEVELS)
    metric.update(q, y, torch.ones_like(y))
    scale = BandScale(1, LEVELS).eval()
    scale.scale.copy_(metric.compute())

    def loss(pred):
        u = y.unsqueeze(-1) - pred
        return (u * (LEVELS.float() - (u < 0).float())).mean(dim=(0, 1, 2, 3))  # [Q]

    fitted, raw = loss(scale(q)), loss(q)
    outer = [0, 1, 2, 4, 5, 6]
    assert (fitted[outer] < raw[outer]).all()
    for nudge in (0.9, 1.1):  # and it is the minimum along the scale: 10% either way is worse
        scale.scale.copy_(metric.compute() * nudge)
        assert (loss(scale(q))[outer] > fitted[outer]).all()


def test_band_scale_is_identity_in_training_and_keeps_the_median_and_the_order():
    scale = BandScale(2, LEVELS)
    scale.scale.copy_(torch.tensor([[3.0, 0.2, 1.0, 1.0, 1.0, 0.1, 5.0], [1.0] * 7]))
    q = torch.linspace(-3, 3, 7).view(1, 1, 1, 1, 7).expand(4, 2, 3, 1, 7) + 10.0
    assert torch.equal(scale(q), q)  # training mode: the head trains unscaled
    out = scale.eval()(q)
    assert torch.equal(out[..., 3], q[..., 3])  # the median never moves
    assert (out.diff(dim=-1) >= 0).all()  # factors that would make levels cross are sorted back into order
    assert torch.equal(out[:, 1], q[:, 1])


class ShiftingNoise(InMemorySource):
    """A daily cycle whose noise std changes from ``before`` to ``after`` at the end of the training period."""

    def __init__(self, before: float = 1.0, after: float = 2.0):
        super().__init__()
        self.before, self.after = before, after

    def load(self):
        ts = pd.date_range("2024-01-01", periods=120 * 24, freq="1h")
        rng = np.random.default_rng(0)
        cycle = 50 + 10 * np.sin(2 * np.pi * ts.hour.to_numpy() / 24)
        std = np.where(np.arange(len(ts)) < 0.7 * len(ts), self.before, self.after)
        values = (cycle[:, None] + rng.normal(0, 1, (len(ts), 4)) * std[:, None])[..., None]
        return SpatioTemporalSeries(values=values.astype(np.float32), mask=np.ones_like(values, bool), timestamps=ts,
                                    node_ids=["a", "b", "c", "d"], channels=["v"], name="shifting")


@pytest.mark.parametrize("calibrate", [False, True])
def test_validation_calibration_restores_test_coverage_after_a_shift(calibrate):
    dm = SpatioTemporalDataModule(ShiftingNoise(), window=6, horizon=3, batch_size=64)
    dm.setup()
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    model = ResidualBands(HistoricalAverage(dm.spec, profile="day"), levels, horizon=3)
    model.fit_from_data(dm)
    engine = ForecastingEngine(model, dm.scaler, horizon=3, metrics=dm.metric_factory(levels=levels))
    if calibrate:
        engine.calibrate(dm.val_dataloader())
        assert (model.band_scale.scale[:, [0, 4]] > 1.5).all()  # the noise doubled: the band must widen about 2x
    coverage = engine.evaluate(dm.test_dataloader())["coverage90_avg"]
    if calibrate:
        assert 0.86 < coverage < 0.94
    else:
        assert coverage < 0.75  # training residuals alone are too sure of themselves here


@pytest.mark.parametrize("narrow_bands", [False, True])
def test_a_calmer_validation_period_narrows_the_band_only_when_allowed(narrow_bands):
    # The noise halves after training. By default the band is never made narrower than the fitted head's: a calm
    # validation spell is weak evidence that the test period is calm too (ERA5's test week was not).
    dm = SpatioTemporalDataModule(ShiftingNoise(before=2.0, after=1.0), window=6, horizon=3, batch_size=64)
    dm.setup()
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    model = ResidualBands(HistoricalAverage(dm.spec, profile="day"), levels, horizon=3)
    model.fit_from_data(dm)
    engine = ForecastingEngine(model, dm.scaler, horizon=3, metrics=dm.metric_factory(levels=levels),
                               narrow_bands=narrow_bands)
    engine.calibrate(dm.val_dataloader())
    outer = model.band_scale.scale[:, [0, 4]]
    coverage = engine.evaluate(dm.test_dataloader())["coverage90_avg"]
    if narrow_bands:
        assert (outer < 0.7).all() and 0.86 < coverage < 0.94
    else:
        assert torch.equal(outer, torch.ones_like(outer)) and coverage > 0.97
