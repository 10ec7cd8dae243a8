"""Patches map cells to tokens and back exactly; the grid model keeps shapes, gradients and patch locality."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from stlm.models.build import build_model
from stlm.data.sources.geometry import cell_coords, static_features
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
    with pytest.raises(ValueError, match="model.patch must be a positive integer"):
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
    assert cfg.model._target_ == "stlm.models.grid.GridForecaster" and cfg.model.patch == 4 and "patch" not in cfg.dataset
    dm = instantiate(cfg.dataset.datamodule)
    dm.setup()
    model = build_model(cfg.model, dm.spec)
    model.fit_from_data(dm)
    model.eval()
    batch = next(iter(dm.test_dataloader()))
    out = model(batch)
    assert out.shape == batch["y"].shape and torch.isfinite(out).all()
    leaked = dict(batch, y=torch.randn_like(batch["y"]) * 100, mask=torch.zeros_like(batch["mask"]))
    assert torch.equal(model(leaked), out)


def test_same_hour_term_reads_the_targets_time_of_day_one_day_earlier():
    spec = _spec(C=1, window=6, horizon=5)  # 4 steps a day; the last input is window step 5
    model = GridForecaster(spec, patch=1, anomaly_terms=["same_hour", "last", "window_mean"], d_model=8,
                           temporal=partial(SelectiveSSM, d_state=4), spatial=None, kernels="reference")
    # Lead h (1-based) is step 5 + h: one day (4 steps) earlier is step 1 + h for leads 1..4; lead 5 (step 10) is
    # more than a day ahead, so two days earlier: step 2.
    assert model.same_hour_index.tolist() == [2, 3, 4, 5, 2]
    batch = _batch(spec, B=1)
    batch["x_mask"][0, 3, 0, 0] = 0  # an unobserved step contributes 0 (the climatology), never a value
    terms = model._terms(batch["x"], batch["x_mask"], batch["x_time"])  # [B, H, N, C, K]; climatology 0 here
    x, m = batch["x"][0, :, :, 0], batch["x_mask"][0, :, :, 0]
    torch.testing.assert_close(terms[0, :, :, 0, 0], (x * m)[[2, 3, 4, 5, 2]])
    torch.testing.assert_close(terms[0, 0, :, 0, 1], x[5])
    torch.testing.assert_close(terms[0, 0, :, 0, 2], (x * m).sum(0) / m.sum(0))
    short = GridForecaster(_spec(C=1, window=2, horizon=3), patch=1, anomaly_terms=["same_hour"], d_model=8,
                           temporal=partial(SelectiveSSM, d_state=4), spatial=None, kernels="reference")
    assert short.same_hour_index.tolist() == [-1, -1, 0]  # before the window: the term is 0 at those leads


def test_non_negative_least_squares_recovers_weights_and_drops_a_harmful_term():
    from stlm.models.grid import _nnls_small

    g = torch.Generator().manual_seed(0)
    A = torch.randn(500, 3, generator=g, dtype=torch.float64)
    y = A @ torch.tensor([0.7, 0.2, 0.0], dtype=torch.float64) + 0.01 * torch.randn(500, generator=g, dtype=torch.float64)
    c = _nnls_small(A.T @ A, A.T @ y, y @ y)
    torch.testing.assert_close(c, torch.tensor([0.7, 0.2, 0.0], dtype=torch.float64), atol=5e-3, rtol=0)
    y = A @ torch.tensor([0.5, -0.4, 0.0], dtype=torch.float64)  # a negative weight is not allowed: refit without it
    c = _nnls_small(A.T @ A, A.T @ y, y @ y)
    assert c[1] == 0 and (c >= 0).all()
    a0 = A[:, [0, 2]]
    torch.testing.assert_close(c[[0, 2]], torch.linalg.lstsq(a0, y[:, None]).solution[:, 0].clamp_min(0), atol=1e-6, rtol=0)
    twice = torch.cat([A[:, :1], A[:, :1]], 1)  # collinear terms (same_hour equals last at a lead of one day)
    assert torch.isfinite(_nnls_small(twice.T @ twice, twice.T @ A[:, 0], A[:, 0] @ A[:, 0])).all()


def test_unknown_anomaly_terms_and_fit_split_are_refused():
    with pytest.raises(ValueError, match="model.anomaly_terms=.*from \\['last', 'same_hour', 'window_mean'\\]"):
        GridForecaster(_spec(), anomaly_terms=["last", "yesterday"])
    with pytest.raises(ValueError, match="model.anomaly_fit='test'; choose one of \\['train', 'val'\\]"):
        GridForecaster(_spec(), anomaly_fit="test")


def test_checkpoints_with_the_former_alpha_load_into_the_last_anomaly_weight():
    spec = _spec()
    model = _model(spec, 1)
    state = {k: v for k, v in model.state_dict().items() if k != "beta"}
    state["alpha"] = torch.full((spec.horizon, spec.n_channels), 0.6)
    model.load_state_dict(state)
    torch.testing.assert_close(model.beta, torch.full((spec.horizon, 1, spec.n_channels), 0.6))


def test_validation_fitted_weights_forecast_and_training_keeps_the_training_fit(compose_train):
    """anomaly_fit=val: the forecast (eval) uses the weights fitted on the validation windows; training steps use
    those fitted on the training windows, and they are least-squares fits of each split (checked by hand)."""
    from hydra.utils import instantiate

    cfg = compose_train(["dataset=climate", "dataset.n_lat=6", "dataset.n_lon=12", "dataset.n_days=40",
                         "dataset.normalization_path=null", "model.anomaly_terms=[last,same_hour]",
                         "model.anomaly_fit=val", "model.learn_anomaly=false"])
    dm = instantiate(cfg.dataset.datamodule)
    dm.setup()
    model = build_model(cfg.model, dm.spec)
    model.fit_from_data(dm)
    assert "beta" not in dict(model.named_parameters()) and not torch.equal(model.beta, model.beta_val)
    assert (model.beta_val >= 0).all() and (model.beta >= 0).all()

    # Hand check of beta_val at every lead: weighted non-negative least squares over every validation window, by
    # trying the full fit and each single term (two terms) and keeping the best non-negative one.
    b = dm.datasets["val"].__getitems__(list(range(len(dm.datasets["val"]))))
    mean, std = float(dm.scaler.mean[0]), float(dm.scaler.std[0])
    w = torch.cos(torch.deg2rad(torch.as_tensor(dm.spec.node_coords[:, 0], dtype=torch.float64))).sqrt()[None, :, None]
    all_terms = model._terms(b["x"], b["x_mask"], b["x_time"]).double()  # [B, H, N, C, K]
    for h in range(dm.spec.horizon):
        A = (all_terms[:, h, :, 0] * w).reshape(-1, 2)
        y = (((b["y"][:, h, :, 0] - mean) / std - model._prior(b["y_time"])[:, h, :, 0]).double()[..., None] * w).reshape(-1)
        fits = [torch.linalg.lstsq(A, y[:, None]).solution[:, 0]]
        for k in range(2):
            c = torch.zeros(2, dtype=torch.float64)
            c[k] = (A[:, k] @ y / (A[:, k] @ A[:, k])).clamp_min(0)
            fits.append(c)
        expected = min((c for c in fits if (c >= 0).all()), key=lambda c: float(((A @ c - y) ** 2).sum()))
        torch.testing.assert_close(model.beta_val[h, :, 0].double(), expected, atol=1e-4, rtol=1e-4)

    batch = next(iter(dm.test_dataloader()))
    terms = model._terms(batch["x"], batch["x_mask"], batch["x_time"])
    prior = model._prior(batch["y_time"])
    model.eval()
    torch.testing.assert_close(model(batch), prior + torch.einsum("bhnck,hkc->bhnc", terms, model.beta_val))
    model.train()
    torch.testing.assert_close(model(batch), prior + torch.einsum("bhnck,hkc->bhnc", terms, model.beta))


@pytest.mark.parametrize("patch", [1, 3])
def test_quantile_grid_model_gives_sorted_bands_around_the_gated_median(patch):
    """With model.quantiles the grid model forecasts Q sorted quantiles per cell; at gate 0 the median is the
    anomaly-term reference (the point model's start) and the band around it is already open and trainable."""
    spec = _spec()
    model = GridForecaster(spec, patch=patch, d_model=8, temporal=partial(SelectiveSSM, d_state=4),
                           spatial=partial(GlobalAttention, n_heads=2), kernels="reference", quantiles=[0.05, 0.5, 0.95])
    batch = _batch(spec)
    out = model(batch)
    assert out.shape == (2, spec.horizon, spec.n_nodes, spec.n_channels, 3)
    assert (out.diff(dim=-1) > 0).all()
    reference = torch.einsum("bhnck,hkc->bhnc", model._terms(batch["x"], batch["x_mask"], batch["x_time"]), model.beta)
    torch.testing.assert_close(out[..., 1], reference + model._prior(batch["y_time"]))
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model.core.head.proj.out_features == spec.horizon * patch * patch * spec.n_channels * 3
