"""STBlock: pre-norm residual temporal mixer, then spatial mixer, then MLP, on [B, T, N, d_model].

    h = h + temporal(norm(h))   nodes folded into the batch: [B*N, T, d]   (causal over T)
    h = h + spatial(norm(h))    time folded into the batch:  [B*T, N, d]   (one step's tokens)
    h = h + mlp(norm(h))

The mixers arrive as factories (``factory(d_model=..., backend=...) -> nn.Module``, where ``backend`` is the
kernel backend of the mixer's op, see :mod:`stlm.kernels.dispatch`) so the block never names Mamba or
attention: an ablation (attention over time, no spatial mixing) is a config change. A factory of ``None``
leaves that mixer out.

Recurrent mode (:meth:`STBlock.step`): only the temporal mixer has a memory, so a block's state is its temporal
mixer's state for the B*N node sequences; the spatial mixer and the MLP see one step's tokens, exactly as in
``forward``. A temporal mixer supports streaming when it has ``init_state`` and ``step`` (the selective SSM).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

MixerFactory = Callable[..., nn.Module]


class STBlock(nn.Module):
    def __init__(
        self,
        d_model: int,
        temporal: MixerFactory | None,
        spatial: MixerFactory | None,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        kernels: str = "auto",
    ):
        super().__init__()
        self.temporal = temporal(d_model=d_model, backend=kernels) if temporal is not None else None
        self.spatial = spatial(d_model=d_model, backend=kernels) if spatial is not None else None
        self.norm_t = nn.LayerNorm(d_model) if self.temporal is not None else None
        self.norm_s = nn.LayerNorm(d_model) if self.spatial is not None else None
        hidden = int(round(mlp_ratio * d_model))
        self.norm_m = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        h: torch.Tensor,
        state: dict[str, torch.Tensor] | None = None,
        return_state: bool = False,
        keep_last: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """h [B, T, N, d] -> [B, T, N, d]; with ``state``/``return_state`` the temporal mixer continues from and
        returns its recurrent state (see the module docstring).

        ``keep_last=k`` returns only the last k steps [B, k, N, d]: the temporal mixer still reads every step,
        but the spatial mixer and the MLP (per-step operations) run on the k kept steps only. The forecaster
        uses it in its last block, whose older steps nothing reads: exact, and what makes long windows cheap
        (a one-week window at 5 minutes has 2016 steps, of which the head reads 12). ``keep_last=0`` returns no
        steps (with ``return_state``, just the state after this input; the temporal mixer still runs on every
        step, as for any ``keep_last``)."""
        B, T, N, d = h.shape
        new_state = None
        if self.temporal is not None:
            t_in = self.norm_t(h).transpose(1, 2).reshape(B * N, T, d)
            if state is not None or return_state:
                t_out, new_state = self.temporal(t_in, state=state, return_state=True)
            else:
                t_out = self.temporal(t_in)
            h = h + self.dropout(t_out.reshape(B, N, T, d).transpose(1, 2))
        if keep_last is not None and keep_last < T:
            h, T = h[:, T - keep_last :], keep_last
        if T == 0:  # keep_last=0: only the state is wanted (a time chunk before the steps a head reads)
            return (h, new_state) if return_state else h
        if self.spatial is not None:
            s_in = self.norm_s(h).reshape(B * T, N, d)
            h = h + self.dropout(self.spatial(s_in).reshape(B, T, N, d))
        h = h + self.dropout(self.mlp(self.norm_m(h)))
        return (h, new_state) if return_state else h

    @property
    def can_stream(self) -> bool:
        return self.temporal is None or (hasattr(self.temporal, "step") and hasattr(self.temporal, "init_state"))

    def init_state(self, batch: int, n_nodes: int, device=None) -> dict[str, torch.Tensor] | None:
        """State before the first step (None when there is no temporal mixer)."""
        if self.temporal is None:
            return None
        if not self.can_stream:
            raise NotImplementedError(
                f"{type(self.temporal).__name__} has no recurrent mode; stream with the selective SSM temporal "
                "mixer (model/temporal=ssm)"
            )
        return self.temporal.init_state(batch * n_nodes, device=device)

    def step(self, h_t: torch.Tensor, state: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """One time step: h_t [B, N, d] -> (h_t [B, N, d], new state)."""
        B, N, d = h_t.shape
        if self.temporal is not None:
            t_out, state = self.temporal.step(self.norm_t(h_t).reshape(B * N, d), state)
            h_t = h_t + self.dropout(t_out.reshape(B, N, d))
        if self.spatial is not None:
            h_t = h_t + self.dropout(self.spatial(self.norm_s(h_t)))
        return h_t + self.dropout(self.mlp(self.norm_m(h_t))), state
