"""Spread calibration: the per-horizon factor of an ensemble's offsets from its mean with the least fair CRPS.

Known answers: the factor equals the brute-force minimiser of the fair CRPS (numpy, pairwise definition) on a
fine grid; a too-narrow ensemble is widened and a too-wide one narrowed, and the scaled ensemble's central 90%
then covers about 90% of the targets.
"""

from __future__ import annotations

import numpy as np
import torch

from stlm.metrics.spread_calibration import SpreadCalibration
from stlm.nn.spread_scale import SpreadScale


def fair_crps_numpy(members: np.ndarray, y: np.ndarray) -> np.ndarray:
    M = members.shape[-1]
    skill = np.abs(members - y[..., None]).mean(-1)
    spread = np.abs(members[..., :, None] - members[..., None, :]).sum((-1, -2)) / (2 * M * (M - 1))
    return skill - spread


def _ensemble(n: int, spreads: list[float], members: int = 10, seed: int = 0):
    """Targets N(shift, 1) [n, H, 1, 1] and members shift + N(0, spread_h^2) [n, H, 1, 1, M]: the mean is
    informative (a shared shift), only the spread is wrong."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.randn(n, 1, 1, 1, generator=g) * 3
    y = shift + torch.randn(n, len(spreads), 1, 1, generator=g)
    x = shift.unsqueeze(-1) + torch.tensor(spreads).view(1, -1, 1, 1, 1) * torch.randn(n, len(spreads), 1, 1, members, generator=g)
    return y, x


def test_factor_is_the_fair_crps_minimiser_per_horizon():
    y, x = _ensemble(4000, spreads=[0.3, 2.5])
    metric = SpreadCalibration(2)
    for a in range(0, len(y), 1000):  # accumulated over batches
        metric.update(x[a : a + 1000], y[a : a + 1000], torch.ones_like(y[a : a + 1000]))
    factors = metric.compute()
    for h in range(2):
        xs, ys = x[:, h, 0, 0].numpy().astype(np.float64), y[:, h, 0, 0].numpy().astype(np.float64)
        mu = xs.mean(-1, keepdims=True)
        grid = np.exp(np.linspace(np.log(0.05), np.log(20), 2000))
        scores = [fair_crps_numpy(mu + s * (xs - mu), ys).mean() for s in grid]
        best = grid[int(np.argmin(scores))]
        assert abs(float(factors[h]) / best - 1) < 0.02, (h, float(factors[h]), best)
    assert factors[0] > 2 and factors[1] < 0.6  # widened, narrowed


def test_scaled_ensemble_covers_its_nominal_interval_and_masked_targets_count_for_nothing():
    y, x = _ensemble(20_000, spreads=[0.4], members=100, seed=1)  # many members: a small one under-covers by itself
    weight = torch.ones_like(y)
    y_bad = y.clone()
    y_bad[:5000] = 1e6  # masked out: must not move the factor
    weight[:5000] = 0
    metric = SpreadCalibration(1)
    metric.update(x, y_bad, weight)
    scale = SpreadScale(1).eval()
    scale.scale.copy_(metric.compute())
    scaled = scale(x[5000:])
    lower, upper = torch.quantile(scaled, torch.tensor([0.05, 0.95]), dim=-1)
    coverage = ((y[5000:] >= lower) & (y[5000:] <= upper)).float().mean()
    assert 0.87 < float(coverage) < 0.93, float(coverage)


def test_a_horizon_without_observations_keeps_its_factor_and_training_mode_is_the_identity():
    y, x = _ensemble(100, spreads=[0.5, 0.5])
    weight = torch.ones_like(y)
    weight[:, 1] = 0
    metric = SpreadCalibration(2)
    metric.update(x, y, weight)
    factors = metric.compute()
    assert factors[1] == 1.0 and factors[0] > 1.3
    scale = SpreadScale(2)
    scale.scale.fill_(3.0)
    assert torch.equal(scale.train()(x), x)
    widened = scale.eval()(x)
    torch.testing.assert_close(widened.mean(-1), x.mean(-1))  # the mean stays
    torch.testing.assert_close(widened.std(-1), 3 * x.std(-1))
