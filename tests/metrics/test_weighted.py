"""Latitude-weighted metrics (the grid configuration of the one metric family) against hand computations, masks included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stlm.data.sources.geometry import latitude_weights
from stlm.metrics.horizon import ForecastMetrics, lead_name, summary_columns
from stlm.metrics.masked import anomaly_correlation, weighted_loss, weighted_mae, weighted_rmse


def LeadMetrics(horizon, interval_minutes, channels, weights, climatology=None, column=0):
    """The metric as grid data sets configure it (conf/_shared/grid_datamodule.yaml)."""
    return ForecastMetrics(horizon, interval_minutes, channels, weights, climatology, column, keys="lead",
                           average="lead_mean", per_channel=True, mape=False)

# Two cells at latitude 0 and 60 degrees: cos = 1 and 0.5, normalized to mean 1 -> weights 4/3 and 2/3.
LAT = np.array([0.0, 60.0])


def test_latitude_weights_by_hand():
    np.testing.assert_allclose(latitude_weights(LAT), [4 / 3, 2 / 3], rtol=1e-6)
    assert latitude_weights(np.array([90.0, -90.0, 0.0]))[:2] == pytest.approx([0.0, 0.0], abs=1e-6)


def test_lead_names():
    assert [lead_name(m) for m in (60, 360, 1440, 30, 90)] == ["1h", "6h", "24h", "30min", "90min"]
    assert [lead_name(d * 1440) for d in (31, 92, 365)] == ["1mo", "3mo", "12mo"]  # monthly steps


def _case():
    """B=1, H=2 leads, N=2 cells, C=1; lead 2 has cell 1 masked (its target NaN)."""
    pred = torch.tensor([[[[1.0], [2.0]], [[3.0], [5.0]]]])
    target = torch.tensor([[[[0.0], [0.0]], [[1.0], [float("nan")]]]])
    mask = torch.tensor([[[[1.0], [1.0]], [[1.0], [0.0]]]])
    return pred, target, mask, torch.from_numpy(latitude_weights(LAT))


def test_summary_columns_order_leads_by_time_not_by_string():
    # Keys read back from JSON come sorted as strings: lead10h before lead9h.
    metrics = {f"mae_lead{h}h": 0.0 for h in sorted(range(1, 21), key=str)} | {"mae_avg": 0.0, "rmse_avg": 0.0}
    names, suffixes = summary_columns(metrics)
    assert names[:2] == ["mae", "rmse"]
    assert suffixes == ["lead1h", "lead5h", "lead10h", "lead20h"]
    with pytest.raises(ValueError, match="lead<number>"):
        summary_columns({"mae_tomorrow": 0.0})


def test_rmse_mae_by_hand_with_a_masked_cell():
    pred, target, mask, w = _case()
    # lead 1: errors 1 and 2, weights 4/3 and 2/3 -> MSE = (4/3 * 1 + 2/3 * 4) / 2 = 2, MAE = (4/3 + 4/3) / 2 = 4/3
    # lead 2: only cell 0 counts (error 2) -> RMSE = MAE = 2
    np.testing.assert_allclose(weighted_rmse(pred, target, mask, w)[:, 0], [math.sqrt(2.0), 2.0], rtol=1e-6)
    np.testing.assert_allclose(weighted_mae(pred, target, mask, w)[:, 0], [4 / 3, 2.0], rtol=1e-6)


def test_acc_by_hand():
    pred, target, mask, w = _case()
    clim = torch.tensor([[[[0.5], [1.0]], [[0.0], [0.0]]]])
    # lead 1: a_f = (0.5, 1), a_o = (-0.5, -1), w = (4/3, 2/3): fo = -1/3 - 2/3 = -1, ff = 1/3 + 2/3 = 1, oo = 1 -> -1
    # lead 2: one cell: a_f = 3, a_o = 1 -> 3 / sqrt(9 * 1) = 1
    np.testing.assert_allclose(anomaly_correlation(pred, target, clim, mask, w)[:, 0], [-1.0, 1.0], rtol=1e-6)


def test_weighted_loss_by_hand():
    pred, target, mask, w = _case()
    weights = w[:, None]
    # |err| * w * m: lead 1: 4/3 + 4/3, lead 2: 8/3 (cell 1 masked); sum of w * m = 2 + 4/3
    assert weighted_loss("mae", pred, target, mask, weights).item() == pytest.approx((16 / 3) / (10 / 3))
    with pytest.raises(ValueError, match="choose one of"):
        weighted_loss("l7", pred, target, mask, weights)


def test_lead_metrics_accumulate_over_batches_and_name_leads():
    pred, target, mask, w = _case()
    clim_table = torch.zeros(4, 2, 1)  # climatology 0 everywhere: ACC = plain uncentred correlation
    metric = LeadMetrics(horizon=2, interval_minutes=360, channels=["t2m"], weights=w, climatology=clim_table, column=0)
    y_time = torch.zeros(1, 2, 4, dtype=torch.long)
    half = {"y": target, "mask": mask, "y_time": y_time}
    metric.update(pred, half)
    metric.update(pred, half)  # the same batch twice: per-lead values unchanged
    out = metric.compute()
    assert out["rmse_lead6h"] == pytest.approx(math.sqrt(2.0), rel=1e-6)
    assert out["mae_lead12h"] == pytest.approx(2.0, rel=1e-6)
    assert out["rmse_avg"] == pytest.approx((math.sqrt(2.0) + 2.0) / 2, rel=1e-6)
    assert out["acc_lead12h"] == pytest.approx(1.0, rel=1e-6)
    assert "t2m/rmse_lead6h" not in out  # one variable: no per-variable duplicates


def test_lead_metrics_per_variable_keys():
    torch.manual_seed(0)
    pred, target = torch.randn(3, 2, 4, 2), torch.randn(3, 2, 4, 2)
    mask = torch.ones_like(pred)
    w = torch.ones(4)
    metric = LeadMetrics(2, 60, ["t2m", "z500"], w)
    metric.update(pred, {"y": target, "mask": mask})
    out = metric.compute()
    expected = weighted_rmse(pred, target, mask, w)
    assert out["z500/rmse_lead2h"] == pytest.approx(expected[1, 1].item(), rel=1e-5)
    assert "acc_avg" not in out  # no climatology given
