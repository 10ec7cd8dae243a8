"""Selective scan on Triton: the autograd Function around the forward and backward kernels.

``selective_scan_triton`` has the signature and semantics of
:func:`~stlm.kernels.reference.selective_scan_ref` (shapes and symbols there). Inputs may be float32,
float16 or bfloat16; the state, the arithmetic and the gradients of A, B, C, D and delta_bias are accumulated
in float32, and every gradient is returned in its input's dtype.
"""

from __future__ import annotations

import torch

from stlm.kernels.reference.scan import align_groups
from stlm.kernels.triton.scan_bwd import _scan_bwd
from stlm.kernels.triton.scan_fwd import _scan_fwd, scan_block_l


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(torch.float32).contiguous()


def _as(grad: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None:
    return None if grad is None or dtype is None else grad.to(dtype)


def _dtype(t: torch.Tensor | None) -> torch.dtype | None:
    return None if t is None else t.dtype


class SelectiveScanFn(torch.autograd.Function):
    """(u, delta, A, B, C [batch, g, n, L], D, z, delta_bias, initial_state) -> (out, final state)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus: bool):
        needs_grad = any(ctx.needs_input_grad[:9])
        u_c, delta_c = u.contiguous(), delta.contiguous()
        z_c = z.contiguous() if z is not None else None
        B_c, C_c = B.contiguous(), C.contiguous()
        A32, D32, bias32, h0 = _f32(A), _f32(D), _f32(delta_bias), _f32(initial_state)
        out, hT, ckpt = _scan_fwd(u_c, delta_c, A32, B_c, C_c, D32, z_c, bias32, h0, delta_softplus, needs_grad)
        ctx.save_for_backward(u_c, delta_c, A32, B_c, C_c, D32, z_c, bias32, ckpt)
        ctx.dtypes = tuple(_dtype(t) for t in (A, B, C, D, delta_bias, initial_state))
        ctx.delta_softplus = delta_softplus
        ctx.block_l = scan_block_l()
        ctx.set_materialize_grads(False)
        return out, hT

    @staticmethod
    def backward(ctx, dout, dhT):
        u, delta, A32, B, C, D32, z, bias32, ckpt = ctx.saved_tensors
        A_t, B_t, C_t, D_t, bias_t, h0_t = ctx.dtypes
        dout = torch.zeros_like(u) if dout is None else dout.contiguous()
        dhT = None if dhT is None else dhT.to(torch.float32).contiguous()
        need_dh0 = h0_t is not None and ctx.needs_input_grad[8]
        du, ddelta, dz, dA, dB, dC, dD, dbias, dh0 = _scan_bwd(
            u, delta, A32, B, C, D32, z, bias32, ckpt, dout, dhT, ctx.delta_softplus, need_dh0, ctx.block_l
        )
        return (
            du, ddelta, _as(dA, A_t), _as(dB, B_t), _as(dC, C_t), _as(dD, D_t), dz,
            _as(dbias, bias_t), _as(dh0, h0_t), None,
        )


def selective_scan_triton(
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
):
    """Selective scan on Triton; same arguments and result as :func:`~stlm.kernels.reference.selective_scan_ref`."""
    B4, C4 = align_groups(B, C, u.shape[1])
    out, final_state = SelectiveScanFn.apply(u, delta, A, B4, C4, D, z, delta_bias, initial_state, delta_softplus)
    return (out, final_state) if return_final_state else out
