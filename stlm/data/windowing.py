"""Windowed samples over a series held once in memory: each batch is gathered by index, never copied per sample.

A sample starting at step ``s`` has inputs at steps ``s .. s+window-1`` and targets at ``s+window ..
s+window+horizon-1``. Batches are dicts of tensors (the data contract of every model and engine):

    x       [B, window, N, C]  float32  scaled inputs, 0 where missing
    x_mask  [B, window, N, C]  float32  1 = observed
    y       [B, horizon, N, C] float32  targets in original units (0 where missing)
    mask    [B, horizon, N, C] float32  1 = observed target
    x_time  [B, window, 2]     int64    (time-of-day slot, day of week) of each input step
    y_time  [B, horizon, 2]    int64    the same for each target step
    index   [B]                int64    step of the first target in the series
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class WindowDataset(Dataset):
    """Samples of one split. Tensors are shared with the datamodule (views, no copies)."""

    def __init__(
        self,
        scaled: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        calendar: torch.Tensor,
        starts: np.ndarray,
        window: int,
        horizon: int,
    ):
        self.scaled, self.values, self.mask, self.calendar = scaled, values, mask, calendar
        self.starts = torch.as_tensor(starts, dtype=torch.long)
        self.window, self.horizon = window, horizon
        self._x_offsets = torch.arange(window)
        self._y_offsets = torch.arange(window, window + horizon)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([i])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        """Gather a whole batch with one fancy-index per tensor (the DataLoader calls this when present)."""
        s = self.starts[torch.as_tensor(indices, dtype=torch.long)][:, None]
        xi, yi = s + self._x_offsets, s + self._y_offsets  # [B, window], [B, horizon]
        return {
            "x": self.scaled[xi],
            "x_mask": self.mask[xi].float(),
            "y": self.values[yi],
            "mask": self.mask[yi].float(),
            "x_time": self.calendar[xi],
            "y_time": self.calendar[yi],
            "index": yi[:, 0],
        }


def collate_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The dataset already returns a collated batch (see ``__getitems__``)."""
    return batch
