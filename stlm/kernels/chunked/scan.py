"""Chunked selective scan with a hand-written backward: the fast PyTorch path (CPU and GPU).

Math and symbols as in :mod:`stlm.kernels.reference.scan`. Per batch element, channel i and state j::

    a_t = exp(dt_t A_ij)                 decay, in (0, 1] for A < 0
    h_t = a_t h_{t-1} + dt_t u_t B_tj    the recurrence (h_{-1} = initial_state)
    y_t = sum_j C_tj h_tj

Why it is fast on a CPU. The reference builds an autograd graph of L small steps and keeps every step's
tensors alive. Here (batch, L) is cut into cache-sized tiles (:mod:`stlm.kernels.chunked.tiles`). For a tile
the decays ``a`` and inputs ``dt u B`` of all its steps come from a few vectorized ops, the only sequential
part is one fused multiply-add per step (``h = a_t h + b_t``, in place), and the readout ``y = <C, h>`` is
vectorized again; the state carries from one tile to the next. The backward runs the reverse scan

    G_t = dL/dh_t = C_t dL/dy_t + a_{t+1} G_{t+1}        (G_{L-1} also gets dL/d final_state)

tile by tile, from the last, and every gradient follows from G by vectorized contractions:

    dL/dC_tj   = sum_i dL/dy_ti h_tij                 dL/dB_tj = sum_i G_tij dt_ti u_ti
    dL/d(dt_t) = sum_j G_tj a_tj h_{t-1,j} A_ij + u_t sum_j G_tj B_tj
    dL/dA_ij   = sum_{batch,t} G_tij a_tij h_{t-1,ij} dt_ti
    dL/du_t    = dt_t sum_j G_tj B_tj (+ D dL/dy_t)   dL/d initial_state = a_0 G_0

The forward keeps only the state entering each tile; the backward recomputes the tile's decays and states
(one more exp and sequential loop per tile), so memory beyond the inputs is O(one tile + L batch d). Every
tile's temporaries live in a few reused buffers (:class:`~stlm.kernels.chunked.layout.Workspace`): measured
here, keeping every tile's decays and states instead (two [L, batch, d, n] tensors) was no faster, because
fresh memory costs page faults where reused memory stays resident and in cache.

The decays are multiplied step by step, never accumulated as exp(cumsum(dt A)) over a chunk: such
cumulative decays under/overflow in float32 once |sum dt A| passes ~87, which a trained model's dt reaches.
State and arithmetic are float32 (float64 for float64 inputs); outputs and gradients take the inputs' dtypes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stlm.kernels.chunked.layout import (
    Workspace,
    channel_major,
    contract_channels,
    groups_channel_major,
    groups_time_major,
    outer,
    per_group,
    sum_of_product,
    time_major,
)
from stlm.kernels.chunked.tiles import reverse_scan_tile, scan_tile, tile_shape, tiles
from stlm.kernels.reference.scan import align_groups

# F.softplus returns x itself above this threshold (PyTorch's default), so its derivative there is exactly 1.
_SOFTPLUS_THRESHOLD = 20.0


def _softplus_grad(dt_raw: torch.Tensor) -> torch.Tensor:
    """d softplus(x) / dx = sigmoid(x), exactly 1 where F.softplus is the identity."""
    return torch.sigmoid(dt_raw).masked_fill_(dt_raw > _SOFTPLUS_THRESHOLD, 1.0)


def _tile_states(dt_c, x_c, B_c, A_g, h0, a, H):
    """Decays ``a`` and states ``H`` [T, nb, g, dg, n] of one tile (written into the given buffers) from its
    inputs dt_c, x_c [T, nb, d], B_c [T, nb, g, n] and the state h0 [nb, g, dg, n] entering it."""
    g = A_g.shape[0]
    torch.mul(per_group(dt_c, g).unsqueeze(-1), A_g, out=a).exp_()
    return a, scan_tile(a, outer(x_c, B_c, out=H), h0)


class ChunkedScanFn(torch.autograd.Function):
    """autograd.Function of the chunked scan; returns (out [batch, d, L], final state [batch, d, n])."""

    @staticmethod
    def forward(
        ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus: bool, block: int, chunk: int
    ):
        batch, d, L = u.shape
        n = A.shape[1]
        cdtype = torch.float64 if u.dtype == torch.float64 else torch.float32  # state / compute dtype
        ut = time_major(u, cdtype)  # [L, batch, d]
        dt_raw = time_major(delta, cdtype)
        if delta_bias is not None:
            dt_raw = dt_raw + delta_bias.to(cdtype)
        dt = F.softplus(dt_raw) if delta_softplus else dt_raw
        x = dt * ut  # the input scaled by its step size, dt_t u_t
        Bt, Ct = groups_time_major(B, cdtype), groups_time_major(C, cdtype)  # [L, batch, g, n]
        g = Bt.shape[2]
        A_g = A.to(cdtype).view(g, d // g, n)
        h_init = (
            initial_state.to(cdtype).reshape(batch, g, d // g, n)
            if initial_state is not None
            else u.new_zeros(batch, g, d // g, n, dtype=cdtype)
        )
        h_final = h_init.clone()  # stays h_init when L == 0
        y = torch.empty(L, batch, d, dtype=cdtype, device=u.device)
        ws = Workspace(3, min(block, batch) * min(chunk, max(L, 1)) * d * n, ut)
        starts = {}  # the state entering each tile: all the backward needs to recompute the tile
        for b0, b1, t0, t1 in tiles(batch, L, block, chunk):
            h = h_init[b0:b1] if t0 == 0 else h
            starts[b0, t0] = h
            shape = (t1 - t0, b1 - b0, g, d // g, n)
            a, H = _tile_states(
                dt[t0:t1, b0:b1], x[t0:t1, b0:b1], Bt[t0:t1, b0:b1], A_g, h, ws.tile(0, shape), ws.tile(1, shape)
            )
            y[t0:t1, b0:b1] = sum_of_product(H, Ct[t0:t1, b0:b1].unsqueeze(3), ws.tile(2, shape), -1).view(
                t1 - t0, b1 - b0, d)
            h = H[-1].clone()  # a copy: the workspace is overwritten by the next tile
            if t1 == L:
                h_final[b0:b1] = h
        if D is not None:
            y = y + D.to(cdtype) * ut
        out = y * F.silu(time_major(z, cdtype)) if z is not None else y
        ctx.save_for_backward(ut, dt_raw, dt, x, Bt, Ct, A, D, z, y if z is not None else None)
        ctx.starts = starts  # intermediate tensors (not inputs or outputs): safe to keep on ctx
        ctx.meta = (delta_softplus, block, chunk, u.dtype, delta.dtype, B.dim(), B.dtype, C.dim(), C.dtype)
        ctx.dtypes = tuple(None if t is None else t.dtype for t in (delta_bias, initial_state))
        ctx.set_materialize_grads(False)
        return channel_major(out, u.dtype), h_final.reshape(batch, d, n)

    @staticmethod
    def backward(ctx, g_out, g_final):
        ut, dt_raw, dt, x, Bt, Ct, A, D, z, y_pre = ctx.saved_tensors
        starts = ctx.starts
        delta_softplus, block, chunk, u_dtype, delta_dtype, B_dim, B_dtype, C_dim, C_dtype = ctx.meta
        bias_dtype, init_dtype = ctx.dtypes
        L, batch, d = ut.shape
        n = A.shape[1]
        g = Bt.shape[2]
        cdtype = ut.dtype
        gy = time_major(g_out, cdtype) if g_out is not None else ut.new_zeros(L, batch, d)
        g_z = None
        if z is not None:
            zt = time_major(z, cdtype)
            sz = torch.sigmoid(zt)
            # out = y_pre * silu(z): d silu(z)/dz = sigmoid(z) (1 + z (1 - sigmoid(z)))
            g_z = channel_major(gy * y_pre * sz * (1 + zt * (1 - sz)), z.dtype)
            gy = gy * (zt * sz)  # dL/dy (before the gate)
        g_D = (gy * ut).sum((0, 1)).to(D.dtype) if D is not None else None
        g_u = gy * D.to(cdtype) if D is not None else torch.zeros_like(ut)
        A_g = A.to(cdtype).view(g, d // g, n)
        g_dt = torch.empty_like(dt)
        g_A = torch.zeros(g, d // g, n, dtype=cdtype, device=ut.device)
        need_B, need_C = ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        g_B = torch.empty_like(Bt) if need_B else None
        g_C = torch.empty_like(Ct) if need_C else None
        g_final = g_final.to(cdtype).reshape(batch, g, d // g, n) if g_final is not None else None
        g_init = ut.new_zeros(batch, g, d // g, n)
        ws = Workspace(4, min(block, batch) * min(chunk, max(L, 1)) * d * n, ut)
        for b0, b1, t0, t1 in tiles(batch, L, block, chunk, reverse=True):
            if t1 == L:  # dL/dh of the tile's last state, flowing in from later steps
                carry = g_final[b0:b1] if g_final is not None else ut.new_zeros(b1 - b0, g, d // g, n)
            T, nb = t1 - t0, b1 - b0
            dt_c, u_c, x_c, gy_c = dt[t0:t1, b0:b1], ut[t0:t1, b0:b1], x[t0:t1, b0:b1], gy[t0:t1, b0:b1]
            B_c, C_c = Bt[t0:t1, b0:b1], Ct[t0:t1, b0:b1]
            shape = (T, nb, g, d // g, n)
            h0 = starts[b0, t0]
            a, H = _tile_states(dt_c, x_c, B_c, A_g, h0, ws.tile(0, shape), ws.tile(1, shape))
            G = reverse_scan_tile(a, outer(gy_c, C_c, out=ws.tile(2, shape)), carry)  # dL/dh_t
            carry = a[0] * G[0]
            tmp = ws.tile(3, shape)
            if need_C:
                g_C[t0:t1, b0:b1] = contract_channels(gy_c, H)
            if need_B:
                g_B[t0:t1, b0:b1] = contract_channels(x_c, G)
            g_x = sum_of_product(G, B_c.unsqueeze(3), tmp, -1).view(T, nb, d)  # dL/d(dt_t u_t)
            # M = G_t a_t h_{t-1}: the gradient w.r.t. the exponent dt_t A (in place: G and a are done).
            M = G.mul_(a)
            M[1:].mul_(H[:-1])
            M[0].mul_(h0)
            g_dt[t0:t1, b0:b1] = sum_of_product(M, A_g, tmp, -1).view(T, nb, d) + g_x * u_c
            g_A += sum_of_product(M, per_group(dt_c, g).unsqueeze(-1), tmp, (0, 1))
            g_u[t0:t1, b0:b1] += g_x * dt_c
            if t0 == 0:
                g_init[b0:b1] = carry
        g_delta = g_dt * _softplus_grad(dt_raw) if delta_softplus else g_dt
        g_bias = g_delta.sum((0, 1)).to(bias_dtype) if bias_dtype is not None else None
        if L == 0 and g_final is not None:  # the final state is the initial state
            g_init = g_final
        g_init = g_init.reshape(batch, d, n).to(init_dtype) if init_dtype is not None else None
        return (
            channel_major(g_u, u_dtype),
            channel_major(g_delta, delta_dtype),
            g_A.view(d, n).to(A.dtype),
            groups_channel_major(g_B, B_dim, B_dtype) if need_B else None,
            groups_channel_major(g_C, C_dim, C_dtype) if need_C else None,
            g_D,
            g_z,
            g_bias,
            g_init,
            None,
            None,
            None,
        )


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    chunk: int | None = None,
    block: int | None = None,
):
    """Chunked selective scan; same arguments and result as :func:`~stlm.kernels.reference.selective_scan_ref`.

    Tiles default to :func:`~stlm.kernels.chunked.tiles.tile_shape` for the tensors' device. ``chunk`` (time
    steps) and ``block`` (batch elements) force a tile shape: tests use small values to cover several tiles
    and ragged last ones.
    """
    batch, d, L = u.shape
    itemsize = 8 if u.dtype == torch.float64 else 4
    if chunk is not None or block is not None:
        block, chunk = batch if block is None else block, L if chunk is None else chunk
    else:
        block, chunk = tile_shape(batch, d, A.shape[1], L, u.device, itemsize)
    B, C = align_groups(B, C, d)
    out, final_state = ChunkedScanFn.apply(
        u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, max(1, int(block)), max(1, int(chunk))
    )
    return (out, final_state) if return_final_state else out
