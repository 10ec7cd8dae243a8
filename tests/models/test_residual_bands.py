"""Bands for point models (empirical quantiles of the training residuals) and the one model builder.

A source with known noise: node 0 has N(0, 1) noise around a daily cycle, node 1 N(0, 3^2). The historical
average with residual bands must then give node 1 a band about 3 times wider, cover 90% of the training targets
with its 90% band, and never cross.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from stlm.data.datamodule import SpatioTemporalDataModule
from stlm.data.sources.base import InMemorySource, SpatioTemporalSeries
from stlm.engines.forecasting import ForecastingEngine
from stlm.metrics.probabilistic import pinball
from stlm.models.build import build_model
from stlm.models.residual_bands import ResidualBands

LEVELS = [0.05, 0.25, 0.5, 0.75, 0.95]


class NoisySource(InMemorySource):
    def load(self):
        ts = pd.date_range("2024-01-01", periods=28 * 24, freq="1h")
        rng = np.random.default_rng(0)
        cycle = 50 + 10 * np.sin(2 * np.pi * ts.hour.to_numpy() / 24)
        values = np.stack([cycle + rng.normal(0, 1, len(ts)), cycle + rng.normal(0, 3, len(ts))], axis=1)[..., None]
        mask = np.ones_like(values, bool)
        mask[100:110, 1] = False  # missing targets never enter the residuals
        return SpatioTemporalSeries(values=np.where(mask, values, 0).astype(np.float32), mask=mask, timestamps=ts,
                                    node_ids=["calm", "noisy"], channels=["v"], name="noisy")


@pytest.fixture(scope="module")
def dm():
    dm = SpatioTemporalDataModule(NoisySource(), window=6, horizon=3, batch_size=64)
    dm.setup()
    return dm


def _cfg(target: str, **kwargs):
    return OmegaConf.create({"_target_": target, **kwargs})


def test_residual_bands_are_per_token_sorted_and_cover_the_training_targets(dm):
    model = build_model(_cfg("stlm.models.baselines.HistoricalAverage", profile="day", quantiles=LEVELS), dm.spec)
    assert isinstance(model, ResidualBands)
    model.fit_from_data(dm)
    assert model.offsets.shape == (3, 2, 1, 5)
    assert (model.offsets.diff(dim=-1) > 0).all()
    width = (model.offsets[..., 4] - model.offsets[..., 0]).mean(dim=0).squeeze(-1)  # [N] scaled
    assert 2.4 < float(width[1] / width[0]) < 3.6  # the noisier node gets a proportionally wider band
    engine = ForecastingEngine(model, dm.scaler, horizon=3, metrics=dm.metric_factory(levels=LEVELS))
    train = engine.evaluate(dm.train_dataloader())
    assert abs(train["coverage90_avg"] - 0.9) < 0.02
    test = engine.evaluate(dm.test_dataloader())
    assert 0.8 < test["coverage90_avg"] < 0.97 and np.isfinite(test["crps_avg"])
    point = ForecastingEngine(build_model(_cfg("stlm.models.baselines.HistoricalAverage", profile="day"), dm.spec), dm.scaler,
                              horizon=3)
    point.model.fit_from_data(dm)
    # The median is the point model shifted by the median residual: no worse than the point model by much.
    assert test["mae_avg"] < 1.05 * point.evaluate(dm.test_dataloader())["mae_avg"]


def test_quantile_loss_is_the_masked_mean_pinball_loss(dm):
    model = build_model(_cfg("stlm.models.baselines.LastValue", quantiles=LEVELS), dm.spec)
    model.fit_from_data(dm)
    engine = ForecastingEngine(model, dm.scaler, horizon=3, metrics=dm.metric_factory(levels=LEVELS))
    batch = next(iter(dm.train_dataloader()))
    batch["mask"][:, :, 0] = 0  # node 0 unobserved: only node 1 counts
    pred = engine(batch)
    assert pred.shape == (*batch["y"].shape, 5)
    observed = batch["mask"][:, :, 1] > 0
    expected = pinball(pred[:, :, 1], batch["y"][:, :, 1], torch.tensor(LEVELS, dtype=torch.float64))[observed].mean()
    torch.testing.assert_close(engine._loss(pred, batch), expected)


def test_quantiles_need_a_quantile_head_or_a_fitted_model_and_the_mae(dm):
    with pytest.raises(ValueError, match="no quantile head"):
        build_model(_cfg("stlm.models.baselines.LinearForecaster", quantiles="default"), dm.spec)
    with pytest.raises(ValueError, match="include the median"):
        build_model(_cfg("stlm.models.baselines.LastValue", quantiles=[0.1, 0.9]), dm.spec)
    with pytest.raises(ValueError, match="model.quantiles"):
        build_model(_cfg("stlm.models.baselines.LastValue", quantiles="all"), dm.spec)
    model = build_model(_cfg("stlm.models.baselines.LastValue"), dm.spec, quantiles=LEVELS)  # the override wins
    with pytest.raises(ValueError, match="engine.loss='mse' with model.quantiles"):
        ForecastingEngine(model, dm.scaler, horizon=3, loss="mse")
