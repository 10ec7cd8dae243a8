"""Grid forecasts: the embedded climate default forecast into the WeatherBench 2 layout, scored back to the
training run's latitude-weighted test metrics; new data through dataset.path."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from forecast_runs import evaluate_cfg, forecast_cfg
from stlm.evaluate import run_evaluation
from stlm.forecast import run_forecast
from tiny_runs import compose

TINY_CLIMATE = [
    "dataset=climate", "dataset.n_lat=8", "dataset.n_lon=16", "dataset.n_days=30", "model.d_model=8",
    "dataset.batch_size=8", "trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2",
    "trainer.enable_model_summary=false", "+trainer.enable_progress_bar=false",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from stlm.train import run

    root = tmp_path_factory.mktemp("grid")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = compose("train", [*TINY_CLIMATE, f"paths.outputs_root={root / 'outputs'}",
                            f"paths.output_dir={root / 'outputs' / 'run'}", f"logger.tracking_uri={uri}"])
    return {"uri": uri, **run(cfg)}


def test_grid_forecasts_in_wb2_layout_score_the_training_test_metrics(trained, tmp_path):
    out = tmp_path / "forecasts.zarr"
    run_forecast(forecast_cfg(out, f"checkpoint={trained['best_checkpoint']}", "format=wb2", "chunk_size=16"))
    ds = xr.open_zarr(out)
    assert ds.t2m.dims == ("time", "prediction_timedelta", "latitude", "longitude")
    assert ds.sizes["latitude"] == 8 and ds.sizes["longitude"] == 16
    assert ds.latitude.attrs["units"] == "degrees_north" and (np.diff(ds.latitude.values) > 0).all()
    assert ds.time.attrs["standard_name"] == "forecast_reference_time"
    assert ds.prediction_timedelta.values[0] == np.timedelta64(6, "h")

    result = run_evaluation(evaluate_cfg(out, trained["uri"], "plots.leads=[1,4]"))
    test = {k: v for k, v in trained["test"].items() if k != "loss"}
    assert set(test) == set(result["metrics"])
    for key, value in test.items():
        assert result["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert {p.name for p in result["plots"]} == {"error_by_horizon.png", "maps.png"}


def test_cf_grid_forecast_of_new_data_through_dataset_path(trained, tmp_path, shared_data):
    """A model trained on ERA5 forecasts a different file of the same grid (here the same month, shifted)."""
    from stlm.train import run

    era5 = shared_data / "climate/era5_t2m_uk/era5_t2m_uk_2019_03.nc"
    first, second = tmp_path / "first.nc", tmp_path / "second.nc"
    with xr.open_dataset(era5) as ds:
        ds.isel(time=slice(0, 240)).to_netcdf(first)
        ds.isel(time=slice(240, 480)).to_netcdf(second)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose("train", ["dataset=era5", f"dataset.path={first}", "dataset.window=6", "dataset.horizon=3",
                            "model.patch=4", *TINY_CLIMATE[4:], f"paths.outputs_root={tmp_path / 'outputs'}",
                            f"paths.output_dir={tmp_path / 'outputs' / 'run'}", f"logger.tracking_uri={uri}"])
    checkpoint = run(cfg)["best_checkpoint"]
    out = tmp_path / "second_forecasts.nc"
    run_forecast(forecast_cfg(out, f"checkpoint={checkpoint}", f"dataset.path={second}", "init_times.split=all"))
    ds = xr.open_dataset(out)
    assert ds.t2m.dims == ("init_time", "lead_time", "lat", "lon") and ds.t2m.attrs["units"] == "K"
    with xr.open_dataset(second) as truth:
        assert ds.init_time.values[0] == truth.time.values[5]  # the first init time is the 6th step of the new file
    assert np.isfinite(ds.t2m.values).all()
    result = run_evaluation(evaluate_cfg(out, uri, "plots.enabled=false"))
    assert 0.0 < result["metrics"]["rmse_lead1h"] < 5.0  # kelvin: a forecast of the right field, not noise


def test_quantile_grid_forecasts_score_the_training_bands_and_map_the_band_width(tmp_path):
    """model.quantiles on a grid: the patch model's bands, latitude-weighted CRPS per lead, a file with a
    ``quantile`` dim scored back to the training numbers, and the maps with the 90% band's width."""
    from stlm.train import run

    cfg = compose("train", [*TINY_CLIMATE, "model.quantiles=[0.05,0.25,0.5,0.75,0.95]", "logger=none",
                            f"paths.outputs_root={tmp_path / 'outputs'}", f"paths.output_dir={tmp_path / 'outputs' / 'run'}"])
    trained = run(cfg)
    test = {k: v for k, v in trained["test"].items() if k != "loss"}
    assert {"crps_lead6h", "coverage90_lead24h", "width90_avg", "rmse_lead6h", "acc_avg"} <= set(test)
    assert all("crps_lead6h" in m for m in trained["baselines"].values())  # persistence, climatology with bands
    out = tmp_path / "bands.nc"
    run_forecast(forecast_cfg(out, f"checkpoint={trained['best_checkpoint']}"))
    with xr.open_dataset(out) as ds:
        assert ds.t2m.dims == ("init_time", "lead_time", "lat", "lon", "quantile")
    result = run_evaluation(evaluate_cfg(out, "sqlite:///unused.db", "mlflow.enabled=false"))
    assert set(test) == set(result["metrics"])
    for key, value in test.items():
        assert result["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    maps = result["output_dir"] / "maps.png"
    assert maps in result["plots"] and maps.stat().st_size > 10_000
