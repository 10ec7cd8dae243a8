"""Fitting a band's per-(horizon, level) scale on held-out data: the pinball-optimal factor of each quantile.

    update(pred, target, weight)   pred [B, H, N, C, Q] quantiles, target and weight [B, H, N, C]
    compute()                      [H, Q] factors for :class:`stlm.nn.band_scale.BandScale`

For a level ``tau`` with offset ``d = q_tau - m`` from the median ``m``, write ``r = (y - m) / d``. The pinball
loss of the scaled quantile ``m + s d`` is ``|d| rho(r - s)`` with ``rho`` the pinball function of level
``max(tau, 1 - tau)`` (``d > 0`` above the median, ``d < 0`` below it), so the factor that minimises the level's
mean pinball loss on the data (and with it the CRPS, their sum) is the ``max(tau, 1 - tau)`` quantile of ``r``
weighted by ``|d|`` times the mask (and area weights on grids). The ``|d|`` weight is what keeps the fit sound
where the head has collapsed its band (Hangzhou metro at night: all quantiles within a hair of the median):
there ``r`` is huge for any small residual, and an unweighted (coverage-count) quantile of ``r`` asked for the
largest factor allowed at every refit, which compounded into bands 10^8 wide. The ratio is the same in scaled
and original units (an affine map with positive slope), and the factor multiplies the scale the predictions
were made with, so refitting after every validation pass tracks the weights as they train.

The weighted quantile comes from a fixed histogram of ``r`` over [-RANGE, RANGE] (resolution 2 RANGE / BINS =
0.004, linear inside a bin): a sum over batches and DDP ranks, so any amount of validation data fits in
[H, Q, BINS] of memory. A factor outside [MIN_SCALE, RANGE] is clipped there (a median so biased that a level
should cross it; a band RANGE times too narrow), and a (horizon, level) with no observed target keeps its
factor.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from stlm.nn.quantiles import median_index

RANGE = 8.0
BINS = 4000
MIN_SCALE = 1e-3  # not 0: a level at the median would have no offset left to scale at the next refit


class BandCalibration(Metric):
    """|d|-weighted histogram of the ratios ``r = (y - m) / d``, ``d = q_tau - m``, per horizon and level;
    ``compute`` gives the factors."""

    full_state_update = False
    bounds = (MIN_SCALE, RANGE)  # the engine keeps the product of refits inside these too

    def __init__(self, horizon: int, levels, **kwargs):
        super().__init__(**kwargs)
        levels = torch.as_tensor(levels, dtype=torch.float64)
        self.median = median_index(levels)
        self.register_buffer("target_cdf", torch.maximum(levels, 1 - levels))  # [Q]
        self.add_state("histogram", torch.zeros(horizon, len(levels), BINS, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> None:
        H, Q = self.histogram.shape[:2]
        centre = pred[..., self.median : self.median + 1]
        offset = pred - centre
        weight = (weight.unsqueeze(-1) * offset.abs()).double()  # |d|: pinball-optimal; 0 on the median
        ratio = (torch.where(weight > 0, target.unsqueeze(-1), centre) - centre) / torch.where(offset != 0, offset, 1.0)
        bins = ((ratio.double() + RANGE) * (BINS / (2 * RANGE))).floor().clamp(0, BINS - 1).long()
        cell = (torch.arange(H, device=pred.device).view(1, H, *([1] * (pred.dim() - 2))) * Q
                + torch.arange(Q, device=pred.device)) * BINS
        index = (cell + bins).flatten()
        self.histogram += torch.bincount(index, weights=weight.expand_as(ratio).flatten(), minlength=H * Q * BINS).view(H, Q, BINS)

    def compute(self) -> torch.Tensor:
        total = self.histogram.sum(-1, keepdim=True)
        cdf = self.histogram.cumsum(-1) / total.clamp_min(1e-300)  # [H, Q, BINS], cdf at each bin's right edge
        wanted = self.target_cdf.to(cdf).view(1, -1, 1)
        k = torch.searchsorted(cdf.contiguous(), wanted.expand(cdf.shape[0], -1, 1).contiguous()).clamp(max=BINS - 1)
        below = cdf.gather(-1, (k - 1).clamp_min(0)) * (k > 0)  # cdf at bin k's left edge
        inside = self.histogram.gather(-1, k) / total.clamp_min(1e-300)
        fraction = ((wanted - below) / inside.clamp_min(1e-300)).clamp(0, 1)
        factor = (-RANGE + (k + fraction) * (2 * RANGE / BINS)).squeeze(-1).clamp(MIN_SCALE, RANGE)
        factor[:, self.median] = 1.0
        return torch.where(total.squeeze(-1) > 0, factor, 1.0).float()
