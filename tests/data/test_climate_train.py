"""End to end on grids through the real entry point: the embedded default and real ERA5 with masked cells."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pytest
import xarray as xr

from stlm.data.datamodule import SpatioTemporalDataModule
from stlm.data.sources.climate import ClimateSource
from stlm.data.sources.geometry import latitude_weights
from stlm.train import run

TINY = [
    "model.d_model=8",
    "dataset.batch_size=8",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=2",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "+trainer.enable_progress_bar=false",
]


def _paths(tmp_path):
    return [f"paths.outputs_root={tmp_path / 'outputs'}", f"paths.output_dir={tmp_path / 'outputs' / 'run'}"]


def test_climate_default_logs_per_lead_metrics_and_baselines(compose_train, tmp_path, tracking_uri):
    overrides = ["dataset=climate", "dataset.n_lat=8", "dataset.n_lon=16", "dataset.n_days=30", *TINY, *_paths(tmp_path)]
    result = run(compose_train(overrides))
    assert set(result["baselines"]) == {"persistence", "climatology"}
    assert math.isfinite(result["test"]["rmse_lead24h"]) and math.isfinite(result["test"]["acc_avg"])
    row = mlflow.search_runs(experiment_names=["climate"]).iloc[0]
    for lead in ("6h", "12h", "18h", "24h"):
        assert math.isfinite(row[f"metrics.test/rmse_lead{lead}"]) and math.isfinite(row[f"metrics.val/mae_lead{lead}"])
    assert math.isfinite(row["metrics.baselines/persistence/rmse_avg"])
    assert row["metrics.baselines/climatology/acc_avg"] == pytest.approx(0.0, abs=1e-6)  # its anomaly is 0
    assert (tmp_path / "outputs" / "run" / "normalization.json").exists()


def _masked_era5(shared_data, tmp_path):
    """The first 10 days of real ERA5 t2m with a block of cells (the sea north-west of Scotland) set to NaN."""
    ds = xr.open_dataset(shared_data / "climate/era5_t2m_uk/era5_t2m_uk_2019_03.nc").isel(time=slice(0, 240)).load()
    block = (ds.latitude > 56.0) & (ds.longitude < -5.0)
    ds["t2m"] = ds["t2m"].where(~block)
    path = tmp_path / "era5_masked.nc"
    ds.to_netcdf(path)
    return path, int(block.sum())


def test_era5_with_nan_cells_trains_finite_and_metrics_skip_them(shared_data, compose_train, tmp_path, tracking_uri):
    path, n_masked = _masked_era5(shared_data, tmp_path)
    overrides = ["dataset=era5", f"dataset.path={path}", "dataset.window=6", "dataset.horizon=3", "model.patch=4", *TINY, *_paths(tmp_path)]
    result = run(compose_train(overrides))
    assert all(math.isfinite(v) for v in result["test"].values())
    row = mlflow.search_runs(experiment_names=["era5"]).iloc[0]
    assert math.isfinite(row["metrics.train/loss_epoch"]) and math.isfinite(row["metrics.test/rmse_lead3h"])

    # Persistence's reported RMSE equals a hand computation over the observed cells only.
    dm = SpatioTemporalDataModule(ClimateSource(str(path), ["t2m"]), window=6, horizon=3)
    dm.setup()
    w = latitude_weights(dm.spec.node_coords[:, 0])
    raw = dm.series.read(0, dm.series.n_steps).reshape(dm.series.n_steps, -1)
    assert np.isnan(raw[0]).sum() == n_masked
    sq, count = np.zeros(3), np.zeros(3)
    for s in dm.datasets["test"].starts:
        last, target = raw[s + 5], raw[s + 6 : s + 9]
        ok = np.isfinite(target)
        sq += np.where(ok, (target - last) ** 2 * w, 0).sum(1)
        count += (ok * w).sum(1)
    expected = np.sqrt(sq / count)
    got = [result["baselines"]["persistence"][f"rmse_lead{h}h"] for h in (1, 2, 3)]
    np.testing.assert_allclose(got, expected, rtol=1e-4)
