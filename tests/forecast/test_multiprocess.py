"""Two processes (torchrun, CPU, gloo) share one forecast job: each init time is written exactly once, by one rank,
into one store equal to a single-process run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from forecast_runs import forecast_cfg, train_registered
from stlm.forecast import run_forecast
from stlm.forecast.store import LEDGER_ATTR


def test_two_processes_write_every_init_time_exactly_once(tmp_path):
    checkpoint = train_registered(tmp_path)["best_checkpoint"]
    overrides = [f"checkpoint={checkpoint}", "chunk_size=40", "progress=false"]
    single = tmp_path / "single.zarr"
    run_forecast(forecast_cfg(single, *overrides))

    output = tmp_path / "sharded.zarr"
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "stlm.forecast", f"output={output}", *overrides],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    ds, reference = xr.open_zarr(output), xr.open_zarr(single)
    ledger = json.loads(ds.attrs[LEDGER_ATTR])
    n_chunks = -(-reference.sizes["init_time"] // 40)
    assert sorted(int(i) for i in ledger) == list(range(n_chunks))  # every chunk recorded, none twice (os.link)
    assert {entry["rank"] for entry in ledger.values()} == {0, 1}
    assert all(entry["rank"] == int(i) % 2 for i, entry in ledger.items())
    covered = np.zeros(reference.sizes["init_time"], dtype=int)
    for entry in ledger.values():
        covered[slice(*entry["rows"])] += 1
    assert (covered == 1).all()
    np.testing.assert_array_equal(ds.init_time.values, reference.init_time.values)
    np.testing.assert_allclose(ds.speed.values, reference.speed.values, rtol=1e-6, atol=1e-6)
