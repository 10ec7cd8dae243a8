"""Widening (or narrowing) a quantile band around its median, one factor per horizon and level.

    q        [B, H, ..., Q]   quantiles, sorted in their last axis, median at index ``median``
    returns  [B, H, ..., Q]   sort(m + scale[h, k] * (q_k - m)),   m = q[..., median]

A quantile head trained with the pinball loss on the training split is often too sure of itself on new data
(the network fits the training residuals; the test period is not the training period): on Hangzhou metro its
90% band covered 74% of the test targets. The scale is fitted on the validation split after each validation
pass (:class:`stlm.metrics.calibration.BandCalibration`, split-conformal recalibration of each level), saved
with the weights, and applied only in eval mode, so training sees the raw head and every forecast (test, batch
job, stream) sees the calibrated one. By default the fit only widens (``engine.narrow_bands``): a factor below
1 would trust a calm validation spell over the head's own training fit. The sort keeps the band non-crossing
where two levels' factors differ (Chernozhukov et al. 2010: sorting quantile estimates never increases their
pinball loss). The median's own factor is 1 and it is never moved.
"""

from __future__ import annotations

import torch
from torch import nn

from stlm.nn.quantiles import median_index


class BandScale(nn.Module):
    """Per-(horizon, level) scale of a band's offsets from its median (module docstring).

    Args:
        horizon: H, the forecast steps.
        levels: the Q quantile levels, increasing.
    """

    # The identity band is the head's fit to the training split (or a baseline's training residuals), so the
    # engine's refits do not narrow it unless engine.narrow_bands (stlm.engines.forecasting).
    fitted_on_training = True

    def __init__(self, horizon: int, levels: torch.Tensor):
        super().__init__()
        self.median = median_index(torch.as_tensor(levels))
        self.register_buffer("levels", torch.as_tensor(levels, dtype=torch.float64), persistent=False)
        self.register_buffer("scale", torch.ones(horizon, len(levels)))  # identity until fitted; in checkpoints

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        if self.training:
            return q
        centre = q[..., self.median : self.median + 1]
        scale = self.scale.to(q.dtype).view(1, q.shape[1], *([1] * (q.dim() - 3)), q.shape[-1])
        return torch.sort(centre + scale * (q - centre), dim=-1).values

    def new_calibration(self, **metric_kwargs):
        """The metric that fits this scale's factors on held-out predictions."""
        from stlm.metrics.calibration import BandCalibration

        return BandCalibration(self.scale.shape[0], self.levels, **metric_kwargs)
