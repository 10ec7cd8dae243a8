"""Selective scan (Mamba's S6 recurrence), written to be read: the specification of every scan backend.

Symbols (Gu & Dao, "Mamba", 2023), for one batch element and one channel ``i`` of ``d``::

    dt_t  = softplus(delta_t + delta_bias)                  (if delta_softplus; else delta_t + delta_bias)
    h_t   = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t        h_t in R^n, A diagonal (one row of A [d, n])
    y_t   = <C_t, h_t> + D * u_t
    out_t = y_t * silu(z_t)                                  (if z is given)

Shapes (Mamba's layout, channels before time):

    u, delta, z     [batch, d, L]
    A               [d, n]          real, negative for a stable (decaying) state
    B, C            [batch, n, L]   shared by all channels, or [batch, g, n, L] with d divisible by g
                                     (channel i uses group i // (d // g))
    D, delta_bias   [d]
    initial_state   [batch, d, n]
    returns out     [batch, d, L] (and the final state h_L [batch, d, n] if return_final_state)

The state and arithmetic are float32 whatever the input dtype (float64 for float64 inputs); the output is
cast back to the dtype of ``u``.
The loop over time uses ``unbind`` and ``stack``: indexing ``x[..., t]`` inside the loop makes autograd's
backward quadratic in L.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def expand_groups(BC: torch.Tensor, d: int) -> torch.Tensor:
    """Return B or C as [batch, d, n, L] from [batch, n, L] or grouped [batch, g, n, L]."""
    if BC.dim() == 3:
        return BC.unsqueeze(1).expand(BC.shape[0], d, BC.shape[1], BC.shape[2])
    batch, g, n, L = BC.shape
    return BC.repeat_interleave(d // g, dim=1)


def align_groups(B: torch.Tensor, C: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B and C as [batch, g, n, L] with one common number of groups g (fast backends need one grouping).

    [batch, n, L] is one group. When B and C have different group counts, the coarser one is repeated to the
    finer (or both to one group per channel when neither divides the other); the repeat is differentiable,
    so gradients still reach the original tensors.
    """
    B4 = B if B.dim() == 4 else B.unsqueeze(1)
    C4 = C if C.dim() == 4 else C.unsqueeze(1)
    gb, gc = B4.shape[1], C4.shape[1]
    if gb != gc:
        g = max(gb, gc) if max(gb, gc) % min(gb, gc) == 0 else d
        B4 = B4.repeat_interleave(g // gb, dim=1)
        C4 = C4.repeat_interleave(g // gc, dim=1)
    return B4, C4


def state_dtype_of(x: torch.Tensor) -> torch.dtype:
    """The dtype the state and arithmetic use for inputs like ``x``: float64 for float64, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def discretize_dt(delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool) -> torch.Tensor:
    """dt [batch, d, L] in the state dtype from the raw ``delta`` (adds the bias, applies softplus)."""
    dt = delta.to(state_dtype_of(delta))
    if delta_bias is not None:
        dt = dt + delta_bias.to(dt.dtype)[None, :, None]
    return F.softplus(dt) if delta_softplus else dt


def finish_output(y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
    """out = (y + D * u) * silu(z), in y's dtype (the state dtype); y, u, z [batch, d, L]."""
    if D is not None:
        y = y + D.to(y.dtype)[None, :, None] * u.to(y.dtype)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


def selective_scan_ref(
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
    """Sequential selective scan (see the module docstring for the math and shapes)."""
    batch, d, L = u.shape
    state_dtype = state_dtype_of(u)
    dt = discretize_dt(delta, delta_bias, delta_softplus).to(state_dtype)  # [batch, d, L]
    B_full = expand_groups(B, d).to(state_dtype)  # [batch, d, n, L]
    C_full = expand_groups(C, d).to(state_dtype)
    h = (
        initial_state.to(state_dtype)
        if initial_state is not None
        else u.new_zeros(batch, d, A.shape[1], dtype=state_dtype)
    )
    dt_t, u_t = dt.unbind(-1), u.to(state_dtype).unbind(-1)
    B_t, C_t = B_full.unbind(-1), C_full.unbind(-1)
    A_s = A.to(state_dtype)
    ys = []
    for t in range(L):
        decay = torch.exp(dt_t[t][..., None] * A_s)  # [batch, d, n]
        h = decay * h + (dt_t[t] * u_t[t])[..., None] * B_t[t]
        ys.append((h * C_t[t]).sum(-1))  # [batch, d]
    y = torch.stack(ys, dim=-1) if L > 0 else u.new_zeros(batch, d, 0, dtype=state_dtype)
    out = finish_output(y, u.to(state_dtype), D, z).to(u.dtype)
    return (out, h) if return_final_state else out


def selective_state_update_ref(
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
    """One step of the recurrence, for recurrent (streaming) inference.

    Shapes: state [batch, d, n] (float32, not modified in place); x, dt, z [batch, d]; A [d, n];
    B, C [batch, n] or grouped [batch, g, n]; D, dt_bias [d].
    Returns (out [batch, d] in x's dtype, new_state [batch, d, n]).
    Feeding a sequence one step at a time equals :func:`selective_scan_ref` on the whole sequence.
    """
    out, new_state = selective_scan_ref(
        x.unsqueeze(-1),
        dt.unsqueeze(-1),
        A,
        B.unsqueeze(-1),
        C.unsqueeze(-1),
        D=D,
        z=None if z is None else z.unsqueeze(-1),
        delta_bias=dt_bias,
        delta_softplus=dt_softplus,
        initial_state=state,
        return_final_state=True,
    )
    return out.squeeze(-1), new_state
