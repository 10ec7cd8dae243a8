"""Recurrent mode: stepping a history one observation at a time equals the windowed forward pass on it.

In float64, so a mismatch in the state bookkeeping (conv history, SSM state, head buffer, calendar of the
forecast steps) shows as an error far above rounding.
"""

from __future__ import annotations

import functools

import pytest
import torch

from stlm.data.calendar import future_calendar
from stlm.data.spec import DataSpec
from stlm.models.forecaster import STLMForecaster
from stlm.nn.block import STBlock
from stlm.nn.spatial import GlobalAttention
from stlm.nn.temporal import SelectiveSSM
from stlm.nn.temporal_attention import CausalTemporalAttention

SPEC = DataSpec(n_nodes=5, n_channels=2, window=12, horizon=4, steps_per_day=288, days_per_week=7, interval_minutes=5)


def make_model(head="flatten", n_layers=2, seasonal_prior=True, head_steps=None, kernels="auto"):
    torch.manual_seed(0)
    model = STLMForecaster(
        SPEC, d_model=16, n_layers=n_layers, temporal=functools.partial(SelectiveSSM, d_state=4, expand=2),
        spatial=functools.partial(GlobalAttention, n_heads=2), head=head, seasonal_prior=seasonal_prior,
        head_steps=head_steps, kernels=kernels,
    )
    if seasonal_prior:  # a non-trivial profile, so a wrong calendar of the forecast steps shows
        model.prior.average.profile.normal_()
    return model.double().eval()


def make_history(L, B=2, seed=0, start_slot=280):
    """A history that crosses midnight (slot 287 -> 0 and the day of week advances)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, SPEC.n_nodes, SPEC.n_channels, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, L, SPEC.n_nodes, SPEC.n_channels, generator=g) > 0.2).double()
    steps = torch.arange(L) + start_slot
    x_time = torch.stack([steps % 288, (3 + steps // 288) % 7], -1)[None].expand(B, L, 2)
    return x * mask, mask, x_time


@pytest.mark.parametrize("head", ["flatten", "last"])
@pytest.mark.parametrize("L", [1, 5, 12, 31])  # shorter than, equal to and longer than the trained window
def test_stepping_equals_windowed_forward(head, L):
    model = make_model(head=head)
    x, mask, x_time = make_history(L)
    y_time = future_calendar(x_time[:, -1], SPEC.horizon, 288)
    with torch.no_grad():
        expected = model({"x": x, "x_mask": mask, "x_time": x_time, "y_time": y_time})
        state = model.init_state(batch=2)
        for t in range(L):
            forecast, state = model.step(x[:, t], x_time[:, t], state, x_mask_t=mask[:, t])
    assert forecast.shape == (2, SPEC.horizon, SPEC.n_nodes, SPEC.n_channels)
    torch.testing.assert_close(forecast, expected, rtol=0, atol=1e-10)


def test_missing_readings_as_nan_equal_an_explicit_mask():
    model = make_model()
    x, mask, x_time = make_history(6)
    nan_x = torch.where(mask.bool(), x, torch.full_like(x, float("nan")))
    with torch.no_grad():
        s1, s2 = model.init_state(2), model.init_state(2)
        for t in range(6):
            f1, s1 = model.step(x[:, t], x_time[:, t], s1, x_mask_t=mask[:, t])
            f2, s2 = model.step(nan_x[:, t], x_time[:, t], s2)
    assert torch.isfinite(f2).all()
    torch.testing.assert_close(f1, f2, rtol=0, atol=1e-12)


def test_default_forecast_calendar_follows_the_step_across_midnight():
    now = torch.tensor([[286, 6]])  # Sunday 23:50 at 5-minute slots
    assert future_calendar(now, 3, 288).tolist() == [[[287, 6], [0, 0], [1, 0]]]


def test_state_has_a_fixed_size_and_the_step_does_not_modify_it():
    model = make_model()
    x, mask, x_time = make_history(20)
    state = model.init_state(2)
    sizes = {k: v.shape for k, v in state.items()}
    with torch.no_grad():
        for t in range(20):
            before = {k: v.clone() for k, v in state.items()}
            _, new_state = model.step(x[:, t], x_time[:, t], state, x_mask_t=mask[:, t])
            assert all(torch.equal(before[k], state[k]) for k in state)
            state = new_state
    assert {k: v.shape for k, v in state.items()} == sizes


def test_ssm_continues_a_sequence_chunk_by_chunk_and_step_by_step():
    torch.manual_seed(0)
    ssm = SelectiveSSM(d_model=8, d_state=4, expand=2, backend="reference").double()
    x = torch.randn(3, 17, 8, dtype=torch.float64)
    whole, final = ssm(x, return_state=True)
    first, state = ssm(x[:, :2], return_state=True)  # shorter than the convolution's history
    rest, state = ssm(x[:, 2:], state=state, return_state=True)
    torch.testing.assert_close(torch.cat([first, rest], 1), whole)
    for key in final:
        torch.testing.assert_close(state[key], final[key])
    state = ssm.init_state(3, device=x.device)
    outs = []
    for t in range(17):
        out, state = ssm.step(x[:, t], state)
        outs.append(out)
    torch.testing.assert_close(torch.stack(outs, 1), whole)


def test_last_block_reads_only_the_steps_the_head_needs():
    """keep_last drops work, never accuracy: the kept steps equal those of the full pass."""
    torch.manual_seed(0)
    block = STBlock(8, functools.partial(SelectiveSSM, d_state=4), functools.partial(GlobalAttention, n_heads=2)).eval()
    h = torch.randn(2, 10, 3, 8)
    torch.testing.assert_close(block(h, keep_last=4), block(h)[:, -4:])


def test_long_window_with_short_head_matches_stepping():
    model = make_model(head_steps=3)
    x, mask, x_time = make_history(40)
    y_time = future_calendar(x_time[:, -1], SPEC.horizon, 288)
    with torch.no_grad():
        expected = model({"x": x, "x_mask": mask, "x_time": x_time, "y_time": y_time})
        state = model.init_state(2)
        for t in range(40):
            forecast, state = model.step(x[:, t], x_time[:, t], state, x_mask_t=mask[:, t])
    assert state["head"].shape[1] == 3
    torch.testing.assert_close(forecast, expected, rtol=0, atol=1e-10)


def test_attention_temporal_mixer_cannot_stream_and_says_what_can():
    torch.manual_seed(0)
    model = STLMForecaster(SPEC, d_model=16, temporal=functools.partial(CausalTemporalAttention, n_heads=2),
                           spatial=functools.partial(GlobalAttention, n_heads=2))
    with pytest.raises(NotImplementedError, match="model/temporal=ssm"):
        model.init_state(1)


def test_attention_temporal_mixer_is_causal():
    torch.manual_seed(0)
    attn = CausalTemporalAttention(d_model=8, n_heads=2).eval()
    x = torch.randn(2, 10, 8)
    x2 = x.clone()
    x2[:, 6:] += 1.0
    y, y2 = attn(x), attn(x2)
    torch.testing.assert_close(y[:, :6], y2[:, :6])
    assert not torch.allclose(y[:, 6:], y2[:, 6:], atol=1e-3)


def test_quantile_head_steps_to_the_windowed_quantiles():
    """A quantile model (model.quantiles) streams too: stepping gives the windowed forward's Q quantiles."""
    torch.manual_seed(0)
    model = STLMForecaster(
        SPEC, d_model=16, n_layers=1, temporal=functools.partial(SelectiveSSM, d_state=4, expand=2),
        spatial=functools.partial(GlobalAttention, n_heads=2), quantiles=[0.1, 0.5, 0.9],
    )
    model.prior.average.profile.normal_()
    model = model.double().eval()
    x, mask, x_time = make_history(12)
    y_time = future_calendar(x_time[:, -1], SPEC.horizon, 288)
    with torch.no_grad():
        expected = model({"x": x, "x_mask": mask, "x_time": x_time, "y_time": y_time})
        state = model.init_state(batch=2)
        for t in range(12):
            forecast, state = model.step(x[:, t], x_time[:, t], state, x_mask_t=mask[:, t])
    assert forecast.shape == (2, SPEC.horizon, SPEC.n_nodes, SPEC.n_channels, 3)
    assert (forecast.diff(dim=-1) > 0).all()
    torch.testing.assert_close(forecast, expected, rtol=0, atol=1e-10)
