"""The data of a forecast job: the restored datamodule, checked against the model, and the windows to forecast.

The datamodule is built from the training run's dataset config (``stlm.forecast.restore``) so the series is
read, aligned and masked exactly as in training; inputs are scaled with the checkpoint's scaler, which is written
where the datamodule looks for its normalization (when the data set keeps one), so no statistics pass runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from stlm.engines.checkpoints import TrainedModel
from stlm.data.scalers import save_normalization
from stlm.data.sources.geometry import Geometry
from stlm.forecast.windows import InitTimes


@dataclass
class ForecastData:
    """What the writer needs besides the predictions."""

    datamodule: object
    timestamps: pd.DatetimeIndex  # of the data (without the padding)
    geometry: Geometry

    def dataset(self, trained: TrainedModel, init: InitTimes):
        """A dataset of the data contract over the windows starting at ``init.starts`` (targets past the end of
        the data are missing)."""
        return self.datamodule.windows(init.starts, scaler=trained.scaler, pad_steps=trained.spec.horizon)


def prepare_data(trained: TrainedModel, dataset_cfg: DictConfig) -> ForecastData:
    """Instantiate and set up the datamodule of ``dataset_cfg`` and check it against the model's spec."""
    spec = trained.spec
    if dataset_cfg.get("normalization_path"):
        # The checkpoint's normalization, where the datamodule reuses it (skips the statistics pass).
        save_normalization(dataset_cfg.normalization_path, trained.scaler, list(spec.channels), str(trained.path))
    dm = instantiate(dataset_cfg.datamodule)
    dm.prepare_data()
    dm.setup("predict")
    _check_matches(trained, dm.spec, dataset_cfg)
    return ForecastData(dm, dm.series.timestamps, dm.series.geometry)


def _check_matches(trained: TrainedModel, data_spec, dataset_cfg: DictConfig) -> None:
    spec, where = trained.spec, dataset_cfg.get("path") or dataset_cfg.get("name")
    checks = [
        ("channels", tuple(spec.channels), tuple(data_spec.channels)),
        ("grid shape", spec.grid_shape, data_spec.grid_shape),
        ("number of nodes", spec.n_nodes, data_spec.n_nodes),
        ("node ids", tuple(spec.node_ids), tuple(data_spec.node_ids)),
        ("window", spec.window, data_spec.window),
        ("horizon", spec.horizon, data_spec.horizon),
    ]
    for what, model_value, data_value in checks:
        if model_value != data_value:
            shown = lambda v: (str(v[:5])[:-1] + ", ...)") if isinstance(v, tuple) and len(v) > 5 else str(v)
            raise ValueError(
                f"data {where}: its {what} ({shown(data_value)}) differs from the model's ({shown(model_value)}, "
                f"checkpoint {trained.path}); forecast data laid out as the training data (same nodes in the same "
                "order, same variables and grid), or a model trained on it"
            )
