"""Seasonal prior: let a model forecast departures from each node's seasonal profile instead of raw values.

With the prior on, the model's per-token inputs are ``[x * mask, (x - profile(x_time)) * mask, mask]`` and
its output is added to ``profile(y_time)``, where ``profile`` is the historical average fitted on the training
period (:class:`~stlm.models.historical_average.HistoricalAverage`). Off, the inputs are ``[x * mask, mask]``
and the output is used as is. Shapes: x, mask [B, T, N, C] -> features [B, T, N, n_features].

Why: learning a per-node weekly profile from scratch takes many epochs; with the profile in place a short CPU
training spends its steps on what the calendar cannot know (today's incidents and their spread).
"""

from __future__ import annotations

import torch
from torch import nn

from stlm.data.spec import DataSpec
from stlm.models.historical_average import HistoricalAverage


class SeasonalPrior(nn.Module):
    def __init__(self, spec: DataSpec, enabled: bool = True):
        super().__init__()
        self.average = HistoricalAverage(spec) if enabled else None
        self.n_features = (3 if enabled else 2) * spec.n_channels

    def fit_from_data(self, datamodule) -> None:
        if self.average is not None:
            self.average.fit_from_data(datamodule)

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token input features [B, T, N, n_features] of a batch."""
        x, mask = batch["x"], batch["x_mask"]
        parts = [x * mask, mask]
        if self.average is not None:
            parts.insert(1, (x - self.average.lookup(batch["x_time"])) * mask)
        return torch.cat(parts, dim=-1)

    def add(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The forecast [B, H, N, C] (or quantiles [B, H, N, C, Q]): the model's output plus the profile at the
        target times (the same shift for every quantile: the band moves with the profile)."""
        if self.average is None:
            return out
        profile = self.average.lookup(batch["y_time"])
        return out + (profile.unsqueeze(-1) if out.ndim == profile.ndim + 1 else profile)
