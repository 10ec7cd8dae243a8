"""A batch forecast job: a trained model over many init times, into a CF netCDF file or a zarr store.

Memory is bounded by one chunk of init times (``chunk_size``), not by the period: each chunk is predicted and
written before the next one starts. Under ``torchrun`` (or any launcher that sets ``RANK``/``WORLD_SIZE``)
the chunks are sharded across processes (chunk ``i`` goes to rank ``i % world_size``), all writing into one
store; rank 0 creates it before and publishes it after (see :mod:`stlm.forecast.store`).

Why not Lightning's ``predict`` with a prediction writer: its distributed sampler interleaves samples across
ranks (rank r gets samples r, r + W, ...), so every rank would write into every zarr chunk; sharding whole
chunks keeps each zarr chunk to one writer and makes resuming a matter of skipping recorded chunks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import xarray as xr
from omegaconf import DictConfig, OmegaConf

import stlm
from stlm.forecast.data import ForecastData, prepare_data
from stlm.forecast.layout import (
    CONVENTIONS, WB2_NAMES, coordinates, forecast_dataset, forecast_dims, to_wb2, variable_attrs,
)
from stlm.forecast.restore import checkpoint_path, dataset_config, load_model
from stlm.forecast.store import JOB_ATTR, ForecastStore, StoreConflictError, lazy_template, publish_netcdf
from stlm.forecast.windows import select_init_times
from stlm.tracking.store import git_sha

log = logging.getLogger("stlm.forecast")

FORMATS = ("cf", "wb2")


def _distributed() -> tuple[int, int]:
    """(rank, world size), joining the process group a launcher set up through the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def _output_kind(output: str) -> str:
    name = output.rstrip("/")
    if name.endswith(".zarr"):
        return "zarr"
    if name.endswith((".nc", ".nc4")):
        return "netcdf"
    raise ValueError(f"output={output!r}: name a netCDF file (.nc) or a zarr store (.zarr)")


@torch.no_grad()
def predict(model, scaler, dataset, rows: slice, batch_size: int) -> np.ndarray:
    """[k, H, N, C] (or quantiles [k, H, N, C, Q]) float32 forecasts in original units for dataset samples ``rows``."""
    out = []
    for a in range(rows.start, rows.stop, batch_size):
        batch = dataset.__getitems__(list(range(a, min(a + batch_size, rows.stop))))
        out.append(scaler.inverse_transform(model(batch)).numpy())
    return np.concatenate(out).astype(np.float32, copy=False)


def _job_id(fingerprint: str, times: pd.DatetimeIndex, dataset_cfg: DictConfig, layout: dict) -> str:
    digest = hashlib.sha256(fingerprint.encode())
    digest.update(np.asarray(times.values, dtype="datetime64[ns]").tobytes())
    digest.update(json.dumps(OmegaConf.to_container(dataset_cfg, resolve=True), sort_keys=True, default=str).encode())
    digest.update(json.dumps(layout, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _attrs(trained, run_id: str | None, dataset_cfg: DictConfig, job: str) -> dict[str, Any]:
    model_name = str(trained.config.get("model", {}).get("_target_", "?")).rsplit(".", 1)[-1]
    engine = trained.config.get("engine", {})
    attrs = {
        "Conventions": CONVENTIONS,
        "title": f"stlm forecasts of {dataset_cfg.get('name', 'data')}",
        "source": f"stlm {stlm.__version__}, model {model_name} (fingerprint {trained.fingerprint}), git {git_sha()}",
        "history": f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ} python -m stlm.forecast {' '.join(sys.argv[1:])}".strip(),
        "stlm_checkpoint": str(trained.path),
        "stlm_model_fingerprint": trained.fingerprint,
        "stlm_dataset_config": json.dumps(OmegaConf.to_container(dataset_cfg, resolve=True), default=str),
        "stlm_mape_min_abs": float(engine.get("mape_min_abs", 0.0) or 0.0),
        JOB_ATTR: job,
    }
    if run_id:
        attrs["stlm_run_id"] = run_id
    return attrs


def run_forecast(cfg: DictConfig, after_chunk: Callable[[int], None] | None = None,
                 before_publish: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Run the job of ``cfg`` (``conf/forecast.yaml``). ``after_chunk(i)`` and ``before_publish(tmp)`` are
    called after chunk ``i`` is recorded and before a netCDF file is renamed into place (tests inject faults
    there). Returns the output path, counts of init times and chunks, and what this rank wrote."""
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format!r}; choose one of {list(FORMATS)}")
    if not isinstance(cfg.chunk_size, int) or cfg.chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer (init times per chunk), got {cfg.chunk_size!r}")
    output = Path(str(cfg.output)).expanduser().resolve()
    kind = _output_kind(str(cfg.output))
    store_path = output if kind == "zarr" else output.with_name(output.name + ".partial.zarr")
    workdir = store_path.with_name(store_path.name + ".work")
    rank, world = _distributed()

    ckpt, run_id = checkpoint_path(cfg, workdir / f"checkpoint-rank{rank}")
    trained = load_model(ckpt)
    dataset_cfg = dataset_config(trained, OmegaConf.to_container(cfg.dataset) if cfg.get("dataset") else None,
                                 workdir / f"rank{rank}")
    data = prepare_data(trained, dataset_cfg)
    spec = trained.spec
    sel = cfg.init_times
    init = select_init_times(data.datamodule, data.timestamps, spec.window, sel.split, sel.start, sel.end, sel.every)
    if cfg.format == "wb2" and not set(data.geometry.space_dims) <= set(WB2_NAMES):  # wb2 names lat/lon only
        raise ValueError("format=wb2 is the WeatherBench 2 layout of lat-lon grids; sensor forecasts use format=cf")

    interval = pd.Timedelta(minutes=spec.interval_minutes)
    levels = getattr(trained.model, "quantile_levels", None)
    coords = coordinates(init.times, spec.horizon, interval, data.geometry, None if levels is None else levels.tolist(),
                         members=getattr(trained.model, "ensemble_members", None))
    job = _job_id(trained.fingerprint, init.times, dataset_cfg, {"format": cfg.format, "chunk": cfg.chunk_size})
    rename = to_wb2 if cfg.format == "wb2" else (lambda ds: ds)
    K = len(init.starts)
    result = {"output": output, "n_init_times": K, "n_chunks": 0, "written": [], "resumed": 0, "run_id": run_id,
              "rank": rank, "world_size": world}
    if kind == "netcdf" and _published(output, job, bool(cfg.overwrite)):
        print(f"forecasts: {output} is already complete (same model, data, init times and layout); nothing to do")
        _barrier(world)
        if rank == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        return result
    store = ForecastStore(store_path)

    chunks = [slice(a, min(a + cfg.chunk_size, K)) for a in range(0, K, cfg.chunk_size)]
    if rank == 0:
        template = _template(coords, _attrs(trained, run_id, dataset_cfg, job), spec, forecast_dims(data.geometry.space_dims, coords),
                             cfg.chunk_size)
        state = store.create_or_resume(rename(template), overwrite=bool(cfg.overwrite))
        log.info("forecast store %s: %s (%d init times in %d chunks)", store_path, state, K, len(chunks))
    _barrier(world)
    done = set(range(len(chunks))) if store.complete else set(store.done())
    mine = [i for i in range(len(chunks)) if i % world == rank and i not in done]
    dataset = data.dataset(trained, init)
    written = _write_chunks(cfg, trained, dataset, coords, data, chunks, mine, store, rename, rank, after_chunk)
    _barrier(world)
    if rank == 0:
        store.finalize(len(chunks))
        if kind == "netcdf":
            publish_netcdf(store_path, output, before_publish)
            shutil.rmtree(store_path)
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"forecasts: {output} ({K} init times from {init.times[0]} to {init.times[-1]}, "
              f"{spec.horizon} leads; {len(written)} of {len(chunks)} chunks written now, {len(done)} earlier)")
    _barrier(world)
    return {**result, "n_chunks": len(chunks), "written": written, "resumed": len(done)}


def _template(coords: dict, attrs: dict, spec, dims: tuple[str, ...], chunk_size: int) -> xr.Dataset:
    """The store's lazy template: every coordinate and attribute, float32 forecast variables never computed."""
    variables = {name: (dims, "float32", a) for name, a in variable_attrs(spec.channels, spec.units).items()}
    return lazy_template(xr.Dataset(coords=coords, attrs=attrs), variables, chunk_size)


def _published(output: Path, job: str, overwrite: bool) -> bool:
    """True when ``output`` is this job's finished netCDF file; an error when it is another job's."""
    if not output.exists() or overwrite:
        return False
    try:
        with xr.open_dataset(output) as ds:
            theirs = ds.attrs.get(JOB_ATTR)
    except Exception:
        theirs = None
    if theirs == job:
        return True
    raise StoreConflictError(f"{output} exists and was not written by this forecast job (different model, data, init "
                             "times or layout); choose another output or pass overwrite=true to replace it")


def _write_chunks(cfg, trained, dataset, coords, data: ForecastData, chunks, mine, store, rename, rank, after_chunk):
    from tqdm.auto import tqdm

    spec = trained.spec
    written = []
    bar = tqdm(mine, desc="forecast chunks", unit="chunk", disable=rank != 0 or not cfg.progress)
    for i in bar:
        rows = chunks[i]
        values = predict(trained.model, trained.scaler, dataset, rows, cfg.batch_size)
        chunk_coords = dict(coords)
        for key in ("init_time", "valid_time"):
            dims, array, attrs = coords[key]
            chunk_coords[key] = (dims, array[rows], attrs)
        ds = forecast_dataset(values, chunk_coords, spec.channels, spec.units, data.geometry.space_dims, {})
        store.write_chunk(i, rename(ds), rows.start, rank)
        written.append(i)
        if after_chunk is not None:
            after_chunk(i)
    return written
