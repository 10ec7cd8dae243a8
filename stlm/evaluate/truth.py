"""The observations a forecast file is scored against, aligned with it chunk by chunk.

The truth is the data set the forecasts were made from (its config travels in the file's
``stlm_dataset_config`` attribute) or one named on the command line (``dataset=...``, for other models'
forecasts). It is read by the same datamodule as in training, so missing values are masked the same way and the
climatology (for ACC) comes from the same training period. The data's geometry aligns the file's spatial
positions (sensors by ``sensor_id``, grids by latitude and longitude); a valid time outside the data is an
unobserved target, never an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from stlm.data.sources.base import DataValidationError
from stlm.evaluate.forecasts import ForecastFileError
from stlm.forecast.restore import upgrade_dataset_config


def truth_config(forecasts: xr.Dataset, dataset: DictConfig | None) -> DictConfig:
    """The dataset config of the truth: ``dataset`` if given, else the one recorded in the forecast file."""
    if dataset is not None:  # a conf/dataset entry: resolved on its own (its keys interpolate dataset.* only)
        raw = OmegaConf.create({"dataset": OmegaConf.to_container(dataset, resolve=False)})
        if "normalization_path" in raw.dataset:
            raw.dataset.normalization_path = None
        OmegaConf.resolve(raw)
        cfg = raw.dataset
    elif "stlm_dataset_config" in forecasts.attrs:
        cfg = OmegaConf.create(upgrade_dataset_config(json.loads(forecasts.attrs["stlm_dataset_config"])))
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
    y_time: torch.Tensor  # [k, H, K] calendar of the valid times (indexes the climatology)

    def batch(self) -> dict[str, torch.Tensor]:
        return {"y": self.y, "mask": self.mask, "y_time": self.y_time}


class Truth:
    """Observations of ``datamodule`` (set up) for the forecasts' nodes or cells and variables."""

    def __init__(self, datamodule, forecasts: xr.Dataset, where: str):
        self.dm, self.where = datamodule, where
        spec, series = datamodule.spec, datamodule.series
        self.geometry = series.geometry
        self.channels = [c for c in spec.channels if c in forecasts.data_vars]
        if not self.channels:
            raise ForecastFileError(f"{where}: no forecast variable is one of the truth's variables {list(spec.channels)} "
                                    f"(file has {list(forecasts.data_vars)})")
        self.channel_index = np.array([spec.channels.index(c) for c in self.channels])
        try:
            self.node_index = self.geometry.align(forecasts, where, series.origin or series.name)
        except DataValidationError as err:
            raise ForecastFileError(str(err)) from err
        self.timestamps, self.calendar = series.timestamps, datamodule.calendar

    def targets(self, valid_time: np.ndarray) -> Targets:
        """Observations at ``valid_time`` [k, H] (datetime64), from the datamodule."""
        t = self.dm.targets(valid_time, self.node_index, self.channel_index)
        return Targets(t["y"], t["mask"], t["y_time"])


def build_truth(forecasts: xr.Dataset, dataset: DictConfig | None) -> Truth:
    cfg = truth_config(forecasts, dataset)
    dm = instantiate(cfg.datamodule)
    dm.prepare_data()
    dm.setup("test")
    return Truth(dm, forecasts, str(forecasts.attrs.get("stlm_path", "forecasts")))
