"""Quantile forecasts end to end: a tiny model trained with ``model.quantiles=default`` writes a forecast file
with a ``quantile`` dimension that plain xarray opens, ``stlm.evaluate`` scores it to the training numbers (point
metrics of the median, CRPS, coverage) and draws the band, and the streamer gives the batch job's quantiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from hydra.utils import instantiate
from omegaconf import OmegaConf

from forecast_runs import evaluate_cfg, forecast_test_split, train_probabilistic
from stlm.engines.checkpoints import load_trained_model
from stlm.evaluate import run_evaluation
from stlm.metrics.probabilistic import DEFAULT_LEVELS
from stlm.stream import Streamer


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    return train_probabilistic(tmp_path_factory.mktemp("quantile_train"), "model.quantiles=default")


@pytest.fixture(scope="module")
def forecast_file(trained) -> Path:
    return forecast_test_split(trained, "quantiles.nc")


def test_training_logs_band_scores_beside_the_median_point_metrics(trained):
    test = trained["test"]
    for key in ("mae_h12", "crps_h12", "coverage90_h12", "width90_avg", "pinball_avg", "crps_avg"):
        assert np.isfinite(test[key]), key
    assert 0 < test["crps_avg"] < test["mae_avg"]  # CRPS <= MAE of the median, equal only for a zero-width band
    assert abs(test["pinball_avg"] * 2 - test["crps_avg"]) < 1e-5  # CRPS from quantiles = 2 x mean pinball loss
    assert {"last_value", "historical_average"} <= set(trained["baselines"])
    assert all("crps_h12" in metrics for metrics in trained["baselines"].values())  # baselines got bands too
    # The best checkpoint carries the band scale fitted on the validation split for its own weights.
    scale = load_trained_model(trained["checkpoint"]).model.band_scale.scale
    assert scale.shape == (12, len(DEFAULT_LEVELS)) and not torch.equal(scale, torch.ones_like(scale))
    assert (scale > 0).all() and (scale[:, DEFAULT_LEVELS.index(0.5)] == 1).all()


def test_quantile_file_opens_with_plain_xarray_and_scores_to_the_training_numbers(trained, forecast_file):
    with xr.open_dataset(forecast_file) as ds:
        assert ds.speed.dims == ("init_time", "lead_time", "node", "quantile")
        np.testing.assert_allclose(ds["quantile"].values, DEFAULT_LEVELS)
        assert ds["quantile"].attrs["long_name"] == "quantile level" and ds["quantile"].attrs["units"] == "1"
        assert (ds.speed.diff("quantile") >= 0).all()
        median = ds.speed.sel(quantile=0.5)
        assert median.dims == ("init_time", "lead_time", "node")
    result = run_evaluation(evaluate_cfg(forecast_file, "sqlite:///unused.db", "mlflow.enabled=false"))
    scored, test = result["metrics"], trained["test"]
    assert set(test) - set(scored) == {"loss"}  # the training loss is the one number a file cannot have
    for key, value in ((k, v) for k, v in test.items() if k != "loss"):
        assert abs(scored[key] - value) <= 1e-4 * max(abs(value), 1e-6), (key, scored[key], value)
    band_plot = result["output_dir"] / "forecast_vs_truth.png"
    assert band_plot in result["plots"] and band_plot.stat().st_size > 10_000
    frame = pd.read_csv(result["output_dir"] / "metrics.csv", index_col="lead")
    assert {"crps", "coverage90", "width90", "mae"} <= set(frame.columns)


def test_streamed_quantiles_equal_the_batch_job(trained, forecast_file):
    model = load_trained_model(trained["checkpoint"])
    dm = instantiate(OmegaConf.create(model.config["dataset"]["datamodule"]))
    dm.setup("fit")
    values = np.where(dm.series.mask, dm.series.values, np.nan)
    times = dm.series.timestamps
    with xr.open_dataset(forecast_file) as ds:
        init = pd.Timestamp(ds.init_time.values[7])
        expected = ds.speed.sel(init_time=init).values  # [H, N, Q]
    last = times.get_loc(init)
    streamer = Streamer(model)  # fed the window the batch job read for this init time, as in tests/stream
    for t in range(last - dm.window + 1, last + 1):
        forecast = streamer.push(values[t], times[t])
    assert forecast.issued_at == init and forecast.values.shape == (*expected.shape[:2], 1, len(DEFAULT_LEVELS))
    np.testing.assert_allclose(forecast.levels, DEFAULT_LEVELS)
    np.testing.assert_allclose(forecast.values[:, :, 0], expected, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(torch.from_numpy(forecast.values)).all()
