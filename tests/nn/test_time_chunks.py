"""Time-chunked training (``model.time_chunk``): exactly the unchunked pass, in one chunk's activation memory.

In float64, so a wrong boundary state (conv tail, SSM state), a wrong kept-step bookkeeping or a missed gradient
shows far above rounding.
"""

from __future__ import annotations

import functools

import pytest
import torch

from stlm.models.build import build_model
from stlm.data.spec import DataSpec
from stlm.models.forecaster import STLMForecaster
from stlm.nn.spatial import GlobalAttention
from stlm.nn.temporal import SelectiveSSM
from stlm.nn.temporal_attention import CausalTemporalAttention
from stlm.nn.time_chunks import run_in_time_chunks

SPEC = DataSpec(n_nodes=5, n_channels=2, window=12, horizon=4, steps_per_day=288, days_per_week=7, interval_minutes=5)


def make_model(time_chunk=None, n_layers=2, head="flatten", head_steps=None, dropout=0.0, temporal=None):
    torch.manual_seed(0)
    model = STLMForecaster(
        SPEC, d_model=16, n_layers=n_layers,
        temporal=temporal or functools.partial(SelectiveSSM, d_state=4, expand=2),
        spatial=functools.partial(GlobalAttention, n_heads=2), head=head, head_steps=head_steps, dropout=dropout,
        time_chunk=time_chunk,
    )
    model.prior.average.profile.normal_()
    return model.double()


def make_batch(L, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, SPEC.n_nodes, SPEC.n_channels, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, L, SPEC.n_nodes, SPEC.n_channels, generator=g) > 0.2).double()
    steps = torch.arange(L) + 280  # crosses midnight
    x_time = torch.stack([steps % 288, (3 + steps // 288) % 7], -1)[None].expand(B, L, 2)
    y_time = torch.stack([(steps[-1] + 1 + torch.arange(4)) % 288, torch.full((4,), 4)], -1)[None].expand(B, 4, 2)
    return {"x": x * mask, "x_mask": mask, "x_time": x_time, "y_time": y_time}


def forward_backward(model, batch):
    out = model(batch)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    grads = torch.autograd.grad((out * w).sum(), list(model.parameters()), allow_unused=True)
    return out, dict(zip((n for n, _ in model.named_parameters()), grads))


@pytest.mark.parametrize(
    "L,K,head,head_steps,n_layers",
    [
        (31, 5, "flatten", None, 2),  # the head reads every step; L not a multiple of K
        (31, 7, "flatten", 12, 2),  # the 12 steps the head reads span two chunks
        (20, 1, "flatten", 3, 1),  # one step per chunk
        (30, 10, "flatten", 4, 1),  # L a multiple of K, the kept steps inside the last chunk
        (23, 6, "last", None, 2),
        (9, 9, "flatten", None, 2),  # K >= L: the option does not engage
    ],
)
def test_time_chunks_equal_the_whole_window(L, K, head, head_steps, n_layers):
    batch = make_batch(L)
    want_out, want = forward_backward(make_model(None, n_layers, head, head_steps), batch)
    got_out, got = forward_backward(make_model(K, n_layers, head, head_steps), batch)
    torch.testing.assert_close(got_out, want_out, rtol=0, atol=1e-12)
    for name, g in want.items():
        assert (got[name] is None) == (g is None), name
        if g is not None:
            torch.testing.assert_close(got[name], g, rtol=0, atol=1e-11, msg=name)


def test_time_chunks_without_gradients_and_in_eval():
    batch = make_batch(26)
    want = make_model(None).eval()(batch)
    with torch.no_grad():
        got = make_model(4).eval()(batch)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_backward_accumulates_into_grad_like_any_module():
    """loss.backward() (what Lightning calls) fills .grad exactly as without chunks."""
    batch = make_batch(17)
    models = [make_model(None), make_model(5)]
    for m in models:
        m(batch).pow(2).sum().backward()
    for (name, p), q in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-11, msg=name)


def test_dropout_is_replayed_in_the_recompute():
    """With dropout the chunked pass draws its masks chunk by chunk (not the unchunked pass's masks), but the
    backward's recompute replays each chunk's masks: its gradients equal those of the same chunked forward
    kept whole in the autograd graph."""
    batch = make_batch(19)
    model = make_model(6, dropout=0.3).train()
    features = model.prior.features(batch)
    params = [p for n, p in model.named_parameters() if not n.startswith("head.")]

    def loss(recompute: bool):
        torch.manual_seed(123)
        if recompute:
            h = run_in_time_chunks(model._chunk, [features, batch["x_time"]], 6, model.head.steps_read, params,
                                   n_states=len(model.blocks), dropout=True)
        else:  # the same chunks, graph kept: no recompute
            states, kept = [None] * len(model.blocks), []
            for t0 in range(0, 19, 6):
                t1 = min(19, t0 + 6)
                n_kept = max(0, t1 - max(t0, 19 - model.head.steps_read))
                out, states = model._chunk(n_kept, [features[:, t0:t1], batch["x_time"][:, t0:t1]], states)
                kept += [out] if n_kept else []
            h = torch.cat(kept, 1)
        return model.prior.add(model.head(h), batch).pow(2).sum()

    grads = [torch.autograd.grad(loss(r), list(model.parameters())) for r in (True, False)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_time_chunk_needs_a_temporal_mixer_with_a_state():
    with pytest.raises(ValueError, match=r"model.time_chunk=8 .*CausalTemporalAttention.*model/temporal=ssm"):
        make_model(8, temporal=functools.partial(CausalTemporalAttention, n_heads=2))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_time_chunk_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="model.time_chunk must be a positive integer"):
        make_model(bad)


def test_config_option_builds_a_chunked_model(compose_train):
    assert compose_train().model.time_chunk is None  # off by default: short windows are untouched
    cfg = compose_train(["model.time_chunk=64", "model.d_model=16"])
    model = build_model(cfg.model, SPEC)
    assert model.time_chunk == 64
