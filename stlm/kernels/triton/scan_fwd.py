"""Triton forward kernel of the selective scan and its launcher.

Math and symbols: :mod:`stlm.kernels.reference.scan`; tiling: :mod:`stlm.kernels.triton.scan_common`.
Besides ``out`` and the final state, the forward saves the state entering every chunk (``ckpt``), so that the
backward recomputes each chunk's states instead of storing all L of them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from stlm.kernels.triton.runtime import INTERPRET, next_pow2
from stlm.kernels.triton.scan_common import (
    BLOCK_L_GPU,
    BLOCK_L_INTERPRET,
    LOG2E,
    linear_combine,
    scan_configs,
    softplus,
)


@triton.autotune(configs=scan_configs(), key=["dg", "n", "HAS_Z", "SAVE_CKPT"])
@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,  # inputs
    out_ptr, hT_ptr, ckpt_ptr,  # outputs
    g, dg, n, L, n_chunks,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    SOFTPLUS: tl.constexpr, SAVE_CKPT: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """u, delta, z, out [batch, d, L]; A [d, n]; B, C [batch, g, n, L]; D, bias [d]; h0, hT [batch, d, n];
    ckpt [batch, n_chunks, d, n]. All contiguous; A, D, bias, states and ckpt float32."""
    pid_bg = tl.program_id(0)  # batch * g + group
    pid_d = tl.program_id(1)
    b = pid_bg // g
    grp = pid_bg % g
    d = g * dg
    offs_c = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # channel inside the group
    mask_d = offs_c < dg
    chan = grp * dg + offs_c  # channel in [0, d)
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < n
    mask_dn = mask_d[:, None] & mask_n[None, :]
    offs_l = tl.arange(0, BLOCK_L)

    row = (b.to(tl.int64) * d + chan) * L  # [BLOCK_D] start of each channel's series
    bc_base = pid_bg.to(tl.int64) * n * L  # start of this (batch, group)'s B and C, [n, L]
    state_off = (b.to(tl.int64) * d + chan)[:, None] * n + offs_n[None, :]  # [BLOCK_D, BLOCK_N]
    ckpt_off = (b.to(tl.int64) * n_chunks * d + chan)[:, None] * n + offs_n[None, :]

    A2 = tl.load(A_ptr + chan[:, None] * n + offs_n[None, :], mask=mask_dn, other=0.0) * LOG2E
    if HAS_D:
        Dv = tl.load(D_ptr + chan, mask=mask_d, other=0.0)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + chan, mask=mask_d, other=0.0)
    if HAS_H0:
        h = tl.load(h0_ptr + state_off, mask=mask_dn, other=0.0)
    else:
        h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    is_last = (offs_l == BLOCK_L - 1)[None, :]

    for c in range(0, n_chunks):
        if SAVE_CKPT:
            tl.store(ckpt_ptr + ckpt_off + c * d * n, h, mask=mask_dn)
        t = c * BLOCK_L + offs_l
        mask_l = t < L
        m2 = mask_d[:, None] & mask_l[None, :]
        ptr2 = row[:, None] + t[None, :]
        u = tl.load(u_ptr + ptr2, mask=m2, other=0.0).to(tl.float32)
        dt = tl.load(delta_ptr + ptr2, mask=m2, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt = dt + bias[:, None]
        if SOFTPLUS:
            dt = softplus(dt)
        dt = tl.where(m2, dt, 0.0)  # padding: decay exp(0) = 1 and input 0
        x = dt * u
        y = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
        # One state at a time: [BLOCK_D, BLOCK_L] tiles keep the registers per thread low.
        for j in range(0, n):
            sel = offs_n[None, :] == j
            A2_j = tl.sum(tl.where(sel, A2, 0.0), axis=1)  # column j of A, [BLOCK_D]
            h_j = tl.sum(tl.where(sel, h, 0.0), axis=1)
            mask_j = mask_l
            B_j = tl.load(B_ptr + bc_base + j * L + t, mask=mask_j, other=0.0).to(tl.float32)  # [BLOCK_L]
            C_j = tl.load(C_ptr + bc_base + j * L + t, mask=mask_j, other=0.0).to(tl.float32)
            a = tl.exp2(dt * A2_j[:, None])  # [BLOCK_D, BLOCK_L]
            a_cum, b_cum = tl.associative_scan((a, x * B_j[None, :]), axis=1, combine_fn=linear_combine)
            hs = a_cum * h_j[:, None] + b_cum  # h_t of state j for every t of the chunk
            y += hs * C_j[None, :]
            h_last = tl.sum(tl.where(is_last, hs, 0.0), axis=1)  # padding carried h to the last column
            h = tl.where(sel, h_last[:, None], h)

        if HAS_D:
            y = y + Dv[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + ptr2, mask=m2, other=0.0).to(tl.float32)
            y = y * z * tl.sigmoid(z)
        tl.store(out_ptr + ptr2, y.to(out_ptr.dtype.element_ty), mask=m2)
    tl.store(hT_ptr + state_off, h, mask=mask_dn)


def scan_block_l() -> int:
    return BLOCK_L_INTERPRET if INTERPRET else BLOCK_L_GPU


def _scan_fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus: bool, save_ckpt: bool):
    """Launch the forward on prepared tensors (see :func:`stlm.kernels.triton.scan.prepare`).

    Returns (out [batch, d, L] in u's dtype, final state [batch, d, n] float32,
    ckpt [batch, n_chunks, d, n] float32 or None).
    """
    batch, d, L = u.shape
    g, n = B.shape[1], B.shape[2]
    dg = d // g
    block_l = scan_block_l()
    n_chunks = triton.cdiv(L, block_l)
    out = torch.empty_like(u)
    hT = torch.empty(batch, d, n, device=u.device, dtype=torch.float32)
    ckpt = torch.empty(batch, n_chunks, d, n, device=u.device, dtype=torch.float32) if save_ckpt else hT
    if L == 0:  # nothing to scan (and an empty tensor has no device address to hand a kernel)
        if initial_state is not None:
            hT.copy_(initial_state)
        else:
            hT.zero_()
        return out, hT, (ckpt if save_ckpt else None)
    dummy = hT  # stands for absent optional tensors; never read (the HAS_* flags are False)
    grid = lambda meta: (batch * g, triton.cdiv(dg, meta["BLOCK_D"]))  # noqa: E731
    _scan_fwd_kernel[grid](
        u, delta, A, B, C,
        D if D is not None else dummy,
        z if z is not None else dummy,
        delta_bias if delta_bias is not None else dummy,
        initial_state if initial_state is not None else dummy,
        out, hT, ckpt,
        g, dg, n, L, n_chunks,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        HAS_H0=initial_state is not None, SOFTPLUS=delta_softplus, SAVE_CKPT=save_ckpt,
        BLOCK_N=next_pow2(n, 2), BLOCK_L=block_l,
    )
    return out, hT, (ckpt if save_ckpt else None)
