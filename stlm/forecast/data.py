"""The data of a forecast job: the restored datamodule, checked against the model, and the windows to forecast.

The datamodule is built from the training run's dataset config (``stlm.forecast.restore``) so the series is
read, aligned and masked exactly as in training; inputs are scaled with the checkpoint's scaler. For grids the
checkpoint's normalization is written where the datamodule looks for it, so no statistics pass runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from stlm.checkpoints import TrainedModel
from stlm.data.calendar import calendar_index, steps_per_day
from stlm.data.climate_features import grid_calendar
from stlm.data.climate_stats import save_normalization
from stlm.data.climate_windows import GridWindowDataset
from stlm.data.windowing import WindowDataset
from stlm.forecast.windows import InitTimes, PaddedGrid, extended_timestamps, padded_sensor_tensors


@dataclass
class ForecastData:
    """What the writer needs besides the predictions."""

    datamodule: object
    timestamps: pd.DatetimeIndex  # of the data (without the padding)
    is_grid: bool
    node_ids: tuple[str, ...]
    node_coords: np.ndarray | None  # [N, 2] lat, lon (sensors, when known)
    lat: np.ndarray | None  # grids: ascending latitudes
    lon: np.ndarray | None

    def dataset(self, trained: TrainedModel, init: InitTimes):
        """A dataset of the data contract over the windows starting at ``init.starts`` (targets past the end of
        the data are missing)."""
        spec, dm = trained.spec, self.datamodule
        if self.is_grid:
            calendar = grid_calendar(extended_timestamps(self.timestamps, spec.horizon), dm.n_slots)
            return GridWindowDataset(PaddedGrid(dm.grid), trained.scaler, calendar, init.starts, spec.window, spec.horizon)
        n_slots = steps_per_day(dm.series.freq)  # as the datamodule's calendar (stlm.data.datamodule)
        tensors = padded_sensor_tensors(dm.series, trained.scaler, lambda ts: calendar_index(ts, n_slots), spec.horizon)
        return WindowDataset(**tensors, starts=init.starts, window=spec.window, horizon=spec.horizon)


def prepare_data(trained: TrainedModel, dataset_cfg: DictConfig, workdir: Path) -> ForecastData:
    """Instantiate and set up the datamodule of ``dataset_cfg`` and check it against the model's spec."""
    spec = trained.spec
    if spec.grid_shape is not None and dataset_cfg.get("normalization_path"):
        # The checkpoint's normalization, where the grid datamodule reuses it (skips the dask statistics pass).
        save_normalization(dataset_cfg.normalization_path, trained.scaler, list(spec.channels), str(trained.path))
    dm = instantiate(dataset_cfg.datamodule)
    dm.prepare_data()
    dm.setup("predict")
    _check_matches(trained, dm.spec, dataset_cfg)
    if spec.grid_shape is not None:
        grid = dm.grid
        return ForecastData(dm, grid.timestamps, True, spec.node_ids, None, np.asarray(grid.lat), np.asarray(grid.lon))
    series = dm.series
    return ForecastData(dm, series.timestamps, False, tuple(series.node_ids), series.node_coords, None, None)


def _check_matches(trained: TrainedModel, data_spec, dataset_cfg: DictConfig) -> None:
    spec, where = trained.spec, dataset_cfg.get("path") or dataset_cfg.get("name")
    checks = [
        ("channels", tuple(spec.channels), tuple(data_spec.channels)),
        ("grid shape", spec.grid_shape, data_spec.grid_shape),
        ("number of nodes", spec.n_nodes, data_spec.n_nodes),
        ("window", spec.window, data_spec.window),
        ("horizon", spec.horizon, data_spec.horizon),
    ]
    if spec.grid_shape is None:
        checks.append(("node ids", tuple(spec.node_ids), tuple(data_spec.node_ids)))
    for what, model_value, data_value in checks:
        if model_value != data_value:
            shown = lambda v: (str(v[:5])[:-1] + ", ...)") if isinstance(v, tuple) and len(v) > 5 else str(v)
            raise ValueError(
                f"data {where}: its {what} ({shown(data_value)}) differs from the model's ({shown(model_value)}, "
                f"checkpoint {trained.path}); forecast data laid out as the training data (same nodes in the same "
                "order, same variables and grid), or a model trained on it"
            )
