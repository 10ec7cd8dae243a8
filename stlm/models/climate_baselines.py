"""Climate baselines in the same engine and on the same split as the grid models (scaled outputs [B, H, N, C]).

* :class:`Persistence` - every lead equals the last observed input of the cell (the sensor ``LastValue``).
* :class:`Climatology` - the training-period mean of the token at the target's hour of day (or day of year or
  month, ``dataset.climatology``); the datamodule's seasonal table (:mod:`stlm.data.seasonal`), the same
  construction as the sensor historical average. Fitted, never trained; works on any data set.
"""

from __future__ import annotations

import torch
from torch import nn

from stlm.data.spec import DataSpec
from stlm.models.baselines import LastValue


class Persistence(LastValue):
    """Persistence: the last observed state of each cell, repeated over every lead."""


class Climatology(nn.Module):
    """The training climatology of each token at each target time (the datamodule's climatology key)."""

    def __init__(self, spec: DataSpec):
        super().__init__()
        self.register_buffer("table", torch.zeros(0), persistent=False)
        self.column = 0

    def fit_from_data(self, datamodule) -> None:
        """Scaled climatology [K, N, C] from the datamodule (computed lazily on the training period)."""
        clim = torch.as_tensor(datamodule.climatology, dtype=torch.float32)
        mean, std = (torch.as_tensor(v, dtype=torch.float32) for v in (datamodule.scaler.mean, datamodule.scaler.std))
        self.table = (clim - mean) / std
        self.column = datamodule.climatology_column

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.table.numel() == 0:
            raise RuntimeError("Climatology needs fit_from_data(datamodule) before forecasting")
        return self.table[batch["y_time"][..., self.column]]
