"""Masked, optionally area-weighted errors in original units, and the one table of training losses.

Only observed targets count (``mask == 1``). With token weights ``w`` ([N], e.g. cos latitude for grid cells,
:meth:`stlm.data.sources.geometry.Geometry.area_weights`; 1 for sensors) every mean weighs an entry by ``w_n``:

    MAE = sum w m |f - o| / sum w m        RMSE = sqrt( sum w m (f - o)^2 / sum w m )
    ACC = sum w m a_f a_o / sqrt( sum w m a_f^2 * sum w m a_o^2 ),   a = value - climatology (uncentred)

Without weights the means are the plain masked means of DCRNN / Graph WaveNet / BasicTS. ``where``, never
``err * mask``: a missing target stored as NaN must not turn a mean into NaN (NaN * 0 = NaN).
Shapes: pred, target, mask [B, H, N, C]; per-horizon functions return [H, C].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The elementwise errors behind every training loss (one table for sensors and grids).
ERRORS = {
    "mae": lambda p, t: (p - t).abs(),
    "mse": lambda p, t: (p - t) ** 2,
    "huber": lambda p, t: F.huber_loss(p, t, reduction="none"),
}


def weight_mask(mask: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``w * m`` broadcast to [B, H, N, C]: weights None (all 1), [N] (per token) or [N, C]."""
    observed = (mask > 0).to(mask.dtype if mask.is_floating_point() else torch.float32)
    if weights is None:
        return observed
    weights = weights.to(observed.dtype)
    return observed * (weights.view(1, 1, -1, 1) if weights.ndim == 1 else weights)


def _weighted_mean(err: torch.Tensor, wm: torch.Tensor, floor: float) -> torch.Tensor:
    return torch.where(wm > 0, err * wm, 0.0).sum() / wm.sum().clamp_min(floor)


def masked_mae(pred, target, mask, weights=None) -> torch.Tensor:
    """Mean absolute error over observed entries (a scalar)."""
    return masked_loss("mae")(pred, target, mask, weights)


def masked_mse(pred, target, mask, weights=None) -> torch.Tensor:
    """Mean squared error over observed entries (a scalar)."""
    return masked_loss("mse")(pred, target, mask, weights)


def masked_huber(pred, target, mask, delta: float = 1.0) -> torch.Tensor:
    """Huber loss over observed entries (a scalar); ``delta`` in original units."""
    err = F.huber_loss(pred, target, reduction="none", delta=delta)
    return _weighted_mean(err, weight_mask(mask, None), 1.0)


def masked_loss(name: str):
    """The training loss called ``name``: ``f(pred, target, mask, weights=None)`` -> scalar; raises listing the
    valid names. Without weights the mean is over observed entries; with weights ([N] or [N, C]) it is
    ``sum w m err / sum w m``."""
    if name not in ERRORS:
        raise ValueError(f"engine.loss={name!r} is not a known loss; choose one of {sorted(ERRORS)}")
    error = ERRORS[name]

    def loss(pred, target, mask, weights=None) -> torch.Tensor:
        # Unweighted: at least one observation in the denominator, as the classic masked mean.
        return _weighted_mean(error(pred, target), weight_mask(mask, weights), 1.0 if weights is None else 1e-12)

    return loss


def weighted_loss(name: str, pred, target, mask, weights: torch.Tensor) -> torch.Tensor:
    """Scalar training loss ``sum w m err / sum w m`` with weights [N, C] (e.g. cos-lat / channel std)."""
    return masked_loss(name)(pred, target, mask, weights)


def _sums(value: torch.Tensor, wm: torch.Tensor) -> torch.Tensor:
    """sum over batch and tokens of ``wm * value`` -> [H, C] (``where`` keeps NaN at masked entries out)."""
    return torch.where(wm > 0, value * wm, 0.0).sum(dim=(0, 2))


def weighted_rmse(pred, target, mask, weights=None) -> torch.Tensor:
    """Masked (weighted) RMSE per horizon and channel, [H, C]."""
    wm = weight_mask(mask, weights)
    return (_sums((pred - target) ** 2, wm) / wm.sum(dim=(0, 2)).clamp_min(1e-12)).sqrt()


def weighted_mae(pred, target, mask, weights=None) -> torch.Tensor:
    """Masked (weighted) MAE per horizon and channel, [H, C]."""
    wm = weight_mask(mask, weights)
    return _sums((pred - target).abs(), wm) / wm.sum(dim=(0, 2)).clamp_min(1e-12)


def anomaly_correlation(pred, target, climatology, mask, weights=None) -> torch.Tensor:
    """Masked (weighted) uncentred anomaly correlation per horizon and channel, [H, C]."""
    wm = weight_mask(mask, weights)
    af, ao = pred - climatology, target - climatology
    return _sums(af * ao, wm) / (_sums(af**2, wm) * _sums(ao**2, wm)).sqrt().clamp_min(1e-12)
