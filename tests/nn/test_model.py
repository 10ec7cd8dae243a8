"""Model properties: shapes at every boundary, causality over time, permutation equivariance over space,
a gradient for every parameter."""

from __future__ import annotations

import functools

import pytest
import torch

from stlm.data.spec import DataSpec
from stlm.models.forecaster import STLMForecaster
from stlm.nn.block import STBlock
from stlm.nn.spatial import GlobalAttention
from stlm.nn.temporal import SelectiveSSM

SPEC = DataSpec(n_nodes=7, n_channels=2, window=9, horizon=5, steps_per_day=288, days_per_week=7, interval_minutes=5)
TEMPORAL = functools.partial(SelectiveSSM, d_state=4, expand=2)
SPATIAL = functools.partial(GlobalAttention, n_heads=2)


def make_batch(B=3, spec=SPEC, seed=0):
    g = torch.Generator().manual_seed(seed)
    T, H, N, C = spec.window, spec.horizon, spec.n_nodes, spec.n_channels
    return {
        "x": torch.randn(B, T, N, C, generator=g),
        "x_mask": (torch.rand(B, T, N, C, generator=g) > 0.2).float(),
        "x_time": torch.stack([torch.randint(0, 288, (B, T), generator=g), torch.randint(0, 7, (B, T), generator=g)], -1),
        "y_time": torch.stack([torch.randint(0, 288, (B, H), generator=g), torch.randint(0, 7, (B, H), generator=g)], -1),
    }


@pytest.fixture
def model():
    torch.manual_seed(0)
    return STLMForecaster(SPEC, d_model=16, n_layers=2, temporal=TEMPORAL, spatial=SPATIAL, dropout=0.0).eval()


def test_output_shape(model):
    assert model(make_batch()).shape == (3, SPEC.horizon, SPEC.n_nodes, SPEC.n_channels)


def test_wrong_input_shape_is_named(model):
    batch = make_batch()
    batch["x"] = batch["x"][:, :, :3]
    with pytest.raises(ValueError, match=r"batch\['x'\] must be \[B, T, N=7, C=2\]"):
        model(batch)


def test_temporal_mixer_is_causal():
    torch.manual_seed(0)
    ssm = SelectiveSSM(d_model=8, d_state=4).eval()
    x = torch.randn(2, 10, 8)
    y = ssm(x)
    x2 = x.clone()
    x2[:, 6:] += torch.randn(2, 4, 8)  # change the future only
    y2 = ssm(x2)
    assert torch.allclose(y[:, :6], y2[:, :6], atol=1e-6)
    assert not torch.allclose(y[:, 6:], y2[:, 6:], atol=1e-3)


def test_stblock_is_causal_over_time():
    torch.manual_seed(0)
    block = STBlock(16, TEMPORAL, SPATIAL).eval()
    h = torch.randn(2, 9, 5, 16)
    h2 = h.clone()
    h2[:, 5:] = torch.randn(2, 4, 5, 16)
    assert torch.allclose(block(h)[:, :5], block(h2)[:, :5], atol=1e-5)


def test_spatial_mixer_is_permutation_equivariant():
    torch.manual_seed(0)
    attn = GlobalAttention(d_model=16, n_heads=4).eval()
    x = torch.randn(3, 11, 16)
    perm = torch.randperm(11)
    assert torch.allclose(attn(x)[:, perm], attn(x[:, perm]), atol=1e-5)


def test_stblock_is_permutation_equivariant_over_nodes():
    torch.manual_seed(0)
    block = STBlock(16, TEMPORAL, SPATIAL).eval()
    h = torch.randn(2, 6, 9, 16)
    perm = torch.randperm(9)
    assert torch.allclose(block(h)[:, :, perm], block(h[:, :, perm]), atol=1e-5)


def test_every_parameter_gets_a_gradient(model):
    model.train()
    out = model(make_batch())
    out.square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not missing, f"parameters without a gradient: {missing}"


def test_mixers_can_be_left_out_by_config():
    """Ablations are a config change: no spatial mixing, or no temporal mixing."""
    torch.manual_seed(0)
    no_space = STLMForecaster(SPEC, d_model=16, n_layers=1, temporal=TEMPORAL, spatial=None)
    assert no_space(make_batch()).shape == (3, 5, 7, 2)
    assert not any(isinstance(m, GlobalAttention) for m in no_space.modules())
    no_time = STLMForecaster(SPEC, d_model=16, n_layers=1, temporal=None, spatial=SPATIAL)
    assert not any(isinstance(m, SelectiveSSM) for m in no_time.modules())


def test_calendar_features_can_be_off():
    spec = DataSpec(n_nodes=4, n_channels=1, window=6, horizon=2, steps_per_day=0, days_per_week=0, interval_minutes=5)
    model = STLMForecaster(spec, d_model=8, n_layers=1, temporal=TEMPORAL, spatial=SPATIAL)
    assert model.embed.time_of_day is None and model.embed.day_of_week is None
    assert model(make_batch(spec=spec)).shape == (3, 2, 4, 1)


def test_last_state_head_reads_only_the_last_step():
    torch.manual_seed(0)
    model = STLMForecaster(SPEC, d_model=16, n_layers=1, temporal=TEMPORAL, spatial=SPATIAL, head="last", dropout=0.0).eval()
    assert model(make_batch()).shape == (3, 5, 7, 2)
    with pytest.raises(ValueError, match="model.head='mean'"):
        STLMForecaster(SPEC, temporal=TEMPORAL, spatial=SPATIAL, head="mean")


def test_kernel_backend_is_chosen_once_and_forced_by_config():
    model = STLMForecaster(SPEC, d_model=16, n_layers=1, temporal=TEMPORAL, spatial=SPATIAL, kernels="reference").eval()
    model(make_batch())
    ssm = model.blocks[0].temporal
    assert ssm.scan_backend.requested == "reference"
    assert ssm.scan_backend.resolve(torch.device("cpu"), torch.float32)[0] == "reference"
    assert model.blocks[0].spatial.attn_backend.resolve(torch.device("cpu"), torch.float32)[0] == "reference"


def test_seasonal_prior_is_the_starting_point_of_the_forecast():
    """With the head silenced, the forecast is the fitted time-of-week profile at the target times."""
    from stlm.data.datamodule import SpatioTemporalDataModule
    from stlm.data.sources.synthetic import SyntheticTrafficSource

    dm = SpatioTemporalDataModule(SyntheticTrafficSource(n_nodes=5, n_days=10), window=6, horizon=4, batch_size=4)
    dm.setup()
    torch.manual_seed(0)
    model = STLMForecaster(dm.spec, d_model=8, n_layers=1, temporal=TEMPORAL, spatial=SPATIAL).eval()
    model.fit_from_data(dm)
    torch.nn.init.zeros_(model.head.proj.weight)
    torch.nn.init.zeros_(model.head.proj.bias)
    batch = next(iter(dm.test_dataloader()))
    assert torch.allclose(model(batch), model.prior.average.lookup(batch["y_time"]))
    assert model.prior.average.profile.abs().sum() > 0
    plain = STLMForecaster(dm.spec, d_model=8, n_layers=1, temporal=TEMPORAL, spatial=SPATIAL, seasonal_prior=False)
    assert plain.prior.average is None and plain.embed.value.in_features == 2
