"""Flash-style global attention on Triton: the autograd Function around the forward and backward kernels.

``attention_triton`` has the signature and semantics of :func:`~stlm.kernels.reference.attention_ref`
(shapes there): non-causal, key padding mask (True = ignore the key), optional additive bias broadcastable
to [batch, heads, N_q, N_k], zero output for a query whose keys are all masked. Memory is O(N d_head): the
N_q x N_k matrix is never stored, except a bias that needs a gradient gets one of its own shape.

Dtypes: float16 and bfloat16 use the tensor cores with float32 accumulation; float32 inputs use exact
float32 products (``input_precision="ieee"``, not TF32) to meet the float32 tolerances, and are slower.
"""

from __future__ import annotations

import math

import torch

from stlm.kernels.triton.attn_bwd import _attn_bwd
from stlm.kernels.triton.attn_fwd import _attn_fwd
from stlm.kernels.triton.runtime import next_pow2


def _bias4(bias: torch.Tensor | None, shape: tuple[int, int, int, int]) -> torch.Tensor | None:
    """The bias as a [batch, heads, N_q, N_k] view (strides 0 along broadcast dimensions); no copy."""
    if bias is None:
        return None
    return bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape)).expand(shape)


class FlashAttentionFn(torch.autograd.Function):
    """(q, k, v [batch, heads, N, d_head], key_padding_mask, bias, scale) -> out [batch, heads, N_q, d_head]."""

    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, bias, scale: float):
        batch, H, Nq, d_head = q.shape
        shape4 = (batch, H, Nq, k.shape[2])
        mask_u8 = key_padding_mask.to(torch.uint8) if key_padding_mask is not None else None
        bias4 = _bias4(bias, shape4)
        block_dh = next_pow2(d_head, 16)  # tl.dot needs every dimension >= 16
        precision = "ieee" if q.dtype == torch.float32 else None  # 16-bit inputs: tensor cores, fp32 accumulation
        o, lse = _attn_fwd(q, k, v, mask_u8, bias4, scale, block_dh, precision)
        ctx.save_for_backward(q, k, v, mask_u8, bias, o, lse)
        ctx.config = (scale, block_dh, precision, shape4)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, mask_u8, bias, o, lse = ctx.saved_tensors
        scale, block_dh, precision, shape4 = ctx.config
        dbias = None
        if bias is not None and ctx.needs_input_grad[4]:
            dbias = torch.zeros(bias.shape, device=bias.device, dtype=torch.float32)
        dq, dk, dv = _attn_bwd(
            q, k, v, mask_u8, _bias4(bias, shape4), o, lse, do.contiguous(),
            _bias4(dbias, shape4), scale, block_dh, precision,
        )
        return dq, dk, dv, None, dbias.to(bias.dtype) if dbias is not None else None, None


def attention_triton(q, k, v, key_padding_mask=None, bias=None, scale=None):
    """Flash attention on Triton; same arguments and result as :func:`~stlm.kernels.reference.attention_ref`."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    k, v = k.to(q.dtype), v.to(q.dtype)  # tl.dot needs one operand dtype
    return FlashAttentionFn.apply(q, k, v, key_padding_mask, bias, scale)
