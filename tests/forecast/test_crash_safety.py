"""A forecast job killed with SIGKILL (no cleanup runs) leaves nothing half-written under the final name, and the
same command run again finishes the job with exactly the output of an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from forecast_runs import forecast_cfg, train_registered
from stlm.forecast import run_forecast
from stlm.forecast.store import LEDGER_ATTR, progress_dir

TESTS = Path(__file__).resolve().parent

# Runs a forecast job in a child process that kills itself (SIGKILL) at the chosen point.
KILLER = """
import json, os, signal, sys
sys.path.insert(0, sys.argv[1])
from forecast_runs import forecast_cfg
from stlm.forecast import run_forecast
args = json.loads(sys.argv[2])
kill = lambda *_: os.kill(os.getpid(), signal.SIGKILL)
hooks = {"after_chunk": lambda i: kill() if i == args["at_chunk"] else None} if args["at_chunk"] is not None else {"before_publish": kill}
run_forecast(forecast_cfg(args["output"], *args["overrides"]), **hooks)
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return train_registered(tmp_path_factory.mktemp("crash"))["best_checkpoint"]


def _killed_job(output: Path, overrides: list[str], at_chunk: int | None) -> None:
    args = json.dumps({"output": str(output), "overrides": overrides, "at_chunk": at_chunk})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(TESTS), args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]


def _without_history(ds: xr.Dataset) -> xr.Dataset:
    return ds.assign_attrs(history="")  # the only attribute that names when a job ran


def test_zarr_job_killed_and_rerun_equals_an_uninterrupted_run(checkpoint, tmp_path):
    overrides = [f"checkpoint={checkpoint}", "chunk_size=50"]
    reference = tmp_path / "reference.zarr"
    run_forecast(forecast_cfg(reference, *overrides))

    output = tmp_path / "killed.zarr"
    _killed_job(output, overrides, at_chunk=2)
    assert progress_dir(output).exists()  # unfinished, and marked so
    assert sorted(int(p.stem.split("-")[1]) for p in progress_dir(output).glob("chunk-*.json")) == [0, 1, 2]

    rerun = run_forecast(forecast_cfg(output, *overrides))
    assert rerun["resumed"] == 3 and rerun["written"] == list(range(3, rerun["n_chunks"]))
    assert not progress_dir(output).exists()
    a, b = xr.open_zarr(reference), xr.open_zarr(output)
    xr.testing.assert_identical(_without_history(a.load()), _without_history(b.load()))
    ledger = json.loads(b.attrs[LEDGER_ATTR])
    rows = sorted(tuple(entry["rows"]) for entry in ledger.values())
    assert rows[0][0] == 0 and rows[-1][1] == b.sizes["init_time"]
    assert all(prev[1] == nxt[0] for prev, nxt in zip(rows, rows[1:]))  # every init time exactly once


def test_netcdf_job_killed_while_writing_chunks_leaves_no_file_and_resumes(checkpoint, tmp_path):
    overrides = [f"checkpoint={checkpoint}", "chunk_size=50"]
    output = tmp_path / "forecasts.nc"
    _killed_job(output, overrides, at_chunk=1)
    assert not output.exists()
    rerun = run_forecast(forecast_cfg(output, *overrides))
    assert rerun["resumed"] == 2
    reference = tmp_path / "reference.nc"
    run_forecast(forecast_cfg(reference, *overrides))
    xr.testing.assert_identical(_without_history(xr.load_dataset(reference)), _without_history(xr.load_dataset(output)))
    assert not list(tmp_path.glob("forecasts.nc.partial.zarr*"))  # the staging store is gone once published


def test_netcdf_job_killed_before_the_rename_leaves_no_file_under_the_final_name(checkpoint, tmp_path):
    overrides = [f"checkpoint={checkpoint}", "init_times.every=5"]
    output = tmp_path / "forecasts.nc"
    _killed_job(output, overrides, at_chunk=None)
    assert not output.exists()
    assert list(tmp_path.glob(".forecasts.nc.*.tmp"))  # the whole file was written, but only under a temporary name
    rerun = run_forecast(forecast_cfg(output, *overrides))
    assert rerun["written"] == []  # every chunk was already in the staging store: only the publishing is redone
    assert not list(tmp_path.glob(".forecasts.nc.*.tmp"))
    assert np.isfinite(xr.load_dataset(output).speed.values).all()
