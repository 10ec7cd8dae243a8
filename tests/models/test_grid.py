"""Patches map cells to tokens and back exactly; the grid model keeps shapes, gradients and patch locality."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from stlm.data.climate_features import cell_coords, static_features
from stlm.data.spec import DataSpec
from stlm.models.climate_baselines import Climatology, Persistence
from stlm.models.grid import GridForecaster, patchify, unpatchify
from stlm.nn.spatial import GlobalAttention
from stlm.nn.temporal import SelectiveSSM


def _spec(H=5, W=7, C=2, window=4, horizon=3):
    lat, lon = np.linspace(-60, 60, H), np.linspace(-180, 180, W, endpoint=False)
    return DataSpec(
        n_nodes=H * W, n_channels=C, window=window, horizon=horizon, steps_per_day=4, days_per_week=0,
        interval_minutes=360, grid_shape=(H, W), node_coords=cell_coords(lat, lon),
        node_features=static_features(lat, lon), time_features=3,
    )


def _batch(spec, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    N, C = spec.n_nodes, spec.n_channels
    time = lambda T: torch.stack([torch.randint(0, 4, (B, T), generator=g), torch.zeros(B, T, dtype=torch.long),
                                  torch.randint(0, 365, (B, T), generator=g)], dim=-1)
    return {"x": torch.randn(B, spec.window, N, C, generator=g), "x_mask": torch.ones(B, spec.window, N, C),
            "x_time": time(spec.window), "y_time": time(spec.horizon)}


def _model(spec, patch):
    return GridForecaster(spec, patch=patch, d_model=8, temporal=partial(SelectiveSSM, d_state=4),
                          spatial=partial(GlobalAttention, n_heads=2), kernels="reference")


def test_patchify_round_trip_with_padding():
    x = torch.randn(2, 3, 7, 9, 5)
    tokens = patchify(x, 4)
    assert tokens.shape == (2, 3, 2 * 3, 4 * 4 * 5)
    torch.testing.assert_close(unpatchify(tokens, 4, 7, 9), x)
    # Token 1 holds rows 0..3, columns 4..7; its first cell is (0, 4).
    torch.testing.assert_close(tokens[0, 0, 1, :5], x[0, 0, 0, 4])


@pytest.mark.parametrize("patch", [1, 3])
def test_shapes_and_every_parameter_gets_a_gradient(patch):
    spec = _spec()
    model = _model(spec, patch)
    model.gate.data.fill_(0.5)
    out = model(_batch(spec))
    assert out.shape == (2, spec.horizon, spec.n_nodes, spec.n_channels) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model.n_tokens == (2 * 3 if patch == 3 else 35)


def test_without_spatial_mixing_a_patch_only_sees_its_own_cells():
    spec = _spec(H=4, W=4, C=1)
    model = GridForecaster(spec, patch=2, d_model=8, temporal=partial(SelectiveSSM, d_state=4), spatial=None, kernels="reference")
    model.gate.data.fill_(1.0)  # open the network's gate (it starts closed: the forecast starts as the reference)
    batch = _batch(spec, B=1)
    base = model(batch)
    changed = dict(batch, x=batch["x"].clone())
    changed["x"][0, :, 0] += 5.0  # cell (0, 0): patch 0 = cells (0,0), (0,1), (1,0), (1,1)
    diff = (model(changed) - base).abs().sum(dim=(0, 1, 3)).view(4, 4)
    assert (diff[:2, :2] > 0).all() and diff[2:].abs().max() == 0 and diff[:, 2:].abs().max() == 0


def test_needs_a_grid_spec():
    spec = DataSpec(n_nodes=3, n_channels=1, window=4, horizon=2, steps_per_day=4, days_per_week=7, interval_minutes=5)
    with pytest.raises(ValueError, match="use it with dataset=climate or dataset=era5"):
        GridForecaster(spec, patch=1)
    with pytest.raises(ValueError, match="dataset.patch must be a positive integer"):
        GridForecaster(_spec(), patch=0)


class _FakeDataModule:
    """What the climatology needs from a datamodule: the table, its key column and the scaler."""

    def __init__(self, table):
        self.climatology, self.climatology_column = table, 0
        self.scaler = type("S", (), {"mean": np.array([10.0, 0.0], np.float32), "std": np.array([2.0, 1.0], np.float32)})()


def test_climatology_and_persistence_baselines():
    spec = _spec()
    table = np.random.default_rng(0).normal(size=(4, spec.n_nodes, 2)).astype(np.float32)
    model = Climatology(spec)
    model.fit_from_data(_FakeDataModule(table))
    batch = _batch(spec)
    out = model(batch)  # scaled: (clim - mean) / std
    slot = batch["y_time"][1, 2, 0]
    torch.testing.assert_close(out[1, 2, :, 0], (torch.from_numpy(table[slot, :, 0]) - 10.0) / 2.0)
    last = Persistence(spec)(batch)
    torch.testing.assert_close(last[:, 1], batch["x"][:, -1])


def test_grid_config_builds_on_the_climate_default_and_never_sees_targets(compose_train):
    from hydra.utils import instantiate

    cfg = compose_train(["dataset=climate", "dataset.n_lat=6", "dataset.n_lon=12", "dataset.n_days=40", "dataset.normalization_path=null"])
    assert cfg.model._target_ == "stlm.models.grid.GridForecaster" and cfg.model.patch == cfg.dataset.patch
    dm = instantiate(cfg.dataset.datamodule)
    dm.setup()
    model = instantiate(cfg.model, _partial_=True)(spec=dm.spec)
    model.fit_from_data(dm)
    model.eval()
    batch = next(iter(dm.test_dataloader()))
    out = model(batch)
    assert out.shape == batch["y"].shape and torch.isfinite(out).all()
    leaked = dict(batch, y=torch.randn_like(batch["y"]) * 100, mask=torch.zeros_like(batch["mask"]))
    assert torch.equal(model(leaked), out)
