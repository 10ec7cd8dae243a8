"""Standard scaling fitted on the training period only, ignoring missing values.

Statistics are per channel (``per_node=False``, the usual choice for traffic speeds and flows and for weather
variables) or per node and channel. Missing entries never enter the mean or the standard deviation, and a
channel (or node) that is constant or never observed gets std 1 so scaling never divides by zero.

:meth:`StandardScaler.fit_series` fits on any :class:`~stlm.data.sources.base.Series` block by block (a lazy
archive is never loaded whole): per block the mean and the sum of squared deviations, combined exactly across
blocks (Chan et al.), so one block gives the textbook two-pass result. :func:`save_normalization` /
:func:`load_normalization` keep the statistics beside a run (``normalization.json``), so a resumed run and a
forecast job scale with the very same numbers and skip the pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from stlm.data.seasonal import ArrayBlocks, block_steps
from stlm.data.sources.base import DataValidationError
from stlm.io.atomic import atomic_write_json


def to_original_units(scaled: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``scaled * std + mean`` for a forecast [B, H, N, C], or quantiles / members [B, H, N, C, Q] (a fifth
    axis is the band's: every quantile is scaled like the value it spreads around)."""
    if scaled.ndim == 5:
        mean, std = mean.unsqueeze(-1), std.unsqueeze(-1)
    return scaled * std + mean


class StandardScaler:
    """``scaled = (value - mean) / std`` with mean and std of shape [C] or [N, C] (original units)."""

    def __init__(self, per_node: bool = False):
        self.per_node = per_node
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, values: np.ndarray, mask: np.ndarray) -> "StandardScaler":
        """Fit on ``values``/``mask`` [T, N, C] in memory (the training period only); see :meth:`fit_series`."""
        self.fit_series(ArrayBlocks(values, mask), 0, len(values))
        return self

    def fit_series(self, series, start: int, stop: int) -> np.ndarray:
        """Fit on steps ``start .. stop-1`` of ``series``, read block by block; returns the number of observed
        values [N, C] of each node and channel (the datamodule reports nodes never observed)."""
        N, C = series.n_nodes, series.n_channels
        shape = (N, C) if self.per_node else (C,)
        axes = (0,) if self.per_node else (0, 1)
        count, mean, m2 = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        per_node_count = np.zeros((N, C))
        per_node_total = np.zeros((N, C))
        step = block_steps(N, C)
        for a in range(start, stop, step):
            raw = series.read(a, min(a + step, stop))
            observed = np.isfinite(raw)
            values = np.where(observed, raw, np.float32(0.0))
            m = observed.astype(np.float64)
            n_b = m.sum(axis=axes)
            total_b = (values * m).sum(axis=axes)
            mean_b = np.divide(total_b, n_b, out=np.zeros_like(total_b), where=n_b > 0)
            m2_b = (((values - mean_b) * m) ** 2).sum(axis=axes)
            n = count + n_b
            delta = mean_b - mean
            # The first block's mean as it is (no rounding through the combination): one block = two-pass result.
            mean = np.where(count == 0, mean_b, mean + np.divide(delta * n_b, n, out=np.zeros_like(delta), where=n > 0))
            m2 = m2 + m2_b + np.divide(delta**2 * count * n_b, n, out=np.zeros_like(delta), where=n > 0)
            count = n
            per_node_count += m.sum(0)
            per_node_total += (values * m).sum(0)
        if self.per_node:
            # Nodes never observed in training take the channel mean, so their inputs still scale sensibly.
            channel_mean = per_node_total.sum(0) / np.maximum(per_node_count.sum(0), 1)
            mean = np.where(count > 0, mean, channel_mean)
        var = np.divide(m2, count, out=np.ones_like(m2), where=count > 1)
        std = np.sqrt(var)
        self.mean = mean.astype(np.float32)
        self.std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
        return per_node_count

    def _check(self) -> None:
        if self.mean is None:
            raise RuntimeError("StandardScaler used before fit(); fit it on the training period first")

    def transform(self, values: np.ndarray) -> np.ndarray:
        self._check()
        return ((values - self.mean) / self.std).astype(np.float32)

    def inverse_transform(self, scaled: torch.Tensor) -> torch.Tensor:
        """A scaled forecast [B, H, N, C] (or quantiles [B, H, N, C, Q]) back to original units."""
        self._check()
        return to_original_units(scaled, *self.tensors(scaled.device, scaled.dtype))

    def tensors(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std as tensors broadcastable to [..., N, C]."""
        self._check()
        return (
            torch.as_tensor(self.mean, device=device, dtype=dtype),
            torch.as_tensor(self.std, device=device, dtype=dtype),
        )

    def state_dict(self) -> dict:
        self._check()
        return {"per_node": self.per_node, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict) -> "StandardScaler":
        scaler = cls(per_node=state["per_node"])
        scaler.mean = np.asarray(state["mean"], dtype=np.float32)
        scaler.std = np.asarray(state["std"], dtype=np.float32)
        return scaler


def save_normalization(path: str | Path, scaler: StandardScaler, channels: list[str], origin: str) -> None:
    """Write the scaler's statistics (and the channels they belong to) atomically."""
    atomic_write_json(Path(path), {"channels": list(channels), "origin": origin, **scaler.state_dict()})


def load_normalization(path: str | Path, channels: list[str]) -> StandardScaler:
    """The saved statistics; raises naming the file if it is unreadable or belongs to other channels."""
    try:
        state = json.loads(Path(path).read_text())
        saved = state.pop("channels")
        state.pop("origin", None)
        scaler = StandardScaler.from_state_dict(state)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataValidationError(f"{path}: unreadable normalization file ({err}); delete it to recompute") from err
    if saved != list(channels):
        raise DataValidationError(
            f"{path}: normalization saved for channels {saved}, but this data set has {list(channels)}; "
            "point dataset.normalization_path elsewhere or delete the file to recompute"
        )
    return scaler
