"""Ensemble forecasts end to end: a tiny model trained with ``model.ensemble=8`` (MC dropout) logs the fair CRPS
beside the median's point metrics, carries a spread scale fitted on validation, writes a forecast file with a
``member`` dimension (CF ``realization``) that ``stlm.evaluate`` scores and plots as a band, and the streamer
gives members too. Dropout masks are drawn per batch, so a file's members equal the test pass's only where the
batches are the same: the scores agree to sampling noise, and a rerun of the same job is identical."""

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
from stlm.stream import Streamer

MEMBERS = 8


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    return train_probabilistic(tmp_path_factory.mktemp("ensemble_train"), f"model.ensemble={MEMBERS}", "model.dropout=0.1")


@pytest.fixture(scope="module")
def forecast_file(trained) -> Path:
    return forecast_test_split(trained, "members.nc")


def test_training_logs_the_fair_crps_and_fits_the_spread(trained):
    test = trained["test"]
    for key in ("mae_h12", "crps_h12", "coverage90_h12", "width90_avg", "crps_avg"):
        assert np.isfinite(test[key]), key
    assert "pinball_avg" not in test  # pinball loss is a score of quantiles, not of members
    assert 0 < test["crps_avg"] < test["mae_avg"]
    scale = load_trained_model(trained["checkpoint"]).model.band_scale.scale
    assert scale.shape == (12,) and not torch.equal(scale, torch.ones_like(scale)) and (scale > 0).all()


def test_member_file_opens_with_plain_xarray_and_scores_to_the_training_numbers(trained, forecast_file):
    with xr.open_dataset(forecast_file) as ds:
        assert ds.speed.dims == ("init_time", "lead_time", "node", "member")
        np.testing.assert_array_equal(ds["member"].values, np.arange(MEMBERS))
        assert ds["member"].attrs["standard_name"] == "realization"
        assert float(ds.speed.std("member").mean()) > 0
    result = run_evaluation(evaluate_cfg(forecast_file, "sqlite:///unused.db", "mlflow.enabled=false"))
    scored, test = result["metrics"], trained["test"]
    assert set(test) - set(scored) == {"loss"}
    for key, value in ((k, v) for k, v in test.items() if k != "loss"):
        # Other batches than the test pass's draw other masks: the same distribution, not the same members.
        tolerance = 0.03 if key.startswith("coverage") else 0.05 * abs(value) + 1e-6
        assert abs(scored[key] - value) <= tolerance, (key, scored[key], value)
    band_plot = result["output_dir"] / "forecast_vs_truth.png"
    assert band_plot in result["plots"] and band_plot.stat().st_size > 10_000


def test_forecast_job_and_streamer_are_reproducible(trained, forecast_file):
    again = forecast_test_split(trained, "members_again.nc")
    with xr.open_dataset(forecast_file) as first, xr.open_dataset(again) as second:
        np.testing.assert_array_equal(first.speed.values, second.speed.values)  # seeded masks: the same file
    model = load_trained_model(trained["checkpoint"])
    dm = instantiate(OmegaConf.create(model.config["dataset"]["datamodule"]))
    dm.setup("fit")
    values = np.where(dm.series.mask, dm.series.values, np.nan)
    times = dm.series.timestamps
    runs = []
    for _ in range(2):
        streamer = Streamer(model)
        for t in range(dm.window):
            forecast = streamer.push(values[t], times[t])
        runs.append(forecast.values)
    assert forecast.members == MEMBERS and forecast.values.shape == (12, values.shape[1], 1, MEMBERS)
    assert np.isfinite(runs[0]).all() and runs[0].std(-1).mean() > 0
    np.testing.assert_array_equal(runs[0], runs[1])
