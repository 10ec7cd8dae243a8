"""Public global-attention op: validate once, then run the chosen backend.

See :mod:`stlm.kernels.reference.attention` for the semantics and shapes.
"""

from __future__ import annotations

import torch

from stlm.kernels.dispatch import resolve

# Tolerances (atol, rtol) of every fast backend against the float32 reference, by input dtype.
ATTENTION_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-8, 1e-6),
    torch.float32: (2e-4, 2e-4),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (3e-2, 3e-2),
}


def validate_attention_args(q, k, v, key_padding_mask=None, bias=None) -> None:
    """Raise a ValueError naming the argument whose shape does not fit [batch, heads, N, d_head]."""
    if q.dim() != 4:
        raise ValueError(f"attention: q must be [batch, heads, N_q, d_head], got shape {tuple(q.shape)}")
    batch, heads, n_q, d_head = q.shape
    if k.dim() != 4 or k.shape[0] != batch or k.shape[1] != heads or k.shape[3] != d_head:
        raise ValueError(f"attention: k must be [batch={batch}, heads={heads}, N_k, d_head={d_head}], got {tuple(k.shape)}")
    if tuple(v.shape[:3]) != tuple(k.shape[:3]):
        raise ValueError(f"attention: v must match k in [batch, heads, N_k], got v {tuple(v.shape)} and k {tuple(k.shape)}")
    n_k = k.shape[2]
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != (batch, n_k):
            raise ValueError(
                f"attention: key_padding_mask must be a bool tensor [batch={batch}, N_k={n_k}] "
                f"(True = ignore this key), got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )
    if bias is not None:
        try:
            torch.broadcast_shapes(tuple(bias.shape), (batch, heads, n_q, n_k))
        except RuntimeError:
            raise ValueError(
                f"attention: bias of shape {tuple(bias.shape)} does not broadcast to "
                f"[batch, heads, N_q, N_k] = {(batch, heads, n_q, n_k)}"
            ) from None


def attention(q, k, v, key_padding_mask=None, bias=None, backend: str = "auto"):
    """Global attention over tokens (not causal): [batch, heads, N_q, d_head]."""
    validate_attention_args(q, k, v, key_padding_mask, bias)
    _, fn = resolve("attention", backend, q.device, q.dtype)
    return fn(q, k, v, key_padding_mask=key_padding_mask, bias=bias)
