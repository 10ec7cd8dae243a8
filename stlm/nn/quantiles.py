"""Non-crossing quantiles from unconstrained outputs: a median plus positive steps outward.

    raw     [..., Q]   unconstrained outputs of a head, one per level
    returns [..., Q]   q_1 <= q_2 <= .. <= q_Q (never crossing; equal only where a step underflows)

The output at the median level ``m`` (the level nearest 0.5) is the median itself; each level above adds a
positive step ``softplus(raw_k)`` to the one below it, each level below subtracts one from the one above:

    q_m = raw_m,    q_k = q_{k-1} + softplus(raw_k) (k > m),    q_k = q_{k+1} - softplus(raw_k) (k < m)

so the quantiles can never cross, whatever the weights, and a shift of the median (e.g. a seasonal prior added
to the forecast) moves the whole band. The steps start near ``softplus(0) = 0.69`` scaled units apart; training
with the pinball loss pulls them to the data's spread.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def median_index(levels: torch.Tensor) -> int:
    """Index of the level nearest 0.5 (the band's centre)."""
    return int(torch.argmin((levels - 0.5).abs()))


def non_crossing(raw: torch.Tensor, median: int) -> torch.Tensor:
    """Sorted quantiles [..., Q] from unconstrained ``raw`` [..., Q] (module docstring)."""
    centre = raw[..., median : median + 1]
    up = centre + torch.cumsum(F.softplus(raw[..., median + 1 :]), dim=-1)
    down = centre - torch.cumsum(F.softplus(raw[..., :median].flip(-1)), dim=-1).flip(-1)
    return torch.cat([down, centre, up], dim=-1)
