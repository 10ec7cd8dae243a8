"""A grid streams: ``python -m stlm.stream`` on a checkpoint trained on real ERA5 gives, at every init time, the
forecast of the batch forecast job (the grid model has no recurrent mode: the streamer forecasts from the last
``window`` observations, as the job does)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import xarray as xr

from stlm.forecast import run_forecast
from stlm.stream.replay import read_forecasts
from tiny_runs import CONF_DIR, compose

REPO_ROOT = CONF_DIR.parent
WINDOW, HORIZON = 6, 3


def test_streamed_era5_forecasts_equal_the_batch_job(shared_data, tmp_path):
    from stlm.train import run

    era5 = tmp_path / "era5.nc"
    with xr.open_dataset(shared_data / "climate/era5_t2m_uk/era5_t2m_uk_2019_03.nc") as ds:
        ds.isel(time=slice(0, 120)).to_netcdf(era5)
        times = pd.DatetimeIndex(ds.time.values[:120])
    cfg = compose("train", [
        "dataset=era5", f"dataset.path={era5}", f"dataset.window={WINDOW}", f"dataset.horizon={HORIZON}", "model.d_model=8",
        "dataset.batch_size=8", "trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2",
        "trainer.enable_model_summary=false", "+trainer.enable_progress_bar=false", "logger=none",
        f"paths.outputs_root={tmp_path / 'outputs'}", f"paths.output_dir={tmp_path / 'outputs' / 'run'}",
    ])
    checkpoint = run(cfg)["best_checkpoint"]

    batch = tmp_path / "batch.nc"
    run_forecast(compose("forecast", [f"output={batch}", "progress=false", f"checkpoint={checkpoint}", "init_times.split=test"]))
    with xr.open_dataset(batch) as ds:
        init_times = pd.DatetimeIndex(ds.init_time.values)
        expected = ds.t2m.values.reshape(ds.sizes["init_time"], HORIZON, -1)  # [K, H, N]

    first = times.get_loc(init_times[0])  # the step of the first init time: stream from there
    out = tmp_path / "stream"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "stlm.stream", f"checkpoint={checkpoint}", f"output={out}", f"start={first}", "steps=4",
         f"warmup={WINDOW}", "save_every=2"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    issued, values = read_forecasts(out)  # [S], [S, H, N, C]
    assert len(issued) == 4 and issued[0] == init_times[0]
    for s, time in enumerate(issued):
        k = init_times.get_loc(time)
        np.testing.assert_allclose(values[s, :, :, 0], expected[k], rtol=1e-4, atol=1e-4)
    assert np.isfinite(values).all()
