"""Metrics in original units, with masks: per-horizon masked MAE / RMSE / MAPE for sensors."""

from stlm.metrics.masked import HorizonMetrics, masked_loss, masked_mae, masked_mse

__all__ = ["HorizonMetrics", "masked_loss", "masked_mae", "masked_mse"]
