"""Masked errors in original units, per forecast horizon.

Conventions (as in DCRNN / Graph WaveNet / BasicTS, with the mask made explicit):

* Only observed targets count (``mask == 1``); the mean is over observed entries, pooled over the batch,
  nodes and channels of one horizon: ``MAE_h = sum(mask * |pred - y|) / sum(mask)``.
* ``*_avg`` pools all horizons: ``MAE_avg = sum over h of the numerators / sum over h of the counts``
  (and ``RMSE_avg = sqrt(pooled MSE)``). With equal counts per horizon this is the mean of the per-horizon
  values reported in papers.
* MAPE is in percent and skips targets with ``|y| <= mape_min_abs`` (a zero count or zero speed has no
  relative error).

Shapes: ``pred``, ``target``, ``mask`` [B, H, N, C]; per-horizon results [H].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric


def _masked_mean(err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # where, not err * mask: a missing target stored as NaN must not turn the mean into NaN (NaN * 0 = NaN).
    return torch.where(mask > 0, err, 0.0).sum() / mask.sum().clamp_min(1.0)


def masked_mae(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over observed entries (a scalar)."""
    return _masked_mean((pred - target).abs(), mask)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over observed entries (a scalar)."""
    return _masked_mean((pred - target) ** 2, mask)


def masked_huber(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Huber loss over observed entries (a scalar); ``delta`` in original units."""
    return _masked_mean(F.huber_loss(pred, target, reduction="none", delta=delta), mask)


LOSSES = {"mae": masked_mae, "mse": masked_mse, "huber": masked_huber}


def masked_loss(name: str):
    """The training loss called ``name``; raises listing the valid names."""
    if name not in LOSSES:
        raise ValueError(f"engine.loss={name!r} is not a known loss; choose one of {sorted(LOSSES)}")
    return LOSSES[name]


class HorizonMetrics(Metric):
    """Accumulates masked MAE, RMSE and MAPE per horizon over an epoch (exact, not a mean of batch means).

    ``compute()`` returns ``{"mae_h1": ..., ..., "mae_avg": ..., "rmse_h1": ..., "mape_avg": ...}``.
    States are sums, so they reduce correctly across DDP ranks.
    """

    full_state_update = False

    def __init__(self, horizon: int, mape_min_abs: float = 0.0, **metric_kwargs):
        super().__init__(**metric_kwargs)
        self.horizon = horizon
        self.mape_min_abs = mape_min_abs
        for name in ("abs_err", "sq_err", "count", "ape", "ape_count"):
            self.add_state(name, default=torch.zeros(horizon, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        if pred.shape != target.shape or mask.shape != target.shape or pred.shape[1] != self.horizon:
            raise ValueError(
                f"HorizonMetrics: pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask {tuple(mask.shape)} "
                f"must all be [B, H={self.horizon}, N, C]"
            )
        pred, target, observed = pred.double(), target.double(), mask > 0
        dims = (0, 2, 3)
        err = torch.where(observed, pred - target, 0.0)  # missing targets count for nothing, even if NaN
        self.abs_err += err.abs().sum(dims)
        self.sq_err += (err**2).sum(dims)
        self.count += observed.double().sum(dims)
        relevant = observed & (target.abs() > self.mape_min_abs)
        self.ape += torch.where(relevant, err.abs() / target.abs().clamp_min(1e-12), 0.0).sum(dims)
        self.ape_count += relevant.double().sum(dims)

    def compute(self) -> dict[str, torch.Tensor]:
        count = self.count.clamp_min(1.0)
        ape_count = self.ape_count.clamp_min(1.0)
        per_h = {
            "mae": self.abs_err / count,
            "rmse": (self.sq_err / count).sqrt(),
            "mape": 100.0 * self.ape / ape_count,
        }
        pooled = {
            "mae": self.abs_err.sum() / self.count.sum().clamp_min(1.0),
            "rmse": (self.sq_err.sum() / self.count.sum().clamp_min(1.0)).sqrt(),
            "mape": 100.0 * self.ape.sum() / self.ape_count.sum().clamp_min(1.0),
        }
        out = {}
        for name, values in per_h.items():
            for h in range(self.horizon):
                out[f"{name}_h{h + 1}"] = values[h].float()
            out[f"{name}_avg"] = pooled[name].float()
        return out
