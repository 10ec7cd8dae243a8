"""The references are the specification: their gradients must be right (float64 gradcheck on tiny shapes)."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import attention_inputs, scan_inputs

from stlm.kernels.reference import attention_ref, selective_scan_ref, selective_state_update_ref


@pytest.mark.parametrize("groups", [None, 2])
def test_scan_reference_gradcheck(groups):
    t = scan_inputs(batch=1, d=4, n=3, L=5, groups=groups, dtype=torch.float64)
    names = [k for k, v in t.items() if v is not None]

    def f(*args):
        kw = dict(zip(names, args))
        out, h = selective_scan_ref(
            kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"], kw["z"], kw["delta_bias"], True,
            kw["initial_state"], True,
        )
        return out, h

    assert torch.autograd.gradcheck(f, [t[k] for k in names])


def test_scan_reference_matches_hand_recurrence():
    """One channel, one state, no options: h_t = exp(dt A) h + dt B u, y = C h."""
    u = torch.tensor([[[1.0, 2.0, -1.0]]], dtype=torch.float64)
    delta = torch.tensor([[[0.5, 1.0, 0.25]]], dtype=torch.float64)
    A = torch.tensor([[-2.0]], dtype=torch.float64)
    B = torch.tensor([[[1.0, 0.5, 2.0]]], dtype=torch.float64)
    C = torch.tensor([[[3.0, 1.0, -1.0]]], dtype=torch.float64)
    h, ys = 0.0, []
    for t in range(3):
        dt = delta[0, 0, t].item()
        h = torch.exp(torch.tensor(dt * -2.0)).item() * h + dt * B[0, 0, t].item() * u[0, 0, t].item()
        ys.append(C[0, 0, t].item() * h)
    out = selective_scan_ref(u, delta, A, B, C, delta_softplus=False)
    torch.testing.assert_close(out[0, 0], torch.tensor(ys, dtype=torch.float64))


def test_state_update_reference_gradcheck():
    t = scan_inputs(batch=2, d=4, n=3, L=1, groups=2, dtype=torch.float64)
    args = (t["initial_state"], t["u"][..., 0], t["delta"][..., 0], t["A"], t["B"][..., 0], t["C"][..., 0],
            t["D"], t["z"][..., 0], t["delta_bias"])
    assert torch.autograd.gradcheck(lambda *a: selective_state_update_ref(*a), args)


@pytest.mark.parametrize("bias", [None, (2, 2, 5, 7), (5, 7)])
def test_attention_reference_gradcheck(bias):
    t = attention_inputs(batch=2, heads=2, Nq=5, Nk=7, d_head=3, bias=bias, dtype=torch.float64)
    leaves = [t["q"], t["k"], t["v"]] + ([t["bias"]] if bias is not None else [])

    def f(q, k, v, *b):
        return attention_ref(q, k, v, key_padding_mask=t["key_padding_mask"], bias=b[0] if b else None)

    assert torch.autograd.gradcheck(f, leaves, fast_mode=True)


def test_attention_reference_all_masked_rows_are_zero():
    t = attention_inputs(batch=2, heads=2, Nq=4, d_head=3, all_masked=True, dtype=torch.float64)
    out = attention_ref(t["q"], t["k"], t["v"], key_padding_mask=t["key_padding_mask"])
    assert torch.isfinite(out).all()
    assert (out[-1] == 0).all()
