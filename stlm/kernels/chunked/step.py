"""One recurrent step of the selective scan, vectorized over batch, channels and states.

Same arguments and result as :func:`~stlm.kernels.reference.selective_state_update_ref`, without building
a length-1 scan: for streaming inference (one new time step per call) the step is a handful of ops.
Autograd differentiates it directly (there is no loop over L to avoid).

Shapes: state [batch, d, n]; x, dt, z [batch, d]; A [d, n]; B, C [batch, n] or grouped [batch, g, n];
D, dt_bias [d]. Returns (out [batch, d] in x's dtype, new_state [batch, d, n] in float32, float64 for
float64 inputs); ``state`` is not modified.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stlm.kernels.reference.scan import align_groups


def selective_state_update_chunked(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = True,
):
    batch, d, n = state.shape
    cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    step = dt.to(cdtype)
    if dt_bias is not None:
        step = step + dt_bias.to(cdtype)
    if dt_softplus:
        step = F.softplus(step)
    # B, C as [batch, g, 1, n] (one common group count) against the state viewed as [batch, g, d // g, n].
    B_g, C_g = align_groups(B.unsqueeze(-1), C.unsqueeze(-1), d)
    B_g, C_g = B_g.squeeze(-1).to(cdtype).unsqueeze(2), C_g.squeeze(-1).to(cdtype).unsqueeze(2)
    g = B_g.shape[1]
    h = state.to(cdtype).reshape(batch, g, d // g, n)
    decay = torch.exp(step.view(batch, g, d // g, 1) * A.to(cdtype).view(g, d // g, n))
    xs = x.to(cdtype)
    h = decay * h + (step * xs).view(batch, g, d // g, 1) * B_g
    y = (h * C_g).sum(-1).view(batch, d)
    if D is not None:
        y = y + D.to(cdtype) * xs
    if z is not None:
        y = y * F.silu(z.to(cdtype))
    return y.to(x.dtype), h.reshape(batch, d, n)
