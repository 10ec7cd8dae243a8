"""Train a forecaster: ``python -m stlm.train dataset=traffic model=stlm trainer.max_epochs=...``.

Builds the datamodule, the model (sizes from the data), the engine and the trainer from the Hydra config,
trains with best/last checkpoints, tests the best checkpoint, evaluates reference baselines on the same test
split, logs everything to MLflow and prints where the results went. ``ckpt_path=last`` resumes the latest run
of the same configuration (same checkpoint directory, same MLflow run). In a sweep (``-m``) every run is tagged
with the sweep id, and configurations that already finished in the experiment are skipped (``stlm.tracking.sweeps``);
``register=NAME`` registers the best checkpoint in the MLflow model registry (``stlm.tracking.registry``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import stlm
from stlm.engines.checkpoints import load_weights_into, spec_arrays
from stlm.train.config_check import check_config, check_launch
from stlm.io.atomic import atomic_write_text
from stlm.metrics.horizon import summary_columns
from stlm.metrics.tables import metrics_table
from stlm.models.build import build_model
from stlm.models.ensemble import MCDropoutEnsemble
from stlm.train.runs import RunRecord, resolve_checkpoint
from stlm.tracking.sweeps import find_finished_run, should_skip
from stlm.tracking.store import (
    COMPLETE_TAG, config_hash, ensure_store, flatten_config, git_sha, reproducibility_tags, resolve_tracking_uri,
    tracking_uri_of,
)

log = logging.getLogger("stlm.train")


def _hydra_choice(group: str, default: str) -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices[group]
    except (ValueError, KeyError):  # composed outside a Hydra run (tests, notebooks)
        return default


def _overrides_yaml() -> str | None:
    """The command-line overrides of this invocation (None outside a Hydra run)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return OmegaConf.to_yaml(list(HydraConfig.get().overrides.task))
    except ValueError:
        return None


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _skipped(cfg: DictConfig, chash: str) -> dict[str, Any] | None:
    """The result of an earlier finished run of this configuration, when this run may be skipped; else None."""
    uri = tracking_uri_of(cfg)
    if uri is None or not should_skip(cfg, _in_multirun()):
        return None
    finished = find_finished_run(uri, cfg.experiment, chash)
    if finished is None:
        return None
    test = {k.removeprefix("test/"): v for k, v in finished.data.metrics.items() if k.startswith("test/")}
    print(f"skipped: configuration {chash} already finished in MLflow run {finished.info.run_id} "
          f"(experiment {cfg.experiment!r}, {uri}); nothing trained. skip_finished=false trains it again.")
    return {"run_id": finished.info.run_id, "skipped": True, "test": test, "baselines": {}, "best_checkpoint": None,
            "run_dir": None, "tracking_uri": uri, "n_parameters": None}


def build_engine(model_cfg: DictConfig, engine_cfg: DictConfig, datamodule, **model_options):
    """Model (sizes from the data; fitted from the training period if it has ``fit_from_data``) in its engine;
    ``model_options`` go to :func:`stlm.models.build.build_model` (``quantiles``)."""
    model = build_model(model_cfg, datamodule.spec, **model_options)
    network = model.model if isinstance(model, MCDropoutEnsemble) else model  # what the data fits and weights load into
    if hasattr(network, "fit_from_data"):
        network.fit_from_data(datamodule)
    if getattr(network, "init_weights", None):  # fine-tuning: the checkpoint's network, this data's fitted parts
        load_weights_into(network, network.init_weights, skip_prefixes=getattr(network, "fitted_prefixes", ()))
    # The data's metrics (token weights, key style) and loss weights: SpatioTemporalDataModule.engine_options.
    levels = getattr(model, "quantile_levels", None)
    options = datamodule.engine_options(levels=None if levels is None else levels.tolist(),
                                        members=getattr(model, "ensemble_members", None))
    return instantiate(engine_cfg, _partial_=True)(model=model, scaler=datamodule.scaler, horizon=datamodule.spec.horizon, **options)


def _test_metrics(results: list[dict]) -> dict[str, float]:
    (metrics,) = results
    return {k.removeprefix("test/"): float(v) for k, v in metrics.items() if k.startswith("test/")}


def evaluate_baselines(cfg: DictConfig, datamodule) -> dict[str, dict[str, float]]:
    """Test metrics of the reference baselines (``cfg.dataset.baselines`` if the data set names its own, else
    ``cfg.baselines``) on the same split, fitted, never trained. With ``model.quantiles`` they get bands at the
    same levels (their training residuals' quantiles, scaled on the validation split as the trained model's
    bands are), so the run's CRPS has a reference.

    Evaluated in this process without a Trainer: under DDP a new Trainer would join the process group.
    """
    scores = {}
    for name, model_cfg in (cfg.dataset.get("baselines") or cfg.get("baselines") or {}).items():
        engine = build_engine(model_cfg, cfg.engine, datamodule, quantiles=cfg.model.get("quantiles"))
        engine.calibrate(datamodule.val_dataloader())  # bands: the same validation fit as the trained model's
        scores[name] = engine.evaluate(datamodule.test_dataloader())
    return scores


def run(cfg: DictConfig, extra_callbacks: Sequence = ()) -> dict[str, Any]:
    """Train and test as configured; returns run id, checkpoint paths and test metrics.

    The configuration is checked first (:mod:`stlm.train.config_check`: a bad value is named before any data is read)
    and the tracking store is reached before any compute (:func:`stlm.tracking.store.ensure_store`). A SIGTERM ends
    the run with :class:`stlm.train.preemption.Preempted` (exit code 143) after saving ``last.ckpt`` and marking the
    MLflow run ``KILLED``. ``extra_callbacks`` are added to the configured Lightning callbacks (tests use them to
    interrupt a run); they are not part of the configuration and do not change its hash.
    """
    from stlm.train.preemption import sigterm_outside_lightning

    check_config(cfg)
    check_launch(cfg, _in_multirun(), int(os.environ.get("WORLD_SIZE", "1")))
    with sigterm_outside_lightning():
        return _run(cfg, extra_callbacks)


def _run(cfg: DictConfig, extra_callbacks: Sequence) -> dict[str, Any]:
    import pytorch_lightning as pl
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from stlm.train.preemption import SaveOnPreemption, is_preemption
    from stlm.train.rng_state import RngStateCheckpoint
    from stlm.train.throughput import Throughput

    is_rank_zero = rank_zero_only.rank == 0  # DDP re-runs this function in every rank
    if is_rank_zero and (uri := tracking_uri_of(cfg)) is not None:
        ensure_store(uri)  # an unreachable store fails here, before any data is read
    chash = config_hash(cfg)
    # Unresolved, so a forecast job can change one key (dataset.path) and have every use of it follow; taken
    # before instantiate(), which resolves the config it is given in place.
    dataset_config = OmegaConf.to_container(cfg.dataset, resolve=False)
    if (skipped := _skipped(cfg, chash)) is not None:
        return skipped
    pl.seed_everything(cfg.seed, workers=True)
    ckpt, resumed = resolve_checkpoint(cfg.ckpt_path, cfg.paths.outputs_root, chash)
    if resumed is not None:  # keep writing into the resumed run's directory and MLflow run
        cfg.paths.output_dir = resumed.run_dir
    output_dir = Path(cfg.paths.output_dir).resolve()

    datamodule = instantiate(cfg.dataset.datamodule)
    datamodule.prepare_data()
    datamodule.setup("fit")
    spec = datamodule.spec
    engine = build_engine(cfg.model, cfg.engine, datamodule)
    engine.checkpoint_metadata = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "dataset_config": dataset_config,
        "spec": spec.to_dict(),
        "spec_arrays": spec_arrays(spec),  # graph, coordinates, static features: a model rebuilt from the spec needs them
        "scaler": datamodule.scaler.state_dict(),
        "data_fingerprint": datamodule.fingerprint(),
        "stlm_version": stlm.__version__,
    }
    n_params = sum(p.numel() for p in engine.model.parameters() if p.requires_grad)
    model_name = _hydra_choice("model", cfg.model._target_.rsplit(".", 1)[-1])

    tags = {
        "stlm.version": stlm.__version__, "git_sha": git_sha(), "data_fingerprint": datamodule.fingerprint(),
        "seed": str(cfg.seed), "config_hash": chash, "model": model_name, "dataset": cfg.dataset.name,
        **reproducibility_tags(),
    }
    if cfg.get("sweep_id"):
        tags["sweep_id"] = str(cfg.sweep_id)
    logger = instantiate(cfg.logger, _partial_=True)(
        experiment_name=cfg.experiment, run_name=cfg.run_name, tags=tags,
        run_id=resumed.mlflow_run_id if resumed else None,
    )
    record = RunRecord(
        run_dir=str(output_dir), config_hash=chash, checkpoint_dir=str(output_dir / "checkpoints"),
        mlflow_run_id=logger.run_id if logger and is_rank_zero else None,
        tracking_uri=resolve_tracking_uri(cfg.logger.get("tracking_uri")) if logger else None,
    )
    preemption = SaveOnPreemption(record.checkpoint_dir)
    try:
        if is_rank_zero:
            output_dir.mkdir(parents=True, exist_ok=True)
            record.save()
            atomic_write_text(output_dir / "resolved_config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            if (overrides := _overrides_yaml()) is not None:
                atomic_write_text(output_dir / "overrides.yaml", overrides)
            if logger and resumed is None:  # params are immutable in MLflow: a resumed run keeps its own
                params = {k: v for k, v in flatten_config(cfg).items() if not k.startswith("dataset.datamodule.")}
                params["model.n_parameters"] = str(n_params)
                logger.log_hyperparams(params)

        throughput = Throughput()
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
        callbacks += [throughput, RngStateCheckpoint(), preemption, *extra_callbacks]
        trainer = instantiate(cfg.trainer, logger=logger or False, callbacks=callbacks, default_root_dir=str(output_dir))
        return _fit_and_report(cfg, trainer, engine, datamodule, logger, record, ckpt, model_name, n_params, throughput)
    except BaseException as err:
        if is_rank_zero:
            record.status = "preempted" if is_preemption(err) else "failed"
            record.save()
        if is_preemption(err):
            raise _preempted(logger, record, preemption.saved, is_rank_zero) from err
        raise


def _preempted(logger, record: RunRecord, saved: Path | None, is_rank_zero: bool):
    """Mark the MLflow run KILLED and build the exit (code 143) that reports what was saved and how to resume."""
    from stlm.train.preemption import Preempted

    where = f"saved {saved}" if saved else f"stopped outside training (checkpoints in {record.checkpoint_dir} kept)"
    status = ""
    if logger and is_rank_zero:
        try:
            logger.experiment.set_terminated(logger.run_id, "KILLED")
            status = f"; MLflow run {logger.run_id} marked KILLED"
        except Exception as err:  # the store may be gone too: the checkpoint matters more
            status = f"; MLflow run {logger.run_id} could not be marked KILLED ({type(err).__name__}: {err})"
    message = (f"preempted (SIGTERM): {where}{status}; exit code 143. Resume with the same command and "
               "ckpt_path=last")
    if is_rank_zero:
        print(message, file=sys.stderr, flush=True)
    return Preempted(message)


def _fit_and_report(cfg, trainer, engine, datamodule, logger, record: RunRecord, ckpt, model_name: str, n_params: int,
                    throughput):
    """Fit (or only evaluate a fitted model), test the best checkpoint, score the baselines, log, report."""
    if engine.has_trainable_parameters:
        # weights_only: reading a checkpoint never runs code from it (stlm.train.runs checked it already)
        trainer.fit(engine, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        test = _test_metrics(trainer.test(engine, datamodule=datamodule, ckpt_path="best", verbose=False, weights_only=True))
    else:  # fitted baselines: nothing to train, evaluate directly
        trainer.validate(engine, datamodule=datamodule, verbose=False)
        test = _test_metrics(trainer.test(engine, datamodule=datamodule, verbose=False))

    if trainer.world_size > 1:  # synced over ranks: each rank reports what it computed
        log.info("rank %d of %d test metrics: %s", trainer.global_rank, trainer.world_size, json.dumps(test, sort_keys=True))
    checkpoint_cb = trainer.checkpoint_callback
    best = checkpoint_cb.best_model_path if checkpoint_cb and checkpoint_cb.best_model_path else None
    output_dir = Path(record.run_dir)
    result = {"run_id": record.mlflow_run_id, "best_checkpoint": best, "test": test, "baselines": {},
              "run_dir": record.run_dir, "tracking_uri": record.tracking_uri, "n_parameters": n_params}
    if not trainer.is_global_zero:
        return result
    result["baselines"] = baselines = evaluate_baselines(cfg, datamodule)
    if logger:
        client, run_id = logger.experiment, logger.run_id
        for name, values in baselines.items():
            for key, value in values.items():
                client.log_metric(run_id, f"baselines/{name}/{key}", value)
        for config_file in ("resolved_config.yaml", "overrides.yaml"):
            if (output_dir / config_file).exists():
                client.log_artifact(run_id, str(output_dir / config_file), artifact_path="config")
        for key, value in throughput.metrics().items():
            client.log_metric(run_id, key, value)
        client.set_tag(run_id, "deterministic_algorithms", str(torch.are_deterministic_algorithms_enabled()))
        if best:
            client.log_artifact(run_id, best, artifact_path="checkpoints")
        if cfg.get("register"):
            _register(cfg.register, run_id, record.tracking_uri, has_checkpoint=bool(best))
        client.set_tag(run_id, COMPLETE_TAG, "true")  # last: a sweep rerun skips only fully logged runs

    record.status, record.best_checkpoint, record.test_metrics = "finished", best, test
    record.baseline_metrics = baselines
    record.save()
    names, suffixes = summary_columns(test)
    table = metrics_table({model_name: test, **baselines}, [], names, suffixes=suffixes)
    print(f"\nTest metrics ({cfg.dataset.name}, original units, area-weighted on grids; MAPE in %, ACC vs the "
          f"training climatology):\n{table}\n")
    print(f"run directory : {output_dir}")
    print(f"checkpoint    : {best or '(none: fitted model, nothing trained)'}")
    if logger:
        print(f"MLflow run    : {logger.run_id} (experiment {cfg.experiment!r}, {record.tracking_uri})")
    return result


def _register(name: str, run_id: str, tracking_uri: str, has_checkpoint: bool) -> None:
    from stlm.tracking.registry import register_checkpoint

    if not has_checkpoint:
        log.warning("register=%s: this model was fitted, not trained, and wrote no checkpoint; nothing registered", name)
        return
    version = register_checkpoint(name, run_id, tracking_uri)
    print(f"registered    : models:/{name}/{version.version} (run {run_id})")
