"""``python -m stlm.evaluate forecasts=PATH``: score a forecast file, print a table, write CSV and plots, log to
MLflow as a run tagged with the model's run (``stlm.model_run_id``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from stlm.evaluate.forecasts import open_forecasts
from stlm.evaluate.plots import per_horizon, plot_error_by_horizon, plot_grid_maps, plot_sensor_fan
from stlm.evaluate.scoring import score
from stlm.evaluate.truth import build_truth
from stlm.io.atomic import atomic_write_text
from stlm.metrics.horizon import summary_columns
from stlm.metrics.tables import metrics_table

log = logging.getLogger("stlm.evaluate")


def metrics_frame(metrics: dict[str, float]) -> pd.DataFrame:
    """One row per lead (and ``avg``), one column per metric."""
    groups = per_horizon(metrics)
    frame = pd.DataFrame({name: dict(points) for name, points in groups.items()})
    frame.loc["avg"] = [metrics.get(f"{name}_avg") for name in frame.columns]
    frame.index.name = "lead"
    return frame


def run_evaluation(cfg: DictConfig) -> dict[str, Any]:
    forecasts = open_forecasts(cfg.forecasts)
    path = Path(forecasts.attrs["stlm_path"])
    truth = build_truth(forecasts, cfg.get("dataset"))
    mape_min_abs = cfg.mape_min_abs if cfg.get("mape_min_abs") is not None else float(forecasts.attrs.get("stlm_mape_min_abs", 0.0))
    metrics = score(forecasts, truth, mape_min_abs, chunk=cfg.chunk_size)

    out_dir = Path(cfg.output_dir) if cfg.get("output_dir") else path.with_name(path.name + ".evaluation")
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = metrics_frame(metrics)
    atomic_write_text(out_dir / "metrics.csv", frame.to_csv(float_format="%.6g"))
    plots = [plot_error_by_horizon(metrics, out_dir / "error_by_horizon.png")]
    if cfg.plots.enabled:
        if truth.geometry.grid_shape is not None:  # a map needs a grid; sensors get their forecast trajectories
            plots.append(plot_grid_maps(forecasts, truth, cfg.plots.leads, out_dir / "maps.png"))
        else:
            plots.append(plot_sensor_fan(forecasts, truth, cfg.plots.sensors, out_dir / "forecast_vs_truth.png",
                                         lead=cfg.plots.get("lead")))

    names, suffixes = summary_columns(metrics)
    table = metrics_table({Path(path).name: metrics}, [], names, suffixes=suffixes)
    n = forecasts.sizes["init_time"]
    print(f"\nScores of {path} ({n} init times, {forecasts.init_time.values[0]} .. {forecasts.init_time.values[-1]}; "
          f"original units):\n{table}\n\nper-lead CSV : {out_dir / 'metrics.csv'}")
    result = {"metrics": metrics, "output_dir": out_dir, "plots": plots, "mlflow_run_id": None,
              "model_run_id": forecasts.attrs.get("stlm_run_id")}
    if cfg.mlflow.enabled:
        result["mlflow_run_id"] = _log_run(cfg, forecasts, path, metrics, out_dir, plots)
        print(f"MLflow run    : {result['mlflow_run_id']}")
    return result


def _log_run(cfg, forecasts, path: Path, metrics: dict[str, float], out_dir: Path, plots) -> str:
    from mlflow.tracking import MlflowClient

    from stlm.tracking.store import ensure_experiment, ensure_store, resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.mlflow.tracking_uri)
    ensure_store(uri)
    client = MlflowClient(uri)
    model_run = forecasts.attrs.get("stlm_run_id")
    experiment = cfg.mlflow.experiment
    if experiment is None and model_run:
        try:  # beside the model's training run
            experiment = client.get_experiment(client.get_run(model_run).info.experiment_id).name
        except Exception:  # the model's run lives in another store
            experiment = None
    experiment_id = ensure_experiment(uri, experiment or "evaluation")
    tags = {"stlm.kind": "evaluation", "stlm.forecasts": str(path), "mlflow.runName": f"evaluate {path.name}"}
    if model_run:
        tags["stlm.model_run_id"] = model_run
    run = client.create_run(experiment_id, tags=tags)
    run_id = run.info.run_id
    try:
        client.log_param(run_id, "forecasts", str(path))
        client.log_param(run_id, "n_init_times", forecasts.sizes["init_time"])
        client.log_param(run_id, "first_init_time", str(forecasts.init_time.values[0]))
        client.log_param(run_id, "last_init_time", str(forecasts.init_time.values[-1]))
        for key, value in metrics.items():
            client.log_metric(run_id, f"eval/{key}", value)
        client.log_artifact(run_id, str(out_dir / "metrics.csv"))
        for plot in plots:
            client.log_artifact(run_id, str(plot), artifact_path="plots")
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return run_id
