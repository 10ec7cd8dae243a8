"""Attention through PyTorch's fused ``scaled_dot_product_attention`` (flash-style on CPU and GPU).

Same signature and semantics as :func:`stlm.kernels.reference.attention_ref`. On CPU, SDPA's fused kernel
holds a few MB where the plain softmax holds the whole N x N matrix. A key padding mask or a bias becomes
SDPA's ``attn_mask``; queries whose keys are all masked get a zero output instead of NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention_sdpa(q, k, v, key_padding_mask=None, bias=None, scale=None):
    attn_mask = None
    all_masked = None
    if key_padding_mask is not None:
        all_masked = key_padding_mask.all(dim=-1)  # [batch]
        # A batch element whose keys are all masked would give NaN rows: let it attend to everything,
        # then zero its output below.
        keep = ~key_padding_mask | all_masked[:, None]
        attn_mask = keep[:, None, None, :]
    if bias is not None:
        bias = bias.to(q.dtype)
        attn_mask = bias if attn_mask is None else torch.where(attn_mask, bias, float("-inf"))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    if all_masked is not None and bool(all_masked.any()):
        out = out.masked_fill(all_masked[:, None, None, None], 0.0)
    return out
