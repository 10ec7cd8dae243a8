"""Train a forecaster: ``python -m stlm.train dataset=traffic model=stlm trainer.max_epochs=...``.

Builds the datamodule, the model (sizes from the data), the engine and the trainer from the Hydra config,
trains with best/last checkpoints, tests the best checkpoint, evaluates reference baselines on the same test
split, logs everything to MLflow and prints where the results went. ``ckpt_path=last`` resumes the latest run
of the same configuration (same checkpoint directory, same MLflow run).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import stlm
from stlm.io.atomic import atomic_write_text
from stlm.reporting import metrics_table
from stlm.runs import RunRecord, resolve_checkpoint
from stlm.tracking import config_hash, flatten_config, git_sha, resolve_tracking_uri

log = logging.getLogger("stlm.train")


def _model_name(cfg: DictConfig) -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices["model"]
    except (ValueError, KeyError):
        return cfg.model._target_.rsplit(".", 1)[-1]


def _evaluate_baselines(cfg: DictConfig, datamodule, trainer_kwargs: dict) -> dict[str, dict[str, float]]:
    """Test metrics of the reference baselines (``cfg.baselines``) on the same split, without training."""
    import pytorch_lightning as pl

    results = {}
    for name, factory_cfg in (cfg.get("baselines") or {}).items():
        model = instantiate(factory_cfg, _partial_=True)(spec=datamodule.spec)
        if hasattr(model, "fit_from_data"):
            model.fit_from_data(datamodule)
        engine = instantiate(cfg.engine, _partial_=True)(model=model, scaler=datamodule.scaler, horizon=datamodule.spec.horizon)
        quiet = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, **trainer_kwargs)
        (metrics,) = quiet.test(engine, datamodule=datamodule, verbose=False)
        results[name] = {k.removeprefix("test/"): float(v) for k, v in metrics.items() if k.startswith("test/")}
    return results


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and test as configured; returns run id, checkpoint paths and test metrics (also used by tests)."""
    import pytorch_lightning as pl

    pl.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    chash = config_hash(cfg)
    ckpt, resumed = resolve_checkpoint(cfg.ckpt_path, cfg.paths.outputs_root, chash)
    if resumed is not None:  # keep writing into the resumed run's directory
        cfg.paths.output_dir = resumed.run_dir
    output_dir = Path(cfg.paths.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)

    datamodule = instantiate(cfg.dataset.datamodule)
    datamodule.prepare_data()
    datamodule.setup("fit")
    spec = datamodule.spec
    model = instantiate(cfg.model, _partial_=True)(spec=spec)
    if hasattr(model, "fit_from_data"):
        model.fit_from_data(datamodule)
    engine = instantiate(cfg.engine, _partial_=True)(model=model, scaler=datamodule.scaler, horizon=spec.horizon)
    resolved_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    engine.checkpoint_metadata = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "spec": spec.to_dict(),
        "scaler": datamodule.scaler.state_dict(),
        "data_fingerprint": datamodule.fingerprint(),
        "stlm_version": stlm.__version__,
    }
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    tags = {
        "stlm.version": stlm.__version__, "git_sha": git_sha(), "data_fingerprint": datamodule.fingerprint(),
        "seed": str(cfg.seed), "config_hash": chash, "model": _model_name(cfg), "dataset": cfg.dataset.name,
        "torch": torch.__version__,
    }
    logger = instantiate(cfg.logger, _partial_=True)(
        experiment_name=cfg.experiment, run_name=cfg.run_name, tags=tags,
        run_id=resumed.mlflow_run_id if resumed else None,
    )
    record = RunRecord(
        run_dir=str(output_dir), config_hash=chash, checkpoint_dir=str(output_dir / "checkpoints"),
        mlflow_run_id=logger.run_id if logger else None,
        tracking_uri=resolve_tracking_uri(cfg.logger.get("tracking_uri")) if logger else None,
    )
    record.save()
    atomic_write_text(output_dir / "resolved_config.yaml", resolved_yaml)
    if logger and resumed is None:
        params = flatten_config(cfg)
        params["model.n_parameters"] = str(n_params)
        logger.log_hyperparams(params)

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    trainer = instantiate(cfg.trainer, logger=logger or False, callbacks=callbacks, default_root_dir=str(output_dir))
    if engine.has_trainable_parameters:
        trainer.fit(engine, datamodule=datamodule, ckpt_path=ckpt)
        (test_metrics,) = trainer.test(engine, datamodule=datamodule, ckpt_path="best", verbose=False)
    else:  # fitted baselines: nothing to train, evaluate directly
        trainer.validate(engine, datamodule=datamodule, verbose=False)
        (test_metrics,) = trainer.test(engine, datamodule=datamodule, verbose=False)
    test = {k.removeprefix("test/"): float(v) for k, v in test_metrics.items() if k.startswith("test/")}

    checkpoint_cb = trainer.checkpoint_callback
    best = checkpoint_cb.best_model_path if checkpoint_cb and checkpoint_cb.best_model_path else None
    accel = {"accelerator": cfg.trainer.get("accelerator", "cpu"), "devices": 1}
    baselines = _evaluate_baselines(cfg, datamodule, accel) if trainer.is_global_zero else {}

    if logger and trainer.is_global_zero:
        client, run_id = logger.experiment, logger.run_id
        for name, values in baselines.items():
            for key, value in values.items():
                client.log_metric(run_id, f"baselines/{name}/{key}", value)
        client.log_artifact(run_id, str(output_dir / "resolved_config.yaml"), artifact_path="config")
        overrides = output_dir / ".hydra" / "overrides.yaml"
        if overrides.exists():
            client.log_artifact(run_id, str(overrides), artifact_path="config")
        if best:
            client.log_artifact(run_id, best, artifact_path="checkpoints")

    record.status, record.best_checkpoint, record.test_metrics = "finished", best, test
    record.save()
    name = _model_name(cfg)
    horizons = sorted({1, spec.horizon // 4, spec.horizon // 2, spec.horizon} - {0})
    table = metrics_table({name: test, **baselines}, horizons)
    if trainer.is_global_zero:
        print(f"\nTest metrics ({cfg.dataset.name}, original units; MAPE in %):\n{table}\n")
        print(f"run directory : {output_dir}")
        print(f"checkpoint    : {best or '(none: fitted model, nothing trained)'}")
        if logger:
            print(f"MLflow run    : {logger.run_id} (experiment {cfg.experiment!r}, {record.tracking_uri})")
    return {"run_id": record.mlflow_run_id, "best_checkpoint": best, "test": test, "baselines": baselines,
            "run_dir": str(output_dir), "tracking_uri": record.tracking_uri, "n_parameters": n_params}


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
