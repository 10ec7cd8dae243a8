"""Widening (or narrowing) an ensemble around its mean, one factor per horizon.

    x        [B, H, ..., M]   ensemble members in the last axis
    returns  [B, H, ..., M]   mu + scale[h] * (x - mu),   mu = mean over the members

Members drawn by MC dropout (:class:`stlm.models.ensemble.MCDropoutEnsemble`) spread by how unsure the weights
are, not by how wrong the forecast is: such ensembles are known to be too narrow (their spread misses the
noise of the data). As :class:`stlm.nn.band_scale.BandScale` does for quantile bands, the factor is fitted on the
validation split after every validation pass (:class:`stlm.metrics.spread_calibration.SpreadCalibration`: the
factor with the least fair CRPS), saved with the weights and applied in eval mode only. The ensemble mean, the
part the point metrics see through the members' median, moves only as far as the median of a scaled ensemble
does.
"""

from __future__ import annotations

import torch
from torch import nn


class SpreadScale(nn.Module):
    """Per-horizon scale of the members' offsets from their mean (module docstring).

    Args:
        horizon: H, the forecast steps.
    """

    # MC dropout's spread is not a fit to the training split: the engine's refits may narrow it as well as widen.
    fitted_on_training = False

    def __init__(self, horizon: int):
        super().__init__()
        self.register_buffer("scale", torch.ones(horizon))  # identity until fitted; in checkpoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return x
        centre = x.mean(-1, keepdim=True)
        scale = self.scale.to(x.dtype).view(1, x.shape[1], *([1] * (x.dim() - 2)))
        return centre + scale * (x - centre)

    def new_calibration(self, **metric_kwargs):
        """The metric that fits this scale's factors on held-out predictions."""
        from stlm.metrics.spread_calibration import SpreadCalibration

        return SpreadCalibration(self.scale.shape[0], **metric_kwargs)
