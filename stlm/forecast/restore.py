"""Where a forecast job's model and data come from: a checkpoint (a path, an MLflow run or a registered model)
and the dataset configuration the model was trained with, optionally pointed at new data.

The checkpoint carries the training run's dataset config unresolved (``stlm.dataset_config``), so overriding
one key (``dataset.path=new.nc``) changes every place that interpolates it (``source.path``), exactly as on the
training command line. Window, horizon and every size come from the checkpoint's data spec, never the data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stlm.engines.checkpoints import CheckpointError, TrainedModel, load_trained_model
from stlm.train.runs import RECORD_NAME

log = logging.getLogger(__name__)

MODEL_SOURCES = ("checkpoint", "run_id", "model_uri")
# Checkpoints and forecast files written before sensors and grids shared one datamodule name the grid one; it
# took the grid options implicitly, which the one datamodule takes as arguments (conf/_shared/grid_datamodule.yaml).
LEGACY_GRID_DATAMODULE = "ClimateDataModule"  # the class name; its module is gone
LEGACY_GRID_OPTIONS = {
    "day_of_week": False,
    "loss_weighting": "area_over_std",
    "metrics": {"keys": "lead", "average": "lead_mean", "per_channel": True, "mape": False, "acc": True},
}


def upgrade_dataset_config(dataset: dict) -> dict:
    """A dataset config (a plain dict) that names today's datamodule: older grid configs are translated."""
    datamodule = dataset.get("datamodule") or {}
    if not str(datamodule.get("_target_", "")).endswith("." + LEGACY_GRID_DATAMODULE):
        return dataset
    datamodule = {k: v for k, v in datamodule.items() if k != "time_chunk"}
    datamodule["_target_"] = "stlm.data.datamodule.SpatioTemporalDataModule"
    for key, value in LEGACY_GRID_OPTIONS.items():
        datamodule.setdefault(key, value)
    return {**dataset, "datamodule": datamodule}


def checkpoint_path(cfg: DictConfig, download_dir: Path) -> tuple[Path, str | None]:
    """The local checkpoint file named by exactly one of ``checkpoint``, ``run_id``, ``model_uri``, and the
    MLflow run id of the training run when it is known."""
    given = {k: cfg.get(k) for k in MODEL_SOURCES if cfg.get(k)}
    if len(given) != 1:
        raise ValueError(
            f"give exactly one of checkpoint=PATH, run_id=RUN_ID or model_uri=models:/NAME@ALIAS (got "
            f"{sorted(given) or 'none'})"
        )
    (key, value), = given.items()
    if key == "checkpoint":
        path = Path(str(value)).expanduser().resolve()
        return path, _run_id_beside(path)
    from stlm.tracking.registry import resolve_checkpoint_from_uri

    download_dir.mkdir(parents=True, exist_ok=True)
    path = resolve_checkpoint_from_uri(str(value), cfg.get("tracking_uri"), dst_dir=download_dir)
    run_id = str(value) if key == "run_id" else _run_id_of_uri(str(value), cfg.get("tracking_uri"))
    return path, run_id


def _run_id_beside(ckpt: Path) -> str | None:
    """The MLflow run id in ``<run dir>/run.json`` when the checkpoint lies in a training run's directory."""
    record = ckpt.parent.parent / RECORD_NAME
    try:
        return json.loads(record.read_text()).get("mlflow_run_id")
    except (OSError, ValueError):
        return None


def _run_id_of_uri(uri: str, tracking_uri: str | None) -> str | None:
    from stlm.tracking.registry import mlflow_client, model_version_of

    if uri.startswith("models:/"):
        return model_version_of(mlflow_client(tracking_uri), uri).run_id
    if uri.startswith("runs:/"):
        return uri[len("runs:/"):].split("/", 1)[0]
    return uri


def load_model(path: Path) -> TrainedModel:
    trained = load_trained_model(path)
    if "dataset_config" not in trained.metadata and "dataset" not in trained.config:
        raise CheckpointError(f"checkpoint {path} holds no dataset configuration; retrain with this stlm version")
    return trained


def dataset_config(trained: TrainedModel, overrides: dict[str, Any] | None, output_dir: Path) -> DictConfig:
    """The training run's ``dataset`` config with ``overrides`` applied, resolved; ``paths.output_dir`` (which
    grid data sets use for ``normalization.json``) points at ``output_dir``."""
    raw = trained.metadata.get("dataset_config")
    if raw is None:  # checkpoints older than the unresolved copy: overrides do not reach interpolated keys
        raw = trained.config["dataset"]
        if overrides:
            log.warning("checkpoint %s predates unresolved dataset configs: dataset overrides %s apply to the "
                        "top-level keys only", trained.path, sorted(overrides))
    root = OmegaConf.create({"dataset": upgrade_dataset_config(raw), "paths": {"output_dir": str(output_dir)}})
    for key, value in (overrides or {}).items():
        if value is not None:
            OmegaConf.update(root, f"dataset.{key}", value, force_add=True)
    try:
        OmegaConf.resolve(root)
    except Exception as err:  # an interpolation to something a forecast job does not have
        raise ValueError(f"the dataset config of checkpoint {trained.path} cannot be resolved here ({err})") from err
    return root.dataset
