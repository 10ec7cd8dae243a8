"""One recurrent step of the selective scan on Triton (streaming inference; forward only).

Same arguments and result as :func:`~stlm.kernels.reference.selective_state_update_ref`:
state [batch, d, n]; x, dt, z [batch, d]; A [d, n]; B, C [batch, n] or [batch, g, n]; D, dt_bias [d].
A program updates BLOCK_D channels of one (batch, group): h' = exp(dt A) h + dt x B, y = <C, h'> + D x,
out = y silu(z). There is no backward: training uses the scan, whose gradient is a reverse scan.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from stlm.kernels.triton.runtime import INTERPRET, next_pow2
from stlm.kernels.triton.scan_common import LOG2E, softplus


@triton.jit
def _state_update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, new_state_ptr,
    g, dg, n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """state, new_state [batch, d, n] float32; x, dt, z, out [batch, d]; B, C [batch, g, n]; all contiguous."""
    pid_bg = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = pid_bg // g
    grp = pid_bg % g
    d = g * dg
    offs_c = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_c < dg
    chan = grp * dg + offs_c
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < n
    mask_dn = mask_d[:, None] & mask_n[None, :]
    vec = b.to(tl.int64) * d + chan  # [BLOCK_D] offsets into [batch, d]
    state_off = vec[:, None] * n + offs_n[None, :]

    h = tl.load(state_ptr + state_off, mask=mask_dn, other=0.0)
    x = tl.load(x_ptr + vec, mask=mask_d, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + vec, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt = dt + tl.load(bias_ptr + chan, mask=mask_d, other=0.0)
    if SOFTPLUS:
        dt = softplus(dt)
    A = tl.load(A_ptr + chan[:, None] * n + offs_n[None, :], mask=mask_dn, other=0.0)
    Bv = tl.load(B_ptr + pid_bg.to(tl.int64) * n + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + pid_bg.to(tl.int64) * n + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    h = tl.exp2(dt[:, None] * A * LOG2E) * h + (dt * x)[:, None] * Bv[None, :]
    y = tl.sum(h * Cv[None, :], axis=1)
    if HAS_D:
        y = y + tl.load(D_ptr + chan, mask=mask_d, other=0.0) * x
    if HAS_Z:
        z = tl.load(z_ptr + vec, mask=mask_d, other=0.0).to(tl.float32)
        y = y * z * tl.sigmoid(z)
    tl.store(new_state_ptr + state_off, h, mask=mask_dn)
    tl.store(out_ptr + vec, y.to(out_ptr.dtype.element_ty), mask=mask_d)


def selective_state_update_triton(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=True):
    """One step on Triton; returns (out [batch, d] in x's dtype, new_state [batch, d, n] float32)."""
    tensors = [t for t in (state, x, dt, A, B, C, D, z, dt_bias) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise RuntimeError(
            "selective_state_update: the triton backend is forward-only (streaming inference); "
            "for gradients use backend='chunked' or run under torch.no_grad()"
        )
    batch, d, n = state.shape
    B3 = (B if B.dim() == 3 else B.unsqueeze(1)).contiguous()
    C3 = (C if C.dim() == 3 else C.unsqueeze(1)).contiguous()
    g = B3.shape[1]
    if C3.shape[1] != g:  # different groupings: one group per channel is valid for both
        B3, C3 = B3.repeat_interleave(d // g, dim=1), C3.repeat_interleave(d // C3.shape[1], dim=1)
        g = d
    dg = d // g
    f32 = lambda t: None if t is None else t.to(torch.float32).contiguous()  # noqa: E731
    h = f32(state)
    out = torch.empty(batch, d, device=x.device, dtype=x.dtype)
    new_state = torch.empty(batch, d, n, device=x.device, dtype=torch.float32)
    block_d = 4 if INTERPRET else 16
    grid = (batch * g, triton.cdiv(dg, block_d))
    _state_update_kernel[grid](
        h, x.contiguous(), dt.contiguous(), f32(A), B3, C3,
        f32(D) if D is not None else h,
        z.contiguous() if z is not None else h,
        f32(dt_bias) if dt_bias is not None else h,
        out, new_state,
        g, dg, n,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=dt_softplus,
        BLOCK_D=block_d, BLOCK_N=next_pow2(n, 2),
    )
    return out, new_state
