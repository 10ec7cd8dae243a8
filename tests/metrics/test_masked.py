"""Masked metrics (the sensor configuration of the one metric family) against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from stlm.metrics.horizon import ForecastMetrics
from stlm.metrics.masked import masked_loss, masked_mae, masked_mse


def HorizonMetrics(horizon, mape_min_abs=0.0):
    """The metric as sensor data sets configure it (conf/_shared/datamodule.yaml: step keys, pooled averages)."""
    return ForecastMetrics(horizon, mape_min_abs=mape_min_abs)


def _tensors():
    # B=1, H=2, N=2, C=1. Horizon 1: errors 1 (observed), 3 (masked). Horizon 2: errors 2 and -4, both observed.
    pred = torch.tensor([[[[1.0], [5.0]], [[4.0], [0.0]]]])
    target = torch.tensor([[[[2.0], [2.0]], [[2.0], [4.0]]]])
    mask = torch.tensor([[[[1.0], [0.0]], [[1.0], [1.0]]]])
    return pred, target, mask


def test_masked_mae_and_mse_ignore_masked_entries():
    pred, target, mask = _tensors()
    assert masked_mae(pred, target, mask).item() == pytest.approx((1 + 2 + 4) / 3)
    assert masked_mse(pred, target, mask).item() == pytest.approx((1 + 4 + 16) / 3)


def test_horizon_metrics_per_horizon_and_pooled():
    pred, target, mask = _tensors()
    metric = HorizonMetrics(horizon=2)
    metric.update(pred, target, mask)
    out = {k: v.item() for k, v in metric.compute().items()}
    assert out["mae_h1"] == pytest.approx(1.0)
    assert out["mae_h2"] == pytest.approx(3.0)
    assert out["mae_avg"] == pytest.approx(7 / 3)
    assert out["rmse_h2"] == pytest.approx(math.sqrt((4 + 16) / 2))
    assert out["rmse_avg"] == pytest.approx(math.sqrt(21 / 3))
    # MAPE in percent: h1 |1-2|/2 = 50 %; h2 (2/2 + 4/4)/2 = 100 %.
    assert out["mape_h1"] == pytest.approx(50.0)
    assert out["mape_h2"] == pytest.approx(100.0)


def test_horizon_metrics_accumulate_exactly_across_batches():
    pred, target, mask = _tensors()
    split = HorizonMetrics(horizon=2)
    split.update(pred[:, :, :1], target[:, :, :1], mask[:, :, :1])
    split.update(pred[:, :, 1:], target[:, :, 1:], mask[:, :, 1:])
    whole = HorizonMetrics(horizon=2)
    whole.update(pred, target, mask)
    for key, value in whole.compute().items():
        assert split.compute()[key].item() == pytest.approx(value.item()), key


def test_mape_skips_small_targets():
    pred = torch.tensor([[[[1.0], [3.0]]]])
    target = torch.tensor([[[[0.0], [2.0]]]])
    mask = torch.ones_like(target)
    metric = HorizonMetrics(horizon=1, mape_min_abs=0.5)
    metric.update(pred, target, mask)
    assert metric.compute()["mape_h1"].item() == pytest.approx(50.0)


def test_unknown_loss_lists_choices():
    with pytest.raises(ValueError, match=r"engine.loss='mape'.*\['huber', 'mae', 'mse'\]"):
        masked_loss("mape")


def test_shape_mismatch_is_explained():
    metric = HorizonMetrics(horizon=3)
    with pytest.raises(ValueError, match="must all be"):
        metric.update(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1), torch.ones(1, 2, 1, 1))
