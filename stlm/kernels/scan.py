"""Public selective-scan ops: validate the arguments once, then run the chosen backend.

See :mod:`stlm.kernels.reference.scan` for the math, symbols and shapes. Backends are chosen by
:mod:`stlm.kernels.dispatch`; modules that call these in a loop hold a :class:`~stlm.kernels.dispatch.KernelChoice`
and pass ``backend=`` the resolved name.
"""

from __future__ import annotations

import torch

from stlm.kernels.dispatch import resolve

# Tolerances (atol, rtol) of every fast backend against the float32/float64 reference, by input dtype.
# Low-precision inputs are rounded before the scan; the state is still accumulated in float32.
SCAN_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-8),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (3e-2, 3e-2),
}


def _check(name: str, t: torch.Tensor | None, shape: tuple, hint: str) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"selective_scan: {name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"selective_scan: {name} has shape {tuple(t.shape)}, expected {tuple(shape)} ({hint})")


def validate_scan_args(u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None) -> None:
    """Raise a ValueError naming the argument whose shape does not fit Mamba's layout."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be [batch, d, L], got shape {tuple(u.shape)}")
    batch, d, L = u.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"selective_scan: A must be [d={d}, n], got shape {tuple(A.shape)}")
    n = A.shape[1]
    _check("delta", delta, (batch, d, L), "one step size per channel and time step, like u")
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3:
            _check(name, t, (batch, n, L), "[batch, n, L] shared by all channels")
        elif t.dim() == 4:
            g = t.shape[1]
            if g == 0 or d % g != 0:
                raise ValueError(f"selective_scan: {name} has {g} groups, which must divide d={d}")
            _check(name, t, (batch, g, n, L), "[batch, groups, n, L]")
        else:
            raise ValueError(f"selective_scan: {name} must be [batch, n, L] or [batch, g, n, L], got {tuple(t.shape)}")
    _check("D", D, (d,), "one skip weight per channel")
    _check("delta_bias", delta_bias, (d,), "one bias per channel")
    _check("z", z, (batch, d, L), "gate, like u")
    _check("initial_state", initial_state, (batch, d, n), "[batch, d, n]")


def selective_scan(
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
    backend: str = "auto",
):
    """Selective scan: out [batch, d, L] (and the final state [batch, d, n] if ``return_final_state``)."""
    validate_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state)
    _, fn = resolve("selective_scan", backend, u.device, u.dtype)
    return fn(
        u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
        initial_state=initial_state, return_final_state=return_final_state,
    )


def selective_state_update(
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
    backend: str = "auto",
):
    """One recurrent step: (out [batch, d], new_state [batch, d, n]); equals the scan fed one step at a time."""
    validate_scan_args(
        x.unsqueeze(-1), dt.unsqueeze(-1), A, B.unsqueeze(-1), C.unsqueeze(-1), D,
        None if z is None else z.unsqueeze(-1), dt_bias, state,
    )
    _, fn = resolve("selective_state_update", backend, x.device, x.dtype)
    return fn(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)
