"""Input embedding: per-token input features, calendar and node identity -> one vector per (step, node).

    features    [B, T, N, F]   per-token inputs (e.g. scaled values * mask, mask; see the forecaster)
    x_time      [B, T, 2]      (time-of-day slot, day of week) indices
    returns     [B, T, N, d_model]

``e = W features + E_tod[slot] + E_dow[day] + E_node[n]``. The learned node embedding (Graph WaveNet's
adaptive adjacency, STID, STAEformer) lets a global attention tell sensors apart, which matters more than any
hand-made graph in their ablations. A calendar feature with 0 slots is off (see ``stlm.data.calendar``).
"""

from __future__ import annotations

import torch
from torch import nn


class SpatioTemporalEmbedding(nn.Module):
    def __init__(self, n_features: int, n_nodes: int, d_model: int, steps_per_day: int, days_per_week: int, dropout: float = 0.0):
        super().__init__()
        self.value = nn.Linear(n_features, d_model)
        self.time_of_day = nn.Embedding(steps_per_day, d_model) if steps_per_day > 0 else None
        self.day_of_week = nn.Embedding(days_per_week, d_model) if days_per_week > 0 else None
        self.node = nn.Parameter(torch.empty(n_nodes, d_model))
        for emb in (self.time_of_day, self.day_of_week):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.1)
        nn.init.normal_(self.node, std=0.1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: torch.Tensor, x_time: torch.Tensor) -> torch.Tensor:
        e = self.value(features) + self.node  # [B, T, N, d]
        calendar = 0
        if self.time_of_day is not None:
            calendar = calendar + self.time_of_day(x_time[..., 0])
        if self.day_of_week is not None:
            calendar = calendar + self.day_of_week(x_time[..., 1])
        if torch.is_tensor(calendar):
            e = e + calendar[:, :, None, :]  # same for every node: [B, T, 1, d]
        return self.dropout(e)
