"""Triton backward kernels of flash-style attention and their launcher.

With P = softmax(S) recomputed tile by tile from the saved row statistic lse, and Delta_i = sum_d dO_id O_id
(computed once by PyTorch, [batch * H, Nq]):

    dV = P^T dO        dP = dO V^T        dS = P * (dP - Delta)        dQ = dS K scale        dK = dS^T Q scale

Two kernels, so that neither needs atomics for dQ/dK/dV: ``_attn_bwd_dkdv_kernel`` owns a key tile and
streams the queries; ``_attn_bwd_dq_kernel`` owns a query tile and streams the keys. The gradient of an
additive bias is dS itself, summed over the dimensions the bias broadcasts along; when the bias needs a
gradient, the dK/dV kernel (which visits each (query, key) pair once) adds dS into a float32 buffer of the
bias's own shape with atomic adds: no N_q x N_k buffer per head is allocated unless the bias itself is one.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from stlm.kernels.triton.attn_common import bwd_dkdv_configs, bwd_dq_configs, dot, score_tile
from stlm.kernels.triton.runtime import INTERPRET, LOG2E


@triton.autotune(configs=bwd_dkdv_configs(), key=["Nq", "Nk", "BLOCK_DH", "HAS_MASK", "HAS_BIAS", "BIAS_GRAD"],
                 reset_to_zero=["dbias_ptr"])
@triton.jit
def _attn_bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, bias_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, dbias_ptr,
    sq_b, sq_h, sq_n, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d,
    sdo_b, sdo_h, sdo_n, sdo_d, sm_b, sm_n, sb_b, sb_h, sb_q, sb_k, sdb_b, sdb_h, sdb_q, sdb_k,
    H, Nq, Nk, d_head, scale, scale2,
    HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, WIDEN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DH: tl.constexpr,
):
    """dk, dv [batch, H, Nk, d_head] contiguous, in k's dtype; dbias float32 with broadcast strides sdb_*."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_DH)
    mask_d = offs_d < d_head
    kv_mask = (offs_n < Nk)[:, None] & mask_d[None, :]
    k = tl.load(k_ptr + b.to(tl.int64) * sk_b + h * sk_h + offs_n[:, None] * sk_n + offs_d[None, :] * sk_d,
                mask=kv_mask, other=0.0)
    v = tl.load(v_ptr + b.to(tl.int64) * sv_b + h * sv_h + offs_n[:, None] * sv_n + offs_d[None, :] * sv_d,
                mask=kv_mask, other=0.0)
    q_base = q_ptr + b.to(tl.int64) * sq_b + h * sq_h
    do_base = do_ptr + b.to(tl.int64) * sdo_b + h * sdo_h
    valid_k = offs_n < Nk
    if HAS_MASK:
        ignore = tl.load(mask_ptr + b.to(tl.int64) * sm_b + offs_n * sm_n, mask=valid_k, other=1)
        valid_k = valid_k & (ignore == 0)
    dk = tl.zeros([BLOCK_N, BLOCK_DH], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DH], dtype=tl.float32)
    # Keys are the rows here: scores are computed transposed, S^T = K Q^T, with Q^T and dO^T loaded by strides,
    # so no register tile needs transposing (as in Triton's fused-attention tutorial).
    for start_m in range(0, Nq, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        mask_m = offs_m < Nq
        qmT = mask_d[:, None] & mask_m[None, :]
        qT = tl.load(q_base + offs_d[:, None] * sq_d + offs_m[None, :] * sq_n, mask=qmT, other=0.0)  # [DH, M]
        doT = tl.load(do_base + offs_d[:, None] * sdo_d + offs_m[None, :] * sdo_n, mask=qmT, other=0.0)
        lse = tl.load(lse_ptr + pid_bh.to(tl.int64) * Nq + offs_m, mask=mask_m, other=float("inf"))
        Di = tl.load(delta_ptr + pid_bh.to(tl.int64) * Nq + offs_m, mask=mask_m, other=0.0)
        sT = dot(k, qT, INPUT_PRECISION, WIDEN) * scale2  # [BLOCK_N, BLOCK_M], base 2
        if HAS_BIAS:
            bias_off = b.to(tl.int64) * sb_b + h * sb_h + offs_m[None, :] * sb_q + offs_n[:, None] * sb_k
            in_range = (offs_n < Nk)[:, None] & mask_m[None, :]
            sT += tl.load(bias_ptr + bias_off, mask=in_range, other=0.0).to(tl.float32) * LOG2E
        sT = tl.where(valid_k[:, None], sT, float("-inf"))
        pT = tl.exp2(sT - lse[None, :])  # 0 for masked keys, padded rows and empty rows
        dv += dot(pT.to(doT.dtype), tl.trans(doT), INPUT_PRECISION, WIDEN)
        dpT = dot(v, doT, INPUT_PRECISION, WIDEN)
        dsT = pT * (dpT - Di[None, :])  # dL/d(score)^T, natural units
        dk += dot(dsT.to(qT.dtype), tl.trans(qT), INPUT_PRECISION, WIDEN)
        if BIAS_GRAD:
            db_off = b.to(tl.int64) * sdb_b + h * sdb_h + offs_m[None, :] * sdb_q + offs_n[:, None] * sdb_k
            tl.atomic_add(dbias_ptr + db_off, dsT, mask=(offs_n < Nk)[:, None] & mask_m[None, :])
    out_off = (pid_bh.to(tl.int64) * Nk + offs_n[:, None]) * d_head + offs_d[None, :]
    tl.store(dk_ptr + out_off, (dk * scale).to(dk_ptr.dtype.element_ty), mask=kv_mask)
    tl.store(dv_ptr + out_off, dv.to(dv_ptr.dtype.element_ty), mask=kv_mask)


@triton.autotune(configs=bwd_dq_configs(), key=["Nq", "Nk", "BLOCK_DH", "HAS_MASK", "HAS_BIAS"])
@triton.jit
def _attn_bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, bias_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    sq_b, sq_h, sq_n, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d,
    sdo_b, sdo_h, sdo_n, sdo_d, sm_b, sm_n, sb_b, sb_h, sb_q, sb_k,
    H, Nq, Nk, d_head, scale, scale2,
    HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr, WIDEN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DH: tl.constexpr,
):
    """dq [batch, H, Nq, d_head] contiguous, in q's dtype."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_DH)
    mask_m = offs_m < Nq
    mask_d = offs_d < d_head
    qm = mask_m[:, None] & mask_d[None, :]
    q = tl.load(q_ptr + b.to(tl.int64) * sq_b + h * sq_h + offs_m[:, None] * sq_n + offs_d[None, :] * sq_d,
                mask=qm, other=0.0)
    do = tl.load(do_ptr + b.to(tl.int64) * sdo_b + h * sdo_h + offs_m[:, None] * sdo_n + offs_d[None, :] * sdo_d,
                 mask=qm, other=0.0)
    lse = tl.load(lse_ptr + pid_bh.to(tl.int64) * Nq + offs_m, mask=mask_m, other=float("inf"))
    Di = tl.load(delta_ptr + pid_bh.to(tl.int64) * Nq + offs_m, mask=mask_m, other=0.0)
    k_base = k_ptr + b.to(tl.int64) * sk_b + h * sk_h
    v_base = v_ptr + b.to(tl.int64) * sv_b + h * sv_h
    dq = tl.zeros([BLOCK_M, BLOCK_DH], dtype=tl.float32)
    for start_n in range(0, Nk, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_mask = (offs_n < Nk)[:, None] & mask_d[None, :]
        k = tl.load(k_base + offs_n[:, None] * sk_n + offs_d[None, :] * sk_d, mask=kv_mask, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * sv_n + offs_d[None, :] * sv_d, mask=kv_mask, other=0.0)
        s = score_tile(
            q, k, b, h, offs_m, offs_n, Nq, Nk, mask_ptr, sm_b, sm_n, bias_ptr, sb_b, sb_h, sb_q, sb_k, scale2,
            HAS_MASK, HAS_BIAS, INPUT_PRECISION, WIDEN,
        )
        p = tl.exp2(s - lse[:, None])
        dp = dot(do, tl.trans(v), INPUT_PRECISION, WIDEN)
        ds = p * (dp - Di[:, None])
        dq += dot(ds.to(k.dtype), k, INPUT_PRECISION, WIDEN)
    out_off = (pid_bh.to(tl.int64) * Nq + offs_m[:, None]) * d_head + offs_d[None, :]
    tl.store(dq_ptr + out_off, (dq * scale).to(dq_ptr.dtype.element_ty), mask=qm)


def _attn_bwd(q, k, v, mask_u8, bias4, o, lse, do, dbias4, scale: float, block_dh: int, input_precision: str | None):
    """Launch both backward kernels. ``dbias4``: float32 zeros of the bias's shape, expanded to
    [batch, H, Nq, Nk] (strides 0 where the bias broadcasts), or None when the bias needs no gradient.

    Returns (dq, dk, dv) contiguous, in the dtypes of q, k, v; dbias4 is filled in place.
    """
    batch, H, Nq, d_head = q.shape
    Nk = k.shape[2]
    delta = (o.float() * do.float()).sum(-1).reshape(batch * H, Nq)  # Delta_i = <dO_i, O_i>
    dq = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    dk = torch.empty(k.shape, device=k.device, dtype=k.dtype)
    dv = torch.empty(v.shape, device=v.device, dtype=v.dtype)
    sm = mask_u8.stride() if mask_u8 is not None else (0, 0)
    sb = bias4.stride() if bias4 is not None else (0, 0, 0, 0)
    sdb = dbias4.stride() if dbias4 is not None else (0, 0, 0, 0)
    mask_arg = mask_u8 if mask_u8 is not None else lse
    bias_arg = bias4 if bias4 is not None else lse
    common = dict(HAS_MASK=mask_u8 is not None, HAS_BIAS=bias4 is not None, INPUT_PRECISION=input_precision,
                  WIDEN=INTERPRET and q.dtype == torch.bfloat16, BLOCK_DH=block_dh)
    scale2 = scale * LOG2E.value
    grid_kv = lambda meta: (triton.cdiv(Nk, meta["BLOCK_N"]), batch * H)  # noqa: E731
    _attn_bwd_dkdv_kernel[grid_kv](
        q, k, v, mask_arg, bias_arg, do, lse, delta, dk, dv,
        # Never alias another argument here: autotuning zeroes dbias before each benchmark run.
        dbias4 if dbias4 is not None else torch.zeros(1, device=q.device, dtype=torch.float32),
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *sm, *sb, *sdb,
        H, Nq, Nk, d_head, scale, scale2,
        BIAS_GRAD=dbias4 is not None, **common,
    )
    grid_q = lambda meta: (triton.cdiv(Nq, meta["BLOCK_M"]), batch * H)  # noqa: E731
    _attn_bwd_dq_kernel[grid_q](
        q, k, v, mask_arg, bias_arg, do, lse, delta, dq,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *sm, *sb,
        H, Nq, Nk, d_head, scale, scale2,
        **common,
    )
    return dq, dk, dv
