"""Chunked selective scan with a hand-written backward: the fast PyTorch path (CPU and GPU).

Math and symbols as in :mod:`stlm.kernels.reference.scan`. Per batch element, channel i and state j::

    a_t = exp(dt_t A_ij)                 decay, in (0, 1] for A < 0
    h_t = a_t h_{t-1} + dt_t u_t B_tj    the recurrence (h_{-1} = initial_state)
    y_t = sum_j C_tj h_tj

Why it is fast on a CPU. The reference builds an autograd graph of L small steps and keeps every step's
tensors alive. Here (batch, L) is cut into cache-sized tiles (:mod:`stlm.kernels.chunked.tiles`). For a tile
the step sizes, decays and inputs ``dt u B`` of all its steps come from a few vectorized ops, the only
sequential part is one fused multiply-add per step (``h = a_t h + b_t``, in place), and the readout
``y = <C, h>`` is vectorized again; the state carries from one tile to the next. The backward runs the reverse
scan

    G_t = dL/dh_t = C_t dL/dy_t + a_{t+1} G_{t+1}        (G_{L-1} also gets dL/d final_state)

tile by tile, from the last, and every gradient follows from G by vectorized contractions:

    dL/dC_tj   = sum_i dL/dy_ti h_tij                 dL/dB_tj = sum_i G_tij dt_ti u_ti
    dL/d(dt_t) = sum_j G_tj a_tj h_{t-1,j} A_ij + u_t sum_j G_tj B_tj
    dL/dA_ij   = sum_{batch,t} G_tij a_tij h_{t-1,ij} dt_ti
    dL/du_t    = dt_t sum_j G_tj B_tj (+ D dL/dy_t)   dL/d initial_state = a_0 G_0

Memory. The forward keeps its inputs (views, no copies), the state entering each tile and, with a gate z,
the pre-gate output; step sizes, decays and states are recomputed per tile in the backward (one more
exp2 and sequential loop per tile), so memory beyond the inputs is O(one tile + L batch d). A sequence whose
decays and states are small (``tiles.KEEP_BYTES``: a time chunk of a long window, see
:mod:`stlm.nn.time_chunks`) keeps them instead, and its backward skips that recomputation. Every tile's
temporaries live in a few reused buffers (:func:`~stlm.kernels.chunked.layout.workspace`), because fresh
memory costs page faults where reused memory stays resident and in cache.

Speed on a CPU, measured here (one thread, fp32, 16 sequences x 32 channels x 8 states): the cost is the
vectorized passes over each tile, not the sequential loop (~1.4 us per step). Three choices matter:
channels innermost in the tile layout (see :mod:`~stlm.kernels.chunked.layout`), no transposing copies of the
[batch, d, L] arguments, and the decay computed as ``exp2(dt * A log2(e))``: PyTorch's vectorized exp2 ran
4.5x faster than its exp here, for the same value within float rounding.

The decays are multiplied step by step, never accumulated as exp(cumsum(dt A)) over a chunk: such
cumulative decays under/overflow in float32 once |sum dt A| passes ~87, which a trained model's dt reaches.
State and arithmetic are float32 (float64 for float64 inputs); outputs and gradients take the inputs' dtypes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from stlm.kernels.chunked.layout import (
    acquire,
    channel_major,
    contract_channels,
    groups,
    groups_channel_major,
    new_series,
    outer,
    per_group,
    readout,
    readout_loop,
    release,
    series,
    workspace,
)
from stlm.kernels.chunked.tiles import keep_bytes, reverse_scan_steps, scan_steps, tile_shape, tiles
from stlm.kernels.reference.scan import align_groups

# F.softplus returns x itself above this threshold (PyTorch's default), so its derivative there is exactly 1.
_SOFTPLUS_THRESHOLD = 20.0
_LOG2_E = 1.0 / math.log(2.0)


def _softplus_grad(dt_raw: torch.Tensor) -> torch.Tensor:
    """d softplus(x) / dx = sigmoid(x), exactly 1 where F.softplus is the identity."""
    return torch.sigmoid(dt_raw).masked_fill_(dt_raw > _SOFTPLUS_THRESHOLD, 1.0)


def _step_sizes(delta_c, u_c, bias, softplus: bool):
    """(dt_raw, dt, dt * u) of one tile [nb, T, d] from its raw steps and inputs."""
    dt_raw = delta_c + bias if bias is not None else delta_c
    dt = F.softplus(dt_raw) if softplus else dt_raw
    return dt_raw, dt, dt * u_c


def _tile_states(bufs, dt, x, B_c, A2, h0):
    """Decays ``a`` and states ``H`` [nb, T, g, n, dg] of one tile, written into ``bufs`` = (a, H, their step
    views), from its step sizes dt and inputs x = dt u [nb, T, d], B [nb, T, g, n] and the state h0
    [nb, g, n, dg] entering it. ``A2`` is A * log2(e) as [g, n, dg], so exp2(dt A2) = exp(dt A)."""
    a, H, a_steps, H_steps = bufs
    torch.mul(per_group(dt, a.shape[2]), A2, out=a).exp2_()
    outer(x, B_c, out=H)
    scan_steps(a_steps, H_steps, h0)
    return a, H


def _buffers(ws, shape, kept, full, b0, b1, t0, t1):
    """(a, H, step views of a, step views of H) of one tile: slices of the kept decays and states (buffers 0
    and 1 of ``kept``, each [batch, L, g, n, dg] = ``full``) when the forward keeps them, else tile buffers 0
    and 1 of the workspace ``ws``."""
    if kept is not None:
        rows, cols = slice(b0, b1), slice(t0, t1)
        return (kept.tile(0, full)[rows, cols], kept.tile(1, full)[rows, cols],
                kept.steps(0, full, rows, cols), kept.steps(1, full, rows, cols))
    return ws.tile(0, shape), ws.tile(1, shape), ws.steps(0, shape), ws.steps(1, shape)


def _as_groups(A: torch.Tensor, g: int, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    """A [d, n] -> contiguous [g, n, dg] (times ``scale``)."""
    d, n = A.shape
    A_g = A.to(dtype).view(g, d // g, n).transpose(1, 2)
    return (A_g * scale).contiguous() if scale != 1.0 else A_g.contiguous()


class ChunkedScanFn(torch.autograd.Function):
    """autograd.Function of the chunked scan; returns (out [batch, d, L], final state [batch, d, n])."""

    @staticmethod
    def forward(
        ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus: bool, block: int, chunk: int,
        keep_states: bool,
    ):
        batch, d, L = u.shape
        n = A.shape[1]
        cdtype = torch.float64 if u.dtype == torch.float64 else torch.float32  # state / compute dtype
        ut, deltat = series(u, cdtype), series(delta, cdtype)  # [batch, L, d] views
        zt = series(z, cdtype) if z is not None else None
        Bt, Ct = groups(B, cdtype), groups(C, cdtype)  # [batch, L, g, n] views
        g = Bt.shape[2]
        dg = d // g
        A2 = _as_groups(A, g, cdtype, _LOG2_E)
        bias = delta_bias.to(cdtype) if delta_bias is not None else None
        Dc = D.to(cdtype) if D is not None else None
        h_init = (
            initial_state.to(cdtype).reshape(batch, g, dg, n).transpose(2, 3)
            if initial_state is not None
            else u.new_zeros(batch, g, n, dg, dtype=cdtype)
        )
        h_final = h_init.clone()  # stays h_init when L == 0
        out = new_series(batch, L, d, ut)
        y_pre = new_series(batch, L, d, ut) if zt is not None else None
        starts = {}  # the state entering each tile: all the backward needs to recompute the tile
        # Short sequences (a time chunk of a long window) keep their decays and states for the backward, in
        # pooled memory held until the backward releases it.
        full = (batch, L, g, n, dg)
        kept = acquire(2, batch * L * d * n, ut, kind="kept") if keep_states else None
        tile_numel = min(block, batch) * min(chunk, max(L, 1)) * d * n
        h = h_init
        with workspace(0 if kept is not None else 2, tile_numel, ut) as ws:
            for b0, b1, t0, t1 in tiles(batch, L, block, chunk):
                h = h_init[b0:b1] if t0 == 0 else h  # tiles run in time order within each batch block
                starts[b0, t0] = h
                shape = (b1 - b0, t1 - t0, g, n, dg)
                u_c = ut[b0:b1, t0:t1]
                _, dt, x = _step_sizes(deltat[b0:b1, t0:t1], u_c, bias, delta_softplus)
                a, H = _tile_states(_buffers(ws, shape, kept, full, b0, b1, t0, t1), dt, x, Bt[b0:b1, t0:t1], A2, h)
                y = readout_loop(H, Ct[b0:b1, t0:t1])
                if Dc is not None:
                    y.addcmul_(u_c, Dc)
                if zt is not None:
                    y_pre[b0:b1, t0:t1] = y
                    torch.mul(y, F.silu(zt[b0:b1, t0:t1]), out=out[b0:b1, t0:t1])
                else:
                    out[b0:b1, t0:t1] = y
                h = H[:, -1].clone()  # a copy: the workspace is overwritten by the next tile
                if t1 == L:
                    h_final[b0:b1] = h
        ctx.save_for_backward(ut, deltat, zt, Bt, Ct, A, D, delta_bias, y_pre)
        ctx.starts = starts  # intermediate tensors (not inputs or outputs): safe to keep on ctx
        ctx.kept = kept
        ctx.meta = (delta_softplus, block, chunk, u.dtype, delta.dtype, B.dim(), B.dtype, C.dim(), C.dtype)
        ctx.dtypes = tuple(None if t is None else t.dtype for t in (z, initial_state))
        ctx.set_materialize_grads(False)
        return channel_major(out, u.dtype), h_final.transpose(2, 3).reshape(batch, d, n)

    @staticmethod
    def backward(ctx, g_out, g_final):
        ut, deltat, zt, Bt, Ct, A, D, delta_bias, y_pre = ctx.saved_tensors
        # The kept decays and states serve one backward; a second one (retain_graph) recomputes them.
        kept, ctx.kept = ctx.kept, None
        try:
            return ChunkedScanFn._backward(ctx, g_out, g_final, ut, deltat, zt, Bt, Ct, A, D, delta_bias, y_pre, kept)
        finally:
            if kept is not None:
                release(kept, ut, kind="kept")

    @staticmethod
    def _backward(ctx, g_out, g_final, ut, deltat, zt, Bt, Ct, A, D, delta_bias, y_pre, kept):
        starts = ctx.starts
        delta_softplus, block, chunk, u_dtype, delta_dtype, B_dim, B_dtype, C_dim, C_dtype = ctx.meta
        z_dtype, init_dtype = ctx.dtypes
        batch, L, d = ut.shape
        n = A.shape[1]
        g = Bt.shape[2]
        dg = d // g
        cdtype = ut.dtype
        gy = series(g_out, cdtype) if g_out is not None else None  # None: the output was not used
        A_g = _as_groups(A, g, cdtype)
        A2 = _as_groups(A, g, cdtype, _LOG2_E)
        bias = delta_bias.to(cdtype) if delta_bias is not None else None
        Dc = D.to(cdtype) if D is not None else None
        need_B, need_C = ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        need_z = zt is not None and ctx.needs_input_grad[6]
        g_u, g_delta = new_series(batch, L, d, ut), new_series(batch, L, d, ut)
        g_z = new_series(batch, L, d, ut) if need_z else None
        g_B = ut.new_empty(batch, L, g, n) if need_B else None
        g_C = ut.new_empty(batch, L, g, n) if need_C else None
        g_A = torch.zeros(g, n, dg, dtype=cdtype, device=ut.device)
        g_D = torch.zeros(d, dtype=cdtype, device=ut.device) if D is not None else None
        g_final = g_final.to(cdtype).reshape(batch, g, dg, n).transpose(2, 3) if g_final is not None else None
        g_init = ut.new_zeros(batch, g, n, dg)
        carry = None
        full = (batch, L, g, n, dg)
        base = 0 if kept is not None else 2  # tile buffers: [a, H,] G, a product
        with workspace(base + 2, min(block, batch) * min(chunk, max(L, 1)) * d * n, ut) as ws:
            for b0, b1, t0, t1 in tiles(batch, L, block, chunk, reverse=True):
                if t1 == L:  # dL/dh of the tile's last state, flowing in from later steps
                    carry = g_final[b0:b1] if g_final is not None else None
                shape = (b1 - b0, t1 - t0, g, n, dg)
                u_c, B_c, C_c = ut[b0:b1, t0:t1], Bt[b0:b1, t0:t1], Ct[b0:b1, t0:t1]
                dt_raw, dt, x = _step_sizes(deltat[b0:b1, t0:t1], u_c, bias, delta_softplus)
                h0 = starts[b0, t0]
                bufs = _buffers(ws, shape, kept, full, b0, b1, t0, t1)
                if kept is None:
                    _tile_states(bufs, dt, x, B_c, A2, h0)
                a, H, a_steps, _ = bufs
                G = ws.tile(base, shape)
                if gy is not None:
                    gy_c = gy[b0:b1, t0:t1]
                    if zt is not None:
                        z_c = zt[b0:b1, t0:t1]
                        sz = torch.sigmoid(z_c)
                        if need_z:  # out = y_pre * silu(z): d silu(z)/dz = sigmoid(z) (1 + z (1 - sigmoid(z)))
                            g_z[b0:b1, t0:t1] = gy_c * y_pre[b0:b1, t0:t1] * sz * (1 + z_c * (1 - sz))
                        gy_c = gy_c * (z_c * sz)  # dL/dy (before the gate)
                    outer(gy_c, C_c, out=G)
                    if need_C:
                        g_C[b0:b1, t0:t1] = contract_channels(H, gy_c)
                    if Dc is not None:
                        g_D += (gy_c * u_c).sum((0, 1))
                else:
                    G.zero_()
                    if need_z:
                        g_z[b0:b1, t0:t1] = 0
                    if need_C:
                        g_C[b0:b1, t0:t1] = 0
                reverse_scan_steps(a_steps, ws.steps(base, shape), carry)  # G_t = dL/dh_t
                carry = a[:, 0] * G[:, 0]
                if need_B:
                    g_B[b0:b1, t0:t1] = contract_channels(G, x)
                tmp = ws.tile(base + 1, shape)
                g_x = readout(G, B_c.unsqueeze(-1), tmp)  # dL/d(dt_t u_t)
                # M = G_t a_t h_{t-1}: the gradient w.r.t. the exponent dt_t A (in place: G and a are done).
                M = G.mul_(a)
                M[:, 1:].mul_(H[:, :-1])
                M[:, 0].mul_(h0)
                g_dt = readout(M, A_g, tmp).addcmul_(g_x, u_c)
                g_A += M.mul_(per_group(dt, g)).sum((0, 1))
                g_u_c = g_x.mul_(dt)
                if gy is not None and Dc is not None:
                    g_u_c.addcmul_(gy_c, Dc)
                g_u[b0:b1, t0:t1] = g_u_c
                if delta_softplus:
                    g_dt.mul_(_softplus_grad(dt_raw))
                g_delta[b0:b1, t0:t1] = g_dt
                if t0 == 0:
                    g_init[b0:b1] = carry
        g_bias = g_delta.sum((0, 1)).to(delta_bias.dtype) if delta_bias is not None else None
        if L == 0 and g_final is not None:  # the final state is the initial state
            g_init = g_final
        g_init = g_init.transpose(2, 3).reshape(batch, d, n).to(init_dtype) if init_dtype is not None else None
        return (
            channel_major(g_u, u_dtype),
            channel_major(g_delta, delta_dtype),
            g_A.transpose(1, 2).reshape(d, n).to(A.dtype),
            groups_channel_major(g_B, B_dim, B_dtype) if need_B else None,
            groups_channel_major(g_C, C_dim, C_dtype) if need_C else None,
            g_D.to(D.dtype) if D is not None else None,
            channel_major(g_z, z_dtype) if need_z else None,
            g_bias,
            g_init,
            None,
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
    and ragged last ones. The output may be a strided view (of [batch, L, d] memory).
    """
    batch, d, L = u.shape
    itemsize = 8 if u.dtype == torch.float64 else 4
    if chunk is not None or block is not None:
        block, chunk = batch if block is None else block, L if chunk is None else chunk
    else:
        block, chunk = tile_shape(batch, d, A.shape[1], L, u.device, itemsize)
    B, C = align_groups(B, C, d)
    # Keep the decays and states for the backward (instead of recomputing them there) when they are small.
    keep_states = (
        torch.is_grad_enabled()
        and any(t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias, initial_state))
        and 2 * batch * L * d * A.shape[1] * itemsize <= keep_bytes(u.device)
    )
    out, final_state = ChunkedScanFn.apply(
        u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, max(1, int(block)), max(1, int(chunk)),
        keep_states,
    )
    return (out, final_state) if return_final_state else out
