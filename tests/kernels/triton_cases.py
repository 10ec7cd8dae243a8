"""Cases run by both the Triton interpreter tests (CPU) and their GPU twins: small, odd shapes.

Block sizes under the interpreter: BLOCK_D = 4, BLOCK_L = 16 (scan), 16 x 16 tiles (attention); on a GPU
they are larger. Each case is odd against both: L not a power of two and ragged against BLOCK_L or shorter
than it, n and d not multiples of their blocks, N not a multiple of the tile, d_head padded to 16.
"""

from __future__ import annotations

import torch
from kernel_cases import (
    assert_matches,
    assert_scan_matches,
    attention_inputs,
    run_attention,
    run_scan,
    scan_inputs,
)

from stlm.kernels import ATTENTION_TOLERANCES, SCAN_TOLERANCES, attention, selective_scan, selective_state_update

SCAN_CASES = {
    "odd_L_ragged_blocks": dict(d=6, n=5, L=37),
    "L_shorter_than_chunk": dict(d=5, n=3, L=11, initial_state=False),
    "grouped_no_options": dict(d=6, n=5, L=19, groups=3, D=False, z=False, delta_bias=False, initial_state=False),
}

ATTENTION_CASES = {
    "mask_and_full_bias": dict(Nq=37, d_head=12, bias=(2, 3, 37, 37)),
    "broadcast_bias_all_masked_row": dict(Nq=21, d_head=12, all_masked=True, bias=(21, 21)),
    "cross_lengths_no_mask": dict(Nq=19, Nk=35, d_head=20, mask=False),
}


def check_scan(device, dtype, case: str, **size) -> None:
    t = scan_inputs(dtype=dtype, device=device, **{**SCAN_CASES[case], **size})
    want = run_scan(lambda *a, **k: selective_scan(*a, **k, backend="reference"), t)
    got = run_scan(lambda *a, **k: selective_scan(*a, **k, backend="triton"), t)
    assert_scan_matches(got, want, SCAN_TOLERANCES[dtype])


def check_attention(device, dtype, case: str, **size) -> None:
    t = attention_inputs(dtype=dtype, device=device, **{**ATTENTION_CASES[case], **size})
    out_r, grads_r = run_attention(lambda *a, **k: attention(*a, **k, backend="reference"), t)
    out, grads = run_attention(lambda *a, **k: attention(*a, **k, backend="triton"), t)
    tol = ATTENTION_TOLERANCES[dtype]
    assert out.dtype == out_r.dtype
    assert_matches(out, out_r, tol, "out")
    assert grads.keys() == grads_r.keys()
    for k in grads:
        assert_matches(grads[k], grads_r[k], tol, f"grad {k}")


def check_state_update(device, dtype) -> None:
    t = scan_inputs(d=6, n=5, L=1, groups=3, dtype=dtype, device=device)
    args = [t["initial_state"], t["u"][..., 0], t["delta"][..., 0], t["A"], t["B"][..., 0], t["C"][..., 0]]
    kw = dict(D=t["D"], z=t["z"][..., 0], dt_bias=t["delta_bias"])
    with torch.no_grad():
        y_r, h_r = selective_state_update(*args, **kw, backend="reference")
        y, h = selective_state_update(*args, **kw, backend="triton")
    assert_matches(y, y_r, SCAN_TOLERANCES[dtype], "out")
    assert_matches(h, h_r, SCAN_TOLERANCES[dtype], "new_state")
