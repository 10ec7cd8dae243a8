"""Temporal mixer: a Mamba-style selective state-space block over the time axis (causal).

For an input sequence ``x [batch, L, d_model]`` (one sequence per node; nodes are folded into the batch by the
block), with inner width ``E = expand * d_model`` and state size ``n = d_state`` (Gu & Dao 2023, Mamba):

    [u, z]  = in_proj(x)                          u, z [batch, L, E]
    u       = silu(causal_depthwise_conv1d(u))     kernel d_conv along time
    [dt_r, B, C] = x_proj(u)                      dt_r [batch, L, R], B, C [batch, L, n] (input-dependent)
    dt      = softplus(dt_proj(dt_r) + dt_bias)    [batch, L, E], the step size per channel
    A       = -exp(A_log)                          [E, n], diagonal and negative: a decaying state
    y       = selective_scan(u, dt, A, B, C, D, z) h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t ; y_t = C_t h_t + D u_t
    out     = out_proj(y * silu(z))                [batch, L, d_model]

The scan runs through :mod:`stlm.kernels` (the backend is chosen once per device and dtype). Everything is causal:
the output at step t depends on inputs up to t only.

Recurrent mode. The block's whole memory of the past is a fixed-size state per sequence,

    conv  [batch, d_conv - 1, E]   the last d_conv - 1 inputs of the causal convolution
    ssm   [batch, E, n]            the recurrence's h_t (float32)

so a stream can be continued one step at a time (:meth:`SelectiveSSM.step`, the kernels' state update) or a
chunk at a time (``forward(x, state, return_state=True)``), at a cost that does not depend on how long the
history is. A zero state is the start of a sequence: stepping from :meth:`init_state` equals the windowed forward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stlm.kernels import KernelChoice


def _param_dtype(x: torch.Tensor) -> torch.dtype:
    """A, D and the step bias enter the scan in float32 (float64 for a float64 model), whatever the activations'
    dtype: the state and the scan's arithmetic are float32 under 16-bit activations."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class SelectiveSSM(nn.Module):
    """Mamba block: [batch, L, d_model] -> [batch, L, d_model]."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        backend: str = "auto",
    ):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = E = expand * d_model
        self.dt_rank = R = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.in_proj = nn.Linear(d_model, 2 * E, bias=False)
        # Depthwise causal convolution over time, weights [d_conv, E] (tap k looks k steps further back
        # than tap k + 1). Written as d_conv shifted multiply-adds on [batch, L, E]: about 3x faster on a CPU
        # than nn.Conv1d (forward + backward) for short windows over many sequences, and no transposes.
        self.conv_weight = nn.Parameter(torch.empty(d_conv, E).uniform_(-d_conv**-0.5, d_conv**-0.5))
        self.conv_bias = nn.Parameter(torch.empty(E).uniform_(-d_conv**-0.5, d_conv**-0.5))
        self.x_proj = nn.Linear(E, R + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.out_proj = nn.Linear(E, d_model, bias=False)
        # S4D-real initialisation: A_i = -(1, 2, ..., n) for every channel.
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self._init_dt(dt_min, dt_max)
        self.scan_backend = KernelChoice("selective_scan", backend)
        self.step_backend = KernelChoice("selective_state_update", backend)

    def _init_dt(self, dt_min: float, dt_max: float) -> None:
        """Mamba's step-size init: softplus(dt_bias) log-uniform in [dt_min, dt_max]."""
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus

    def init_state(self, batch: int, device=None) -> dict[str, torch.Tensor]:
        """The state before the first step of ``batch`` sequences (all zeros)."""
        return {
            "conv": torch.zeros(batch, self.d_conv - 1, self.d_inner, device=device),
            "ssm": torch.zeros(batch, self.d_inner, self.d_state, device=device),
        }

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None, return_state: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x [batch, L, d_model] -> [batch, L, d_model]; continues from ``state`` (None = a fresh sequence) and
        also returns the state after the last step when ``return_state``."""
        u, z = self.in_proj(x).chunk(2, dim=-1)  # [batch, L, E] each
        conv_history = None if state is None else state["conv"].to(u.dtype)
        u_conv = F.silu(self.causal_conv(u, conv_history))
        dt_r, B, C = self.x_proj(u_conv).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = dt_r @ self.dt_proj.weight.t()  # [batch, L, E]; the bias enters the scan as delta_bias
        pdt = _param_dtype(x)
        A = -torch.exp(self.A_log.to(pdt))
        # The backend's implementation, resolved once per device and dtype (shapes are ours: no re-validation).
        # It takes Mamba's channel-major layout [batch, E, L]: transposed views, no copies here.
        scan = self.scan_backend(x.device, x.dtype)
        result = scan(
            u_conv.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D=self.D.to(pdt),
            z=z.transpose(1, 2), delta_bias=self.dt_proj.bias.to(pdt), delta_softplus=True,
            initial_state=None if state is None else state["ssm"], return_final_state=return_state,
        )
        if not return_state:
            return self.out_proj(result.transpose(1, 2))
        y, ssm = result
        return self.out_proj(y.transpose(1, 2)), {"conv": self._conv_tail(u, conv_history), "ssm": ssm}

    def _conv_tail(self, u: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        """The last d_conv - 1 inputs of the convolution's stream (history, then u), oldest first: a copy, so a
        carried state never keeps the whole of u alive (time chunks keep their boundary states)."""
        k, L = self.d_conv - 1, u.shape[1]
        if L >= k:
            return u[:, L - k :].clone()
        prefix = history if history is not None else u.new_zeros(u.shape[0], k, u.shape[2])
        return torch.cat([prefix, u], dim=1)[:, L:]

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One time step: x_t [batch, d_model] -> (out [batch, d_model], new state); O(1) in the history length."""
        u, z = self.in_proj(x_t).chunk(2, dim=-1)  # [batch, E]
        window = torch.cat([state["conv"].to(u.dtype), u[:, None]], dim=1)  # [batch, d_conv, E], oldest first
        u_conv = F.silu(self.conv_bias + (window * self.conv_weight).sum(1))
        dt_r, B, C = self.x_proj(u_conv).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = dt_r @ self.dt_proj.weight.t()
        update = self.step_backend(x_t.device, x_t.dtype)
        pdt = _param_dtype(x_t)
        y, ssm = update(
            state["ssm"], u_conv, dt, -torch.exp(self.A_log.to(pdt)), B, C, D=self.D.to(pdt), z=z,
            dt_bias=self.dt_proj.bias.to(pdt), dt_softplus=True,
        )
        return self.out_proj(y), {"conv": window[:, 1:], "ssm": ssm}

    def causal_conv(self, u: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """Depthwise causal convolution: out_t = bias + sum_k w_k * u_{t - (d_conv - 1) + k}; u [batch, L, E].

        ``history`` [batch, d_conv - 1, E] holds the inputs before u's first step (zeros when None)."""
        L = u.shape[1]
        if history is None:
            padded = F.pad(u, (0, 0, self.d_conv - 1, 0))  # zeros before the first step
        else:
            padded = torch.cat([history, u], dim=1)
        out = self.conv_bias + padded[:, :L] * self.conv_weight[0]
        for k in range(1, self.d_conv):
            out = out + padded[:, k : k + L] * self.conv_weight[k]
        return out
