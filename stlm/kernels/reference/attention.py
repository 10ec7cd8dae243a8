"""Global (non-causal) multi-head attention with plain softmax: the specification of every attention backend.

Shapes::

    q               [batch, heads, N_q, d_head]
    k, v            [batch, heads, N_k, d_head]
    key_padding_mask [batch, N_k] bool, True where the key is missing or padding and must be ignored
                     (the convention of ``torch.nn.MultiheadAttention``)
    bias            additive float scores broadcastable to [batch, heads, N_q, N_k] (e.g. a graph prior)
    returns         [batch, heads, N_q, d_head]

``out = softmax(q k^T / sqrt(d_head) + bias, masked keys -> -inf) v``; a query whose keys are all masked
gets a zero output (never NaN). Scores are computed in float32 (float64 for float64 inputs). This
materializes the N_q x N_k matrix: it is the readable reference, not the path for large N.
"""

from __future__ import annotations

import math

import torch


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    cdtype = torch.float64 if q.dtype == torch.float64 else torch.float32  # scores never below float32
    scores = torch.einsum("bhqd,bhkd->bhqk", q.to(cdtype), k.to(cdtype)) * scale
    if bias is not None:
        scores = scores + bias.to(cdtype)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    # Rows with every key masked: softmax of all -inf is NaN; give them zero weights instead.
    all_masked = torch.isinf(scores).all(dim=-1, keepdim=True) & (scores < 0).all(dim=-1, keepdim=True)
    weights = torch.softmax(scores.masked_fill(all_masked, 0.0), dim=-1).masked_fill(all_masked, 0.0)
    return torch.einsum("bhqk,bhkd->bhqd", weights, v.to(cdtype)).to(q.dtype)
