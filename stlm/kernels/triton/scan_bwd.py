"""Triton backward kernel of the selective scan and its launcher.

Each program walks its chunks from the last to the first. For a chunk it recomputes the states h_t from the
saved chunk-start state (one forward associative scan), then runs the reverse scan of the state gradient

    G_t = dL/dh_t = C_t dL/dy_t + a_{t+1} G_{t+1}        (carried from the next chunk; dL/d final_state at the end)

as a reverse ``tl.associative_scan`` whose decays a_{t+1} are recomputed from ``delta`` one step ahead, and
forms every gradient of the chunk from G and h (formulas in :mod:`stlm.kernels.chunked.scan`), using
a_t h_{t-1} = h_t - b_t (its rounding error is float32's relative to |h_t| + |b_t|; an exact product would
need the states shifted by one step, which a register tile cannot do cheaply). Gradients shared across
programs (A, B, C, D, delta_bias) are accumulated in float32 with atomic adds, so their last bits depend on
the order programs finish.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from stlm.kernels.triton.runtime import next_pow2
from stlm.kernels.triton.scan_common import LOG2E, linear_combine, scan_configs, softplus, softplus_grad


@triton.autotune(
    configs=scan_configs(backward=True),
    key=["dg", "n", "HAS_Z"],
    reset_to_zero=["dA_ptr", "dB_ptr", "dC_ptr", "dD_ptr", "dbias_ptr"],  # atomic accumulators
)
@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, ckpt_ptr, dout_ptr, dhT_ptr,  # inputs
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dh0_ptr,  # gradients
    g, dg, n, L, n_chunks,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, NEED_DH0: tl.constexpr,
    HAS_DHT: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """Shapes as in the forward; dA [d, n], dB, dC [batch, g, n, L], dD, dbias [d] are float32 and zeroed."""
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
    offs_l = tl.arange(0, BLOCK_L)

    row = (b.to(tl.int64) * d + chan) * L
    bc_base = pid_bg.to(tl.int64) * n * L
    state_off = (b.to(tl.int64) * d + chan)[:, None] * n + offs_n[None, :]
    ckpt_off = (b.to(tl.int64) * n_chunks * d + chan)[:, None] * n + offs_n[None, :]

    A = tl.load(A_ptr + chan[:, None] * n + offs_n[None, :], mask=mask_dn, other=0.0)
    if HAS_D:
        Dv = tl.load(D_ptr + chan, mask=mask_d, other=0.0)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + chan, mask=mask_d, other=0.0)
    if HAS_DHT:
        G_next = tl.load(dhT_ptr + state_off, mask=mask_dn, other=0.0)  # G of the step after the chunk
    else:
        G_next = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    is_first = (offs_l == 0)[None, :]

    for cc in range(0, n_chunks):
        c = n_chunks - 1 - cc
        t = c * BLOCK_L + offs_l
        mask_l = t < L
        m2 = mask_d[:, None] & mask_l[None, :]
        ptr2 = row[:, None] + t[None, :]
        h0 = tl.load(ckpt_ptr + ckpt_off + c * d * n, mask=mask_dn, other=0.0)
        u = tl.load(u_ptr + ptr2, mask=m2, other=0.0).to(tl.float32)
        dt_raw = tl.load(delta_ptr + ptr2, mask=m2, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt_raw = dt_raw + bias[:, None]
        dt = dt_raw
        if SOFTPLUS:
            dt = softplus(dt_raw)
        dt = tl.where(m2, dt, 0.0)
        x = dt * u
        # The decays one step ahead, a_{t+1} (1 past the end of the sequence), for the reverse scan.
        t_next = t + 1
        m_next = mask_d[:, None] & (t_next < L)[None, :]
        dt_next = tl.load(delta_ptr + row[:, None] + t_next[None, :], mask=m_next, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt_next = dt_next + bias[:, None]
        if SOFTPLUS:
            dt_next = softplus(dt_next)
        dt_next = tl.where(m_next, dt_next, 0.0)
        gy = tl.load(dout_ptr + ptr2, mask=m2, other=0.0).to(tl.float32)  # dL/d out
        if HAS_Z:
            z = tl.load(z_ptr + ptr2, mask=m2, other=0.0).to(tl.float32)
            sz = tl.sigmoid(z)
            gy = gy * z * sz  # dL/dy, before the gate

        y = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
        g_x = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)  # dL/d(dt u)
        g_dta = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)  # dL/d(dt) through the decays
        for j in range(0, n):  # one state at a time, as in the forward
            sel = offs_n[None, :] == j
            A_j = tl.sum(tl.where(sel, A, 0.0), axis=1)
            mask_j = mask_l
            B_j = tl.load(B_ptr + bc_base + j * L + t, mask=mask_j, other=0.0).to(tl.float32)
            C_j = tl.load(C_ptr + bc_base + j * L + t, mask=mask_j, other=0.0).to(tl.float32)
            # Recompute the states of the chunk from the saved chunk-start state.
            a = tl.exp2(dt * (A_j * LOG2E)[:, None])
            bx = x * B_j[None, :]
            a_cum, b_cum = tl.associative_scan((a, bx), axis=1, combine_fn=linear_combine)
            hs = a_cum * tl.sum(tl.where(sel, h0, 0.0), axis=1)[:, None] + b_cum
            if HAS_Z:
                y += hs * C_j[None, :]
            tl.atomic_add(dC_ptr + bc_base + j * L + t, tl.sum(gy * hs, axis=0), mask=mask_j)
            ah = hs - bx  # a_t h_{t-1}
            # Reverse scan: G_t = C_t dL/dy_t + a_{t+1} G_{t+1}, carried in from the next chunk.
            a_next = tl.exp2(dt_next * (A_j * LOG2E)[:, None])
            g_cum, gb_cum = tl.associative_scan(
                (a_next, gy * C_j[None, :]), axis=1, combine_fn=linear_combine, reverse=True
            )
            G = g_cum * tl.sum(tl.where(sel, G_next, 0.0), axis=1)[:, None] + gb_cum
            G_next = tl.where(sel, tl.sum(tl.where(is_first, G, 0.0), axis=1)[:, None], G_next)
            g_x += G * B_j[None, :]
            tl.atomic_add(dB_ptr + bc_base + j * L + t, tl.sum(G * x, axis=0), mask=mask_j)
            M = G * ah  # the gradient w.r.t. the exponent dt_t A_j
            g_dta += M * A_j[:, None]
            dA_acc += tl.where(sel, tl.sum(M * dt, axis=1)[:, None], 0.0)

        if HAS_Z:
            if HAS_D:
                y = y + Dv[:, None] * u
            dout = tl.load(dout_ptr + ptr2, mask=m2, other=0.0).to(tl.float32)
            tl.store(dz_ptr + ptr2, (dout * y * sz * (1.0 + z * (1.0 - sz))).to(dz_ptr.dtype.element_ty), mask=m2)
        du = g_x * dt
        if HAS_D:
            du = du + gy * Dv[:, None]
            dD_acc += tl.sum(gy * u, axis=1)
        g_delta = g_dta + g_x * u
        if SOFTPLUS:
            g_delta = g_delta * softplus_grad(dt_raw)
        g_delta = tl.where(m2, g_delta, 0.0)
        dbias_acc += tl.sum(g_delta, axis=1)
        tl.store(du_ptr + ptr2, du.to(du_ptr.dtype.element_ty), mask=m2)
        tl.store(ddelta_ptr + ptr2, g_delta.to(ddelta_ptr.dtype.element_ty), mask=m2)

    tl.atomic_add(dA_ptr + chan[:, None] * n + offs_n[None, :], dA_acc, mask=mask_dn)
    if HAS_D:
        tl.atomic_add(dD_ptr + chan, dD_acc, mask=mask_d)
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + chan, dbias_acc, mask=mask_d)
    if NEED_DH0:  # dL/dh_{-1} = a_0 G_0, with a_0 = exp(dt_0 A) from the first step's delta
        has_step = mask_d & (offs_c * 0 < L)  # a block-shaped mask: no step to read when L == 0
        dt0 = tl.load(delta_ptr + row, mask=has_step, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt0 = dt0 + bias
        if SOFTPLUS:
            dt0 = softplus(dt0)
        dt0 = tl.where(has_step, dt0, 0.0)
        tl.store(dh0_ptr + state_off, tl.exp2(dt0[:, None] * A * LOG2E) * G_next, mask=mask_dn)


def _scan_bwd(u, delta, A, B, C, D, z, delta_bias, ckpt, dout, dhT, delta_softplus: bool, need_dh0: bool, block_l: int):
    """Launch the backward on the forward's prepared tensors.

    Returns (du, ddelta, dz or None in the inputs' dtypes; dA [d, n], dB, dC [batch, g, n, L], dD, dbias [d]
    or None, dh0 [batch, d, n] or None, all float32).
    """
    batch, d, L = u.shape
    g, n = B.shape[1], B.shape[2]
    dg = d // g
    n_chunks = ckpt.shape[1]
    f32 = dict(device=u.device, dtype=torch.float32)
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else None
    dA = torch.zeros(d, n, **f32)
    dB = torch.zeros(batch, g, n, L, **f32)
    dC = torch.zeros(batch, g, n, L, **f32)
    dD = torch.zeros(d, **f32)
    dbias = torch.zeros(d, **f32)
    dh0 = torch.empty(batch, d, n, **f32) if need_dh0 else dA
    if L == 0:  # the final state is the initial state; nothing else gets a gradient
        if need_dh0 and dhT is not None:
            dh0.copy_(dhT)
        elif need_dh0:
            dh0.zero_()
        return (du, ddelta, dz, dA, dB, dC, dD if D is not None else None,
                dbias if delta_bias is not None else None, dh0 if need_dh0 else None)
    dummy = dA  # never read: the matching flag is False
    grid = lambda meta: (batch * g, triton.cdiv(dg, meta["BLOCK_D"]))  # noqa: E731
    _scan_bwd_kernel[grid](
        u, delta, A, B, C,
        D if D is not None else dummy,
        z if z is not None else dummy,
        delta_bias if delta_bias is not None else dummy,
        ckpt, dout,
        dhT if dhT is not None else dummy,
        du, ddelta,
        dz if dz is not None else dummy,
        dA, dB, dC, dD, dbias, dh0,
        g, dg, n, L, n_chunks,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, NEED_DH0=need_dh0,
        HAS_DHT=dhT is not None, SOFTPLUS=delta_softplus,
        BLOCK_N=next_pow2(n, 2), BLOCK_L=block_l,
    )
    return (
        du, ddelta, dz, dA, dB, dC,
        dD if D is not None else None,
        dbias if delta_bias is not None else None,
        dh0 if need_dh0 else None,
    )
