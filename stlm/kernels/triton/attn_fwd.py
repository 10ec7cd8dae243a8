"""Triton forward kernel of flash-style global attention (online softmax) and its launcher.

A program owns BLOCK_M query rows of one (batch, head) and streams the keys in tiles of BLOCK_N, keeping a
running row maximum m, normalizer l and output accumulator in float32 registers (Dao et al., FlashAttention-2):
memory is O(N d_head), the N_q x N_k scores are never stored. Semantics: :mod:`stlm.kernels.reference.attention`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from stlm.kernels.triton.attn_common import dot, fwd_configs, score_tile
from stlm.kernels.triton.runtime import INTERPRET, LOG2E


@triton.autotune(configs=fwd_configs(), key=["Nq", "Nk", "BLOCK_DH", "HAS_MASK", "HAS_BIAS"])
@triton.jit
def _attn_fwd_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, bias_ptr, o_ptr, lse_ptr,
    sq_b, sq_h, sq_n, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d,
    so_b, so_h, so_n, so_d, sm_b, sm_n, sb_b, sb_h, sb_q, sb_k,
    H, Nq, Nk, d_head, scale2,
    HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr, WIDEN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DH: tl.constexpr,
):
    """q, o [batch, H, Nq, d_head]; k, v [batch, H, Nk, d_head]; mask [batch, Nk] uint8 (1 = ignore);
    bias broadcast strides; lse [batch * H, Nq] float32 (base 2)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_DH)
    mask_m = offs_m < Nq
    mask_d = offs_d < d_head
    q_base = q_ptr + b.to(tl.int64) * sq_b + h * sq_h
    k_base = k_ptr + b.to(tl.int64) * sk_b + h * sk_h
    v_base = v_ptr + b.to(tl.int64) * sv_b + h * sv_h
    q_mask = mask_m[:, None] & mask_d[None, :]
    q = tl.load(q_base + offs_m[:, None] * sq_n + offs_d[None, :] * sq_d, mask=q_mask, other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DH], dtype=tl.float32)
    for start_n in range(0, Nk, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_mask = (offs_n < Nk)[:, None] & mask_d[None, :]
        k = tl.load(k_base + offs_n[:, None] * sk_n + offs_d[None, :] * sk_d, mask=kv_mask, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * sv_n + offs_d[None, :] * sv_d, mask=kv_mask, other=0.0)
        s = score_tile(
            q, k, b, h, offs_m, offs_n, Nq, Nk, mask_ptr, sm_b, sm_n, bias_ptr, sb_b, sb_h, sb_q, sb_k, scale2,
            HAS_MASK, HAS_BIAS, INPUT_PRECISION, WIDEN,
        )
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # A row with no unmasked key so far has m = -inf; subtract 0 instead so exp2 gives 0, not NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + dot(p.to(v.dtype), v, INPUT_PRECISION, WIDEN)
        m_i = m_new

    empty = l_i == 0.0  # every key of the row masked: output 0, lse +inf
    o = acc / tl.where(empty, 1.0, l_i)[:, None]
    o_base = o_ptr + b.to(tl.int64) * so_b + h * so_h
    tl.store(o_base + offs_m[:, None] * so_n + offs_d[None, :] * so_d, o.to(o_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_d[None, :])
    lse = tl.where(empty, float("inf"), m_i + tl.log2(tl.where(empty, 1.0, l_i)))
    tl.store(lse_ptr + pid_bh.to(tl.int64) * Nq + offs_m, lse, mask=mask_m)


def _attn_fwd(q, k, v, mask_u8, bias4, scale: float, block_dh: int, input_precision: str | None):
    """Launch the forward. bias4 is the bias expanded to [batch, H, Nq, Nk] (a view, strides 0 where broadcast).

    Returns (o [batch, H, Nq, d_head] in q's dtype, lse [batch * H, Nq] float32, base 2).
    """
    batch, H, Nq, d_head = q.shape
    Nk = k.shape[2]
    o = torch.empty_like(q)
    lse = torch.empty(batch * H, Nq, device=q.device, dtype=torch.float32)
    sm = mask_u8.stride() if mask_u8 is not None else (0, 0)
    sb = bias4.stride() if bias4 is not None else (0, 0, 0, 0)
    grid = lambda meta: (triton.cdiv(Nq, meta["BLOCK_M"]), batch * H)  # noqa: E731
    _attn_fwd_kernel[grid](
        q, k, v,
        mask_u8 if mask_u8 is not None else lse,
        bias4 if bias4 is not None else lse,
        o, lse,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(), *sm, *sb,
        H, Nq, Nk, d_head, scale * LOG2E.value,
        HAS_MASK=mask_u8 is not None, HAS_BIAS=bias4 is not None, INPUT_PRECISION=input_precision,
        WIDEN=INTERPRET and q.dtype == torch.bfloat16, BLOCK_DH=block_dh,
    )
    return o, lse
