"""Batch forecast jobs: a trained model over many init times into CF netCDF files or zarr stores.

    python -m stlm.forecast checkpoint=outputs/.../checkpoints/best.ckpt output=forecasts.nc
    python -m stlm.forecast model_uri=models:/traffic_stlm@champion output=forecasts.zarr init_times.split=all
    torchrun --nproc_per_node=2 -m stlm.forecast run_id=<id> output=forecasts.zarr

See docs/forecasting.md; the layout is in :mod:`stlm.forecast.layout`, the store in :mod:`stlm.forecast.store`.
"""

from stlm.forecast.job import run_forecast

__all__ = ["run_forecast"]
