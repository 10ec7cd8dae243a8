"""Latitude-weighted, masked errors for lat-lon grids, per variable and per lead time (WeatherBench conventions).

A cell's area shrinks with the cosine of its latitude, so every mean over cells weighs cell ``n`` by
``w_n = cos(lat_n) / mean_n cos(lat_n)`` (mean weight 1), and only observed targets count (``mask == 1``).
For lead ``h`` and channel ``c``, pooling the batch ``b`` and the cells ``n``:

    RMSE[h, c] = sqrt( sum w m (f - o)^2 / sum w m )          MAE[h, c] = sum w m |f - o| / sum w m
    ACC[h, c]  = sum w m a_f a_o / sqrt( sum w m a_f^2 * sum w m a_o^2 ),   a_f = f - clim, a_o = o - clim

``f`` forecast, ``o`` observation, ``clim`` the training-period climatology at the target's time (ACC is the
uncentred anomaly correlation, pooled over all forecasts of a lead: sums reduce exactly across batches and
DDP ranks). Units: RMSE and MAE in the variable's units, ACC in [-1, 1].

Keys (``compute``): ``rmse_lead6h``, ``mae_lead6h``, ``acc_lead6h`` per lead (pooled over channels, as the
sensor metrics are: with several variables of different units, read the per-variable keys
``t2m/rmse_lead6h``); ``*_avg`` is the mean over leads of the per-lead values.
Shapes: pred, target, mask [B, H, N, C]; weights [N]; climatology at the targets [B, H, N, C].
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric


def latitude_weights(lat_deg: np.ndarray) -> np.ndarray:
    """[N] float32 ``cos(lat) / mean(cos(lat))`` for token latitudes in degrees (poles get weight ~0)."""
    w = np.cos(np.deg2rad(np.asarray(lat_deg, dtype=np.float64))).clip(min=0.0)
    return (w / max(w.mean(), 1e-12)).astype(np.float32)


def lead_name(minutes: float) -> str:
    """``6h`` for whole hours, else ``30min`` (used in metric keys: ``rmse_lead6h``)."""
    return f"{int(round(minutes / 60))}h" if abs(minutes / 60 - round(minutes / 60)) < 1e-9 else f"{minutes:g}min"


def _sums(value: torch.Tensor, wm: torch.Tensor) -> torch.Tensor:
    """sum over batch and cells of ``wm * value`` -> [H, C] (``where`` keeps NaN at masked entries out)."""
    return torch.where(wm > 0, value * wm, 0.0).sum(dim=(0, 2))


def _weight_mask(mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (mask > 0).to(weights.dtype) * weights.view(1, 1, -1, 1)


def weighted_rmse(pred, target, mask, weights) -> torch.Tensor:
    """Latitude-weighted masked RMSE per lead and channel, [H, C]."""
    wm = _weight_mask(mask, weights)
    return (_sums((pred - target) ** 2, wm) / wm.sum(dim=(0, 2)).clamp_min(1e-12)).sqrt()


def weighted_mae(pred, target, mask, weights) -> torch.Tensor:
    """Latitude-weighted masked MAE per lead and channel, [H, C]."""
    wm = _weight_mask(mask, weights)
    return _sums((pred - target).abs(), wm) / wm.sum(dim=(0, 2)).clamp_min(1e-12)


def anomaly_correlation(pred, target, climatology, mask, weights) -> torch.Tensor:
    """Latitude-weighted masked (uncentred) anomaly correlation per lead and channel, [H, C]."""
    wm = _weight_mask(mask, weights)
    af, ao = pred - climatology, target - climatology
    return _sums(af * ao, wm) / (_sums(af**2, wm) * _sums(ao**2, wm)).sqrt().clamp_min(1e-12)


_ERRORS = {
    "mae": lambda p, t: (p - t).abs(),
    "mse": lambda p, t: (p - t) ** 2,
    "huber": lambda p, t: F.huber_loss(p, t, reduction="none"),
}


def weighted_loss(name: str, pred, target, mask, weights: torch.Tensor) -> torch.Tensor:
    """Scalar training loss ``sum w m err / sum w m`` with weights [N, C] (e.g. cos-lat / channel std)."""
    if name not in _ERRORS:
        raise ValueError(f"engine.loss={name!r} is not a known loss; choose one of {sorted(_ERRORS)}")
    wm = (mask > 0).to(pred.dtype) * weights
    return torch.where(wm > 0, _ERRORS[name](pred, target) * wm, 0.0).sum() / wm.sum().clamp_min(1e-12)


class LeadMetrics(Metric):
    """Accumulates latitude-weighted RMSE, MAE and ACC per lead and channel over an epoch (module docstring).

    Args:
        horizon: number of leads H.
        interval_minutes: length of one step (lead ``h`` is ``(h + 1) * interval_minutes``).
        channels: C channel names (per-variable keys when C > 1).
        weights: [N] latitude weights of the tokens.
        climatology: [K, N, C] training climatology in original units, indexed by ``y_time[..., column]``;
            None leaves ACC out.
        column: which calendar column indexes the climatology (0 = time-of-day slot, 2 = day of year).
    """

    full_state_update = False
    takes_batch = True  # update(pred, batch): ACC needs the target times

    def __init__(
        self,
        horizon: int,
        interval_minutes: float,
        channels: Sequence[str],
        weights: torch.Tensor | np.ndarray,
        climatology: torch.Tensor | np.ndarray | None = None,
        column: int = 0,
        **metric_kwargs,
    ):
        super().__init__(**metric_kwargs)
        self.horizon, self.channels, self.column = horizon, list(channels), column
        self.leads = [lead_name((h + 1) * interval_minutes) for h in range(horizon)]
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32), persistent=False)
        clim = None if climatology is None else torch.as_tensor(climatology, dtype=torch.float32)
        self.register_buffer("climatology", clim, persistent=False)
        C = len(self.channels)
        for name in ("sq", "abs", "count", "fo", "ff", "oo"):
            self.add_state(name, default=torch.zeros(horizon, C, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        target, mask = batch["y"], batch["mask"]
        if pred.shape != target.shape or mask.shape != target.shape or pred.shape[1] != self.horizon:
            raise ValueError(
                f"LeadMetrics: pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask {tuple(mask.shape)} "
                f"must all be [B, H={self.horizon}, N={self.weights.numel()}, C={len(self.channels)}]"
            )
        pred, target = pred.double(), target.double()
        wm = _weight_mask(mask, self.weights.double())
        err = pred - target
        self.sq += _sums(err**2, wm)
        self.abs += _sums(err.abs(), wm)
        self.count += wm.sum(dim=(0, 2))
        if self.climatology is not None:
            clim = self.climatology[batch["y_time"][..., self.column]].double()  # [B, H, N, C]
            af, ao = pred - clim, target - clim
            self.fo += _sums(af * ao, wm)
            self.ff += _sums(af**2, wm)
            self.oo += _sums(ao**2, wm)

    def compute(self) -> dict[str, torch.Tensor]:
        def metrics(sq, ab, count, fo, ff, oo) -> dict[str, torch.Tensor]:  # each [H]
            out = {"rmse": (sq / count.clamp_min(1e-12)).sqrt(), "mae": ab / count.clamp_min(1e-12)}
            if self.climatology is not None:
                out["acc"] = fo / (ff * oo).sqrt().clamp_min(1e-12)
            return out

        states = (self.sq, self.abs, self.count, self.fo, self.ff, self.oo)
        groups = {"": metrics(*(s.sum(1) for s in states))}
        if len(self.channels) > 1:
            groups.update({f"{ch}/": metrics(*(s[:, c] for s in states)) for c, ch in enumerate(self.channels)})
        out = {}
        for prefix, values in groups.items():
            for name, per_lead in values.items():
                for h, lead in enumerate(self.leads):
                    out[f"{prefix}{name}_lead{lead}"] = per_lead[h].float()
                out[f"{prefix}{name}_avg"] = per_lead.mean().float()
        return out
