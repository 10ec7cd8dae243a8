"""Windows read lazily from a :class:`~stlm.data.sources.climate_grid.ClimateGrid` (never the whole archive).

A batch of samples starting at steps ``s`` reads, for each sample, the block ``s .. s + window + horizon - 1``
from the files. When the samples lie close together (the in-order validation/test loaders), the batch reads
their union once. Scaling and masking happen per batch: ``mask = isfinite(value)``, inputs are scaled and 0
where missing, targets stay in original units and 0 where missing (NaN never leaves this module).

Batches follow the data contract (``stlm.data.windowing``) with N = H * W cells, latitude-major, and a
calendar of 3 columns (``stlm.data.climate_features``):

    x, x_mask [B, window, N, C]   y, mask [B, horizon, N, C]   x_time [B, window, 3]   y_time [B, horizon, 3]
    index [B] (step of the first target)
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from stlm.data.scalers import StandardScaler
from stlm.data.sources.climate_grid import ClimateGrid


class GridWindowDataset(Dataset):
    """Samples of one split of a lazily read grid."""

    def __init__(self, grid: ClimateGrid, scaler: StandardScaler, calendar: np.ndarray, starts: np.ndarray, window: int, horizon: int):
        self.grid, self.scaler = grid, scaler
        self.calendar = torch.from_numpy(calendar)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.window, self.horizon = window, horizon
        self.span = window + horizon

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([i])
        return {k: v[0] for k, v in batch.items()}

    def _blocks(self, starts: np.ndarray) -> np.ndarray:
        """[B, span, H, W, C] raw values (NaN = missing): one read of the union if it is no larger than B reads."""
        lo, hi = int(starts.min()), int(starts.max()) + self.span
        if hi - lo <= len(starts) * self.span:
            union = self.grid.read(lo, hi)
            return np.stack([union[s - lo : s - lo + self.span] for s in starts])
        return np.stack([self.grid.read(int(s), int(s) + self.span) for s in starts])

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        starts = self.starts[np.asarray(indices, dtype=np.int64)]
        raw = self._blocks(starts)
        B, S, H, W, C = raw.shape
        raw = raw.reshape(B, S, H * W, C)
        observed = np.isfinite(raw)
        values = np.where(observed, raw, np.float32(0.0))
        scaled = np.where(observed, (values - self.scaler.mean) / self.scaler.std, np.float32(0.0)).astype(np.float32)
        steps = torch.from_numpy(starts)[:, None] + torch.arange(S)
        time = self.calendar[steps]  # [B, S, 3]
        mask = torch.from_numpy(observed.astype(np.float32))
        w = self.window
        return {
            "x": torch.from_numpy(np.ascontiguousarray(scaled[:, :w])),
            "x_mask": mask[:, :w].contiguous(),
            "y": torch.from_numpy(np.ascontiguousarray(values[:, w:])),
            "mask": mask[:, w:].contiguous(),
            "x_time": time[:, :w],
            "y_time": time[:, w:],
            "index": steps[:, w],
        }
