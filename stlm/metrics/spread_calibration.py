"""Fitting an ensemble's per-horizon spread factor on held-out data: the factor with the least fair CRPS.

    update(pred, target, weight)   pred [B, H, N, C, M] members, target and weight [B, H, N, C]
    compute()                      [H] factors for :class:`stlm.nn.spread_scale.SpreadScale`

Scaling the members' offsets ``d_i = x_i - mu`` from their mean by ``s`` gives the fair CRPS
(:func:`stlm.metrics.probabilistic.crps_ensemble`)

    CRPS(s) = mean_i |mu + s d_i - y|  -  s * sum_{i,j} |d_i - d_j| / (2 M (M - 1)),

a convex function of ``s`` (a sum of absolute values minus a linear term), so its weighted sum over the
validation targets has one minimum. It is accumulated on a fixed geometric grid of ``s`` (GRID points from
LOW to HIGH, 4.4% apart) as sums over batches and DDP ranks, and ``compute`` returns the grid point of least
CRPS refined by the parabola through it and its neighbours. A horizon with no observed target keeps its factor.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

LOW, HIGH, GRID = 2.0 ** -4, 2.0 ** 6, 161
BOUNDS = (LOW, HIGH)  # the engine keeps the product of refits inside these too


class SpreadCalibration(Metric):
    """Weighted fair CRPS of the scaled ensemble per horizon and grid factor; ``compute`` gives the factors."""

    full_state_update = False
    bounds = BOUNDS

    def __init__(self, horizon: int, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("log_grid", torch.linspace(torch.tensor(LOW).log2(), torch.tensor(HIGH).log2(), GRID,
                                                        dtype=torch.float64))
        self.add_state("crps", torch.zeros(horizon, GRID, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", torch.zeros(horizon, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> None:
        M = pred.shape[-1]
        if M < 2:
            raise ValueError(f"SpreadCalibration: an ensemble needs at least 2 members, got {M}")
        pred, weight = pred.double(), weight.double()
        y = torch.where(weight > 0, target.double(), 0.0)
        mu = pred.mean(-1, keepdim=True)
        d = pred - mu
        # sum_{i,j} |d_i - d_j| = 2 sum_i (2i - M - 1) d_(i) over the sorted offsets (i = 1 .. M): no M x M array.
        rank_weight = 2 * torch.arange(1, M + 1, dtype=d.dtype, device=d.device) - M - 1
        spread = 2 * (d.sort(-1).values * rank_weight).sum(-1) / (2 * M * (M - 1))  # [B, H, N, C]
        error = mu.squeeze(-1) - y
        dims = [i for i in range(weight.dim()) if i != 1]  # all but the horizon
        for k, s in enumerate(torch.exp2(self.log_grid).tolist()):  # one grid point at a time: memory of one pred
            score = (error.unsqueeze(-1) + s * d).abs().mean(-1) - s * spread
            self.crps[:, k] += torch.where(weight > 0, score * weight, 0.0).sum(dims)
        self.weight += weight.sum(dims)

    def compute(self) -> torch.Tensor:
        k = self.crps.argmin(-1).clamp(1, GRID - 2)  # [H]; interior, so both neighbours exist
        rows = torch.arange(len(k), device=k.device)
        left, mid, right = (self.crps[rows, k + o] for o in (-1, 0, 1))
        curvature = left - 2 * mid + right
        # Vertex of the parabola through the three points, in grid steps from the middle one (within +-1).
        shift = torch.where(curvature > 0, 0.5 * (left - right) / curvature.clamp_min(1e-300), 0.0).clamp(-1, 1)
        step = self.log_grid[1] - self.log_grid[0]
        factor = torch.exp2(self.log_grid[k] + shift * step).clamp(LOW, HIGH)
        return torch.where(self.weight > 0, factor, 1.0).float()
