"""Standard scaling fitted on the training period only, ignoring missing values.

Statistics are per channel (``per_node=False``, the usual choice for traffic speeds and flows) or per node
and channel. Missing entries never enter the mean or the standard deviation, and a channel (or node) that is
constant or never observed gets std 1 so scaling never divides by zero.
"""

from __future__ import annotations

import numpy as np
import torch


class StandardScaler:
    """``scaled = (value - mean) / std`` with mean and std of shape [C] or [N, C] (original units)."""

    def __init__(self, per_node: bool = False):
        self.per_node = per_node
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, values: np.ndarray, mask: np.ndarray) -> "StandardScaler":
        """Fit on ``values``/``mask`` [T, N, C] (the training period only)."""
        axes = (0,) if self.per_node else (0, 1)
        m = mask.astype(np.float64)
        count = m.sum(axis=axes)
        total = (values * m).sum(axis=axes)
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        if self.per_node:
            # Nodes never observed in training take the channel mean, so their inputs still scale sensibly.
            channel_mean = total.sum(0) / np.maximum(count.sum(0), 1)
            mean = np.where(count > 0, mean, channel_mean)
        centred = (values - mean) * m
        var = np.divide((centred**2).sum(axis=axes), count, out=np.ones_like(total), where=count > 1)
        std = np.sqrt(var)
        self.mean = mean.astype(np.float32)
        self.std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
        return self

    def _check(self) -> None:
        if self.mean is None:
            raise RuntimeError("StandardScaler used before fit(); fit it on the training period first")

    def transform(self, values: np.ndarray) -> np.ndarray:
        self._check()
        return ((values - self.mean) / self.std).astype(np.float32)

    def inverse_transform(self, scaled: torch.Tensor) -> torch.Tensor:
        """Scaled [..., N, C] tensor back to original units."""
        self._check()
        mean, std = self.tensors(scaled.device, scaled.dtype)
        return scaled * std + mean

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
