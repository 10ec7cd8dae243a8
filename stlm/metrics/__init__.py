"""Metrics in original units, with masks and token weights: one family for sensors and grids."""

from stlm.metrics.horizon import ForecastMetrics, horizon_key, lead_name
from stlm.metrics.masked import masked_loss, masked_mae, masked_mse

__all__ = ["ForecastMetrics", "horizon_key", "lead_name", "masked_loss", "masked_mae", "masked_mse"]
