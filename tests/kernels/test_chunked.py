"""The chunked scan (fast PyTorch path) equals the reference: forward, every gradient, final state."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import assert_scan_matches, run_scan, scan_inputs

from stlm.kernels import SCAN_TOLERANCES, selective_scan, selective_state_update
from stlm.kernels.chunked import selective_scan_chunked, selective_state_update_chunked
from stlm.kernels.reference import selective_scan_ref, selective_state_update_ref

CASES = {
    # name: (scan_inputs kwargs, chunk or (chunk, batch block))
    "odd_L_several_chunks": (dict(L=37), 8),
    "batch_blocks": (dict(batch=3, L=10), (4, 2)),
    "L_shorter_than_chunk": (dict(L=5), 64),
    "one_step_chunks": (dict(L=6), 1),
    "grouped_BC": (dict(d=6, groups=3, L=19), 4),
    "B_C_grouped_differently": (dict(d=6, groups=2, c_groups=3, L=9), 4),
    "no_options": (dict(D=False, z=False, delta_bias=False, initial_state=False, L=13), 5),
    "n_one": (dict(n=1, L=7), 3),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_chunked_equals_reference(case, dtype):
    kwargs, tile = CASES[case]
    chunk, block = tile if isinstance(tile, tuple) else (tile, None)
    t = scan_inputs(dtype=dtype, **kwargs)
    want = run_scan(selective_scan_ref, t)
    got = run_scan(selective_scan_chunked, t, chunk=chunk, block=block)
    assert_scan_matches(got, want, SCAN_TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_low_precision_inputs(dtype):
    t = scan_inputs(dtype=dtype, L=21)
    assert_scan_matches(run_scan(selective_scan_chunked, t, chunk=8), run_scan(selective_scan_ref, t),
                        SCAN_TOLERANCES[dtype])


def test_chunked_without_softplus():
    t = scan_inputs(dtype=torch.float64, L=11)
    with torch.no_grad():
        t["delta"].abs_()  # raw steps must be positive without softplus
    assert_scan_matches(
        run_scan(selective_scan_chunked, t, delta_softplus=False, chunk=4),
        run_scan(selective_scan_ref, t, delta_softplus=False),
        SCAN_TOLERANCES[torch.float64],
    )


def test_chunked_gradcheck():
    """The hand-written backward against finite differences (float64), several chunks."""
    t = scan_inputs(batch=1, d=4, n=3, L=7, groups=2, dtype=torch.float64)
    names = [k for k, v in t.items() if v is not None]

    def f(*args):
        kw = dict(zip(names, args))
        return selective_scan_chunked(**kw, return_final_state=True, chunk=3)

    assert torch.autograd.gradcheck(f, [t[k] for k in names])


@pytest.mark.parametrize("shape", [dict(batch=3, d=8, n=4, L=300), dict(batch=700, d=8, n=4, L=12)])
def test_chunked_default_tiles_through_public_op(shape):
    """Default tiles: long sequences (time chunks) and short ones over a large batch (batch blocks)."""
    t = scan_inputs(**shape)
    kw = {k: v for k, v in t.items()}
    out = selective_scan(**kw, backend="chunked")
    ref = selective_scan(**kw, backend="reference")
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_chunked_large_decay_is_finite():
    """Steps with |dt A| far past float32's exp range: decays multiply step by step, so no overflow/NaN."""
    t = scan_inputs(L=40, dtype=torch.float32)
    with torch.no_grad():
        t["delta"].add_(30.0)  # softplus(delta) ~ 30, dt A ~ -40 per step: exp(cumsum) would underflow
    got = run_scan(selective_scan_chunked, t, chunk=16)
    want = run_scan(selective_scan_ref, t)
    assert_scan_matches(got, want, SCAN_TOLERANCES[torch.float32])


@pytest.mark.parametrize("step_fn", [selective_state_update_ref, selective_state_update_chunked])
@pytest.mark.parametrize("groups", [None, 3])
def test_stepping_equals_scan(step_fn, groups):
    """Feeding the sequence one step at a time reproduces the scan's outputs and final state."""
    t = scan_inputs(d=6, L=9, groups=groups, dtype=torch.float64)
    out, final = selective_scan_chunked(**t, return_final_state=True, chunk=4)
    state, outs = t["initial_state"], []
    for i in range(t["u"].shape[-1]):
        y, state = step_fn(
            state, t["u"][..., i], t["delta"][..., i], t["A"], t["B"][..., i], t["C"][..., i],
            D=t["D"], z=t["z"][..., i], dt_bias=t["delta_bias"],
        )
        outs.append(y)
    torch.testing.assert_close(torch.stack(outs, -1), out)
    torch.testing.assert_close(state, final)


def test_state_update_chunked_gradients_match_reference():
    t = scan_inputs(d=6, L=1, groups=2, dtype=torch.float64)
    args = (t["initial_state"], t["u"][..., 0], t["delta"][..., 0], t["A"], t["B"][..., 0], t["C"][..., 0],
            t["D"], t["z"][..., 0], t["delta_bias"])
    leaves = [t[k] for k in t]
    grads = []
    for fn in (selective_state_update_ref, selective_state_update_chunked):
        y, h = fn(*args)
        grads.append(torch.autograd.grad(y.sum() + h.pow(2).sum(), leaves))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_state_update_with_different_group_counts_for_B_and_C():
    """B shared by all channels, C in 2 groups: every backend aligns the groups like the scan does."""
    torch.manual_seed(0)
    batch, d, n = 2, 6, 4
    state = torch.randn(batch, d, n, dtype=torch.float64)
    x, dt = torch.randn(batch, d, dtype=torch.float64), torch.randn(batch, d, dtype=torch.float64)
    A = -torch.rand(d, n, dtype=torch.float64)
    B, C = torch.randn(batch, n, dtype=torch.float64), torch.randn(batch, 2, n, dtype=torch.float64)
    y_ref, h_ref = selective_state_update_ref(state, x, dt, A, B, C)
    y, h = selective_state_update_chunked(state, x, dt, A, B, C)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h, h_ref)


def test_public_state_update_dispatches():
    t = scan_inputs(d=6, L=1, dtype=torch.float32)
    args = (t["initial_state"], t["u"][..., 0], t["delta"][..., 0], t["A"], t["B"][..., 0], t["C"][..., 0])
    y_ref, h_ref = selective_state_update(*args, backend="reference")
    y, h = selective_state_update(*args)  # auto: chunked on CPU
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h, h_ref)


def test_empty_sequence_passes_the_state_through():
    """L = 0: no output steps, the final state is the initial state (and so is its gradient)."""
    t = scan_inputs(L=0, dtype=torch.float64)
    for fn in (selective_scan_ref, selective_scan_chunked):
        out, final = fn(**t, return_final_state=True)
        assert out.shape == (2, 6, 0)
        torch.testing.assert_close(final, t["initial_state"])
        grad = torch.autograd.grad((final * 2.0).sum(), t["initial_state"])[0]
        torch.testing.assert_close(grad, torch.full_like(final, 2.0))
