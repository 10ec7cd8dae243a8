"""The observations a forecast file is scored against, aligned with it chunk by chunk.

The truth is the data set the forecasts were made from (its config travels in the file's
``stlm_dataset_config`` attribute) or one named on the command line (``dataset=...``, for other models'
forecasts). It is read by the same datamodule as in training, so missing values are masked the same way and a
grid's climatology (for ACC) comes from the same training period. Sensors align by ``sensor_id``, grids by
their latitudes and longitudes; a valid time outside the data is an unobserved target, never an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import xarray as xr
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from stlm.evaluate.forecasts import ForecastFileError, is_grid


def truth_config(forecasts: xr.Dataset, dataset: DictConfig | None) -> DictConfig:
    """The dataset config of the truth: ``dataset`` if given, else the one recorded in the forecast file."""
    if dataset is not None:  # a conf/dataset entry: resolved on its own (its keys interpolate dataset.* only)
        raw = OmegaConf.create({"dataset": OmegaConf.to_container(dataset, resolve=False)})
        if "normalization_path" in raw.dataset:
            raw.dataset.normalization_path = None
        OmegaConf.resolve(raw)
        cfg = raw.dataset
    elif "stlm_dataset_config" in forecasts.attrs:
        cfg = OmegaConf.create(json.loads(forecasts.attrs["stlm_dataset_config"]))
    else:
        raise ForecastFileError(
            f"forecasts={forecasts.attrs.get('stlm_path')} do not say which data they forecast (no stlm_dataset_config "
            "attribute: not written by stlm.forecast); name the truth with dataset=NAME [dataset.path=...]"
        )
    if "normalization_path" in cfg.datamodule:  # scoring needs no normalization: never write one anywhere
        cfg.datamodule.normalization_path = None
    return cfg


@dataclass
class Targets:
    y: torch.Tensor  # [k, H, N, C] observations in original units, 0 where missing
    mask: torch.Tensor  # [k, H, N, C] 1 = observed
    y_time: torch.Tensor  # [k, H, K] calendar of the valid times (grids: indexes the climatology)

    def batch(self) -> dict[str, torch.Tensor]:
        return {"y": self.y, "mask": self.mask, "y_time": self.y_time}


class Truth:
    """Observations of ``datamodule`` (set up) for the forecasts' nodes or cells and variables."""

    def __init__(self, datamodule, forecasts: xr.Dataset, where: str):
        self.dm, self.where = datamodule, where
        self.grid = is_grid(forecasts)
        spec = datamodule.spec
        self.channels = [c for c in spec.channels if c in forecasts.data_vars]
        if not self.channels:
            raise ForecastFileError(f"{where}: no forecast variable is one of the truth's variables {list(spec.channels)} "
                                    f"(file has {list(forecasts.data_vars)})")
        self.channel_index = np.array([spec.channels.index(c) for c in self.channels])
        if self.grid:
            grid = datamodule.grid
            for name, ours, theirs in (("lat", grid.lat, forecasts.lat.values), ("lon", grid.lon, forecasts.lon.values)):
                if len(ours) != len(theirs) or not np.allclose(ours, theirs, atol=1e-6):
                    raise ForecastFileError(f"{where}: its {name} ({len(theirs)} values, {theirs[:3]}...) differ from the "
                                            f"truth grid's ({len(ours)} values, {np.asarray(ours)[:3]}...) at {grid.origin}")
            self.timestamps, self.calendar = grid.timestamps, datamodule.calendar
            self.node_index = None
        else:
            series = datamodule.series
            ids = [str(i) for i in (forecasts.sensor_id.values if "sensor_id" in forecasts.coords else series.node_ids)]
            lookup = {str(n): i for i, n in enumerate(series.node_ids)}
            unknown = [i for i in ids if i not in lookup]
            if unknown:
                raise ForecastFileError(f"{where}: sensors {unknown[:5]} are not in the truth data ({series.origin})")
            self.node_index = np.array([lookup[i] for i in ids])
            self.timestamps, self.calendar = series.timestamps, datamodule.calendar

    def targets(self, valid_time: np.ndarray) -> Targets:
        """Observations at ``valid_time`` [k, H] (datetime64)."""
        k, H = valid_time.shape
        steps = self.timestamps.get_indexer(pd.DatetimeIndex(valid_time.ravel())).reshape(k, H)
        inside = steps >= 0
        safe = np.where(inside, steps, 0)
        if self.grid:
            lo, hi = int(safe[inside].min(initial=0)), int(safe[inside].max(initial=0)) + 1
            block = self.dm.grid.read(lo, hi)  # [T', lat, lon, C]
            raw = block.reshape(hi - lo, -1, block.shape[-1])[np.clip(safe - lo, 0, hi - lo - 1)]  # [k, H, N, C]
            raw = raw[..., self.channel_index]
            observed = np.isfinite(raw) & inside[..., None, None]
            values = np.where(observed, raw, 0.0)
        else:
            series = self.dm.series
            values = series.values[safe][:, :, self.node_index][..., self.channel_index]
            observed = series.mask[safe][:, :, self.node_index][..., self.channel_index] & inside[..., None, None]
            values = np.where(observed, values, 0.0)
        return Targets(torch.from_numpy(values.astype(np.float32)), torch.from_numpy(observed.astype(np.float32)),
                       torch.from_numpy(np.asarray(self.calendar)[safe]))


def build_truth(forecasts: xr.Dataset, dataset: DictConfig | None) -> Truth:
    cfg = truth_config(forecasts, dataset)
    dm = instantiate(cfg.datamodule)
    dm.prepare_data()
    dm.setup("test")
    return Truth(dm, forecasts, str(forecasts.attrs.get("stlm_path", "forecasts")))
