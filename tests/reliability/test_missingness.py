"""Missing and non-finite input through ``stlm.train``: a wide CSV with half its cells empty trains with a finite
loss; a sensor never observed in the training period is reported and kept (masked) or dropped as configured,
never silently zero-filled; NaN in a file that declares no missing values is refused before training with the
file, the variable and the first index. (Reader-level twins: tests/data/test_sources.py, test_datamodule.py.)"""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from reliability_helpers import tiny
from stlm.data.sources import DataValidationError
from stlm.data.sources.synthetic import SyntheticTrafficSource
from stlm.train import run
from tiny_runs import compose

N_SENSORS, SILENT = 10, "s3"  # SILENT: no reading at all before the last fifth of the series


@pytest.fixture
def half_empty_csv(tmp_path):
    series = SyntheticTrafficSource(n_nodes=N_SENSORS, n_days=9, seed=2).load()
    values = series.values[..., 0].astype(float)
    values[np.random.default_rng(0).random(values.shape) < 0.5] = np.nan  # half the cells empty
    ids = [f"s{i}" for i in range(N_SENSORS)]
    values[: int(0.8 * len(values)), ids.index(SILENT)] = np.nan  # nothing in the training (or validation) period
    path = tmp_path / "speeds.csv"
    pd.DataFrame(values, index=pd.Index(series.timestamps, name="timestamp"), columns=ids).to_csv(path)
    return path


def _csv_overrides(tmp_path, path, *extra):
    return [o for o in tiny(tmp_path, "run", *extra) if not o.startswith("dataset.n_")] + ["dataset=csv", f"dataset.path={path}"]


def test_half_empty_csv_trains_finite_and_the_silent_sensor_is_reported_and_masked(tmp_path, tracking_uri, half_empty_csv):
    overrides = _csv_overrides(tmp_path, half_empty_csv)
    with pytest.warns(UserWarning, match=rf"1 of {N_SENSORS} nodes have no observation in the training period \({SILENT}\); kept"):
        result = run(compose("train", overrides))
    losses = [m.value for m in mlflow.MlflowClient().get_metric_history(result["run_id"], "train/loss_step")]
    assert losses and all(math.isfinite(v) for v in losses)
    assert math.isfinite(result["test"]["mae_avg"])

    # Kept means masked, not zero-filled: the sensor is never an observed input nor a scored target in training.
    with pytest.warns(UserWarning, match="no observation in the training period"):
        datamodule = instantiate(compose("train", overrides).dataset.datamodule)
        datamodule.setup("fit")
    node = datamodule.spec.node_ids.index(SILENT)
    for batch in datamodule.train_dataloader():
        assert not batch["x_mask"][..., node, :].any() and not batch["mask"][..., node, :].any()


def test_the_silent_sensor_is_dropped_on_request(tmp_path, tracking_uri, half_empty_csv):
    with pytest.warns(UserWarning, match=rf"\({SILENT}\); dropped"):
        result = run(compose("train", _csv_overrides(tmp_path, half_empty_csv, "dataset.unobserved_nodes=drop")))
    node_ids = torch.load(result["best_checkpoint"], weights_only=True)["stlm"]["spec"]["node_ids"]
    assert SILENT not in node_ids and len(node_ids) == N_SENSORS - 1


def test_nan_in_a_file_without_declared_missing_values_is_refused_before_training(tmp_path, tracking_uri):
    index = pd.date_range("2012-03-01", periods=9 * 288, freq="5min")
    frame = pd.DataFrame(np.full((len(index), 3), 60.0), index=index, columns=["a", "b", "c"])
    frame.iloc[700, 1] = np.nan
    path = tmp_path / "speeds.h5"
    frame.to_hdf(path, key="df")
    overrides = [o for o in tiny(tmp_path) if not o.startswith("dataset.n_")]
    with pytest.raises(DataValidationError) as info:
        run(compose("train", [*overrides, "dataset=metr_la", f"dataset.path={path}", "dataset.missing_value=null"]))
    message = str(info.value)
    assert "speeds.h5" in message and "sensor column 'b', row 700" in message and "dataset.missing_value" in message
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))


def test_grid_cells_never_observed_in_training_are_reported_and_kept_masked(shared_data, tmp_path):
    """Real ERA5 with a block of cells missing through the whole training period (observed later): reported,
    kept, masked in the inputs, and their climatology is finite."""
    import xarray as xr

    from stlm.data.datamodule import SpatioTemporalDataModule
    from stlm.data.sources.climate import ClimateSource

    ds = xr.open_dataset(shared_data / "climate/era5_t2m_uk/era5_t2m_uk_2019_03.nc").isel(time=slice(0, 120)).load()
    block = (ds.latitude > 57.0) & (ds.longitude < -8.0)
    ds["t2m"] = ds["t2m"].where(~block | (ds.time >= ds.time[100]))  # missing until step 100 (training: 0..83)
    path = tmp_path / "era5_gap.nc"
    ds.to_netcdf(path)
    dm = SpatioTemporalDataModule(ClimateSource(str(path), ["t2m"]), window=6, horizon=3)
    with pytest.warns(UserWarning, match=rf"{int(block.sum())} of {block.size} cells have no observation in the training period"):
        dm.setup()
    assert np.isfinite(dm.climatology).all()
    batch = next(iter(dm.train_dataloader()))
    lat = np.repeat(dm.series.lat, len(dm.series.lon))
    lon = np.tile(dm.series.lon, len(dm.series.lat))
    hidden = (lat > 57.0) & (lon < -8.0)
    assert batch["x_mask"][:, :, hidden].sum() == 0 and batch["x_mask"][:, :, ~hidden].sum() > 0
