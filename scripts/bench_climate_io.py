"""Benchmark: lazy climate windows from a zarr store (samples/s and peak memory).

    python scripts/bench_climate_io.py [--store /tmp/stlm_bench_climate.zarr] [--write-docs]

1. Writes (once) a synthetic global 1.5 degree grid (121 x 240) zarr store with several variables and one year of
   6-hourly steps, block by block in time (the writer never holds the year either).
2. In a fresh subprocess (so its peak resident memory is the reader's alone): builds the datamodule on the store
   (normalization and climatology read the training period in blocks of at most 16M values), iterates one shuffled epoch of training windows, and reports samples/s,
   the resident memory after imports, and the peak resident memory (``ru_maxrss``).

3. ``--large-grid`` (also in a fresh subprocess): one training step of the patch model on a 0.25 degree global-sized
   grid (721 x 1440, synthetic, 24 six-hourly steps, 16 x 16 patches) through the engine and a Lightning Trainer,
   reporting the step time and the peak resident memory.

With ``--write-docs`` the result replaces the section between ``<!-- bench_climate_io:start -->`` and
``<!-- bench_climate_io:end -->`` in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIABLES = ("t2m", "t850", "z500", "u10", "v10", "msl")
# Each variable: offset + scale * (synthetic temperature - 280) (an IO benchmark: only sizes and chunks matter).
AFFINE = {"t2m": (0.0, 1.0), "t850": (-15.0, 0.9), "z500": (54000.0, 40.0), "u10": (-280.0, 0.5), "v10": (-280.0, 0.3), "msl": (101325.0, 80.0)}


def write_store(store: Path, n_days: int, time_chunk: int) -> None:
    import numpy as np
    import xarray as xr

    from stlm.data.sources.synthetic_climate import SyntheticClimateSource

    source = SyntheticClimateSource(n_lat=121, n_lon=240, n_days=n_days, hours_per_step=6, seed=0, name="bench")
    lat = np.linspace(-90.0, 90.0, 121)  # 1.5 degree WeatherBench grid: poles included
    tmp = store.with_name(store.name + ".partial")
    for i, (times, t2m) in enumerate(source.blocks(block_steps=8 * time_chunk)):
        data = {v: (("time", "lat", "lon"), (AFFINE[v][0] + AFFINE[v][1] * t2m).astype(np.float32)) for v in VARIABLES}
        ds = xr.Dataset(data, coords={"time": times, "lat": lat, "lon": source.lon})
        if i == 0:
            ds.to_zarr(tmp, mode="w", encoding={v: {"chunks": (time_chunk, 121, 240)} for v in VARIABLES})
        else:
            ds.to_zarr(tmp, append_dim="time")
    os.replace(tmp, store)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def iterate(store: str, window: int, horizon: int, batch_size: int) -> dict:
    """One shuffled epoch of training windows; runs in its own process."""
    import torch

    from stlm.data.datamodule import SpatioTemporalDataModule
    from stlm.data.sources.climate import ClimateSource

    torch.manual_seed(0)
    after_imports = rss_mib()
    t0 = time.perf_counter()
    dm = SpatioTemporalDataModule(ClimateSource(store, list(VARIABLES)), window=window, horizon=horizon, batch_size=batch_size,
                                  day_of_week=False)
    dm.setup()
    t_setup = time.perf_counter() - t0
    peak_after_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    T, H, W, C = dm.series.shape
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    for batch in dm.train_dataloader():
        n += batch["x"].shape[0]
    t_epoch, c_epoch = time.perf_counter() - t0, time.process_time() - c0
    return {
        "grid": f"{H} x {W}", "variables": C, "steps": T, "archive_mib": T * H * W * C * 4 / 2**20,
        "window": window, "horizon": horizon, "batch_size": batch_size, "samples": n,
        "setup_s": t_setup, "epoch_s": t_epoch, "samples_per_s": n / t_epoch,
        "epoch_cpu_s": c_epoch, "samples_per_cpu_s": n / c_epoch,
        "rss_after_imports_mib": after_imports, "peak_after_setup_mib": peak_after_setup, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def large_grid_step(patch: int) -> dict:
    """One optimizer step of GridForecaster on a 721 x 1440 grid; runs in its own process."""
    from functools import partial

    import pytorch_lightning as pl
    import torch

    from stlm.data.datamodule import SpatioTemporalDataModule
    from stlm.data.sources.synthetic_climate import SyntheticClimateSource
    from stlm.engines.forecasting import ForecastingEngine
    from stlm.models.grid import GridForecaster
    from stlm.nn.spatial import GlobalAttention
    from stlm.nn.temporal import SelectiveSSM

    torch.manual_seed(0)
    t0 = time.perf_counter()
    source = SyntheticClimateSource(n_lat=721, n_lon=1440, n_days=6, hours_per_step=6, spinup_days=0, name="quarter_degree")
    dm = SpatioTemporalDataModule(source, window=4, horizon=2, batch_size=1, split={"train": 0.5, "val": 0.25, "test": 0.25},
                                  day_of_week=False, loss_weighting="area_over_std")
    dm.setup()
    model = GridForecaster(dm.spec, patch=patch, d_model=32, temporal=partial(SelectiveSSM, d_state=8, expand=1, d_conv=4),
                           spatial=partial(GlobalAttention, n_heads=2))
    model.fit_from_data(dm)
    engine = ForecastingEngine(model, dm.scaler, dm.spec.horizon, **dm.engine_options())
    t_data = time.perf_counter() - t0
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    t0 = time.perf_counter()
    trainer.fit(engine, train_dataloaders=dm.train_dataloader())
    t_step = time.perf_counter() - t0
    loss = float(trainer.callback_metrics["train/loss_step"])
    return {
        "grid": f"{dm.spec.grid_shape[0]} x {dm.spec.grid_shape[1]}", "cells": dm.spec.n_nodes, "patch": patch,
        "tokens": model.n_tokens, "token_channels": patch * patch * model.n_features, "loss": loss,
        "parameters": sum(p.numel() for p in model.parameters()), "data_s": t_data, "step_s": t_step,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def write_docs(result: dict, command: str, large: dict | None = None) -> None:
    path = REPO / "docs" / "benchmarks.md"
    start, end = "<!-- bench_climate_io:start -->", "<!-- bench_climate_io:end -->"
    r = result
    section = f"""{start}
## Climate IO (lazy windows from zarr)

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared); Python {platform.python_version()}.
Command: `{command}` ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load average {os.getloadavg()[0]:.2f} at the end).

Method: a synthetic global 1.5 degree grid ({r['grid']}) with {r['variables']} variables and {r['steps']} 6-hourly steps
(one year; {r['archive_mib']:,.0f} MiB as float32 in memory) is written to zarr in time chunks; a fresh process builds
the datamodule on it (normalization statistics and climatology read the training period in blocks of at most 16M values) and iterates one
shuffled epoch of training windows (window {r['window']}, horizon {r['horizon']}, batch {r['batch_size']}). Peak = the
process's high-water resident memory (`ru_maxrss`), imports (torch, Lightning, xarray) included. The machine is
shared: wall-clock samples/s depend on the other jobs; CPU seconds (user + system of the process) do not.

| samples | setup s | epoch s (wall) | samples/s (wall) | epoch CPU s | samples per CPU s | RSS after imports MiB | peak RSS MiB |
|---:|---:|---:|---:|---:|---:|---:|---:|
| {r['samples']} | {r['setup_s']:.1f} | {r['epoch_s']:.1f} | {r['samples_per_s']:.1f} | {r['epoch_cpu_s']:.1f} | {r['samples_per_cpu_s']:.1f} | {r['rss_after_imports_mib']:.0f} | {r['peak_rss_mib']:.0f} |

The peak was {r.get('peak_after_setup_mib', float('nan')):.0f} MiB after setup (normalization statistics and climatology included); what it adds is one batch being assembled ({r['batch_size']} windows x {r['window'] + r['horizon']} steps x
{r['variables']} variables of the whole grid, with its mask and scaled copy), not the archive: windows are read per batch, so it does not grow
with the number of steps in the store.
{_large_section(large)}{end}"""
    text = path.read_text()
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def _large_section(large: dict | None) -> str:
    if not large:
        return ""
    g = large
    return f"""
### One training step on a 0.25 degree global grid (`--large-grid`)

Synthetic {g['grid']} grid ({g['cells']:,} cells), batch 1, window 4, horizon 2, {g['patch']} x {g['patch']} patches:
{g['tokens']:,} tokens of {g['token_channels']:,} channels each, {g['parameters']:,} parameters; one optimizer step through
the engine (lat-weighted loss) and a Lightning Trainer. Data (generation, block-read statistics) {g['data_s']:.0f} s,
step {g['step_s']:.1f} s, loss {g['loss']:.3f}, peak RSS {g['peak_rss_mib']:,.0f} MiB.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="/tmp/stlm_bench_climate.zarr")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--time-chunk", type=int, default=4)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--horizon", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--large-grid", action="store_true", help="also time one training step on a 721 x 1440 grid")
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--large-step", action="store_true", help=argparse.SUPPRESS)  # the measured child process
    parser.add_argument("--iterate", action="store_true", help=argparse.SUPPRESS)  # the measured child process
    args = parser.parse_args()
    if args.iterate:
        print(json.dumps(iterate(args.store, args.window, args.horizon, args.batch_size)))
        return
    if args.large_step:
        print(json.dumps(large_grid_step(args.patch)))
        return
    store = Path(args.store)
    if not store.exists():
        t0 = time.perf_counter()
        write_store(store, args.days, args.time_chunk)
        print(f"wrote {store} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    child = [sys.executable, __file__, "--iterate", "--store", str(store), "--window", str(args.window),
             "--horizon", str(args.horizon), "--batch-size", str(args.batch_size)]
    out = subprocess.run(child, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=2))
    if result["peak_rss_mib"] >= 4096:
        print(f"peak RSS {result['peak_rss_mib']:.0f} MiB exceeds the 4 GiB target", file=sys.stderr)
    large = None
    if args.large_grid:
        out = subprocess.run([sys.executable, __file__, "--large-step", "--patch", str(args.patch)], check=True, capture_output=True, text=True)
        large = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(large, indent=2))
    if args.write_docs:
        write_docs(result, "python scripts/bench_climate_io.py" + (" --large-grid" if large else "") + " --write-docs", large)


if __name__ == "__main__":
    main()
