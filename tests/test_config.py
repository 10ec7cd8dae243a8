"""Every config composes, and every model config builds a model that forecasts a batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from stlm.models.build import build_model


CONF = Path(__file__).resolve().parents[1] / "conf"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["dataset", "model", "trainer", "logger", "engine"])
def test_every_option_composes_and_resolves(compose_train, group, tmp_path):
    for option in _options(group):
        overrides = [f"{group}={option}", f"paths.output_dir={tmp_path}"]
        cfg = compose_train(overrides)
        if "path" in cfg.dataset.keys() and OmegaConf.is_missing(cfg.dataset, "path"):  # a file the user gives
            cfg = compose_train(overrides + ["dataset.path=some/file"])
            assert cfg.dataset.datamodule.source.path == "some/file"
        # Every interpolation resolves.
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        assert resolved[group], (group, option)
        assert resolved["callbacks"]["checkpoint"]["dirpath"] == f"{tmp_path}/checkpoints"


@pytest.mark.parametrize("option", ["cpu", "ddp"])
def test_trainer_configs_build_a_trainer(compose_train, option, tmp_path):
    cfg = compose_train([f"trainer={option}", f"paths.output_dir={tmp_path}"])
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert trainer.max_epochs == cfg.dataset.max_epochs == 6
    assert trainer.num_devices == (2 if option == "ddp" else 1)


def test_logger_configs_build_a_logger(compose_train, tracking_uri):
    cfg = compose_train(["logger=mlflow"])
    logger = instantiate(cfg.logger, _partial_=True)(experiment_name="config-test", run_name=None, tags={}, run_id=None)
    assert logger.run_id and logger._tracking_uri == tracking_uri
    assert instantiate(compose_train(["logger=none"]).logger, _partial_=True)(experiment_name="x") is None


def test_default_is_the_embedded_traffic_data(compose_train):
    cfg = compose_train()
    assert cfg.dataset.name == "traffic"
    assert cfg.dataset.window == 12 and cfg.dataset.horizon == 12
    assert cfg.dataset.datamodule.source._target_.endswith("SyntheticTrafficSource")
    assert cfg.model._target_.endswith("STLMForecaster")


def test_user_overrides_reach_the_constructors(compose_train):
    cfg = compose_train(["dataset=metr_la", "dataset.path=x.h5", "dataset.adjacency=adj.pkl", "dataset.window=24", "model.kernels=reference"])
    dm = cfg.dataset.datamodule
    assert dm.source.path == "x.h5" and dm.source.adjacency == "adj.pkl" and dm.window == 24
    assert cfg.model.kernels == "reference"


def test_unknown_dataset_lists_the_options(compose_train):
    with pytest.raises(MissingConfigException) as info:
        compose_train(["dataset=metr-la"])
    message = str(info.value)
    assert "dataset/metr-la" in message
    for option in ("metr_la", "pems", "csv", "traffic", "hangzhou_metro"):
        assert option in message


def test_unknown_key_is_named(compose_train):
    with pytest.raises(ConfigCompositionException, match="model.d_modle"):
        compose_train(["model.d_modle=3"])


@pytest.mark.parametrize("model_name", [m for m in _options("model") if not m.startswith("grid")])  # grid models: tests/models/test_grid.py
def test_every_model_config_builds_and_forecasts(compose_train, model_name):
    from stlm.data.datamodule import SpatioTemporalDataModule
    from stlm.data.sources.synthetic import SyntheticTrafficSource

    cfg = compose_train([f"model={model_name}"])
    dm = SpatioTemporalDataModule(SyntheticTrafficSource(n_nodes=6, n_days=9), window=12, horizon=12, batch_size=4)
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    leaked = dict(batch, y=torch.randn_like(batch["y"]) * 100, mask=torch.zeros_like(batch["mask"]))
    for quantiles, shape in ((None, batch["y"].shape), ("default", (*batch["y"].shape, 19))):
        try:
            model = build_model(cfg.model, dm.spec, quantiles=quantiles)
        except ValueError as err:  # a trained model without a quantile head refuses bands, naming the key
            assert quantiles is not None and "model.quantiles" in str(err)
            continue
        if hasattr(model, "fit_from_data"):
            model.fit_from_data(dm)
        model.eval()
        out = model(batch)
        assert out.shape == shape and torch.isfinite(out).all()
        if quantiles is not None:
            assert (out.diff(dim=-1) >= 0).all()  # bands never cross
        # Targets never leak into the forecast.
        assert torch.equal(model(leaked), out)


@pytest.mark.parametrize("temporal", _options("model/temporal"))
def test_every_temporal_mixer_option_builds_and_forecasts(compose_train, temporal):
    """``model/temporal=ssm|attention`` swaps the temporal mixer and nothing else."""
    from stlm.data.datamodule import SpatioTemporalDataModule
    from stlm.data.sources.synthetic import SyntheticTrafficSource

    cfg = compose_train([f"model/temporal={temporal}"])
    default = compose_train()
    assert {k: v for k, v in cfg.model.items() if k != "temporal"} == {k: v for k, v in default.model.items() if k != "temporal"}
    dm = SpatioTemporalDataModule(SyntheticTrafficSource(n_nodes=6, n_days=9), window=12, horizon=12, batch_size=4)
    dm.setup()
    model = build_model(cfg.model, dm.spec).eval()
    assert type(model.blocks[0].temporal).__name__ == cfg.model.temporal._target_.rsplit(".", 1)[-1]
    batch = next(iter(dm.test_dataloader()))
    assert torch.isfinite(model(batch)).all()


def test_stream_config_composes_and_needs_a_checkpoint(compose_train):
    cfg = compose_train(["checkpoint=run/best.ckpt", "output=out"], config_name="stream")
    assert cfg.state == "out/state.pt" and cfg.input == "replay"
    with pytest.raises(Exception, match="checkpoint"):
        OmegaConf.to_container(compose_train([], config_name="stream"), resolve=True, throw_on_missing=True)
