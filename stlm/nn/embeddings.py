"""Input embedding: observed values, their mask, calendar and node identity -> one vector per (step, node).

    x, x_mask   [B, T, N, C]   scaled values (0 where missing) and 1 = observed
    x_time      [B, T, 2]      (time-of-day slot, day of week) indices
    returns     [B, T, N, d_model]

``e = W_v [x * mask, mask] + E_tod[slot] + E_dow[day] + E_node[n]``. Feeding the mask lets the model tell a
missing reading from a reading equal to the mean. The learned node embedding (Graph WaveNet's adaptive
adjacency, STID, STAEformer) lets a global attention tell sensors apart, which matters more than any
hand-made graph in their ablations. A calendar feature with 0 slots is off (see ``stlm.data.calendar``).
"""

from __future__ import annotations

import torch
from torch import nn


class SpatioTemporalEmbedding(nn.Module):
    def __init__(self, n_channels: int, n_nodes: int, d_model: int, steps_per_day: int, days_per_week: int, dropout: float = 0.0):
        super().__init__()
        self.value = nn.Linear(2 * n_channels, d_model)
        self.time_of_day = nn.Embedding(steps_per_day, d_model) if steps_per_day > 0 else None
        self.day_of_week = nn.Embedding(days_per_week, d_model) if days_per_week > 0 else None
        self.node = nn.Parameter(torch.empty(n_nodes, d_model))
        for emb in (self.time_of_day, self.day_of_week):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.1)
        nn.init.normal_(self.node, std=0.1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, x_time: torch.Tensor) -> torch.Tensor:
        e = self.value(torch.cat([x * x_mask, x_mask], dim=-1))  # [B, T, N, d]
        e = e + self.node
        calendar = 0
        if self.time_of_day is not None:
            calendar = calendar + self.time_of_day(x_time[..., 0])
        if self.day_of_week is not None:
            calendar = calendar + self.day_of_week(x_time[..., 1])
        if torch.is_tensor(calendar):
            e = e + calendar[:, :, None, :]  # same for every node: [B, T, 1, d]
        return self.dropout(e)
