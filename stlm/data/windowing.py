"""Windowed samples over any :class:`~stlm.data.sources.base.Series`, read batch by batch (never copied per sample).

A sample starting at step ``s`` has inputs at steps ``s .. s+window-1`` and targets at ``s+window ..
s+window+horizon-1``. A batch reads, for each sample, the block ``s .. s + window + horizon - 1`` from the series
(an in-memory slice for sensors, a file read for a lazy grid); when the samples lie close together (the in-order
validation and test loaders) it reads their union once. Scaling and masking happen per batch:
``mask = isfinite(value)``, inputs are scaled and 0 where missing, targets stay in original units and 0 where
missing: NaN never leaves this module. Batches are dicts of tensors (the data contract of every model and
engine):

    x       [B, window, N, C]  float32  scaled inputs, 0 where missing
    x_mask  [B, window, N, C]  float32  1 = observed
    y       [B, horizon, N, C] float32  targets in original units (0 where missing)
    mask    [B, horizon, N, C] float32  1 = observed target
    x_time  [B, window, 4]     int64    calendar of each input step (stlm.data.calendar: slot, day of week,
                                        day of year, month)
    y_time  [B, horizon, 4]    int64    the same for each target step
    index   [B]                int64    step of the first target in the series
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from stlm.data.scalers import StandardScaler


class WindowDataset(Dataset):
    """Samples of one split (or of a forecast job's init times) over ``series``.

    Args:
        series: the data (``read(start, stop)`` -> [S, N, C], NaN = missing).
        scaler: fitted statistics that scale the inputs.
        calendar: [T', K] calendar of every step that a window may touch (T' >= the last step read).
        starts: first input step of every sample.
        window, horizon: input and target lengths in steps.
    """

    def __init__(self, series, scaler: StandardScaler, calendar: np.ndarray, starts: np.ndarray, window: int, horizon: int):
        self.series, self.scaler = series, scaler
        self.calendar = torch.from_numpy(np.ascontiguousarray(calendar))
        self.starts = np.asarray(starts, dtype=np.int64)
        self.window, self.horizon = window, horizon
        self.span = window + horizon

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([i])
        return {k: v[0] for k, v in batch.items()}

    def _blocks(self, starts: np.ndarray) -> np.ndarray:
        """[B, span, N, C] raw values (NaN = missing): one read of the union if it is no larger than B reads."""
        lo, hi = int(starts.min()), int(starts.max()) + self.span
        if hi - lo <= len(starts) * self.span:
            union = self.series.read(lo, hi)
            return np.stack([union[s - lo : s - lo + self.span] for s in starts])
        return np.stack([self.series.read(int(s), int(s) + self.span) for s in starts])

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        """Gather a whole batch at once (the DataLoader calls this when present)."""
        starts = self.starts[np.asarray(indices, dtype=np.int64)]
        raw = self._blocks(starts)
        observed = np.isfinite(raw)
        values = np.where(observed, raw, np.float32(0.0))
        scaled = np.where(observed, self.scaler.transform(values), np.float32(0.0)).astype(np.float32)
        steps = torch.from_numpy(starts)[:, None] + torch.arange(self.span)
        time = self.calendar[steps]  # [B, span, K]
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


def collate_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The dataset already returns a collated batch (see ``__getitems__``)."""
    return batch


class PaddedSeries:
    """A series whose ``read`` continues past its last step with ``extra`` missing (NaN) steps: forecasts may
    reach past the end of the data, where the targets are simply unobserved. Everything else is the series'."""

    def __init__(self, series, extra: int):
        self._series, self.extra = series, extra

    def __getattr__(self, name):
        return getattr(self._series, name)

    def read(self, start: int, stop: int) -> np.ndarray:
        T = self._series.n_steps
        block = self._series.read(min(start, T), min(stop, T))
        if stop <= T:
            return block
        missing = np.full((stop - max(start, T), *block.shape[1:]), np.nan, dtype=np.float32)
        return np.concatenate([block, missing])
