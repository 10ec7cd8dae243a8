"""Pieces shared by the Triton attention kernels: the score tile and the configs.

Scores are kept in base 2: s2 = (q k^T scale + bias) log2(e), so the softmax uses ``exp2`` (the GPU's native
exponential) and the saved row statistic is lse2 = log2(sum_k exp2(s2)). Masked keys (padding, past N_k)
get -inf; a query row whose every key is masked has lse2 = +inf, so exp2(s2 - lse2) = 0 in the backward
and its output is 0, as in the reference.
"""

from __future__ import annotations

import triton
import triton.language as tl

from stlm.kernels.triton.runtime import LOG2E, pick_configs

@triton.jit
def dot(a, b, INPUT_PRECISION: tl.constexpr, WIDEN: tl.constexpr):
    """a @ b with float32 accumulation. ``WIDEN`` casts bfloat16 operands to float32 first: only under the
    interpreter, whose ``tl.dot`` returns garbage for bfloat16 (products of bfloat16 values are exact in
    float32, so the result matches the GPU's tensor-core path with float32 accumulation)."""
    if WIDEN:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=INPUT_PRECISION)


@triton.jit
def score_tile(
    q, k, b, h, offs_m, offs_n, Nq, Nk,
    mask_ptr, sm_b, sm_n, bias_ptr, sb_b, sb_h, sb_q, sb_k, scale2,
    HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr, WIDEN: tl.constexpr,
):
    """Base-2 scores [BLOCK_M, BLOCK_N] of query rows ``offs_m`` against keys ``offs_n``; -inf where masked.

    q [BLOCK_M, BLOCK_DH], k [BLOCK_N, BLOCK_DH]; ``scale2`` = scale * log2(e); bias strides are 0 along
    broadcast dimensions.
    """
    s = dot(q, tl.trans(k), INPUT_PRECISION, WIDEN) * scale2
    valid_k = offs_n < Nk
    if HAS_BIAS:
        bias_off = b.to(tl.int64) * sb_b + h * sb_h + offs_m[:, None] * sb_q + offs_n[None, :] * sb_k
        in_range = (offs_m < Nq)[:, None] & valid_k[None, :]
        s += tl.load(bias_ptr + bias_off, mask=in_range, other=0.0).to(tl.float32) * LOG2E
    if HAS_MASK:
        ignore = tl.load(mask_ptr + b.to(tl.int64) * sm_b + offs_n * sm_n, mask=valid_k, other=1)
        valid_k = valid_k & (ignore == 0)
    return tl.where(valid_k[None, :], s, float("-inf"))


def _configs(gpu: list[tuple[int, int, int, int]]) -> list[triton.Config]:
    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st) for bm, bn, w, st in gpu]
    return pick_configs(configs, triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1))


# (BLOCK_M, BLOCK_N, warps, stages) tried on a GPU. Chosen from ptxas builds for sm_90 (bfloat16, d_head=64):
# all use wgmma and none spills without a bias (the dK/dV kernel needs 255 registers at 32 x 128).
def fwd_configs() -> list[triton.Config]:
    return _configs([(128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 4, 4)])


def bwd_dkdv_configs() -> list[triton.Config]:
    """BLOCK_N keys per program (the rows), BLOCK_M queries per step."""
    return _configs([(32, 128, 8, 3), (32, 128, 8, 2), (64, 64, 8, 3)])


def bwd_dq_configs() -> list[triton.Config]:
    """BLOCK_M queries per program, BLOCK_N keys per step."""
    return _configs([(128, 32, 8, 3), (128, 64, 8, 3), (64, 64, 4, 3)])
