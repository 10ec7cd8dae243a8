"""The engine: inverse scaling, the non-finite loss guard, optimizer and schedule."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from stlm.data.scalers import StandardScaler
from stlm.data.spec import DataSpec
from stlm.engines.forecasting import ForecastingEngine, NonFiniteLossError
from stlm.engines.schedules import warmup_cosine
from stlm.models.baselines import LastValue

SPEC = DataSpec(n_nodes=3, n_channels=1, window=4, horizon=2, steps_per_day=24, days_per_week=7, interval_minutes=60)


def _scaler(mean=50.0, std=10.0):
    scaler = StandardScaler()
    scaler.mean, scaler.std = np.array([mean], np.float32), np.array([std], np.float32)
    return scaler


def _batch():
    x = torch.full((2, 4, 3, 1), 0.5)
    return {"x": x, "x_mask": torch.ones_like(x), "y": torch.full((2, 2, 3, 1), 55.0), "mask": torch.ones(2, 2, 3, 1),
            "x_time": torch.zeros(2, 4, 2, dtype=torch.long), "y_time": torch.zeros(2, 2, 2, dtype=torch.long)}


def test_predictions_are_returned_in_original_units():
    engine = ForecastingEngine(LastValue(SPEC), _scaler(), horizon=2)
    pred = engine(_batch())
    assert torch.allclose(pred, torch.full_like(pred, 55.0))  # 0.5 * 10 + 50


class Affine(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, batch):
        return batch["x"][:, -2:] * self.w


def test_non_finite_loss_stops_training_with_the_step_named():
    engine = ForecastingEngine(Affine(), _scaler(), horizon=2)
    batch = _batch()
    batch["y"][0, 0, 0, 0] = float("nan")  # an observed target that is NaN: the loss is NaN
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss \(nan\) at epoch 0, global step 0, batch 7"):
        engine.training_step(batch, 7)


def test_masked_nan_targets_do_not_poison_the_loss_or_metrics():
    engine = ForecastingEngine(Affine(), _scaler(), horizon=2)
    batch = _batch()
    batch["y"][0, 0, 0, 0] = float("nan")
    batch["mask"][0, 0, 0, 0] = 0.0
    assert torch.isfinite(engine.training_step(batch, 0))
    engine.metrics["val"].update(engine(batch), batch["y"], batch["mask"])
    assert all(torch.isfinite(v) for v in engine.metrics["val"].compute().values())


def test_non_finite_gradient_is_refused_before_the_optimizer_step():
    engine = ForecastingEngine(Affine(), _scaler(), horizon=2)
    engine.model.w.grad = torch.tensor([float("inf")])
    with pytest.raises(NonFiniteLossError, match="non-finite gradient of model.w at epoch 0, global step 0"):
        engine.on_before_optimizer_step(None)


def test_non_finite_validation_predictions_are_refused():
    engine = ForecastingEngine(Affine(), _scaler(), horizon=2)
    with torch.no_grad():
        engine.model.w.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="non-finite predictions in val"):
        engine.validation_step(_batch(), 0)


def test_parameter_free_models_need_no_optimizer():
    engine = ForecastingEngine(LastValue(SPEC), _scaler(), horizon=2)
    assert not engine.has_trainable_parameters and engine.configure_optimizers() is None


def test_optimizer_factory_receives_the_trainable_parameters():
    engine = ForecastingEngine(Affine(), _scaler(), horizon=2, optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    optimizer = engine.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["params"][0] is engine.model.w


def test_warmup_cosine_schedule():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_cosine(optimizer, total_steps=100, warmup_fraction=0.1, min_lr_ratio=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert max(lrs) == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1, abs=0.01)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # monotone decay after the warm-up
