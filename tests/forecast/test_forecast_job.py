"""Forecast jobs end to end on the embedded traffic default: the forecasts of all test windows, scored by
stlm.evaluate, give back the training run's test metrics, whichever way the model is named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from forecast_runs import MODEL_NAME, evaluate_cfg, forecast_cfg, train_registered
from stlm.evaluate import run_evaluation
from stlm.forecast import run_forecast
from stlm.forecast.store import StoreConflictError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("forecast")
    result = train_registered(root)
    return {"root": root, "uri": f"sqlite:///{root / 'mlflow.db'}", **result}


def _metrics(test: dict) -> dict[str, float]:
    """The run's test metrics (``test/loss`` is the training loss on the test split, not a metric)."""
    return {k: v for k, v in test.items() if k != "loss"}


def _relative_differences(evaluated: dict, test: dict) -> dict[str, float]:
    return {k: abs(evaluated[k] - v) / max(abs(v), 1e-12) for k, v in _metrics(test).items()}


def test_forecasts_of_all_test_windows_score_the_training_test_metrics(trained, tmp_path):
    out = tmp_path / "forecasts.nc"
    job = run_forecast(forecast_cfg(out, f"checkpoint={trained['best_checkpoint']}", "chunk_size=100"))
    assert job["n_chunks"] > 1 and out.is_file()
    result = run_evaluation(evaluate_cfg(out, trained["uri"]))
    assert set(_metrics(trained["test"])) == set(result["metrics"])
    worst = max(_relative_differences(result["metrics"], trained["test"]).values())
    assert worst < 1e-4, _relative_differences(result["metrics"], trained["test"])
    # The CSV and plots exist and the MLflow run is linked to the model's run.
    frame = np.genfromtxt(result["output_dir"] / "metrics.csv", delimiter=",", names=True, dtype=None, encoding=None)
    assert frame["mae"][-1] == pytest.approx(trained["test"]["mae_avg"], rel=1e-4)
    assert {p.name for p in result["plots"]} == {"error_by_horizon.png", "forecast_vs_truth.png"}
    import mlflow

    run = mlflow.tracking.MlflowClient(trained["uri"]).get_run(result["mlflow_run_id"])
    assert run.data.tags["stlm.model_run_id"] == trained["run_id"]
    assert run.data.metrics["eval/mae_h12"] == pytest.approx(trained["test"]["mae_h12"], rel=1e-4)
    assert run.info.status == "FINISHED"


@pytest.mark.parametrize("source", ["run_id", "model_uri"])
def test_model_from_an_mlflow_run_or_the_registry_gives_the_same_forecasts(trained, tmp_path, source):
    reference = tmp_path / "from_checkpoint.zarr"
    run_forecast(forecast_cfg(reference, f"checkpoint={trained['best_checkpoint']}"))
    value = trained["run_id"] if source == "run_id" else f"models:/{MODEL_NAME}@champion"
    out = tmp_path / f"from_{source}.zarr"
    job = run_forecast(forecast_cfg(out, f"{source}={value}", f"tracking_uri={trained['uri']}"))
    assert job["run_id"] == trained["run_id"]
    a, b = xr.open_zarr(reference), xr.open_zarr(out)
    np.testing.assert_array_equal(a.speed.values, b.speed.values)
    result = run_evaluation(evaluate_cfg(out, trained["uri"]))
    assert max(_relative_differences(result["metrics"], trained["test"]).values()) < 1e-4


def test_forecast_file_is_cf_and_opens_with_plain_xarray(trained, tmp_path):
    import cf_xarray  # noqa: F401  (registers the .cf accessor: an independent reading of the CF attributes)

    out = tmp_path / "forecasts.nc"
    run_forecast(forecast_cfg(out, f"checkpoint={trained['best_checkpoint']}", "init_times.every=10"))
    ds = xr.open_dataset(out)
    assert ds.speed.dims == ("init_time", "lead_time", "node")
    assert ds.attrs["Conventions"].startswith("CF-")
    for key in ("title", "source", "history"):
        assert ds.attrs[key]
    assert "git " in ds.attrs["source"] and ds.attrs["stlm_run_id"] == trained["run_id"]
    assert ds.speed.attrs["units"] and np.isfinite(ds.speed.values).all()
    names = ds.cf.standard_names
    assert names["forecast_reference_time"] == ["init_time"]
    assert names["forecast_period"] == ["lead_time"]
    assert names["time"] == ["valid_time"]
    assert ds.valid_time.dims == ("init_time", "lead_time")
    np.testing.assert_array_equal(ds.valid_time.values, ds.init_time.values[:, None] + ds.lead_time.values[None, :])
    assert ds.sensor_id.dims == ("node",) and len(set(ds.sensor_id.values)) == ds.sizes["node"]
    # Every 10th test window: init times step by 10 intervals, and the first lead is one interval.
    assert (np.diff(ds.init_time.values) == 10 * ds.lead_time.values[0]).all()
    # Raw netCDF attributes, as a non-xarray reader sees them.
    import netCDF4

    with netCDF4.Dataset(out) as nc:
        assert nc.variables["init_time"].standard_name == "forecast_reference_time"
        assert "since" in nc.variables["init_time"].units and "since" in nc.variables["valid_time"].units
        assert nc.variables["lead_time"].standard_name == "forecast_period"


def test_forecasts_past_the_end_of_the_data_are_written_and_unscored(trained, tmp_path):
    out = tmp_path / "future.nc"
    dataset = json.loads(xr.open_dataset(_any_forecast(trained, tmp_path)).attrs["stlm_dataset_config"])
    job = run_forecast(forecast_cfg(out, f"checkpoint={trained['best_checkpoint']}", "init_times.split=all",
                                    "init_times.start=2024-01-09T23:00"))
    ds = xr.open_dataset(out)
    assert job["n_init_times"] == ds.sizes["init_time"] > 1 and np.isfinite(ds.speed.values).all()
    last_valid = ds.valid_time.values[-1, -1]
    assert last_valid > ds.init_time.values[-1]  # the last init time is the last observation: all leads lie beyond
    result = run_evaluation(evaluate_cfg(out, trained["uri"], "mlflow.enabled=false", "plots.enabled=false"))
    assert np.isfinite(result["metrics"]["mae_h1"])  # early init times still have observed targets
    assert dataset["name"] == "traffic"


def _any_forecast(trained, tmp_path):
    path = tmp_path / "any.nc"
    run_forecast(forecast_cfg(path, f"checkpoint={trained['best_checkpoint']}", "init_times.every=50"))
    return path


def test_exactly_one_model_source_is_required(tmp_path):
    with pytest.raises(ValueError, match="exactly one of checkpoint=PATH, run_id"):
        run_forecast(forecast_cfg(tmp_path / "f.nc"))
    with pytest.raises(ValueError, match="exactly one"):
        run_forecast(forecast_cfg(tmp_path / "f.nc", "checkpoint=a.ckpt", "run_id=0123"))


def test_output_must_be_netcdf_or_zarr(trained, tmp_path):
    with pytest.raises(ValueError, match=r"output=.*\.nc.*\.zarr"):
        run_forecast(forecast_cfg(tmp_path / "f.csv", f"checkpoint={trained['best_checkpoint']}"))


def test_data_laid_out_differently_from_the_model_is_refused(trained, tmp_path):
    with pytest.raises(ValueError, match="number of nodes .* differs from the model's"):
        run_forecast(forecast_cfg(tmp_path / "f.nc", f"checkpoint={trained['best_checkpoint']}", "+dataset.n_nodes=7"))


def test_output_of_another_job_is_never_overwritten_silently(trained, tmp_path):
    out = tmp_path / "f.zarr"
    run_forecast(forecast_cfg(out, f"checkpoint={trained['best_checkpoint']}", "init_times.every=20"))
    with pytest.raises(StoreConflictError, match="overwrite=true"):
        run_forecast(forecast_cfg(out, f"checkpoint={trained['best_checkpoint']}", "init_times.every=10"))
    again = run_forecast(forecast_cfg(out, f"checkpoint={trained['best_checkpoint']}", "init_times.every=20"))
    assert again["written"] == []  # the same job, already complete: nothing recomputed


TINY_TRUTH = ["dataset=traffic", "dataset.n_nodes=12", "dataset.n_days=9"]  # the data of train_registered


def test_another_models_file_is_scored_against_the_named_truth(trained, tmp_path):
    """A persistence forecast written by hand (no stlm attributes) is scored against ``dataset=...``; the scores
    equal a direct numpy computation."""
    from hydra.utils import instantiate

    from forecast_runs import compose
    from stlm.evaluate.forecasts import ForecastFileError

    ours = tmp_path / "ours.nc"
    run_forecast(forecast_cfg(ours, f"checkpoint={trained['best_checkpoint']}", "init_times.every=7"))
    layout = xr.load_dataset(ours)
    dm = instantiate(compose("train", TINY_TRUTH).dataset.datamodule)
    dm.setup()
    series = dm.series
    init = series.timestamps.get_indexer(layout.init_time.values)
    H = layout.sizes["lead_time"]
    persistence = np.repeat(series.values[init][:, None, :, 0], H, axis=1)  # [K, H, N]
    external = xr.Dataset({"speed": (("init_time", "lead_time", "node"), persistence, {"units": "km/h"})},
                          coords={k: layout[k] for k in ("init_time", "lead_time", "node", "sensor_id")})
    path = tmp_path / "external.nc"
    external.to_netcdf(path)

    with pytest.raises(ForecastFileError, match="dataset=NAME"):
        run_evaluation(evaluate_cfg(path, trained["uri"], "mlflow.enabled=false"))
    result = run_evaluation(evaluate_cfg(path, trained["uri"], *TINY_TRUTH, "mlflow.enabled=false", "plots.enabled=false"))
    steps = init[:, None] + np.arange(1, H + 1)[None, :]
    y, m = series.values[steps][..., 0], series.mask[steps][..., 0]
    for h in (1, 6, H):
        err = np.abs(persistence[:, h - 1] - y[:, h - 1])[m[:, h - 1]]
        assert result["metrics"][f"mae_h{h}"] == pytest.approx(err.mean(), rel=1e-5)
        assert result["metrics"][f"rmse_h{h}"] == pytest.approx(np.sqrt((err**2).mean()), rel=1e-5)


def test_an_unfinished_zarr_store_is_not_scored(trained, tmp_path):
    from stlm.evaluate.forecasts import ForecastFileError
    from stlm.forecast.store import progress_dir

    out = tmp_path / "f.zarr"
    run_forecast(forecast_cfg(out, f"checkpoint={trained['best_checkpoint']}", "init_times.every=20"))
    progress_dir(out).mkdir()  # as a killed job leaves it
    with pytest.raises(ForecastFileError, match="unfinished .* rerun the same stlm.forecast command"):
        run_evaluation(evaluate_cfg(out, trained["uri"]))


def test_a_finished_netcdf_job_is_not_redone_and_another_jobs_file_is_kept(trained, tmp_path):
    out = tmp_path / "f.nc"
    run_forecast(forecast_cfg(out, f"checkpoint={trained['best_checkpoint']}", "init_times.every=20"))
    before = out.stat().st_mtime_ns
    again = run_forecast(forecast_cfg(out, f"checkpoint={trained['best_checkpoint']}", "init_times.every=20"))
    assert again["written"] == [] and out.stat().st_mtime_ns == before
    with pytest.raises(StoreConflictError, match="overwrite=true"):
        run_forecast(forecast_cfg(out, f"checkpoint={trained['best_checkpoint']}", "init_times.every=10"))
    assert out.stat().st_mtime_ns == before
    replaced = run_forecast(forecast_cfg(out, f"checkpoint={trained['best_checkpoint']}", "init_times.every=10",
                                         "overwrite=true"))
    assert xr.open_dataset(out).sizes["init_time"] == replaced["n_init_times"]
