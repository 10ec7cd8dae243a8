"""Non-crossing quantiles from unconstrained outputs: a median plus positive steps outward.

    raw     [..., Q]   unconstrained outputs of a head, one per level
    returns [..., Q]   q_1 <= q_2 <= .. <= q_Q (never crossing; equal only where a step underflows)

The output at the median level ``m`` (the level nearest 0.5) is the median itself; each level above adds a
positive step ``softplus(raw_k)`` to the one below it, each level below subtracts one from the one above:

    q_m = raw_m,    q_k = q_{k-1} + softplus(raw_k) (k > m),    q_k = q_{k+1} - softplus(raw_k) (k < m)

so the quantiles can never cross, whatever the weights, and a shift of the median (e.g. a seasonal prior added
to the forecast) moves the whole band. :func:`gaussian_step_bias` starts the steps where a normal distribution
of a given spread puts them (``softplus(b_k) = spread * |z(tau_k) - z(tau_k-1)|``), so training with the pinball
loss starts from a band of plausible width and shape instead of 19 equal steps of ``softplus(0) = 0.69``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def median_index(levels: torch.Tensor) -> int:
    """Index of the level nearest 0.5 (the band's centre)."""
    return int(torch.argmin((levels - 0.5).abs()))


def gaussian_step_bias(levels: torch.Tensor, spread: float) -> torch.Tensor:
    """Raw values [Q] whose :func:`non_crossing` steps are those of N(0, spread^2) between the levels (the
    median's own entry is 0): ``softplus^-1(spread * |z_k - z_neighbour|)``."""
    z = torch.distributions.Normal(0.0, 1.0).icdf(levels.double())
    m = median_index(levels)
    gaps = torch.zeros_like(z)
    gaps[m + 1 :] = z[m + 1 :] - z[m:-1]
    gaps[:m] = z[1 : m + 1] - z[:m]
    step = (spread * gaps).clamp_min(1e-6)
    raw = step + torch.log(-torch.expm1(-step))  # softplus^-1(x) = x + log(1 - e^-x), stable for small and large x
    raw[m] = 0.0
    return raw


def non_crossing(raw: torch.Tensor, median: int) -> torch.Tensor:
    """Sorted quantiles [..., Q] from unconstrained ``raw`` [..., Q] (module docstring)."""
    centre = raw[..., median : median + 1]
    up = centre + torch.cumsum(F.softplus(raw[..., median + 1 :]), dim=-1)
    down = centre - torch.cumsum(F.softplus(raw[..., :median].flip(-1)), dim=-1).flip(-1)
    return torch.cat([down, centre, up], dim=-1)
